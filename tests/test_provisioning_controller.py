"""The pairing controller against a real HTTP server (a tiny Litestar app under uvicorn, in the
test's own event loop) implementing ``POST /api/pairing/generate``, and against the real cloud."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar, Request, Response, post

from device.provisioning import ConnectionState, PairingController, Phase, Screen
from device.provisioning.pairing_api import (
    AlreadyPaired,
    CredentialsRejected,
    PairingUnavailable,
    request_pairing_code,
)
from device.provisioning.png import PngDisplay
from tests.services import free_port, require

DEVICE_ID = "dev-1"
TOKEN = "secret-device-token"


def qr_decoder() -> Any:
    """zxing-cpp (the dev extra has it): a real QR decoder for the rendered images."""
    try:
        import zxingcpp
    except ImportError:
        require(False, "QR decoder zxing-cpp (pip install zxing-cpp)")
    return zxingcpp


@dataclass
class Reply:
    status: int = 201
    ttl: float = 300.0
    headers: dict[str, str] = field(default_factory=dict)
    #: Shift of the server's clock (``expires_at`` and the Date header) from the real one.
    clock_offset: float = 0.0
    body: bytes | None = None


class PairingServer:
    """``POST /api/pairing/generate`` as the cloud answers it, with a scripted reply."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.reply = Reply()
        self.requests: list[tuple[str | None, str | None]] = []  # (device_id, authorization)
        self.issued: list[dict[str, Any]] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

        @post("/api/pairing/generate", status_code=201)
        async def generate(request: Request[Any, Any, Any]) -> Response[Any]:
            return self._answer(request)

        self.app = Litestar([generate])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answer(self, request: Request[Any, Any, Any]) -> Response[Any]:
        auth = request.headers.get("authorization")
        self.requests.append((request.query_params.get("device_id"), auth))
        reply = self.reply
        now = time.time() + reply.clock_offset
        headers = {"date": email.utils.formatdate(now, usegmt=True), **reply.headers}
        if reply.body is not None:
            return Response(reply.body, status_code=reply.status, headers=headers)
        if auth != f"Bearer {TOKEN}":
            return Response(
                {"error": {"code": "forbidden", "message": "only the camera itself"}},
                status_code=403,
                headers=headers,
            )
        if reply.status != 201:
            error = {409: "already_paired", 429: "rate_limited"}.get(reply.status, "internal")
            body = {"error": {"code": error, "message": "scripted"}}
            return Response(body, status_code=reply.status, headers=headers)
        n = len(self.issued)
        issued = {
            "code": f"{100000 + n * 111:06d}",
            "expires_at": now + reply.ttl,
            "claim_url": f"https://cam.example.com/#/claim/claim-token-{n:04d}",
        }
        self.issued.append(issued)
        return Response(issued, status_code=201, headers=headers)

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="warning",
            lifespan="off",
            date_header=False,  # the app sends its own (possibly skewed) Date
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None


class RecordingDisplay:
    """A display that keeps what it was shown (the controller calls it from a worker thread)."""

    def __init__(self) -> None:
        self.screens: list[Screen] = []
        self.closed = False
        self._lock = threading.Lock()

    def show(self, screen: Screen) -> None:
        with self._lock:
            self.screens.append(screen)

    def close(self) -> None:
        self.closed = True

    @property
    def last(self) -> Screen | None:
        with self._lock:
            return self.screens[-1] if self.screens else None


async def eventually(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


def showing(display: RecordingDisplay, phase: Phase, code: str | None = None) -> Callable[[], bool]:
    def check() -> bool:
        last = display.last
        if last is None or last.phase is not phase:
            return False
        return code is None or (last.code is not None and last.code.code == code)

    return check


@pytest.fixture
async def server() -> AsyncIterator[PairingServer]:
    s = PairingServer()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@dataclass
class Running:
    controller: PairingController
    display: RecordingDisplay
    task: asyncio.Task[None]


async def start(url: str, display: Any = None, **kwargs: Any) -> Running:
    display = display if display is not None else RecordingDisplay()
    kwargs = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "min_refresh_s": 0.1, **kwargs}
    controller = PairingController(display, url, DEVICE_ID, TOKEN, **kwargs)
    return Running(controller, display, asyncio.create_task(controller.run()))


