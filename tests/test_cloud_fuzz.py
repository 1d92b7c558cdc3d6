"""Property-based: arbitrary JSON thrown at both WebSocket endpoints and the HTTP API.

No 500s, no dropped connections for authenticated senders, and nothing stored changes.
Sync clients (``websockets.sync``, ``httpx.Client``) so hypothesis drives plain functions.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from protocol.messages import DIRECTIONS, message_types
from tests.cloud_fixtures import BACKENDS, start_cloud
from tests.cloud_process import CloudProcess

TYPES = sorted({t for union in DIRECTIONS.values() for t in message_types(union)})
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
# Messages that look nearly right reach deeper than random JSON does.
field_names = st.sampled_from(
    ["session_id", "device_id", "sdp", "candidate", "token", "device_token", "type", "reason"]
)
payloads = st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=4)
near_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.text(max_size=10)},
    optional={"payload": payloads | json_values},
)
ws_frames = (json_values | near_messages).map(json.dumps)


@dataclass
class World:
    cloud: CloudProcess
    owner_auth: dict[str, str]
    device_id: str
    device_hello: str
    viewer_hello: str

    def snapshot(self) -> Any:
        with httpx.Client(base_url=self.cloud.url) as h:
            devices = h.get("/api/devices", headers=self.owner_auth).json()
            sessions = h.get(
                f"/api/devices/{self.device_id}/sessions", headers=self.owner_auth
            ).json()
        for d in devices["devices"]:
            d.pop("online")
            d.pop("last_seen")
        return devices, sessions


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    for cloud in start_cloud(request, tmp_path_factory.mktemp("fuzz"), request.param):
        with httpx.Client(base_url=cloud.url) as h:
            email = f"fuzz-{time.monotonic_ns()}@example.com"
            h.post("/api/auth/register", json={"email": email, "password": "fuzzing pass 1"})
            token = h.post(
                "/api/auth/login", json={"email": email, "password": "fuzzing pass 1"}
            ).json()["access_token"]
            auth = {"authorization": f"Bearer {token}"}
            cam = h.post("/api/devices/register", json={"name": "Fuzz cam"}).json()
            code = h.post(
                "/api/pairing/generate",
                params={"device_id": cam["device_id"]},
                headers={"authorization": f"Bearer {cam['device_token']}"},
            ).json()["code"]
            assert h.post("/api/devices/pair", json={"code": code}, headers=auth).status_code == 200
        yield World(
            cloud=cloud,
            owner_auth=auth,
            device_id=cam["device_id"],
            device_hello=json.dumps({"type": "hello", "payload": cam}),
            viewer_hello=json.dumps({"type": "hello", "payload": {"token": token}}),
        )


@contextlib.contextmanager
def authenticated(world: World, role: str) -> Iterator[ClientConnection]:
    with connect(f"{world.cloud.ws_url}/ws/{role}", max_size=2**21) as ws:
        ws.send(world.device_hello if role == "device" else world.viewer_hello)
        assert json.loads(ws.recv(timeout=5))["type"] == "hello_ack"
        yield ws


@pytest.mark.parametrize("role", ["device", "viewer"])
def test_any_frame_gets_one_answer_and_the_socket_survives(world: World, role: str) -> None:
    before = world.snapshot()

    @FUZZ
    @given(frame=ws_frames)
    def check(frame: str) -> None:
        assert ws is not None
        ws.send(frame)
        answer = json.loads(ws.recv(timeout=5))
        assert answer["type"] in {"error", "heartbeat_ack"}, answer
        if answer["type"] == "error":
            assert answer["payload"]["code"] != "internal", (frame, answer)
            assert answer["payload"]["message"]

    with authenticated(world, role) as ws:
        check()
        ws.send(json.dumps({"type": "heartbeat", "payload": {}}))
        assert json.loads(ws.recv(timeout=5))["type"] == "heartbeat_ack"
    assert world.snapshot() == before


@pytest.mark.parametrize("role", ["device", "viewer"])
def test_any_first_frame_is_refused_cleanly(world: World, role: str) -> None:
    @FUZZ
    @given(frame=ws_frames)
    def check(frame: str) -> None:
        with connect(f"{world.cloud.ws_url}/ws/{role}") as ws:
            ws.send(frame)
            answer = json.loads(ws.recv(timeout=5))
            assert answer["type"] == "error" and answer["payload"]["code"] != "internal"

    check()


ENDPOINTS = [
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/account/password"),
    ("POST", "/api/pairing/preview"),
    ("POST", "/api/devices/retire?device_id={device_id}"),
    ("POST", "/api/devices/pair"),
    ("PATCH", "/api/devices/{device_id}"),
    ("PATCH", "/api/devices/not-a-device"),
    ("POST", "/api/pairing/generate?device_id={device_id}"),
    ("GET", "/api/devices/{device_id}/sessions"),
    ("POST", "/api/devices/{device_id}/invites"),
    ("POST", "/api/invite-links/preview"),
    ("POST", "/api/invite-links/accept"),
    ("POST", "/api/auth/verify"),
    ("POST", "/api/auth/forgot"),
    ("POST", "/api/auth/reset"),
    ("POST", "/api/account/email"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_any_body_gets_a_clear_4xx(world: World, method: str, path: str) -> None:
    before = world.snapshot()
    url = path.format(device_id=world.device_id)
    rename = method == "PATCH" and "{device_id}" in path

    @FUZZ
    @given(body=json_values, raw=st.booleans(), junk=st.binary(max_size=64))
    def check(body: Any, raw: bool, junk: bytes) -> None:
        if rename and isinstance(body, dict) and isinstance(body.get("name"), str):
            body = {**body, "name": 7}  # a valid rename would change what is stored
        with httpx.Client(base_url=world.cloud.url) as h:
            content = junk if raw else json.dumps(body).encode()
            r = h.request(
                method,
                url,
                content=content,
                headers={**world.owner_auth, "content-type": "application/json"},
            )
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            error = r.json()["error"]
            assert error["code"] and error["message"]

    check()
    assert world.snapshot() == before
