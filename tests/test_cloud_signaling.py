"""WebSocket signaling through real sockets against a real ``mumu-cloud serve``, embedded and
scaled: authentication, the watch flow, party checks, failure handling, bad input."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import jwt
import pytest

from tests import signaling_client as sig
from tests.cloud_fixtures import BACKENDS, JWT_SECRET, TURN_SECRET, start_cloud
from tests.cloud_process import Account, ApiClient, Camera, CloudProcess

SDP_OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"}
SDP_ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


@pytest.fixture(scope="module", params=BACKENDS)
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    yield from start_cloud(request, tmp_path_factory.mktemp("cloud"), request.param)


@pytest.fixture
async def api(cloud: CloudProcess) -> AsyncIterator[ApiClient]:
    client = ApiClient(cloud.url)
    yield client
    await client.aclose()


async def watch(viewer: sig.Client, device: sig.Client, device_id: str) -> str:
    """Run the start of the watch flow; the session id."""
    await viewer.send("watch_request", {"device_id": device_id})
    ready = (await viewer.recv("watch_ready"))["payload"]
    request = (await device.recv("watch_request"))["payload"]
    assert ready["session_id"] == request["session_id"] and ready["device_id"] == device_id
    return str(ready["session_id"])


async def owner_watching(
    cloud: CloudProcess, api: ApiClient
) -> tuple[Account, Camera, sig.Client, sig.Client]:
    """A new account owning a connected camera, and a connected viewer socket of that account."""
    owner = await api.account()
    camera = await api.owned_camera(owner)
    device = await sig.device(cloud.ws_url, camera.hello())
    viewer = await sig.viewer(cloud.ws_url, owner.token)
    return owner, camera, device, viewer


async def test_device_hello(cloud: CloudProcess, api: ApiClient) -> None:
    camera = await api.camera()
    device = await sig.device(cloud.ws_url, camera.hello())
    await device.close()

    for hello in (
        {"type": "hello", "payload": {"device_id": camera.device_id, "device_token": "wrong"}},
        {"type": "hello", "payload": {"device_id": "ghost", "device_token": camera.device_token}},
    ):
        client = await sig.Client.connect(cloud.ws_url, "device")
        await client.send_raw(json.dumps(hello))
        error = await client.error()
        assert error["code"] == "not_authenticated"
        assert await client.closed() == 4401
    for first in (
        json.dumps({"type": "heartbeat", "payload": {}}),
        "{not json",
        json.dumps({"type": "hello", "payload": {"token": "a viewer's hello"}}),
        b"\x00binary",
    ):
        client = await sig.Client.connect(cloud.ws_url, "device")
        await client.send_raw(first)
        assert (await client.error())["code"] in {
            "not_authenticated",
            "invalid_json",
            "invalid_message",
            "binary_not_supported",
        }
        assert await client.closed() == 4400


# the HS512 token forged below is meant to be refused, short key and all
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_viewer_hello_refuses_bad_tokens(cloud: CloudProcess, api: ApiClient) -> None:
    account = await api.account()
    viewer = await sig.viewer(cloud.ws_url, account.token)
    await viewer.send("hello", {"token": account.token})
    assert (await viewer.error())["code"] == "already_authenticated"
    await viewer.send("heartbeat")
    await viewer.recv("heartbeat_ack")
    await viewer.close()

    now = int(time.time())
    claims = {"sub": account.user_id, "iat": now, "exp": now + 60, "typ": "access"}
    bad = [
        "garbage",
        jwt.encode({**claims, "iat": now - 120, "exp": now - 60}, JWT_SECRET, algorithm="HS256"),
        jwt.encode(claims, "some other secret long enough for hs256 use", algorithm="HS256"),
        jwt.encode(claims, key=None, algorithm="none"),
        jwt.encode(claims, JWT_SECRET, algorithm="HS512"),
        account.token[:-4] + "AAAA",
        jwt.encode({**claims, "sub": "no-such-user"}, JWT_SECRET, algorithm="HS256"),
    ]
    for token in bad:
        client = await sig.Client.connect(cloud.ws_url, "viewer")
        await client.send("hello", {"token": token})
        assert (await client.error())["code"] == "not_authenticated"
        assert await client.closed() == 4401, token
    client = await sig.Client.connect(cloud.ws_url, "viewer")
    await client.send("watch_request", {"device_id": "x"})
    assert (await client.error())["code"] == "not_authenticated"
    assert await client.closed() == 4400


async def test_full_watch_flow(cloud: CloudProcess, api: ApiClient) -> None:
    owner, camera, device, viewer = await owner_watching(cloud, api)

    await viewer.send("watch_request", {"device_id": camera.device_id})
    ready = (await viewer.recv("watch_ready"))["payload"]
    request = (await device.recv("watch_request"))["payload"]
    sid = ready["session_id"]
    assert request["session_id"] == sid and len(sid) >= 32
    for servers in (ready["ice_servers"], request["ice_servers"]):
        stun, turn = servers
        assert stun["urls"] == ["stun:127.0.0.1:3478"]
        expiry, _, _ = turn["username"].partition(":")
        assert int(expiry) > time.time()
        digest = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
        assert turn["credential"] == base64.b64encode(digest).decode()

    await viewer.send("signal_offer", {"session_id": sid, "sdp": SDP_OFFER})
    assert (await device.recv("signal_offer"))["payload"] == {"session_id": sid, "sdp": SDP_OFFER}
    await device.send("signal_answer", {"session_id": sid, "sdp": SDP_ANSWER})
    assert (await viewer.recv("signal_answer"))["payload"]["sdp"] == SDP_ANSWER
    await viewer.send("signal_ice", {"session_id": sid, "candidate": CANDIDATE})
    assert (await device.recv("signal_ice"))["payload"]["candidate"] == CANDIDATE
    await device.send("signal_ice", {"session_id": sid, "candidate": None})
    assert (await viewer.recv("signal_ice"))["payload"]["candidate"] is None

    await device.send("watch_end", {"session_id": sid})
    for side in (viewer, device):
        assert (await side.recv("watch_ended"))["payload"] == {
            "session_id": sid,
            "reason": "device_ended",
        }
    await viewer.send("signal_offer", {"session_id": sid, "sdp": SDP_OFFER})
    assert (await viewer.error())["code"] == "session_not_found"

    history = (
        await api.http.get(f"/api/devices/{camera.device_id}/sessions", headers=owner.auth)
    ).json()["sessions"]
    assert history[0]["session_id"] == sid and history[0]["end_reason"] == "device_ended"
    assert history[0]["viewer_id"] == owner.user_id and history[0]["ended_at"]
    await viewer.close()
    await device.close()


async def test_strangers_are_refused(cloud: CloudProcess, api: ApiClient) -> None:
    owner, stranger = await api.account(), await api.account()
    camera = await api.owned_camera(owner)
    device = await sig.device(cloud.ws_url, camera.hello())
    viewer = await sig.viewer(cloud.ws_url, owner.token)
    intruder = await sig.viewer(cloud.ws_url, stranger.token)
    sid = await watch(viewer, device, camera.device_id)

    await intruder.send("watch_request", {"device_id": camera.device_id})
    assert (await intruder.error())["code"] == "forbidden"
    await intruder.send("watch_request", {"device_id": "does-not-exist"})
    assert (await intruder.error())["code"] == "forbidden"
    for kind, payload in (
        ("signal_offer", {"session_id": sid, "sdp": SDP_OFFER}),
        ("signal_ice", {"session_id": sid, "candidate": CANDIDATE}),
        ("watch_end", {"session_id": sid}),
        ("watch_resume", {"session_id": sid}),
    ):
        await intruder.send(kind, payload)
        error = await intruder.error()
        assert error["code"] in {"not_session_party", "session_not_found"}, error
        assert error["ref"] == sid
    await device.nothing()
    await viewer.nothing()

    # another camera of the stranger cannot inject into this session either
    other = await api.owned_camera(stranger)
    other_device = await sig.device(cloud.ws_url, other.hello())
    await other_device.send("signal_answer", {"session_id": sid, "sdp": SDP_ANSWER})
    assert (await other_device.error())["code"] == "not_session_party"
    await viewer.nothing()

    # the owner's second tab is not a party of the first tab's session
    second_tab = await sig.viewer(cloud.ws_url, owner.token)
    await second_tab.send("signal_offer", {"session_id": sid, "sdp": SDP_OFFER})
    assert (await second_tab.error())["code"] == "not_session_party"
    await device.nothing()
    for c in (device, viewer, intruder, other_device, second_tab):
        await c.close()


async def test_offline_device_and_several_viewers(cloud: CloudProcess, api: ApiClient) -> None:
    owner = await api.account()
    camera = await api.owned_camera(owner)
    tab1 = await sig.viewer(cloud.ws_url, owner.token)
    await tab1.send("watch_request", {"device_id": camera.device_id})
    error = await tab1.error()
    assert error["code"] == "device_offline" and "offline" in error["message"]

    device = await sig.device(cloud.ws_url, camera.hello())
    assert (await tab1.recv("device_status"))["payload"] == {
        "device_id": camera.device_id,
        "online": True,
    }
    tab2 = await sig.viewer(cloud.ws_url, owner.token)
    s1 = await watch(tab1, device, camera.device_id)
    s2 = await watch(tab2, device, camera.device_id)
    assert s1 != s2
    await tab1.send("signal_offer", {"session_id": s1, "sdp": SDP_OFFER})
    await tab2.send("signal_offer", {"session_id": s2, "sdp": SDP_OFFER})
    got = {(await device.recv("signal_offer"))["payload"]["session_id"] for _ in range(2)}
    assert got == {s1, s2}
    await device.send("signal_answer", {"session_id": s2, "sdp": SDP_ANSWER})
    assert (await tab2.recv("signal_answer"))["payload"]["session_id"] == s2
    await tab1.nothing()

    # the device vanishes: both sessions end, both viewers hear it, and it shows offline
    await device.close()
    for tab, sid in ((tab1, s1), (tab2, s2)):
        ended = (await tab.recv("watch_ended"))["payload"]
        assert ended == {"session_id": sid, "reason": "device_disconnected"}
        await tab.became(camera.device_id, online=False)
    [listed] = (await api.http.get("/api/devices", headers=owner.auth)).json()["devices"]
    assert listed["online"] is False and listed["last_seen"] is not None
    await tab1.close()
    await tab2.close()


async def test_viewer_disconnect_ends_its_sessions(cloud: CloudProcess, api: ApiClient) -> None:
    _owner, camera, device, viewer = await owner_watching(cloud, api)
    sid = await watch(viewer, device, camera.device_id)
    await viewer.close()
    assert (await device.recv("watch_ended"))["payload"] == {
        "session_id": sid,
        "reason": "viewer_disconnected",
    }
    await device.close()


async def test_pairing_and_unpairing_reach_the_device(cloud: CloudProcess, api: ApiClient) -> None:
    owner = await api.account()
    camera = await api.camera()
    device = await sig.device(cloud.ws_url, camera.hello())
    await api.pair(owner, camera)
    assert (await device.recv("pairing_status"))["payload"] == {"paired": True}
    viewer = await sig.viewer(cloud.ws_url, owner.token)
    sid = await watch(viewer, device, camera.device_id)
    r = await api.http.delete(f"/api/devices/{camera.device_id}", headers=owner.auth)
    assert r.status_code == 204
    for side in (viewer, device):
        assert (await side.recv("watch_ended"))["payload"] == {
            "session_id": sid,
            "reason": "device_unpaired",
        }
    assert (await device.recv("pairing_status"))["payload"] == {"paired": False}
    await viewer.send("watch_request", {"device_id": camera.device_id})
    assert (await viewer.error())["code"] == "forbidden", "ownership is read on every request"
    await viewer.close()
    await device.close()


async def test_bad_messages_get_errors_and_the_socket_stays_usable(
    cloud: CloudProcess, api: ApiClient
) -> None:
    _owner, camera, device, viewer = await owner_watching(cloud, api)
    cases: list[tuple[str | bytes, str]] = [
        ("{", "invalid_json"),
        ("[]", "invalid_message"),
        ("42", "invalid_message"),
        ('{"payload": {}}', "invalid_message"),
        ('{"type": 7}', "invalid_message"),
        ('{"type": "launch_missiles", "payload": {}}', "unknown_type"),
        ('{"type": "watch_end", "payload": {}}', "invalid_message"),
        ('{"type": "watch_end", "payload": {"session_id": 12}}', "invalid_message"),
        ('{"type": "watch_end", "payload": {"session_id": ""}}', "invalid_message"),
        ('{"type": "watch_end", "payload": {"session_id": "x", "extra": 1}}', "invalid_message"),
        (
            '{"type": "signal_ice", "payload": {"session_id": "s", "candidate": 3}}',
            "invalid_message",
        ),
        ('{"type": "hello_ack", "payload": {}}', "unknown_type"),
        (json.dumps({"type": "heartbeat", "payload": {"pad": "x" * 70_000}}), "too_large"),
        (b"\x89PNG", "binary_not_supported"),
    ]
    for client in (viewer, device):
        for data, code in cases:
            await client.send_raw(data)
            error = await client.error()
            assert error["code"] == code, (data, error)
            assert error["message"]
        await client.send("heartbeat")
        await client.recv("heartbeat_ack")
    await device.send("watch_request", {"device_id": camera.device_id})
    assert (await device.error())["code"] == "unknown_type"
    # still fully working
    sid = await watch(viewer, device, camera.device_id)
    await viewer.send("watch_end", {"session_id": sid})
    assert (await device.recv("watch_ended"))["payload"]["reason"] == "viewer_ended"
    await viewer.close()
    await device.close()


async def test_a_second_connection_replaces_the_first(cloud: CloudProcess, api: ApiClient) -> None:
    owner = await api.account()
    camera = await api.owned_camera(owner)
    old = await sig.device(cloud.ws_url, camera.hello())
    new = await sig.device(cloud.ws_url, camera.hello())
    assert await old.closed() == 4409
    viewer = await sig.viewer(cloud.ws_url, owner.token)
    await watch(viewer, new, camera.device_id)  # presence stayed with the new one
    [listed] = (await api.http.get("/api/devices", headers=owner.auth)).json()["devices"]
    assert listed["online"] is True
    await viewer.close()
    await new.close()


@pytest.mark.parametrize("kind", ["embedded"])
async def test_presence_expires_when_heartbeats_stop(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for cloud in start_cloud(request, tmp_path, kind, MUMU_PRESENCE_TTL="5"):
        api = ApiClient(cloud.url)
        try:
            owner: Account = await api.account()
            camera: Camera = await api.owned_camera(owner)
            device = await sig.device(cloud.ws_url, camera.hello())  # then silent, socket open
            devices = "/api/devices"
            assert (await api.http.get(devices, headers=owner.auth)).json()["devices"][0]["online"]
            await asyncio.sleep(3)
            await device.send("heartbeat")
            await device.recv("heartbeat_ack")
            await asyncio.sleep(3.5)
            assert (await api.http.get(devices, headers=owner.auth)).json()["devices"][0]["online"]
            await asyncio.sleep(2.5)
            listed = (await api.http.get(devices, headers=owner.auth)).json()["devices"][0]
            assert listed["online"] is False
        finally:
            await api.aclose()


async def test_a_dropped_socket_may_come_back_and_resume(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """Media flows peer to peer: a party whose signaling socket drops gets a grace period."""
    owner, camera, device, viewer = await owner_watching(cloud, api)
    sid = await watch(viewer, device, camera.device_id)

    await viewer.drop()  # the viewer's network blips...
    viewer = await sig.viewer(cloud.ws_url, owner.token)
    await viewer.send("watch_resume", {"session_id": sid})  # ...and it is back in time
    assert (await viewer.recv("watch_resumed"))["payload"] == {"session_id": sid}

    await device.drop()  # the camera's socket drops and comes back
    device = await sig.device(cloud.ws_url, camera.hello())
    await asyncio.sleep(1.5)  # past the grace period (1 s in these tests)
    await viewer.send("signal_offer", {"session_id": sid, "sdp": SDP_OFFER})
    assert (await device.recv("signal_offer"))["payload"]["session_id"] == sid
    await device.nothing()

    # gone for good: ended after the grace period
    await viewer.drop()
    ended = (await device.recv("watch_ended", timeout=5))["payload"]
    assert ended == {"session_id": sid, "reason": "viewer_disconnected"}
    other = await sig.viewer(cloud.ws_url, owner.token)
    await other.send("watch_resume", {"session_id": sid})
    assert (await other.error())["code"] == "session_not_found"
    await other.close()
    await device.close()


async def test_the_history_records_how_the_video_travelled(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """``watch_path`` from the session's own viewer socket is recorded (relayed once: relayed);
    from anybody else it is refused and changes nothing."""
    owner, camera, device, viewer = await owner_watching(cloud, api)
    url = f"/api/devices/{camera.device_id}/sessions"

    async def paths() -> dict[str, str | None]:
        # the cloud reads a socket's frames in order: a heartbeat answered means the
        # watch_path before it was handled
        await viewer.send("heartbeat")
        await viewer.recv("heartbeat_ack")
        r = await api.http.get(url, headers=owner.auth)
        assert r.status_code == 200, r.text
        return {s["session_id"]: s["media_path"] for s in r.json()["sessions"]}

    direct = await watch(viewer, device, camera.device_id)
    relayed = await watch(viewer, device, camera.device_id)
    assert await paths() == {direct: None, relayed: None}, "nothing said yet"
    await viewer.send("watch_path", {"session_id": direct, "path": "direct"})
    await viewer.send("watch_path", {"session_id": relayed, "path": "direct"})
    await viewer.send("watch_path", {"session_id": relayed, "path": "relay"})  # ICE restart
    await viewer.send("watch_path", {"session_id": relayed, "path": "direct"})
    assert await paths() == {direct: "direct", relayed: "relay"}

    # another socket of the same account, the camera, a bad path: refused, nothing changes
    other_tab = await sig.viewer(cloud.ws_url, owner.token)
    await other_tab.send("watch_path", {"session_id": direct, "path": "relay"})
    assert (await other_tab.error())["code"] == "not_session_party"
    await device.send("watch_path", {"session_id": direct, "path": "relay"})
    assert (await device.error())["code"] == "unknown_type"
    await viewer.send("watch_path", {"session_id": direct, "path": "carrier-pigeon"})
    assert (await viewer.error())["code"] == "invalid_message"
    assert await paths() == {direct: "direct", relayed: "relay"}

    # an ended session keeps what it had
    await viewer.send("watch_end", {"session_id": direct})
    await viewer.send("watch_path", {"session_id": direct, "path": "relay"})
    assert (await viewer.error())["code"] == "session_not_found"
    assert await paths() == {direct: "direct", relayed: "relay"}
    for client in (other_tab, device, viewer):
        await client.close()