@pytest.fixture
async def running(server: PairingServer) -> AsyncIterator[Running]:
    r = await start(server.url)
    try:
        yield r
    finally:
        await r.controller.close()
        await r.task


# --- the controller ----------------------------------------------------------------------------


async def test_connecting_until_the_cloud_says_whether_the_device_is_paired(
    running: Running, server: PairingServer
) -> None:
    await eventually("connecting screen", showing(running.display, Phase.CONNECTING))
    await asyncio.sleep(0.2)
    assert server.requests == []  # no code asked for while pairing state is unknown


async def test_unpaired_device_shows_a_code_with_its_claim_link(
    running: Running, server: PairingServer
) -> None:
    running.controller.set_connection_state(ConnectionState.CONNECTED)
    running.controller.set_paired(False)
    await eventually("a code", showing(running.display, Phase.PAIRING, "100000"))
    screen = running.display.last
    assert screen is not None and screen.code is not None
    assert screen.code.claim_url == "https://cam.example.com/#/claim/claim-token-0000"
    assert screen.site == "cam.example.com"
    assert server.requests == [(DEVICE_ID, f"Bearer {TOKEN}")]
    assert running.controller.code == screen.code


async def test_code_is_renewed_before_it_expires(server: PairingServer) -> None:
    server.reply.ttl = 1.0
    r = await start(server.url, refresh_margin_s=0.6)
    try:
        r.controller.set_paired(False)
        await eventually("first code", showing(r.display, Phase.PAIRING, "100000"))
        first_seen = time.monotonic()
        await eventually("second code", showing(r.display, Phase.PAIRING, "100111"), timeout=5)
        # renewed ahead of expiry (0.4 s after issue: 1 s lifetime - 0.6 s margin), not after it
        assert time.monotonic() - first_seen < 1.0 + 2.0  # generous: a loaded machine
        phases = {s.phase for s in r.display.screens}
        assert Phase.ERROR not in phases  # the display went from one code to the next
    finally:
        await r.controller.close()
        await r.task


async def test_network_errors_show_an_error_and_retry_with_backoff() -> None:
    port = free_port()  # nothing listens yet: connection refused
    r = await start(f"http://127.0.0.1:{port}")
    server = PairingServer(port)
    try:
        r.controller.set_paired(False)
        await eventually("error screen", showing(r.display, Phase.ERROR))
        last = r.display.last
        assert last is not None and "Cloud unreachable" in last.detail
        await server.start()
        await eventually("code after recovery", showing(r.display, Phase.PAIRING, "100000"))
    finally:
        await r.controller.close()
        await r.task
        await server.stop()


async def test_backoff_grows_between_failed_attempts(server: PairingServer) -> None:
    server.reply.status = 500
    stamps: list[float] = []
    original = server._answer

    def stamped(request: Request[Any, Any, Any]) -> Response[Any]:
        stamps.append(time.monotonic())
        return original(request)

    server._answer = stamped  # type: ignore[method-assign]
    r = await start(server.url, backoff_initial_s=0.1, backoff_max_s=0.4)
    try:
        r.controller.set_paired(False)
        await eventually("five attempts", lambda: len(stamps) >= 5, timeout=10)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert gaps[0] >= 0.08 * 0.8  # 0.1 s (x0.8-1.0 jitter)
        assert gaps[2] >= 0.4 * 0.8 * 0.95  # capped at backoff_max_s, not hammering
        last = r.display.last
        assert last is not None and last.phase is Phase.ERROR
        assert "cloud answered 500" in last.detail
    finally:
        await r.controller.close()
        await r.task


async def test_a_valid_code_stays_while_its_renewal_fails_then_goes(server: PairingServer) -> None:
    server.reply.ttl = 1.2
    r = await start(server.url, refresh_margin_s=0.9)
    try:
        r.controller.set_paired(False)
        await eventually("first code", showing(r.display, Phase.PAIRING, "100000"))
        server.reply.status = 503  # renewal (0.3 s after issue) fails
        await eventually(
            "code kept, renewal failing",
            lambda: (
                (s := r.display.last) is not None
                and s.code is not None
                and "renewal failed" in s.detail
            ),
        )
        await eventually("error once expired", showing(r.display, Phase.ERROR), timeout=5)
        server.reply.status = 201
        await eventually("a new code", showing(r.display, Phase.PAIRING, "100111"), timeout=5)
    finally:
        await r.controller.close()
        await r.task


