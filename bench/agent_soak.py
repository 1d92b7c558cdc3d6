"""Soak: does the agent stay healthy for hours and through a thousand viewers coming and going?

The real agent (``device.agent.Agent``) runs in a child process (``tests.agent_child``) with the
synthetic camera; its signaling is a pipe and this process plays the cloud; the viewers are real
aiortc peers here, decoding every picture.  Two parts, one run:

1. **Cycles** (``--cycles``, 1,000 by default): one to four viewers watch, receive pictures and
   leave, in turn by the cloud's ``watch_ended``, by closing their peer (a DTLS goodbye), and by
   vanishing without a word (ICE stops answering; the cloud later says
   ``viewer_disconnected``).  After each cycle the agent must be at rest: no session, no peer
   task, camera stopped.  Reported: RSS, descriptors, threads and asyncio tasks at the start and
   every ``--report-every-cycles``, and the camera starts (one per cycle).
2. **Soak** (``--minutes``, 60 by default): ``--viewers`` viewers watch without a break (one of
   them replaced every ``--churn-s`` seconds, to keep sessions starting and ending meanwhile).
   Reported every ``--report-every-s``: pictures decoded per viewer, the longest gap between two
   pictures of a viewer, the agent's RSS, descriptors and threads, and its Python objects (all
   that the collector tracks, and those still alive after a full collection: a leak grows the
   second; garbage that waits for the next automatic full collection only the first).

Not part of CI (``tests/test_agent_memory.py`` is the short version).  Prints tables;
``--json`` prints JSON.

    .venv/bin/python bench/agent_soak.py [--cycles 1000] [--minutes 60] [--viewers 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.session_harness import ChildDevice, Watch, watch

CONFIG: dict[str, Any] = {
    "camera.backend": "synthetic",
    "camera.width": 640,
    "camera.height": 360,
    "camera.fps": 15,
    "camera.bitrate": 600_000,
    "max_sessions": 8,
    "log_level": "warning",
}
LEAVE = ("ended", "closed", "vanished")


def at_rest(state: dict[str, Any]) -> bool:
    return (
        state["sessions"] == 0
        and state["pending_tasks"] == 0
        and not state["camera_running"]
        and state["hub"] == "idle"
    )


def usage(state: dict[str, Any]) -> dict[str, Any]:
    keys = ("rss_mib", "fds", "threads", "executor_threads", "tasks", "camera_starts", "py_objects")
    return {k: state[k] for k in keys}


async def leave(child: ChildDevice, w: Watch, how: str) -> None:
    if how == "ended":
        child.ended(w.session_id, "viewer_ended")
    elif how == "closed":
        await w.viewer.pc.close()
    else:
        await w.vanish()
        child.ended(w.session_id, "viewer_disconnected")


async def one_cycle(child: ChildDevice, n: int) -> dict[str, Any]:
    how = LEAVE[n % len(LEAVE)]
    made = [await watch(child, child.wire) for _ in range(1 + n % 4)]
    try:
        for w in made:
            await w.viewer.wait_frames(2, timeout=60)
        for w in made:
            await leave(child, w, how)
    finally:
        for w in made:
            with contextlib.suppress(Exception):
                await w.close()
    return dict(await child.until(at_rest, timeout=120))


async def cycles(child: ChildDevice, count: int, every: int) -> dict[str, Any]:
    for n in range(4):  # warm up (imports, the executor's threads, the allocators' pools)
        await one_cycle(child, n)
    start = await child.until(at_rest)
    samples = [{"cycle": 0, **usage(start)}]
    began = time.monotonic()
    for n in range(1, count + 1):
        state = await one_cycle(child, n)
        if n % every == 0 or n == count:
            samples.append({"cycle": n, **usage(state)})
            print(f"  cycle {n}: {samples[-1]}", file=sys.stderr)
    end = samples[-1]
    return {
        "cycles": count,
        "seconds": round(time.monotonic() - began, 1),
        "sessions": end["camera_starts"] - samples[0]["camera_starts"],
        "samples": samples,
        "rss_growth_mib": round(end["rss_mib"] - samples[0]["rss_mib"], 1),
        "fds_growth": end["fds"] - samples[0]["fds"],
        "threads_growth": end["threads"] - samples[0]["threads"],
        "camera_stopped_after_each": end["camera_starts"] - samples[0]["camera_starts"] == count,
    }


def longest_gap_ms(frames: list[Any], since: float) -> float:
    arrivals = [f.arrival for f in frames if f.arrival >= since]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return round(max(gaps, default=0.0) * 1000, 1)


async def soak(
    child: ChildDevice, minutes: float, viewers: int, every_s: float, churn_s: float
) -> dict[str, Any]:
    made = [await watch(child, child.wire) for _ in range(viewers)]
    samples: list[dict[str, Any]] = []
    try:
        for w in made:
            await w.viewer.wait_frames(5, timeout=60)
        began = time.monotonic()
        counted = [len(w.viewer.frames) for w in made]
        last_sample = last_churn = time.time()
        while time.monotonic() - began < minutes * 60:
            await asyncio.sleep(min(every_s, churn_s) / 4)
            now = time.time()
            if now - last_sample >= every_s:
                state = await child.state()
                live = (await child.state(collect=True))["py_objects"]
                pictures = [len(w.viewer.frames) - c for w, c in zip(made, counted, strict=True)]
                gap = max(longest_gap_ms(w.viewer.frames, last_sample) for w in made)
                sample = {
                    "minute": round((time.monotonic() - began) / 60, 1),
                    "pictures": pictures,
                    "longest_gap_ms": gap,
                    "sessions": state["sessions"],
                    **usage(state),
                    "py_objects_live": live,
                }
                counted = [len(w.viewer.frames) for w in made]
                last_sample = now
                samples.append(sample)
                print(f"  {sample}", file=sys.stderr)
            if now - last_churn >= churn_s:  # one viewer leaves, a new one comes
                last_churn = now
                old = made.pop(0)
                counted.pop(0)
                await leave(child, old, LEAVE[len(samples) % len(LEAVE)])
                await old.close()
                fresh = await watch(child, child.wire)
                await fresh.viewer.wait_frames(1, timeout=60)
                made.append(fresh)
                counted.append(len(fresh.viewer.frames))
    finally:
        for w in made:
            with contextlib.suppress(Exception):
                await leave(child, w, "ended")
                await w.close()
    return {"minutes": minutes, "viewers": viewers, "samples": samples}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mumu-soak-") as tmp:
        child = await ChildDevice.start(Path(tmp) / "state", CONFIG)
        try:
            result: dict[str, Any] = {"camera": "640x360@15 synthetic"}
            if args.cycles:
                result["cycles"] = await cycles(child, args.cycles, args.report_every_cycles)
            if args.minutes:
                result["soak"] = await soak(
                    child, args.minutes, args.viewers, args.report_every_s, args.churn_s
                )
            return result
        finally:
            await child.stop()


def table(result: dict[str, Any]) -> str:
    lines = [f"Agent soak, synthetic camera {result['camera']}, agent alone in its process"]
    if "cycles" in result:
        c = result["cycles"]
        lines += [
            f"Cycles: {c['cycles']} ({c['sessions']} camera starts) in {c['seconds']} s",
            f"{'cycle':>6} {'RSS MiB':>8} {'fds':>5} {'threads':>8} {'pool':>5} {'tasks':>6}",
        ]
        for s in c["samples"]:
            lines.append(
                f"{s['cycle']:>6} {s['rss_mib']:>8.1f} {s['fds']:>5} {s['threads']:>8} "
                f"{s['executor_threads']:>5} {s['tasks']:>6}"
            )
        lines.append(
            f"growth: RSS {c['rss_growth_mib']:+.1f} MiB, fds {c['fds_growth']:+d}, threads "
            f"{c['threads_growth']:+d}; camera stopped after every cycle: "
            f"{c['camera_stopped_after_each']}"
        )
    if "soak" in result:
        s = result["soak"]
        lines += [
            "",
            f"Soak: {s['viewers']} viewers for {s['minutes']} min (one replaced now and then)",
            f"{'minute':>6} {'pictures per viewer':>22} {'longest gap ms':>15} {'RSS MiB':>8} "
            f"{'fds':>5} {'threads':>8} {'objects':>8} {'live':>7}",
        ]
        for x in s["samples"]:
            pictures = "/".join(str(p) for p in x["pictures"])
            lines.append(
                f"{x['minute']:>6} {pictures:>22} {x['longest_gap_ms']:>15.1f} "
                f"{x['rss_mib']:>8.1f} {x['fds']:>5} {x['threads']:>8} {x['py_objects']:>8} "
                f"{x['py_objects_live']:>7}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000, help="0: skip the cycles")
    parser.add_argument("--report-every-cycles", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=60.0, help="0: skip the soak")
    parser.add_argument("--viewers", type=int, default=2)
    parser.add_argument("--report-every-s", type=float, default=60.0)
    parser.add_argument("--churn-s", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
