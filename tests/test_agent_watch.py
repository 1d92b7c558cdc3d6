"""The agent end to end: a real ``mumu-agent run`` (synthetic camera, console display) against a
real ``mumu-cloud serve``, watched by real aiortc viewers through the cloud's signaling.

One cloud and one paired agent serve the whole module (they are slow to start on a busy
machine); each test opens its own viewers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess, CloudViewer, pair_agent
from tests.cloud_process import Account, CloudProcess

WIDTH, HEIGHT, FPS = 640, 360, 15
#: Rate limits out of the way: the suite signs up many accounts from one address.
CLOUD_ENV = {
    "MUMU_JWT_SECRET": "agent-tests-jwt-secret-long-enough-for-hs256",
    "MUMU_REGISTER_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_LOGIN_RATE": "100000/minute",
    "MUMU_LOGIN_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_PAIR_RATE": "100000/minute",
    "MUMU_PAIR_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_DEVICE_REGISTER_RATE_PER_ADDRESS": "100000/minute",
}
AGENT_CONFIG = {
    # Keyframes only on request (every 60 s otherwise): the PLI test sees its own keyframe.
    "camera": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "keyframe_interval": 60},
    "reconnect": {"base": 0.1, "cap": 1.0},
}


class Paired:
    def __init__(self, agent: AgentProcess, account: Account, device_id: str) -> None:
        self.agent = agent
        self.account = account
        self.device_id = device_id


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    with CloudProcess(tmp_path_factory.mktemp("cloud"), env=CLOUD_ENV) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def paired(cloud: CloudProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paired]:
    """Register -> show a code -> a user pairs with that code over HTTP."""
    state = tmp_path_factory.mktemp("agent") / "state"
    agent = AgentProcess(cloud.url, state, config=AGENT_CONFIG).start()

    async def pair() -> Paired:
        account, device = await pair_agent(cloud.url, agent)
        return Paired(agent, account, device["device_id"])

    try:
        yield asyncio.run(pair())
    finally:
        agent.stop()


@pytest.fixture
async def viewers(cloud: CloudProcess, paired: Paired) -> AsyncIterator[list[CloudViewer]]:
    """A list to put viewers in; all closed after the test."""
    made: list[CloudViewer] = []
    yield made
    for viewer in made:
        await viewer.close()


async def watch(cloud: CloudProcess, paired: Paired, made: list[CloudViewer]) -> CloudViewer:
    viewer = CloudViewer(cloud.ws_url, paired.account.token)
    made.append(viewer)
    await viewer.watch(paired.device_id)
    return viewer


def test_registered_credentials_are_private(paired: Paired) -> None:
    path = paired.agent.state_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["device_id"] == paired.device_id
    assert saved["device_token"]
    assert not list(Path(paired.agent.state_dir).glob(".credentials-*"))  # no temp file left


async def test_viewer_decodes_real_frames(
    cloud: CloudProcess, paired: Paired, viewers: list[CloudViewer]
) -> None:
    viewer = await watch(cloud, paired, viewers)
    assert viewer.peer is not None
    await viewer.peer.wait_frames(2 * FPS, timeout=30)
    frames = viewer.peer.frames
    assert {(f.width, f.height) for f in frames} == {(WIDTH, HEIGHT)}
    assert frames[0].keyframe
    codes = [f.timecode for f in frames]
    assert None not in codes, "every picture carries the synthetic timecode"
    stamped = [c for c in codes if c is not None]
    assert all(b >= a for a, b in itertools.pairwise(stamped)), stamped
    # Two seconds of pictures span about two seconds of capture time.
    assert stamped[-1] - stamped[0] >= 1000 * (len(stamped) - 1) // FPS // 2
    await paired.agent.wait_for(r"session \w+: peer connected")


async def test_three_viewers_share_one_camera(
    cloud: CloudProcess, paired: Paired, viewers: list[CloudViewer]
) -> None:
    await watch(cloud, paired, viewers)
    await asyncio.sleep(0.5)  # the camera is up for the first one
    starts = paired.agent.count(r"camera started")
    more = await asyncio.gather(*(watch(cloud, paired, viewers) for _ in range(2)))
    for viewer in [viewers[0], *more]:
        assert viewer.peer is not None
        await viewer.peer.wait_frames(FPS, timeout=30)
        assert {(f.width, f.height) for f in viewer.peer.frames} == {(WIDTH, HEIGHT)}
        assert all(f.timecode is not None for f in viewer.peer.frames)
    await paired.agent.wait_for(r"3 viewer\(s\) connected")
    assert paired.agent.count(r"camera started") == starts, "one camera for every viewer"


async def test_pli_from_the_viewer_gets_a_keyframe_within_500_ms(
    cloud: CloudProcess, paired: Paired, viewers: list[CloudViewer]
) -> None:
    viewer = await watch(cloud, paired, viewers)
    peer = viewer.peer
    assert peer is not None
    await peer.wait_frames(FPS, timeout=30)
    for _ in range(3):
        await asyncio.sleep(0.6)  # past the hub's merging of close keyframe requests
        before = len(peer.frames)
        sent = time.time()
        await peer.send_pli()
        deadline = time.monotonic() + 5
        while not any(f.keyframe for f in peer.frames[before:]):
            assert time.monotonic() < deadline, "no keyframe after a PLI"
            await asyncio.sleep(0.005)
        keyframe = next(f for f in peer.frames[before:] if f.keyframe)
        assert keyframe.arrival - sent < 0.5, f"keyframe {keyframe.arrival - sent:.3f} s after PLI"


async def test_watch_end_closes_the_session(
    cloud: CloudProcess, paired: Paired, viewers: list[CloudViewer]
) -> None:
    viewer = await watch(cloud, paired, viewers)
    assert viewer.peer is not None and viewer.session_id is not None
    await viewer.peer.wait_frames(5, timeout=30)
    await viewer.end()
    short = viewer.session_id[:8]
    await paired.agent.wait_for(rf"session {short}: ended by the cloud \(viewer_ended\)")
    await paired.agent.wait_for(rf"session {short}: closed")
    await viewer.peer.track_ended.wait()
