"""Camera settings from the app: the owner's ``device_settings_request`` through a real cloud to
the real agent (in this process), applied to its camera, kept on the device, answered with
``device_settings``; refused with a reason when the camera cannot, and for anybody else."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from device.hal import Camera, CameraConfig, CameraError
from device.hal.synthetic import SyntheticCamera
from device.media import MediaHub
from device.settings import SETTINGS_FILE, DeviceSettingsService
from protocol.messages import (
    CameraSettings,
    DeviceSettings,
    DeviceSettingsRequestPayload,
)
from tests import signaling_client
from tests.agent_inprocess import pair, running_agent, until
from tests.agent_process import CloudViewer
from tests.cloud_fixtures import BACKENDS, start_cloud
from tests.cloud_process import ApiClient, CloudProcess
from tests.test_agent_watch import CLOUD_ENV

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module", params=BACKENDS)
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    yield from start_cloud(request, tmp_path_factory.mktemp("cloud"), request.param, **CLOUD_ENV)


def request_id() -> str:
    return secrets.token_urlsafe(12)


async def ask(
    client: signaling_client.Client, device_id: str, action: str, **settings: Any
) -> dict[str, Any]:
    """Send a request; the answer to it (``device_settings``, or the cloud's ``error``)."""
    rid = request_id()
    payload: dict[str, Any] = {"device_id": device_id, "request_id": rid, "action": action}
    if settings:
        payload["settings"] = settings
    await client.send("device_settings_request", payload)
    async with asyncio.timeout(20):
        while True:
            message = await client.recv(timeout=20)
            if message["payload"].get("request_id") == rid:
                return message


@pytest_asyncio.fixture(loop_scope="module")
async def setup(cloud: CloudProcess, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    state = tmp_path / "state"
    async with running_agent(cloud.url, state) as agent:
        account, device_id = await pair(agent, cloud.url)
        owner = await signaling_client.viewer(cloud.ws_url, account.token)
        try:
            yield {"agent": agent, "account": account, "device": device_id, "owner": owner}
        finally:
            await owner.close()


async def test_the_owner_reads_the_settings_and_anybody_else_is_refused(
    cloud: CloudProcess, setup: dict[str, Any]
) -> None:
    agent, device_id, owner = setup["agent"], setup["device"], setup["owner"]
    # A second socket of the owner's account hears the answer too (another tab stays true).
    other_tab = await signaling_client.viewer(cloud.ws_url, setup["account"].token)
    answer = await ask(owner, device_id, "get")
    assert answer["type"] == "device_settings"
    got = answer["payload"]
    assert got["ok"] is True and got["device_id"] == device_id
    assert got["settings"] == {
        "rotation": 0,
        "hflip": False,
        "vflip": False,
        "width": 640,
        "height": 360,
        "fps": 15,
    }
    assert {(m["width"], m["height"]) for m in got["modes"]} >= {(640, 360), (1280, 720)}
    assert got["flips"] is True and got["arch"]
    seen = await other_tab.recv("device_settings", timeout=10)
    assert seen["payload"]["request_id"] == got["request_id"]
    await other_tab.close()

    api = ApiClient(cloud.url)
    try:
        stranger = await api.account()
        # the owner's other camera, not connected: the cloud says so
        unplugged = await api.owned_camera(setup["account"], "Shed")
    finally:
        await api.aclose()
    offline = await ask(owner, unplugged.device_id, "get")
    assert offline["type"] == "error" and offline["payload"]["code"] == "device_offline"
    intruder = await signaling_client.viewer(cloud.ws_url, stranger.token)
    before = dict(agent.settings.answered)
    refused = await ask(intruder, device_id, "set", rotation=180)
    assert refused["type"] == "error" and refused["payload"]["code"] == "forbidden"
    refused = await ask(intruder, device_id, "restart")
    assert refused["payload"]["code"] == "forbidden"
    await intruder.close()
    assert agent.settings.answered == before, "nothing reached the camera"
    assert not agent.restart_requested


async def test_a_change_applies_while_watching_is_kept_and_impossible_ones_are_refused(
    cloud: CloudProcess, setup: dict[str, Any], tmp_path: Path
) -> None:
    agent, device_id, owner = setup["agent"], setup["device"], setup["owner"]
    viewer = CloudViewer(cloud.ws_url, setup["account"].token, read_timecodes=False)
    try:
        await viewer.watch(device_id)
        assert viewer.peer is not None
        await viewer.peer.wait_frames(5, timeout=20)
        answer = (await ask(owner, device_id, "set", width=1280, height=720, rotation=180))[
            "payload"
        ]
        assert answer["ok"] is True, answer
        assert answer["settings"]["width"] == 1280 and answer["settings"]["rotation"] == 180
        config = agent.hub.config
        assert (config.width, config.height, config.hflip, config.vflip) == (1280, 720, True, True)
        # The viewer kept its session and now gets the new size.
        await until(
            lambda: any((f.width, f.height) == (1280, 720) for f in viewer.peer.frames),  # type: ignore[union-attr]
            20,
            "pictures at the new size",
        )
        assert agent.sessions.viewers == 1
        kept = json.loads((tmp_path / "state" / SETTINGS_FILE).read_text())
        assert kept == {"rotation": 180, "width": 1280, "height": 720}

        for settings, refusal in (
            ({"rotation": 90}, "not_supported"),
            ({"width": 1000, "height": 1000}, "not_supported"),
            ({"width": 640}, "invalid"),
            ({"fps": 60}, "not_supported"),
        ):
            refused = (await ask(owner, device_id, "set", **settings))["payload"]
            assert refused["ok"] is False and refused["refusal"] == refusal, (settings, refused)
            assert refused["message"]
        assert agent.hub.config == config, "a refused change changes nothing"
    finally:
        await viewer.end()
        await viewer.close()


async def test_kept_settings_survive_a_restart_asked_by_the_owner(
    cloud: CloudProcess, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    async with running_agent(cloud.url, state) as agent:
        account, device_id = await pair(agent, cloud.url)
        owner = await signaling_client.viewer(cloud.ws_url, account.token)
        changed = (await ask(owner, device_id, "set", hflip=True, fps=10))["payload"]
        assert changed["ok"] is True
        answer = (await ask(owner, device_id, "restart"))["payload"]
        assert answer["ok"] is True and answer["restarting"] is True
        await until(lambda: agent.restart_requested, 10, "the restart")
        await owner.close()
    async with running_agent(cloud.url, state) as again:
        assert again.hub is not None
        config = again.hub.config
        assert (config.hflip, config.vflip, config.fps) == (True, False, 10)


class Cameras:
    """Synthetic cameras that cannot run at 1920x1080 (as a sensor that cannot)."""

    def __call__(self, config: CameraConfig) -> Camera:
        if config.width == 1920:
            raise CameraError("the sensor refuses 1920x1080")
        return SyntheticCamera(config)


async def test_a_camera_that_fails_with_new_settings_gets_its_old_ones_back(
    tmp_path: Path,
) -> None:
    hub = MediaHub(Cameras(), CameraConfig(width=640, height=360, fps=15, bitrate=300_000))
    hub.health_check_s = 0.05
    hub.restart_delay_s = 0.05
    sent: list[DeviceSettings] = []
    service = DeviceSettingsService(hub, sent.append, tmp_path)
    track = hub.subscribe()
    try:
        await track.recv_unit()
        service.request(
            DeviceSettingsRequestPayload(
                device_id="d",
                request_id="r1",
                action="set",
                settings=CameraSettings(width=1920, height=1080),
            )
        )
        await until(lambda: sent, 20, "the answer")
        answer = sent[0].payload
        assert not answer.ok and answer.refusal == "camera_failed"
        assert (hub.config.width, hub.config.height) == (640, 360)
        assert not (tmp_path / SETTINGS_FILE).exists()
        # Pictures come again, at the old size.
        async with asyncio.timeout(20):
            while True:
                unit = await track.recv_unit()
                if hub.state.value == "running" and unit.keyframe:
                    break
        assert hub.capabilities is not None and hub.capabilities.width == 640
    finally:
        track.stop()
        await service.close()
        await hub.close()


async def test_a_second_change_while_one_is_applied_is_refused_in_progress(
    tmp_path: Path,
) -> None:
    hub = MediaHub(SyntheticCamera, CameraConfig(width=640, height=360, fps=15, bitrate=300_000))
    sent: list[DeviceSettings] = []
    service = DeviceSettingsService(hub, sent.append, tmp_path)
    track = hub.subscribe()
    try:
        await track.recv_unit()
        for rid, fps in (("first", 10), ("second", 12)):
            service.request(
                DeviceSettingsRequestPayload(
                    device_id="d",
                    request_id=rid,
                    action="set",
                    settings=CameraSettings(fps=fps),
                )
            )
        await until(lambda: len(sent) == 2, 20, "both answers")
        answers = {m.payload.request_id: m.payload for m in sent}
        assert answers["first"].ok, answers
        assert answers["second"].refusal == "in_progress" and answers["second"].message
        assert hub.config.fps == 10, "the first change, and only it, applied"
    finally:
        track.stop()
        await service.close()
        await hub.close()
