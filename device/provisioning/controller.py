"""The pairing controller: keeps a valid pairing code on the display while nobody owns the
device, and the device's state (connecting, online, error) otherwise.

The agent feeds it what it learns from the cloud's WebSocket::

    controller = PairingController(display, base_url, device_id, device_token)
    task = asyncio.create_task(controller.run())
    controller.set_connection_state(ConnectionState.CONNECTING)
    ...                                     # hello_ack arrives
    controller.set_connection_state(ConnectionState.CONNECTED)
    controller.set_paired(ack.payload.paired)
    ...                                     # pairing_status arrives
    controller.set_paired(msg.payload.paired)
    ...
    await controller.close()                # stops run(), closes the display

While unpaired it fetches a code (``POST /api/pairing/generate``), shows it, and fetches the
next one ``refresh_margin_s`` before the current one expires. Network errors are retried with
exponential backoff (with jitter) and shown as an error; a still-valid code stays on screen
meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from urllib.parse import urlsplit

import httpx

from device.provisioning.display import Display
from device.provisioning.pairing_api import (
    AlreadyPaired,
    CredentialsRejected,
    PairingUnavailable,
    request_pairing_code,
)
from device.provisioning.screen import PairingCode, Phase, Screen

log = logging.getLogger(__name__)


class ConnectionState(enum.StrEnum):
    """The agent's WebSocket to the cloud, as far as the display cares."""

    #: Connecting or reconnecting; no ``hello_ack`` yet.
    CONNECTING = "connecting"
    #: ``hello_ack`` received.
    CONNECTED = "connected"
    #: The agent gave up for now (cloud unreachable, hello refused); it says why in ``detail``.
    ERROR = "error"


