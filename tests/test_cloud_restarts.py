"""Restarts are boring: a graceful stop tells every socket to come back and records last_seen;
presence tells the truth when a camera goes silent or the process holding it dies."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests import signaling_client as sig
from tests.cloud_fixtures import BACKENDS, RELAXED, backend_env, start_cloud
from tests.cloud_process import ApiClient, CloudProcess


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_silent_camera_is_shown_offline_within_two_missed_heartbeats(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Its socket stays open (a hung camera); its presence lapses and its owner is told."""
    for cloud in start_cloud(request, tmp_path, kind, MUMU_PRESENCE_TTL="5"):
        api = ApiClient(cloud.url)
        try:
            owner = await api.account()
            camera = await api.owned_camera(owner)
            viewer = await sig.viewer(cloud.ws_url, owner.token)
            device = await sig.device(cloud.ws_url, camera.hello())
            assert (await viewer.recv("device_status"))["payload"]["online"] is True
            await device.send("heartbeat")
            await device.recv("heartbeat_ack")
            heard = time.time()
            started = time.monotonic()
            # ...then silence: offline within the presence TTL (5 s here) and a sweep
            status = (await viewer.recv("device_status", timeout=15))["payload"]
            assert status == {"device_id": camera.device_id, "online": False}
            assert time.monotonic() - started < 12
            [listed] = (await api.http.get("/api/devices", headers=owner.auth)).json()["devices"]
            assert listed["online"] is False
            seen = listed["last_seen"]
            assert seen is not None and abs(_timestamp(seen) - heard) < 2, (seen, heard)
            # it speaks again: shown online again
            await device.send("heartbeat")
            await device.recv("heartbeat_ack")
            assert (await viewer.recv("device_status", timeout=5))["payload"]["online"] is True
            await device.close()
            await viewer.close()
        finally:
            await api.aclose()


