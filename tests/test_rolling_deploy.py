"""A rolling deploy: two cloud processes on PostgreSQL + Redis behind nginx (the repository's
config), restarted one after the other with SIGTERM while cameras, a watching viewer and HTTP
clients keep going through nginx.  Nobody sees a 5xx, no camera is away for more than a few
seconds, and the live session survives both restarts (its parties come back and resume)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.browser import NGINX_FAIL_TIMEOUT_S, Nginx, nginx_server
from tests.cloud_fixtures import RELAXED, backend_env
from tests.cloud_process import ApiClient, CloudProcess
from tests.services import free_port

DEVICES = 20


@dataclass
class Device:
    """A camera's signaling client: heartbeats, and comes back like the agent does (within the
    window of a 1012, or after a short backoff); records how long it was away each time."""

    ws_url: str
    hello: dict[str, object]
    gaps: list[float] = field(default_factory=list)
    inbox: list[dict[str, object]] = field(default_factory=list)
    ws: websockets.ClientConnection | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        lost_at: float | None = None
        failures = 0
        while True:
            delay = 0.0
            try:
                async with websockets.connect(f"{self.ws_url}/ws/device") as ws:
                    await ws.send(json.dumps(self.hello))
                    ack = json.loads(await ws.recv())
                    assert ack["type"] == "hello_ack", ack
                    failures = 0
                    if lost_at is not None:
                        self.gaps.append(time.monotonic() - lost_at)
                    self.ws = ws
                    self.connected.set()
                    async for frame in ws:
                        self.inbox.append(json.loads(frame))
            except ConnectionClosed as exc:
                window = re.findall(r"reconnect_within=(\d+)", exc.rcvd.reason if exc.rcvd else "")
                delay = random.uniform(0, float(window[0])) if window else 0.2
            except (OSError, websockets.InvalidStatus, TimeoutError):
                failures += 1
                delay = random.uniform(0, min(2.0, 0.1 * 2**failures))
            if self.ws is not None:
                lost_at = time.monotonic()
            self.ws = None
            self.connected.clear()
            await asyncio.sleep(delay)


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Nginx, list[CloudProcess]]]:
    env = {
        **RELAXED,
        **backend_env("scaled", request),
        "MUMU_TRUSTED_PROXIES": "127.0.0.1",
        "MUMU_RESUME_GRACE": "20",
    }
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        clouds = [
            stack.enter_context(CloudProcess(tmp_path / f"cloud-{i}", env=env, port=port))
            for i, port in enumerate(ports)
        ]
        nginx = stack.enter_context(nginx_server(ports))
        yield nginx, clouds


async def test_restarting_one_process_then_the_other_loses_nobody(
    stack: tuple[Nginx, list[CloudProcess]],
) -> None:
    nginx, clouds = stack
    api = ApiClient(nginx.url)
    statuses: list[int] = []
    stop = asyncio.Event()
    try:
        owner = await api.account()
        cameras = [await api.owned_camera(owner) for _ in range(DEVICES)]
        devices = [Device(nginx.ws_url, camera.hello()) for camera in cameras]
        tasks = [asyncio.create_task(d.run()) for d in devices]
        await asyncio.gather(*(d.connected.wait() for d in devices))

        # a viewer watching the first camera
        viewer = await websockets.connect(f"{nginx.ws_url}/ws/viewer")
        await viewer.send(json.dumps({"type": "hello", "payload": {"token": owner.token}}))
        await _recv(viewer, "hello_ack")
        await viewer.send(
            json.dumps({"type": "watch_request", "payload": {"device_id": cameras[0].device_id}})
        )
        sid = (await _recv(viewer, "watch_ready"))["payload"]["session_id"]

        async def http_load() -> None:
            async with httpx.AsyncClient(base_url=nginx.url) as http:
                while not stop.is_set():
                    r = await http.get("/api/devices", headers=owner.auth)
                    statuses.append(r.status_code)
                    await asyncio.sleep(0.02)

        load = asyncio.create_task(http_load())
        for cloud in clouds:  # the deploy: one process after the other
            assert cloud.proc is not None
            cloud.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(cloud.proc.wait, 30)
            await asyncio.to_thread(cloud.start)  # returns once /readyz says 200
            await asyncio.gather(*(d.connected.wait() for d in devices))
            # the documented procedure: leave nginx time to take the process back (it skips a
            # process for fail_timeout after its last failed attempt, which may have come just
            # before the process was ready) before restarting the next one
            await asyncio.sleep(2 * NGINX_FAIL_TIMEOUT_S + 1)
            # the viewer: back on whichever process nginx picks, resuming its session
            if viewer.close_code is not None or not await _alive(viewer):
                viewer = await websockets.connect(f"{nginx.ws_url}/ws/viewer")
                await viewer.send(json.dumps({"type": "hello", "payload": {"token": owner.token}}))
                await _recv(viewer, "hello_ack")
                await viewer.send(
                    json.dumps({"type": "watch_resume", "payload": {"session_id": sid}})
                )
                await _recv(viewer, "watch_resumed")
        stop.set()
        await load

        # the session lived through both restarts: signals still flow both ways
        await viewer.send(
            json.dumps({"type": "signal_ice", "payload": {"session_id": sid, "candidate": None}})
        )
        deadline = time.monotonic() + 10
        while not any(m.get("type") == "signal_ice" for m in devices[0].inbox):
            assert time.monotonic() < deadline, devices[0].inbox
            await asyncio.sleep(0.05)
        ended = [m for d in devices for m in d.inbox if m.get("type") == "watch_ended"]
        assert ended == [], ended
        assert statuses and all(s < 500 for s in statuses), (
            sorted(set(statuses)),
            nginx.error_log(),
        )
        gaps = [g for d in devices for g in d.gaps]
        assert gaps, "the devices were never disconnected: the deploy did not happen"
        assert max(gaps) < 8.0, sorted(gaps)[-5:]
        for task in tasks:
            task.cancel()
        await viewer.close()
    finally:
        stop.set()
        await api.aclose()


async def _recv(ws: websockets.ClientConnection, kind: str) -> dict[str, object]:
    async with asyncio.timeout(10):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return dict(message)


async def _alive(ws: websockets.ClientConnection) -> bool:
    try:
        await ws.send(json.dumps({"type": "heartbeat", "payload": {}}))
        await _recv(ws, "heartbeat_ack")
    except (ConnectionClosed, TimeoutError):
        return False
    return True