class PairingController:
    def __init__(
        self,
        display: Display,
        base_url: str,
        device_id: str,
        device_token: str,
        *,
        client: httpx.AsyncClient | None = None,
        refresh_margin_s: float = 45.0,
        min_refresh_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        request_timeout_s: float = 10.0,
    ) -> None:
        """``base_url`` is the cloud's (``https://cam.example.com``). ``client`` is an
        ``httpx.AsyncClient`` to share (the caller closes it); by default the controller makes
        and closes its own. A code is renewed ``refresh_margin_s`` before it expires, but no
        sooner than half its lifetime and ``min_refresh_s`` after it arrived."""
        self._display = display
        self._base_url = base_url
        self._device_id = device_id
        self._device_token = device_token
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=request_timeout_s)
        self._refresh_margin_s = refresh_margin_s
        self._min_refresh_s = min_refresh_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s

        self._paired: bool | None = None
        self._connection = ConnectionState.CONNECTING
        self._connection_detail = ""
        self._viewers = 0
        self._camera_problem = ""
        self._code: PairingCode | None = None
        self._code_deadline = 0.0  # time.monotonic() after which the code is stale
        self._problem = ""  # why the last code request failed; "" after a success

        self._changed = asyncio.Event()  # the screen may differ: render it
        self._wake = asyncio.Event()  # the code loop should re-evaluate now
        self._stop = asyncio.Event()
        self._shown: Screen | None = None
        self._running: asyncio.Task[None] | None = None
        self._closed = False

    # --- what the agent tells us ----------------------------------------------------------

    @property
    def paired(self) -> bool | None:
        """What the cloud last said (``None`` until it said anything)."""
        return self._paired

    @property
    def code(self) -> PairingCode | None:
        """The code on display, if any."""
        return self._code

    @property
    def screen(self) -> Screen:
        """What the display should show now."""
        return self._compose()

    @property
    def shown(self) -> Screen | None:
        """What the display was last given (``None`` before the first render)."""
        return self._shown

    def set_paired(self, paired: bool) -> None:
        """From ``hello_ack.payload.paired`` and ``pairing_status.payload.paired``."""
        if paired is self._paired:
            return
        log.info("device is %s", "paired" if paired else "not paired: showing a pairing code")
        self._paired = paired
        self._code = None
        self._problem = ""
        self._wake.set()
        self._changed.set()

    def set_connection_state(self, state: ConnectionState, detail: str = "") -> None:
        if (state, detail) == (self._connection, self._connection_detail):
            return
        self._connection = state
        self._connection_detail = detail
        if state is ConnectionState.CONNECTED and self._problem:
            self._wake.set()  # the cloud is back: retry the code now, not at the end of backoff
        self._changed.set()

    def set_viewers(self, count: int) -> None:
        """How many viewers are watching (shown on the online screen)."""
        if count != self._viewers:
            self._viewers = count
            self._changed.set()

    def set_camera_problem(self, problem: str) -> None:
        """Why the camera does not work (``""``: it works, or nobody has asked it to yet).
        While there is one, a paired device shows it as an error."""
        if problem != self._camera_problem:
            self._camera_problem = problem
            self._changed.set()

    def set_credentials(self, device_id: str, device_token: str) -> None:
        """After the agent registered anew (factory reset): use the new id and token."""
        self._device_id = device_id
        self._device_token = device_token
        self._paired = None
        self._code = None
        self._problem = ""
        self._wake.set()
        self._changed.set()

    # --- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch codes and render screens until ``close()`` (or cancellation)."""
        if self._running is not None:
            raise RuntimeError("PairingController.run() is already running")
        self._running = asyncio.current_task()
        self._changed.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                codes = tasks.create_task(self._code_loop(), name="pairing-codes")
                render = tasks.create_task(self._render_loop(), name="pairing-display")
                await self._stop.wait()
                codes.cancel()
                render.cancel()
        finally:
            self._running = None

    async def close(self) -> None:
        """Stop ``run()``, turn the display off (close it) and close our HTTP client."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        running = self._running
        if running is not None and running is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await running
        try:
            await asyncio.to_thread(self._display.close)
        except Exception:
            log.exception("closing the display failed")
        if self._own_client:
            await self._client.aclose()

    # --- the code loop ------------------------------------------------------------------------

    async def _code_loop(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            if self._code is not None and time.monotonic() >= self._code_deadline:
                log.info("pairing code expired before a new one arrived")
                self._code = None
                self._changed.set()
            if self._paired is not False:
                failures = 0
                await self._wake.wait()
                continue
            delay = await self._fetch_code(failures)
            failures = 0 if not self._problem else failures + 1
            if delay is None:
                continue
            if self._code is not None:  # wake up when it expires, to take it off the screen
                delay = min(delay, max(0.0, self._code_deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _fetch_code(self, failures: int) -> float | None:
        """Ask for a code; the seconds to wait before the next request (None: go again now)."""
        device_id = self._device_id
        try:
            issued = await request_pairing_code(
                self._client, self._base_url, device_id, self._device_token
            )
        except AlreadyPaired:
            log.info("the cloud says the device already has an owner")
            self.set_paired(True)
            return None
        except CredentialsRejected as exc:
            delay = self._backoff(failures)
            log.warning(
                "the cloud rejected the device credentials (%s); retry in %.0f s", exc, delay
            )
            self._fail(f"Device credentials rejected; retrying in {delay:.0f} s")
            return delay
        except PairingUnavailable as exc:
            delay = max(self._backoff(failures), exc.retry_after_s or 0.0)
            log.warning("no pairing code: %s; retry in %.0f s", exc, delay)
            self._fail(f"Cloud unreachable ({exc}); retrying in {delay:.0f} s")
            return delay
        if self._paired is not False or device_id != self._device_id:
            return None  # things changed while we waited: this code is moot
        # A code that looks (nearly) expired on arrival means the clocks disagree: show it anyway.
        valid = max(issued.valid_for_s, self._min_refresh_s)
        self._code = issued.code
        self._code_deadline = time.monotonic() + valid
        self._problem = ""
        self._changed.set()
        refresh = max(valid - self._refresh_margin_s, valid / 2, self._min_refresh_s)
        log.info("pairing code issued, valid for %.0f s; next one in %.0f s", valid, refresh)
        return refresh

    def _fail(self, problem: str) -> None:
        self._problem = problem
        self._changed.set()

    def _backoff(self, failures: int) -> float:
        base = min(self._backoff_max_s, self._backoff_initial_s * 2.0 ** min(failures, 30))
        return base * random.uniform(0.8, 1.0)

    # --- the display ------------------------------------------------------------------------

    def _site(self) -> str:
        """Where to enter the code: the web app's host, with its port when it is not the
        scheme's default (a demo on localhost:8080)."""
        url = self._code.claim_url if self._code and self._code.claim_url else self._base_url
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        return f"{parts.hostname}:{port}" if parts.hostname and port else parts.hostname or ""

    def _compose(self) -> Screen:
        site = self._site()
        if self._paired is False:
            if self._code is not None:
                detail = "Code renewal failed; retrying" if self._problem else ""
                return Screen(Phase.PAIRING, detail, self._code, site)
            if self._problem:
                return Screen(Phase.ERROR, self._problem, None, site)
            return Screen(Phase.PAIRING, "Getting a pairing code", None, site)
        if self._camera_problem:
            return Screen(Phase.ERROR, self._camera_problem, None, site)
        if self._connection is ConnectionState.ERROR:
            return Screen(Phase.ERROR, self._connection_detail or "Cloud unreachable", None, site)
        if self._connection is ConnectionState.CONNECTING or self._paired is None:
            return Screen(
                Phase.CONNECTING, self._connection_detail or f"Reaching {site}", None, site
            )
        viewers = {0: "No one is watching", 1: "1 viewer"}.get(self._viewers)
        return Screen(Phase.ONLINE, viewers or f"{self._viewers} viewers", None, site)

    async def _render_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            screen = self._compose()
            if screen == self._shown:
                continue
            try:
                await asyncio.to_thread(self._display.show, screen)
            except Exception:  # a flaky I2C bus must not stop pairing; the next change retries
                log.exception("the display failed to show the %s screen", screen.phase)
            else:
                self._shown = screen
