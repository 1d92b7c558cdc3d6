"""The agent end to end: the real ``Agent`` (in this process: its state is read directly) against
a real ``mumu-cloud serve``, watched by real aiortc viewers through the cloud's signaling.

One cloud and one paired agent serve the module (the cloud is slow to start on a busy machine);
each test opens its own viewers.  A test that changes the agent's ownership brings its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from device.agent import Agent
from device.hal import Camera, CameraConfig, CameraError
from device.media import HubState
from device.provisioning import Phase
from tests.agent_inprocess import pair, running_agent, until
from tests.agent_process import CloudViewer
from tests.cloud_process import Account, ApiClient, CloudProcess

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
AGENT = {
    # Keyframes only on request (every 60 s otherwise): the PLI test sees its own keyframe.
    "camera.keyframe_interval": 60,
    "max_sessions": 3,
}


class Paired:
    def __init__(self, agent: Agent, account: Account, device_id: str) -> None:
        self.agent = agent
        self.account = account
        self.device_id = device_id

    @property
    def sessions(self) -> Any:
        assert self.agent.sessions is not None
        return self.agent.sessions

    @property
    def hub(self) -> Any:
        assert self.agent.hub is not None
        return self.agent.hub


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    with CloudProcess(tmp_path_factory.mktemp("cloud"), env=CLOUD_ENV) as cloud:
        yield cloud


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def paired(
    cloud: CloudProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Paired]:
    """Register -> show a code -> a user pairs with that code over HTTP."""
    state = tmp_path_factory.mktemp("agent") / "state"
    async with running_agent(cloud.url, state, AGENT) as agent:
        account, device_id = await pair(agent, cloud.url)
        yield Paired(agent, account, device_id)


@pytest_asyncio.fixture(loop_scope="module")
async def viewers(paired: Paired) -> AsyncIterator[list[CloudViewer]]:
    """A list to put viewers in; all closed after the test, and the agent back at rest."""
    made: list[CloudViewer] = []
    yield made
    for viewer in made:
        await viewer.end()
        await viewer.close()
    await until(lambda: not paired.sessions.sessions, 30, "the agent's sessions to end")


async def watch(cloud: CloudProcess, paired: Paired, made: list[CloudViewer]) -> CloudViewer:
    viewer = CloudViewer(cloud.ws_url, paired.account.token)
    made.append(viewer)
    await viewer.watch(paired.device_id)
    return viewer


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_registered_credentials_are_private(paired: Paired) -> None:
    path = paired.agent.config.state_path / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["device_id"] == paired.device_id
    assert saved["device_token"]
    assert not list(paired.agent.config.state_path.glob(".credentials-*"))  # no temp file left


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
    assert viewer.session_id in await until(lambda: paired.sessions.streaming())


async def test_request_id_comes_back_with_the_answer_and_with_a_refusal(
    cloud: CloudProcess, paired: Paired, viewers: list[CloudViewer]
) -> None:
    viewer = CloudViewer(cloud.ws_url, paired.account.token, read_timecodes=False)
    viewers.append(viewer)
    await viewer.watch(paired.device_id, request_id="req-1_a")
    assert viewer.ready["request_id"] == "req-1_a"
    assert viewer.client is not None
    await viewer.client.send("watch_request", {"device_id": "not-mine", "request_id": "req-2"})
    refused = await viewer.client.error()
    assert (refused["code"], refused["request_id"]) == ("forbidden", "req-2")


async def test_three_viewers_share_one_camera_and_a_fourth_is_told_it_is_busy(
    cloud: CloudProcess, paired: Paired, viewers: list[CloudViewer]
) -> None:
    await watch(cloud, paired, viewers)
    await until(lambda: paired.hub.state is HubState.RUNNING)
    # starts that the hub's watchdog made (a camera starved of CPU on a loaded machine and
    # restarted) are its own business; a viewer never starts a camera of its own
    starts = paired.hub.starts - paired.hub.failures
    more = await asyncio.gather(*(watch(cloud, paired, viewers) for _ in range(2)))
    for viewer in [viewers[0], *more]:
        assert viewer.peer is not None
        await viewer.peer.wait_frames(FPS, timeout=30)
        assert {(f.width, f.height) for f in viewer.peer.frames} == {(WIDTH, HEIGHT)}
        assert all(f.timecode is not None for f in viewer.peer.frames)
    await until(lambda: paired.sessions.viewers == 3)
    assert paired.hub.starts - paired.hub.failures == starts, "one camera for every viewer"
    # The agent's cap (max_sessions: 3) reaches the fourth viewer in words.
    fourth = CloudViewer(cloud.ws_url, paired.account.token)
    viewers.append(fourth)
    await fourth.connect()
    assert fourth.client is not None
    await fourth.client.send("watch_request", {"device_id": paired.device_id})
    sid = (await fourth.client.recv("watch_ready"))["payload"]["session_id"]
    ended = (await fourth.client.recv("watch_ended", 10))["payload"]
    assert ended == {"session_id": sid, "reason": "device_busy"}
    assert paired.sessions.counters.refused_busy >= 1 and paired.sessions.viewers == 3


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
    ended = paired.sessions.counters.ended["viewer_ended"]
    await viewer.end()
    await until(lambda: not paired.sessions.alive(viewer.session_id))
    assert paired.sessions.counters.ended["viewer_ended"] == ended + 1
    await asyncio.wait_for(viewer.peer.track_ended.wait(), 20)


async def test_a_camera_that_dies_tells_the_viewer_camera_failed(
    cloud: CloudProcess, paired: Paired, viewers: list[CloudViewer]
) -> None:
    hub = paired.hub
    viewer = await watch(cloud, paired, viewers)
    assert viewer.peer is not None
    await viewer.peer.wait_frames(5, timeout=30)
    working = hub.camera_factory

    def broken(config: CameraConfig) -> Camera:
        raise CameraError("the sensor does not answer")

    hub.camera_factory = broken
    hub.restart_delay_s = 0.05
    try:
        hub.camera._error = CameraError("unplugged")  # as its capture thread would record it
        ended = await viewer.wait_ended(30)
        assert ended == {"session_id": viewer.session_id, "reason": "camera_failed"}
        assert hub.state is HubState.FAILED
        # The device says so too (display, LED: the error screen).
        controller = paired.agent.controller
        assert controller is not None
        screen = await until(lambda: controller.screen.phase is Phase.ERROR and controller.screen)
        assert "Camera not working" in screen.detail
    finally:
        hub.camera_factory = working
    again = await watch(cloud, paired, viewers)  # repaired: the next viewer tries again
    assert again.peer is not None
    await again.peer.wait_frames(5, timeout=30)
    assert hub.state is HubState.RUNNING
    assert controller.screen.phase is Phase.ONLINE


async def test_unpairing_or_a_new_owner_closes_every_peer_at_once(
    cloud: CloudProcess, tmp_path: Path
) -> None:
    async with running_agent(cloud.url, tmp_path / "state") as agent:
        owner, device_id = await pair(agent, cloud.url)
        assert agent.sessions is not None
        sessions = agent.sessions
        made = [CloudViewer(cloud.ws_url, owner.token, read_timecodes=False) for _ in range(2)]
        try:
            for viewer in made:
                await viewer.watch(device_id)
                assert viewer.peer is not None
                await viewer.peer.wait_frames(3, timeout=30)
            api = ApiClient(cloud.url)
            try:
                r = await api.http.delete(f"/api/devices/{device_id}", headers=owner.auth)
                assert r.status_code == 204
                await until(lambda: agent.controller is not None and not agent.controller.paired)
                assert sessions.sessions == []
                for viewer in made:
                    assert viewer.peer is not None
                    await asyncio.wait_for(viewer.peer.track_ended.wait(), 20)
                # A new owner: the agent accepts watches again, from them.
                newcomer, _ = await pair(agent, cloud.url)
            finally:
                await api.aclose()
            fresh = CloudViewer(cloud.ws_url, newcomer.token, read_timecodes=False)
            made.append(fresh)
            await fresh.watch(device_id, request_id=secrets.token_urlsafe(8))
            assert fresh.peer is not None
            await fresh.peer.wait_frames(3, timeout=30)
        finally:
            for viewer in made:
                await viewer.close()
