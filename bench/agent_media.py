"""Agent-side cost of streaming: pre-encoded H.264 (MuMu's path) versus aiortc re-encoding.

The sender runs in a process of its own (``multiprocessing``, spawn) and is measured from the
outside (``psutil``: CPU time of all its threads, RSS); the viewers are real aiortc peers in
this process, decoding every picture.  Source: the synthetic camera, 1280x720 at 30 fps, about
2 Mbit/s.  Scenarios:

* ``source``: the camera alone, no viewer (on this machine: drawing + libx264; on a Pi with a
  hardware encoder this cost is the VideoCore's, not the CPU's);
* ``pre-encoded``: ``MediaHub`` + ``answer``: one encoder, access units handed to aiortc;
* ``re-encode``: aiortc's default path: raw pictures through ``MediaRelay``, each viewer's
  ``RTCRtpSender`` encoding them again (aiortc's own H.264 encoder).

Each scenario runs ``--runs`` times (median reported).  Prints a table; ``--json`` prints JSON.

    .venv/bin/python bench/agent_media.py [--runs 3] [--window 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WIDTH, HEIGHT, FPS, BITRATE = 1280, 720, 30, 2_000_000


# --- the sender process --------------------------------------------------------------------


def sender_main(conn: Connection, mode: str, viewers: int) -> None:
    asyncio.run(_sender(conn, mode, viewers))


async def _sender(conn: Connection, mode: str, viewers: int) -> None:
    import functools

    from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
    from aiortc.contrib.media import MediaRelay

    from device.hal import CameraConfig, open_camera
    from device.hal.synthetic import PatternGenerator
    from device.media import MediaHub, answer, h264_preferences

    loop = asyncio.get_running_loop()
    # One encoder thread: x264 then works in the camera's thread, whose CPU time is the encode
    # cost (what a Pi's hardware encoder takes off the CPU).
    config = CameraConfig(width=WIDTH, height=HEIGHT, fps=FPS, bitrate=BITRATE, encoder_threads=1)
    hub = MediaHub(functools.partial(open_camera, "synthetic"), config, keep_warm=mode == "source")
    if mode == "source":
        await hub.set_keep_warm(True)

    class PatternTrack(VideoStreamTrack):
        """Raw pictures of the same pattern, at 30 fps, for aiortc to encode."""

        def __init__(self) -> None:
            super().__init__()
            self.pattern = PatternGenerator(WIDTH, HEIGHT)
            self.n = 0

        async def recv(self) -> Any:
            pts, time_base = await self.next_timestamp()
            frame = self.pattern.frame(self.n, time.time())
            frame.pts, frame.time_base = pts, time_base
            self.n += 1
            return frame

    relay = MediaRelay()
    raw = PatternTrack()
    pcs: list[RTCPeerConnection] = []
    for _ in range(viewers):
        offer = await loop.run_in_executor(None, conn.recv)
        pc = RTCPeerConnection()
        pcs.append(pc)
        description = RTCSessionDescription(sdp=offer, type="offer")
        if mode == "pre-encoded":
            local = await answer(pc, description, hub.subscribe())
        else:
            transceiver = pc.addTransceiver(relay.subscribe(raw), direction="sendonly")
            transceiver.setCodecPreferences(h264_preferences())
            await pc.setRemoteDescription(description)
            await pc.setLocalDescription(await pc.createAnswer())
            local = pc.localDescription
        conn.send(local.sdp)
    await hub.settled()  # the camera is started by now
    camera = hub.camera
    thread = getattr(camera, "_thread", None)
    conn.send(("ready", thread.native_id if thread is not None else None))
    await loop.run_in_executor(None, conn.recv)  # "stop"
    for pc in pcs:
        await pc.close()
    await hub.close()
    conn.send("stopped")


# --- the measuring side ----------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    viewers: int
    cpu_pct: float  # of one core
    camera_pct: float  # the camera thread's share: drawing + encoding the pattern
    rss_mb: float
    fps_per_viewer: float


def _thread_cpu(process: Any, tid: int | None) -> float:
    if tid is None:
        return 0.0
    for thread in process.threads():
        if thread.id == tid:
            return float(thread.user_time + thread.system_time)
    return 0.0


async def run_once(mode: str, viewers: int, warmup: float, window: float) -> Run:
    import psutil
    from aiortc import RTCSessionDescription

    from tests.media_peers import Viewer

    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=sender_main, args=(theirs, mode, viewers), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    peers = [Viewer(read_timecodes=False) for _ in range(viewers)]
    try:
        for viewer in peers:
            ours.send((await viewer.offer()).sdp)
            sdp = await loop.run_in_executor(None, ours.recv)
            await viewer.accept(RTCSessionDescription(sdp=sdp, type="answer"))
        ready, camera_tid = await loop.run_in_executor(None, ours.recv)
        assert ready == "ready"
        for viewer in peers:
            await viewer.wait_frames(5, timeout=20)
        await asyncio.sleep(warmup)
        process = psutil.Process(proc.pid)
        before = process.cpu_times()
        camera_before = _thread_cpu(process, camera_tid)
        frames_before = [len(v.frames) for v in peers]
        started = time.monotonic()
        await asyncio.sleep(window)
        after = process.cpu_times()
        camera_cpu = _thread_cpu(process, camera_tid) - camera_before
        elapsed = time.monotonic() - started
        rss = process.memory_info().rss
        frames = [len(v.frames) - b for v, b in zip(peers, frames_before, strict=True)]
        cpu = (after.user + after.system) - (before.user + before.system)
        fps = statistics.median(frames) / elapsed if frames else 0.0
        return Run(mode, viewers, 100 * cpu / elapsed, 100 * camera_cpu / elapsed, rss / 2**20, fps)
    finally:
        ours.send("stop")
        for viewer in peers:
            await viewer.close()
        await loop.run_in_executor(None, proc.join, 10)
        if proc.is_alive():
            proc.kill()


SCENARIOS = [
    ("source", 0),
    ("pre-encoded", 1),
    ("pre-encoded", 4),
    ("re-encode", 1),
    ("re-encode", 4),
]


async def measure(runs: int, warmup: float, window: float) -> dict[str, Any]:
    results: dict[tuple[str, int], list[Run]] = {s: [] for s in SCENARIOS}
    for _ in range(runs):  # interleaved, so that a busy moment of the machine hits all alike
        for mode, viewers in SCENARIOS:
            results[(mode, viewers)].append(await run_once(mode, viewers, warmup, window))
    rows = []
    for (mode, viewers), got in results.items():
        rows.append(
            {
                "scenario": mode,
                "viewers": viewers,
                "cpu_pct": round(statistics.median(r.cpu_pct for r in got), 1),
                "camera_pct": round(statistics.median(r.camera_pct for r in got), 1),
                "sending_pct": round(statistics.median(r.cpu_pct - r.camera_pct for r in got), 1),
                "rss_mb": round(statistics.median(r.rss_mb for r in got), 1),
                "fps_per_viewer": round(statistics.median(r.fps_per_viewer for r in got), 1),
                "runs": [asdict(r) for r in got],
            }
        )
    by = {(r["scenario"], r["viewers"]): r for r in rows}
    pre1, pre4 = by[("pre-encoded", 1)], by[("pre-encoded", 4)]
    re1, re4 = by[("re-encode", 1)]["cpu_pct"], by[("re-encode", 4)]["cpu_pct"]
    summary = {
        "encode_cost_pct": by[("source", 0)]["camera_pct"],
        "extra_viewer_pct": round((pre4["cpu_pct"] - pre1["cpu_pct"]) / 3, 2),
        "extra_viewer_sending_pct": round((pre4["sending_pct"] - pre1["sending_pct"]) / 3, 2),
        "ratio_1_viewer": round(re1 / pre1["cpu_pct"], 2),
        "ratio_4_viewers": round(re4 / pre4["cpu_pct"], 2),
        "ratio_1_viewer_without_encode": round(re1 / max(pre1["sending_pct"], 0.1), 1),
        "ratio_4_viewers_without_encode": round(re4 / max(pre4["sending_pct"], 0.1), 1),
        "max_rss_mb_pre_encoded": max(pre1["rss_mb"], pre4["rss_mb"]),
    }
    return {
        "config": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "bitrate": BITRATE},
        "runs": runs,
        "warmup_s": warmup,
        "window_s": window,
        "rows": [{k: v for k, v in r.items() if k != "runs"} for r in rows],
        "detail": rows,
        "summary": summary,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"Agent media cost, synthetic {WIDTH}x{HEIGHT}@{FPS} ~{BITRATE // 1000} kbit/s, "
        f"median of {report['runs']} runs x {report['window_s']:.0f} s",
        "",
        f"{'scenario':<13}{'viewers':>8}{'CPU %':>8}{'camera %':>10}{'sending %':>11}"
        f"{'RSS MB':>9}{'fps/viewer':>12}",
    ]
    for row in report["rows"]:
        lines.append(
            f"{row['scenario']:<13}{row['viewers']:>8}{row['cpu_pct']:>8.1f}"
            f"{row['camera_pct']:>10.1f}{row['sending_pct']:>11.1f}"
            f"{row['rss_mb']:>9.1f}{row['fps_per_viewer']:>12.1f}"
        )
    s = report["summary"]
    lines += [
        "CPU % = the sender process, % of one core; camera % = its camera thread (pattern +",
        "libx264; a Pi's hardware encoder does this part); sending % = the rest (aiortc, hub).",
        "",
        f"source encode cost (hardware's on a Pi):  {s['encode_cost_pct']:.1f} % of a core",
        f"each extra viewer, pre-encoded:           {s['extra_viewer_pct']:.2f} % of a core"
        f" ({s['extra_viewer_sending_pct']:.2f} outside the camera thread)  (target < 3)",
        f"re-encode / pre-encoded, 1 viewer:        {s['ratio_1_viewer']:.2f}x"
        f"  ({s['ratio_1_viewer_without_encode']:.1f}x without the source encode)",
        f"re-encode / pre-encoded, 4 viewers:       {s['ratio_4_viewers']:.2f}x"
        f"  ({s['ratio_4_viewers_without_encode']:.1f}x without the source encode)  (target >= 8)",
        f"largest RSS, pre-encoded:                 {s['max_rss_mb_pre_encoded']:.1f} MB"
        "  (target < 100)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    report = asyncio.run(measure(args.runs, args.warmup, args.window))
    print(json.dumps(report, indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
