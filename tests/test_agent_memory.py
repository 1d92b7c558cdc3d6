"""The agent's memory, descriptors and threads around crowds of viewers, measured on the agent
alone: the real ``Agent`` runs in a child process (``tests.agent_child``) whose signaling is a
pipe; the viewers (real aiortc peers) and the cloud's part live in the test.

The long run (1,000 cycles, an hour of streaming, RSS and descriptors over time) is
``bench/agent_soak.py``; here a shorter one keeps the suite fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.session_harness import ChildDevice, Watch, watch

CONFIG: dict[str, Any] = {
    "camera.backend": "synthetic",
    "camera.width": 320,
    "camera.height": 180,
    "camera.fps": 15,
    "camera.bitrate": 300_000,
    "max_sessions": 50,
    "log_level": "warning",
}
#: What the allocators keep after a crowd has gone, on top of the baseline, once the agent has
#: returned what it could (``device.memory``): about 7 MiB of CPython's arenas and 5 of glibc's
#: on this machine, the same after every crowd (measured over repeated crowds; a leak grows).
RSS_MARGIN_MIB = 16


@pytest.fixture
async def child(tmp_path: Path) -> AsyncIterator[ChildDevice]:
    device = await ChildDevice.start(tmp_path / "state", CONFIG)
    yield device
    assert await device.stop() == 0


def at_rest(state: dict[str, Any]) -> bool:
    return (
        state["sessions"] == 0
        and state["pending_tasks"] == 0
        and not state["camera_running"]
        and state["hub"] == "idle"
    )


async def rested(child: ChildDevice, returned: int) -> dict[str, Any]:
    """The child at rest after it returned memory for the ``returned``-th time."""
    return await child.until(lambda s: at_rest(s) and s["counters"]["memory_returned"] >= returned)


async def crowd(child: ChildDevice, count: int, leave: str) -> dict[str, Any]:
    """``count`` viewers watch at once (each decodes a picture); then they leave ``leave``:
    ``ended`` (the cloud's watch_ended), ``closed`` (a DTLS goodbye from the viewer) or
    ``vanished`` (no word at all; the cloud, after its resume grace, says
    ``viewer_disconnected``).  The child's state while they all watched."""
    made: list[Watch] = []
    try:
        for _ in range(count):
            made.append(await watch(child, child.wire))
        for w in made:
            await w.viewer.wait_frames(1, timeout=60)
        during = await child.until(lambda s: s["viewers"] == count)
        for w in made:
            if leave == "ended":
                child.ended(w.session_id, "viewer_ended")
            elif leave == "closed":
                await w.viewer.pc.close()
            else:
                await w.vanish()
                child.ended(w.session_id, "viewer_disconnected")
        return during
    finally:
        for w in made:
            with contextlib.suppress(Exception):
                await w.close()


async def test_rss_before_during_and_after_fifty_sessions(child: ChildDevice) -> None:
    await crowd(child, 3, "ended")  # warm up: lazy imports, the default executor's threads
    before = await rested(child, 1)
    during = await crowd(child, 50, "ended")
    after = await rested(child, 2)
    await crowd(child, 50, "vanished")
    again = await rested(child, 3)
    print(
        f"\nagent RSS MiB before {before['rss_mib']}, during {during['rss_mib']}, "
        f"after {after['rss_mib']}; fds {before['fds']}/{during['fds']}/{after['fds']}; "
        f"threads {before['threads']}/{during['threads']}/{after['threads']}; "
        f"after another fifty {again['rss_mib']}"
    )
    assert during["fds"] >= before["fds"] + 50, "the sessions really held sockets"
    # The crowd shows on the scale (so "back to before" below means something); how much it
    # costs varies with the allocator, so only a clear rise is asked for, not a figure.
    assert during["rss_mib"] > before["rss_mib"] + RSS_MARGIN_MIB / 2, "they really cost memory"
    assert after["fds"] == before["fds"]
    assert after["threads"] == before["threads"]
    assert after["rss_mib"] <= before["rss_mib"] + RSS_MARGIN_MIB, (before, during, after)
    assert again["rss_mib"] <= before["rss_mib"] + RSS_MARGIN_MIB, (before, again)
    assert again["fds"] == before["fds"] and again["threads"] == before["threads"]
    assert again["counters"]["accepted"] == again["counters"]["closed"] == 103


@pytest.mark.parametrize("leave", ["closed", "vanished"])
async def test_cycles_leave_the_agent_at_its_baseline(child: ChildDevice, leave: str) -> None:
    """Cycles of a few viewers who leave each way: descriptors, threads and tasks back at the
    baseline and the camera stopped after every cycle; memory within the margin."""
    await crowd(child, 2, leave)
    before = await rested(child, 1)
    for cycle in range(4):
        await crowd(child, 4, leave)
        rest = await rested(child, 2 + cycle)
        assert rest["fds"] == before["fds"] and rest["threads"] == before["threads"], rest
        assert rest["tasks"] == before["tasks"], rest
    assert rest["rss_mib"] <= before["rss_mib"] + RSS_MARGIN_MIB, (before, rest)
    assert rest["counters"]["closed"] == rest["counters"]["accepted"] == 2 + 4 * 4
    assert rest["camera_starts"] == before["camera_starts"] + 4, "stopped after every cycle"
