"""Time to first frame through the whole system: a real cloud, a real agent, a real viewer.

``mumu-cloud serve`` and ``mumu-agent run --camera synthetic`` (1280x720 at 30 fps) run as
subprocesses on loopback; the agent is paired once.  Each run a fresh aiortc viewer (already
said hello on ``/ws/viewer``) sends ``watch_request`` and the clock runs until its first
decoded picture.  Milestones on the way: ``watch_ready`` (the cloud made the session), the
device's ``signal_answer``, the first decoded frame.  The viewer trickles its candidates, as a
browser does.

Scenarios: ``cold`` (the camera starts for each viewer: the agent's default), ``warm``
(``keep_warm: true``: the camera runs with no viewer) and ``turn-down`` (cold, with the cloud
handing out a TURN server that never answers: a bound UDP socket nobody reads, as when the
relay's host is up and its service hung or a firewall drops the packets).  Both ends trickle
(the viewer as a browser does), so an unreachable TURN server must cost nothing on a LAN.
Targets: first frame under 300 ms (median); ``turn-down`` within 1.5x of ``cold``.  Prints a
table; ``--json`` prints JSON.

    .venv/bin/python bench/agent_ttff.py [--runs 20] [--scenario cold|warm|turn-down|all] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.agent_process import AgentProcess, CloudViewer
from tests.cloud_process import ApiClient, CloudProcess

WIDTH, HEIGHT, FPS = 1280, 720, 30
TARGET_MS = 300.0
TURN_DOWN_RATIO = 1.5
CLOUD_ENV = {
    "MUMU_REGISTER_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_LOGIN_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_PAIR_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_DEVICE_REGISTER_RATE_PER_ADDRESS": "100000/minute",
}


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values), 1),
        "p95_ms": round(p95(values), 1),
        "min_ms": round(min(values), 1),
        "max_ms": round(max(values), 1),
    }


@contextlib.contextmanager
def silent_turn_server() -> Iterator[str]:
    """A TURN URL whose server never answers: a bound UDP socket that is never read."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"turn:127.0.0.1:{sock.getsockname()[1]}?transport=udp"


async def scenario(name: str, runs: int, tmp: Path) -> dict[str, Any]:
    with silent_turn_server() as dead_turn:
        env = dict(CLOUD_ENV)
        if name == "turn-down":
            env |= {"MUMU_TURN_URLS": dead_turn, "MUMU_TURN_SECRET": "bench-secret"}
        return await _scenario(name, runs, tmp, env)


async def _scenario(name: str, runs: int, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    cloud = CloudProcess(tmp / f"cloud-{name}", env=env).start()
    config = {
        "camera": {"width": WIDTH, "height": HEIGHT, "fps": FPS},
        "keep_warm": name == "warm",
        "log_level": "info",
    }
    agent = AgentProcess(cloud.url, tmp / f"state-{name}", config=config).start()
    api = ApiClient(cloud.url)
    ready: list[float] = []
    answered: list[float] = []
    first: list[float] = []
    try:
        code = await agent.pairing_code()
        account = await api.account()
        device_id = (await api.pair_code(account, code))["device_id"]
        await agent.wait_for(r"the cloud says: paired")
        if name == "warm":
            await agent.wait_for(r"camera started")
        for run in range(runs):
            viewer = await CloudViewer(cloud.ws_url, account.token, read_timecodes=False).connect()
            try:
                await viewer.watch(device_id)
                assert viewer.peer is not None
                await viewer.peer.wait_frames(1, timeout=20)
                t0 = viewer.requested_at
                ready.append((viewer.ready_at - t0) * 1000)
                answered.append((viewer.answered_at - t0) * 1000)
                first.append((viewer.peer.frames[0].arrival - t0) * 1000)
            finally:
                await viewer.close()
            # Let the agent notice and close the session (and, cold, the camera).
            async with asyncio.timeout(20):
                while agent.count(r"closed, 0 session\(s\) left") < run + 1:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
    finally:
        await api.aclose()
        agent.stop()
        cloud.stop()
    return {
        "scenario": name,
        "runs": runs,
        "resolution": f"{WIDTH}x{HEIGHT}@{FPS}",
        "watch_ready": summary(ready),
        "answer": summary(answered),
        "first_frame": summary(first),
        "target_median_ms": TARGET_MS,
        "meets_target": statistics.median(first) < TARGET_MS,
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':10} {'milestone':12} {'median ms':>10} {'p95 ms':>8} "
        f"{'min ms':>8} {'max ms':>8}"
    )
    lines = [
        f"Time from watch_request, synthetic camera {WIDTH}x{HEIGHT}@{FPS}, loopback",
        head,
        "-" * len(head),
    ]
    for r in results:
        for milestone in ("watch_ready", "answer", "first_frame"):
            s = r[milestone]
            lines.append(
                f"{r['scenario']:10} {milestone:12} {s['median_ms']:>10.1f} {s['p95_ms']:>8.1f} "
                f"{s['min_ms']:>8.1f} {s['max_ms']:>8.1f}"
            )
    for r in results:
        verdict = "meets" if r["meets_target"] else "MISSES"
        lines.append(
            f"{r['scenario']}: first frame median {r['first_frame']['median_ms']:.1f} ms over "
            f"{r['runs']} runs: {verdict} the {TARGET_MS:.0f} ms target"
        )
    by_name = {r["scenario"]: r for r in results}
    if "cold" in by_name and "turn-down" in by_name:
        ratio = turn_down_ratio(by_name)
        verdict = "meets" if ratio <= TURN_DOWN_RATIO else "MISSES"
        lines.append(
            f"turn-down / cold first frame medians: {ratio:.2f}x: {verdict} the "
            f"{TURN_DOWN_RATIO}x target"
        )
    return "\n".join(lines)


def turn_down_ratio(by_name: dict[str, dict[str, Any]]) -> float:
    down = by_name["turn-down"]["first_frame"]["median_ms"]
    return float(down / by_name["cold"]["first_frame"]["median_ms"])


async def run(runs: int, scenarios: list[str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="mumu-ttff-") as tmp:
        return [await scenario(name, runs, Path(tmp)) for name in scenarios]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--scenario", choices=["cold", "warm", "turn-down", "all"], default="all")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    scenarios = ["cold", "warm", "turn-down"] if args.scenario == "all" else [args.scenario]
    results = asyncio.run(run(args.runs, scenarios))
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