async def test_the_process_holding_a_camera_dies_and_another_says_so(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = {**RELAXED, **backend_env("scaled", request), "MUMU_PRESENCE_TTL": "5"}
    with (
        CloudProcess(tmp_path / "a", env=env) as a,
        CloudProcess(tmp_path / "b", env=env) as b,
    ):
        api = ApiClient(b.url)
        try:
            owner = await api.account()
            camera = await api.owned_camera(owner)
            viewer = await sig.viewer(b.ws_url, owner.token)
            await sig.device(a.ws_url, camera.hello())
            assert (await viewer.recv("device_status"))["payload"]["online"] is True
            a.kill()  # no goodbye from A: B's presence sweeper notices
            status = (await viewer.recv("device_status", timeout=15))["payload"]
            assert status == {"device_id": camera.device_id, "online": False}
            [listed] = (await api.http.get("/api/devices", headers=owner.auth)).json()["devices"]
            assert listed["online"] is False and listed["last_seen"] is not None
            await viewer.close()
        finally:
            await api.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_graceful_stop_tells_every_socket_to_come_back(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGTERM with a few hundred devices: each hears 1012 with a reconnect window, the
    process is gone within seconds without a traceback, last_seen is recorded."""
    count = 300
    # 300 sockets from one address at once are more than the per-address bounds on waiting
    # sockets and request heads (256 each, counted from accept): this test is about the stop.
    lifted = {
        "MUMU_HTTP_CONNECTIONS_PER_ADDRESS": "1000",
        "MUMU_MAX_PENDING_SOCKETS_PER_ADDRESS": "1000",
    }
    for cloud in start_cloud(request, tmp_path, kind, **lifted):
        api = ApiClient(cloud.url)
        try:
            owner = await api.account()
            cameras = [await api.camera() for _ in range(count)]
            for camera in cameras[:3]:
                await api.pair(owner, camera)
            devices = await asyncio.gather(
                *(sig.device(cloud.ws_url, camera.hello()) for camera in cameras)
            )
            viewer = await sig.viewer(cloud.ws_url, owner.token)
            assert cloud.proc is not None
            cloud.proc.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(*(_close_of(d) for d in [*devices, viewer]))
            assert {code for code, _ in codes} == {1012}, codes[:5]
            windows = {int(re.findall(r"reconnect_within=(\d+)", reason)[0]) for _, reason in codes}
            assert len(windows) == 1 and 1 <= windows.pop() <= 60
            # uvicorn finishes, then re-raises the signal: "terminated by SIGTERM", which
            # systemd and every supervisor take as a clean stop
            assert cloud.proc.wait(timeout=20) in {0, -signal.SIGTERM}
            log = cloud.log()
            assert not re.search(r"^Traceback", log, flags=re.M), log
            cloud.start()  # same port and data (embedded: same SQLite file)
            listed = (await api.http.get("/api/devices", headers=owner.auth)).json()["devices"]
            assert len(listed) == 3
            assert all(d["last_seen"] is not None for d in listed), listed
        finally:
            await api.aclose()


async def _close_of(client: sig.Client) -> tuple[int, str]:
    try:
        async with asyncio.timeout(15):
            while True:
                await client.ws.recv()
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
    return (0, "")


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def test_a_restarted_embedded_cloud_re_adopts_the_sessions_both_parties_claim(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The embedded cloud forgets its live sessions when it restarts; the video never stopped
    (it flows peer to peer), so the device claims its sessions in its next hello and the viewer
    resumes: the same session goes on.  Claims that do not hold are refused."""
    for cloud in start_cloud(request, tmp_path, "embedded", MUMU_RESUME_GRACE="30"):
        api = ApiClient(cloud.url)
        try:
            owner, other = await api.account(), await api.account()
            camera = await api.owned_camera(owner)
            device = await sig.device(cloud.ws_url, camera.hello())
            viewer = await sig.viewer(cloud.ws_url, owner.token)
            await viewer.send("watch_request", {"device_id": camera.device_id})
            sid = (await viewer.recv("watch_ready"))["payload"]["session_id"]
            await device.recv("watch_request")
            # a second camera of another account, with a session too
            camera2 = await api.owned_camera(other)
            device2 = await sig.device(cloud.ws_url, camera2.hello())
            viewer2 = await sig.viewer(cloud.ws_url, other.token)
            await viewer2.send("watch_request", {"device_id": camera2.device_id})
            sid2 = (await viewer2.recv("watch_ready"))["payload"]["session_id"]

            cloud.kill()
            cloud.start()
            # the device claims its session, and (wrongly) the other camera's and a made-up one
            hello = camera.hello()
            hello["payload"]["sessions"] = [sid, sid2, "no-such-session"]
            device = await sig.Client.connect(cloud.ws_url, "device")
            await device.send_raw(json.dumps(hello))
            ack = (await device.recv("hello_ack"))["payload"]
            assert ack["sessions"] == [sid]
            viewer = await sig.viewer(cloud.ws_url, owner.token)
            await viewer.send("watch_resume", {"session_id": sid, "device_id": camera.device_id})
            await viewer.recv("watch_resumed")
            await viewer.send("signal_ice", {"session_id": sid, "candidate": None})
            assert (await device.recv("signal_ice"))["payload"]["session_id"] == sid
            await device.send("signal_ice", {"session_id": sid, "candidate": None})
            assert (await viewer.recv("signal_ice"))["payload"]["session_id"] == sid
            # another account's viewer cannot take it
            intruder = await sig.viewer(cloud.ws_url, other.token)
            await intruder.send("watch_resume", {"session_id": sid, "device_id": camera.device_id})
            assert (await intruder.error())["code"] == "session_not_found"

            # a camera unpaired while the cloud was down: its claim is not re-adopted
            await viewer.send("watch_end", {"session_id": sid})
            await viewer.recv("watch_ended")
            await viewer.send("watch_request", {"device_id": camera.device_id})
            sid3 = (await viewer.recv("watch_ready"))["payload"]["session_id"]
            cloud.kill()
            cloud.start()
            gone = await api.http.delete(f"/api/devices/{camera.device_id}", headers=owner.auth)
            assert gone.status_code == 204
            hello["payload"]["sessions"] = [sid3]
            device = await sig.Client.connect(cloud.ws_url, "device")
            await device.send_raw(json.dumps(hello))
            assert (await device.recv("hello_ack"))["payload"]["sessions"] == []
            for s in (device, viewer, intruder):
                await s.close()
            del device2, viewer2
        finally:
            await api.aclose()
