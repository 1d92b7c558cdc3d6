"""Two ``mumu-cloud serve`` processes sharing PostgreSQL and Redis behave as one service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests import signaling_client as sig
from tests.cloud_fixtures import RELAXED, backend_env
from tests.cloud_process import ApiClient, CloudProcess

SDP_OFFER = {"type": "offer", "sdp": "v=0\r\n"}
SDP_ANSWER = {"type": "answer", "sdp": "v=0\r\n"}


async def watch(viewer: sig.Client, device: sig.Client, device_id: str) -> str:
    await viewer.send("watch_request", {"device_id": device_id})
    sid = str((await viewer.recv("watch_ready"))["payload"]["session_id"])
    assert (await device.recv("watch_request"))["payload"]["session_id"] == sid
    return sid


async def offer_answer(viewer: sig.Client, device: sig.Client, sid: str) -> None:
    await viewer.send("signal_offer", {"session_id": sid, "sdp": SDP_OFFER})
    assert (await device.recv("signal_offer"))["payload"]["session_id"] == sid
    await device.send("signal_answer", {"session_id": sid, "sdp": SDP_ANSWER})
    assert (await viewer.recv("signal_answer"))["payload"]["session_id"] == sid


async def test_two_processes_one_service(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    env = {**RELAXED, **backend_env("scaled", request)}
    a = CloudProcess(tmp_path / "a", env=env).start()
    b = CloudProcess(tmp_path / "b", env=env).start()
    api_a, api_b = ApiClient(a.url), ApiClient(b.url)
    try:
        owner = await api_a.account()
        camera = await api_b.owned_camera(owner)  # accounts and devices are shared
        device = await sig.device(a.ws_url, camera.hello())
        viewer = await sig.viewer(b.ws_url, owner.token)

        # presence is shared: B sees the device connected to A
        [listed] = (await api_b.http.get("/api/devices", headers=owner.auth)).json()["devices"]
        assert listed["online"] is True

        # the whole flow across processes, to watch_ended
        sid = await watch(viewer, device, camera.device_id)
        await offer_answer(viewer, device, sid)
        await viewer.send("signal_ice", {"session_id": sid, "candidate": None})
        assert (await device.recv("signal_ice"))["payload"]["session_id"] == sid
        await viewer.send("watch_end", {"session_id": sid})
        for side in (viewer, device):
            assert (await side.recv("watch_ended"))["payload"] == {
                "session_id": sid,
                "reason": "viewer_ended",
            }

        # a second session is streaming when the viewer's process (B) dies
        sid2 = await watch(viewer, device, camera.device_id)
        await offer_answer(viewer, device, sid2)
        b.kill()
        assert await viewer.closed() is not None
        # the viewer reconnects to A and re-attaches its session; signaling carries on
        viewer = await sig.viewer(a.ws_url, owner.token)
        await viewer.send("watch_resume", {"session_id": sid2})
        assert (await viewer.recv("watch_resumed"))["payload"] == {"session_id": sid2}
        await device.send("signal_ice", {"session_id": sid2, "candidate": None})
        assert (await viewer.recv("signal_ice"))["payload"]["session_id"] == sid2

        # B comes back; now A (the device's and viewer's process) dies
        b.start()
        a.kill()
        assert await device.closed() is not None
        device = await sig.device(b.ws_url, camera.hello())
        viewer = await sig.viewer(b.ws_url, owner.token)
        await viewer.send("watch_resume", {"session_id": sid2})
        await viewer.recv("watch_resumed")
        # a brand-new session through the surviving process
        sid3 = await watch(viewer, device, camera.device_id)
        await offer_answer(viewer, device, sid3)
        await device.send("watch_end", {"session_id": sid3})
        assert (await viewer.recv("watch_ended"))["payload"]["reason"] == "device_ended"
        assert (await device.recv("watch_ended"))["payload"]["session_id"] == sid3
        await viewer.send("watch_end", {"session_id": sid2})
        assert (await device.recv("watch_ended"))["payload"]["session_id"] == sid2

        history = (
            await api_b.http.get(f"/api/devices/{camera.device_id}/sessions", headers=owner.auth)
        ).json()["sessions"]
        reasons = {h["session_id"]: h["end_reason"] for h in history}
        assert reasons == {sid: "viewer_ended", sid2: "viewer_ended", sid3: "device_ended"}
        await viewer.close()
        await device.close()
    finally:
        await api_a.aclose()
        await api_b.aclose()
        a.stop()
        b.stop()


async def test_sessions_of_a_dead_process_expire(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Parties that never come back: the session is recorded as ended ("expired")."""
    env = {**RELAXED, **backend_env("scaled", request), "MUMU_SESSION_TTL": "10"}
    a = CloudProcess(tmp_path / "a", env=env).start()
    b = CloudProcess(tmp_path / "b", env=env).start()
    api = ApiClient(b.url)
    try:
        owner = await api.account()
        camera = await api.owned_camera(owner)
        device = await sig.device(a.ws_url, camera.hello())
        viewer = await sig.viewer(a.ws_url, owner.token)
        sid = await watch(viewer, device, camera.device_id)
        a.kill()
        url = f"/api/devices/{camera.device_id}/sessions"
        for _ in range(60):
            [row] = (await api.http.get(url, headers=owner.auth)).json()["sessions"]
            if row["ended_at"]:
                break
            await asyncio.sleep(0.5)
        assert row["session_id"] == sid and row["end_reason"] == "expired"
    finally:
        await api.aclose()
        a.stop()
        b.stop()