async def test_pairing_switches_the_display_to_online_and_stops_codes(
    running: Running, server: PairingServer
) -> None:
    c = running.controller
    c.set_connection_state(ConnectionState.CONNECTED)
    c.set_paired(False)
    await eventually("a code", showing(running.display, Phase.PAIRING, "100000"))
    c.set_paired(True)  # pairing_status {paired: true}
    await eventually("online", showing(running.display, Phase.ONLINE))
    assert c.code is None
    c.set_viewers(2)
    await eventually(
        "viewer count", lambda: (s := running.display.last) is not None and s.detail == "2 viewers"
    )
    count = len(server.requests)
    await asyncio.sleep(0.3)
    assert len(server.requests) == count == 1

    c.set_connection_state(ConnectionState.CONNECTING, "Reconnecting")
    await eventually("reconnecting", showing(running.display, Phase.CONNECTING))
    c.set_connection_state(ConnectionState.ERROR, "Cloud refused hello")
    await eventually("error", showing(running.display, Phase.ERROR))

    c.set_connection_state(ConnectionState.CONNECTED)
    c.set_paired(False)  # the owner unpaired it: a new code at once
    await eventually("new code", showing(running.display, Phase.PAIRING, "100111"))


async def test_already_paired_answer_means_paired(running: Running, server: PairingServer) -> None:
    server.reply.status = 409
    running.controller.set_connection_state(ConnectionState.CONNECTED)
    running.controller.set_paired(False)
    await eventually("online", showing(running.display, Phase.ONLINE))
    assert running.controller.paired is True


async def test_rejected_credentials_show_an_error(server: PairingServer) -> None:
    r = await start(server.url)
    r.controller.set_credentials(DEVICE_ID, "wrong-token")
    try:
        r.controller.set_paired(False)
        await eventually("error", showing(r.display, Phase.ERROR))
        last = r.display.last
        assert last is not None and "credentials rejected" in last.detail
        r.controller.set_credentials(DEVICE_ID, TOKEN)  # registered anew
        r.controller.set_paired(False)
        await eventually("code", showing(r.display, Phase.PAIRING, "100000"))
    finally:
        await r.controller.close()
        await r.task


async def test_close_stops_run_and_closes_the_display(running: Running) -> None:
    await eventually("first screen", lambda: running.display.last is not None)
    await running.controller.close()
    await asyncio.wait_for(running.task, 2)
    assert running.display.closed
    await running.controller.close()  # twice is harmless


async def test_png_display_gets_the_code_and_a_scannable_qr(
    server: PairingServer, tmp_path: Path
) -> None:
    zxingcpp = qr_decoder()
    from PIL import Image

    path = tmp_path / "screen.png"
    r = await start(server.url, display=PngDisplay(path))
    try:
        r.controller.set_paired(False)
        await eventually(
            "png with a code",
            lambda: (
                r.controller.shown is not None
                and r.controller.shown.phase is Phase.PAIRING
                and r.controller.shown.code is not None
            ),
        )
        decoded = zxingcpp.read_barcodes(Image.open(path))
        assert [d.text for d in decoded] == [server.issued[0]["claim_url"]]
    finally:
        await r.controller.close()
        await r.task


# --- the HTTP call itself ----------------------------------------------------------------------


async def test_request_errors_are_typed(server: PairingServer) -> None:
    async with httpx.AsyncClient() as client:
        issued = await request_pairing_code(client, server.url + "/", DEVICE_ID, TOKEN)
        assert 299 < issued.valid_for_s <= 300.5
        with pytest.raises(CredentialsRejected, match="forbidden"):
            await request_pairing_code(client, server.url, DEVICE_ID, "nope")
        server.reply.status = 409
        with pytest.raises(AlreadyPaired, match="already_paired"):
            await request_pairing_code(client, server.url, DEVICE_ID, TOKEN)
        server.reply = Reply(status=429, headers={"retry-after": "7"})
        with pytest.raises(PairingUnavailable) as limited:
            await request_pairing_code(client, server.url, DEVICE_ID, TOKEN)
        assert limited.value.retry_after_s == 7.0
        server.reply = Reply(status=201, body=b'{"code": "12345", "expires_at": 1}')
        with pytest.raises(PairingUnavailable, match="unexpected answer"):
            await request_pairing_code(client, server.url, DEVICE_ID, TOKEN)
        server.reply = Reply(status=502, body=b"<html>bad gateway</html>")
        with pytest.raises(PairingUnavailable, match="502"):
            await request_pairing_code(client, server.url, DEVICE_ID, TOKEN)
    async with httpx.AsyncClient() as client:
        with pytest.raises(PairingUnavailable, match="connection refused"):
            await request_pairing_code(client, f"http://127.0.0.1:{free_port()}", DEVICE_ID, TOKEN)


async def test_lifetime_is_measured_on_the_clouds_clock_when_the_device_clock_is_wrong(
    server: PairingServer,
) -> None:
    # A Pi without network time may think it is hours earlier than it is.
    server.reply.clock_offset = 3 * 3600.0
    async with httpx.AsyncClient() as client:
        issued = await request_pairing_code(client, server.url, DEVICE_ID, TOKEN)
    assert 298 < issued.valid_for_s <= 301


# --- against the real cloud ----------------------------------------------------------------------


async def test_claiming_the_qr_code_of_the_real_cloud_pairs_the_device(tmp_path: Path) -> None:
    """The whole pairing path as the agent will drive it: hello_ack says unpaired, the PNG
    shows a code and QR, a user claims the QR's token, pairing_status says paired."""
    from urllib.parse import urlsplit

    from websockets.asyncio.client import connect

    import protocol
    from protocol.messages import (
        CloudToDevice,
        DeviceHello,
        DeviceHelloPayload,
        HelloAck,
        PairingStatus,
    )
    from tests.cloud_process import ApiClient, CloudProcess

    zxingcpp = qr_decoder()
    from PIL import Image

    cloud = CloudProcess(tmp_path / "cloud")
    await asyncio.to_thread(cloud.start)
    api = ApiClient(cloud.url)
    path = tmp_path / "screen.png"
    try:
        camera = await api.camera()
        owner = await api.account()
        controller = PairingController(
            PngDisplay(path), cloud.url, camera.device_id, camera.device_token
        )
        task = asyncio.create_task(controller.run())
        async with connect(cloud.ws_url + "/ws/device") as ws:
            hello = DeviceHello(payload=DeviceHelloPayload(camera.device_id, camera.device_token))
            await ws.send(protocol.encode(hello))
            ack = protocol.decode(str(await ws.recv()), CloudToDevice)
            assert isinstance(ack, HelloAck) and ack.payload.paired is False
            controller.set_connection_state(ConnectionState.CONNECTED)
            controller.set_paired(ack.payload.paired)

            await eventually(
                "a code on the PNG",
                lambda: (s := controller.shown) is not None and s.code is not None,
                timeout=10,
            )
            shown = controller.shown
            assert shown is not None and shown.code is not None
            assert len(shown.code.code) == 6 and shown.code.code.isdigit()
            [qr] = zxingcpp.read_barcodes(Image.open(path))
            assert qr.text == shown.code.claim_url
            claim_token = urlsplit(qr.text).fragment.removeprefix("/claim/")
            r = await api.http.post(
                "/api/devices/pair", json={"claim_token": claim_token}, headers=owner.auth
            )
            assert r.status_code == 200, r.text

            status = protocol.decode(str(await asyncio.wait_for(ws.recv(), 10)), CloudToDevice)
            assert isinstance(status, PairingStatus) and status.payload.paired is True
            controller.set_paired(status.payload.paired)
            await eventually(
                "online", lambda: (s := controller.shown) is not None and s.phase is Phase.ONLINE
            )
        # a device that (wrongly) thinks it is unpaired is told otherwise by the cloud (409)
        controller.set_paired(False)
        await eventually("409 means paired", lambda: controller.paired is True)
        await controller.close()
        await task
    finally:
        await api.aclose()
        await asyncio.to_thread(cloud.stop)
