"""The agent's WebSocket to the cloud (``/ws/device``): hello, heartbeats, reconnection, outbox.

:class:`SignalingClient` keeps one connection up for as long as it runs::

    client = SignalingClient(cloud_url, handler, Backoff(0.5, 30.0))
    task = asyncio.create_task(client.run())
    client.send(SignalAnswer(...))   # never blocks; queued while disconnected
    await client.close()

Every failure (refused, reset, DNS, timeout, the cloud closing the socket) is followed by a
reconnection after an exponential backoff with full jitter.  Messages sent while disconnected
wait in a bounded outbox and go out after the next ``hello_ack`` if they still mean something
(the handler decides: signals of sessions that ended are dropped, ``watch_end`` always goes).
The client never touches peer connections: media keeps flowing while the cloud is away.  Its
``hello`` lists the sessions the handler still streams, so that the cloud can keep them.

A refusal that says how soon to come back — an HTTP 503 (or 429) with ``Retry-After`` before
the WebSocket opens, or a close ``TRY_AGAIN`` whose reason names ``retry_after=`` (a bound on
waiting sockets full for a moment: a NAT full of cameras coming back at once) — is followed by
that delay plus a random part of it, without growing the backoff: the cloud said when.

A hello refused with close code ``UNAUTHENTICATED`` (unknown device or wrong token: the cloud
was reset) is reported to the handler, which registers anew before the next attempt.

The socket is reached through a *connect factory* (``connect(url)`` -> an async context manager
yielding a :class:`Socket`): :func:`websocket_connect` in production, an in-memory pair in the
tests (``tests/memory_socket.py``), the way httpx takes a transport.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

import msgspec

from device.credentials import Credentials
from protocol import ProtocolError, decode, encode
from protocol.close_codes import RETRY_AFTER_MAX_S, CloseCode, restart_window, retry_after
from protocol.messages import (
    MAX_CLAIMED_SESSIONS,
    MAX_MESSAGE_BYTES,
    CloudToDevice,
    DeviceHello,
    DeviceHelloPayload,
    DeviceSettings,
    Error,
    Heartbeat,
    HelloAck,
    SignalAnswer,
    SignalIce,
    SignalOffer,
    UpdateStatus,
    WatchEnd,
)

log = logging.getLogger(__name__)

PATH: Final = "/ws/device"
HELLO_TIMEOUT_S: Final = 15.0
OPEN_TIMEOUT_S: Final = 10.0
OUTBOX_LIMIT: Final = 512


def ws_url(cloud: str) -> str:
    """``https://cam.example.com`` -> ``wss://cam.example.com/ws/device`` (http -> ws)."""
    parts = urlsplit(cloud)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + PATH, "", ""))


@dataclass
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits ``uniform(0, min(cap,
    base * 2**n))``."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        bound = min(self.cap, self.base * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        return self.rng.uniform(0.0, bound)

    def reset(self) -> None:
        self.attempt = 0


def reconnect_delay(
    backoff: Backoff,
    close_code: int | None,
    close_reason: str = "",
    retry_after_s: float | None = None,
) -> float:
    """Seconds to wait before dialling again after a connection ended.

    - a close ``RESTART`` with a window: a random moment within it, the backoff started over
      (a deploy is not a failure);
    - a refusal that named a delay (``retry_after_s``: an HTTP ``Retry-After``; or a close
      ``TRY_AGAIN`` whose reason names ``retry_after=``): that delay plus up to as much again
      at random, so that refused clients do not come back together; the backoff neither grows
      nor starts over (a full bound is not a failure, but the last failure still counts);
    - anything else: the next backoff step."""
    if close_code == CloseCode.RESTART:
        window = restart_window(close_reason)
        if window is not None:
            backoff.reset()
            return backoff.rng.uniform(0.0, window)
    if retry_after_s is None and close_code == CloseCode.TRY_AGAIN:
        retry_after_s = retry_after(close_reason)
    if retry_after_s is not None:
        wait = min(max(retry_after_s, 0.0), float(RETRY_AFTER_MAX_S))
        return wait + backoff.rng.uniform(0.0, wait)
    return backoff.next_delay()


class TryAgain(OSError):
    """The cloud refused the WebSocket handshake for now (HTTP 503 or 429); ``retry_after_s``:
    the delay its ``Retry-After`` named in seconds (``None``: none, or a date)."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (``None``: absent, or not delay-seconds)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(int(value.strip()))


class SocketClosed(Exception):
    """The socket closed; ``code`` is the close frame's (``None``: dropped without one)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"code {code}" if code is not None else "no close frame")
        self.code = code
        self.reason = reason

    def describe(self) -> str:
        if self.code is None:
            return "no close frame"
        return f"code {self.code}" + (f": {self.reason}" if self.reason else "")


class Socket(Protocol):
    """One open WebSocket, text frames only."""

    async def send(self, text: str) -> None:
        """Raises :class:`SocketClosed` once the socket is closed."""
        ...

    async def recv(self) -> str:
        """The next text frame; :class:`SocketClosed` when the socket closes."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


#: ``connect(url)``: an async context manager yielding an open :class:`Socket`; raises
#: ``OSError`` or ``TimeoutError`` when the cloud cannot be reached.
Connect = Callable[[str], AbstractAsyncContextManager[Socket]]


class _WebSocket:
    """:class:`Socket` over a ``websockets`` client connection."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> str:
        from websockets.exceptions import ConnectionClosed

        try:
            data = await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        return data if isinstance(data, str) else data.decode(errors="replace")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)


def _closed(exc: Any) -> SocketClosed:
    rcvd = getattr(exc, "rcvd", None)
    return SocketClosed(None) if rcvd is None else SocketClosed(rcvd.code, rcvd.reason)


def websocket_connect(ping_interval: float = 20.0) -> Connect:
    """The production connect factory: ``websockets``, with protocol pings every
    ``ping_interval`` s (they notice a silently dead connection)."""

    @contextlib.asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Socket]:
        from websockets.asyncio.client import connect as ws_connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        try:
            opened = ws_connect(
                url,
                open_timeout=OPEN_TIMEOUT_S,
                ping_interval=ping_interval,
                ping_timeout=ping_interval,
                close_timeout=2.0,
                max_size=MAX_MESSAGE_BYTES,
            )
            ws = await opened.__aenter__()
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (429, 503):  # refused for now: come back when it says
                header = exc.response.headers.get("Retry-After")
                raise TryAgain(f"HTTP {status}", parse_retry_after(header)) from exc
            raise OSError(str(exc)) from exc
        except WebSocketException as exc:  # a refused handshake, a bad URL...
            raise OSError(str(exc) or type(exc).__name__) from exc
        try:
            yield _WebSocket(ws)
        finally:
            await opened.__aexit__(None, None, None)

    return connect


class HelloRefused(Exception):
    """The cloud does not know this device id and token (close code ``UNAUTHENTICATED``)."""


class SignalingHandler(Protocol):
    """What the agent does with the connection's events (all on the event loop)."""

    async def credentials(self) -> Credentials:
        """The credentials to say hello with (registering first if there are none)."""
        ...

    async def credentials_refused(self, refused: Credentials) -> None:
        """The cloud refused ``refused``: forget them, so ``credentials`` registers anew."""
        ...

    def connected(self, ack: HelloAck) -> None:
        """``hello_ack`` arrived: the connection is up."""
        ...

    def disconnected(self, reason: str) -> None:
        """The connection is down (or never came up); a reconnection follows."""
        ...

    def received(self, message: Any) -> None:
        """One message from the cloud after ``hello_ack`` (a member of ``CloudToDevice``).
        Must not block: long work goes to a task."""
        ...

    def still_meaningful(self, message: msgspec.Struct) -> bool:
        """Whether a queued message should still be sent (e.g. its session is alive)."""
        ...

    def streaming_sessions(self) -> list[str]:
        """The sessions whose peer connection still carries video (listed in ``hello``)."""
        ...


Outgoing = SignalOffer | SignalAnswer | SignalIce | WatchEnd | UpdateStatus | DeviceSettings


class SignalingClient:
    def __init__(
        self,
        cloud: str,
        handler: SignalingHandler,
        backoff: Backoff,
        *,
        heartbeat_interval: float | None = None,
        connect: Connect | None = None,
    ) -> None:
        """``heartbeat_interval``: seconds between heartbeats (``None``: as ``hello_ack``
        says).  ``connect``: the connect factory (default :func:`websocket_connect`)."""
        self.url = ws_url(cloud)
        self._handler = handler
        self._backoff = backoff
        self._heartbeat_interval = heartbeat_interval
        self._connect = connect or websocket_connect()
        self._outbox: collections.deque[Outgoing] = collections.deque(maxlen=OUTBOX_LIMIT)
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._ws: Socket | None = None
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        #: Connections established (``hello_ack`` received) and failures so far.
        self.connections = 0
        self.failures = 0
        #: Why the last connection ended (``""`` while the first is up or being made).
        self.last_disconnect = ""
        #: The delay the last refused handshake's ``Retry-After`` named (``None``: none).
        self.last_retry_after: float | None = None
        #: Close code and reason of the last connection's close frame (``None``: none, or
        #: still up).
        self.last_close_code: int | None = None
        self.last_close_reason = ""
        #: Messages sent, messages dropped (outbox full, or stale), ``error``s from the cloud.
        self.sent = 0
        self.dropped = 0
        self.refusals = 0

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def send(self, message: Outgoing) -> None:
        """Queue ``message``; it goes out now if connected, else after reconnecting."""
        if len(self._outbox) == self._outbox.maxlen:
            log.warning("signaling outbox full: dropping the oldest message")
            self.dropped += 1
        self._outbox.append(message)
        self._drained.clear()
        self._outbox_ready.set()

    async def run(self) -> None:
        """Connect, and reconnect after every failure, until :meth:`close`."""
        while not self._stopping.is_set():
            reason = await self._connect_once()
            if self._stopping.is_set():
                break
            self.failures += 1
            self.last_disconnect = reason
            self._handler.disconnected(reason)
            delay = self._reconnect_delay()
            log.warning("signaling: %s; reconnecting in %.2f s", reason, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _reconnect_delay(self) -> float:
        """After a cloud restart (close ``RESTART``), a moment within the window it gave, so
        that its thousands of devices do not return at once; after a refusal that named a
        delay, that delay and a random part of it; after anything else, the next backoff step
        (:func:`reconnect_delay`)."""
        return reconnect_delay(
            self._backoff, self.last_close_code, self.last_close_reason, self.last_retry_after
        )

    async def close(self) -> None:
        """Stop reconnecting and close the socket (a normal closure)."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000, "device shutting down"), 2.0)

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until queued messages went out, if connected."""
        if self._outbox and self.is_connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)

    # --- one connection ---------------------------------------------------------------------

    async def _connect_once(self) -> str:
        """One connection from dial to close; returns why it ended."""
        try:
            credentials = await self._handler.credentials()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return f"no credentials: {exc}"
        if self._stopping.is_set():
            return "stopping"
        self.last_close_code, self.last_close_reason = None, ""
        self.last_retry_after = None
        try:
            async with self._connect(self.url) as ws:
                self._ws = ws
                try:
                    ack = await self._hello(ws, credentials)
                except HelloRefused:
                    log.error(
                        "the cloud does not know device %s (it was reset?): registering anew",
                        credentials.device_id,
                    )
                    await self._handler.credentials_refused(credentials)
                    return "hello refused (unknown device)"
                return await self._serve(ws, ack)
        except SocketClosed as exc:
            self.last_close_code, self.last_close_reason = exc.code, exc.reason
            return f"connection closed ({exc.describe()})"
        except TryAgain as exc:
            self.last_retry_after = exc.retry_after_s
            return f"{self.url} refused the connection for now: {exc}"
        except (OSError, TimeoutError) as exc:
            return f"cannot reach {self.url}: {exc or type(exc).__name__}"
        except ProtocolError as exc:
            return f"the cloud sent an invalid message: {exc}"
        finally:
            self._ws = None
            self._connected.clear()

    async def _hello(self, ws: Socket, credentials: Credentials) -> HelloAck:
        from device.update.link import agent_release  # over-the-air updates: who we are

        version, arch = agent_release()
        streaming = self._handler.streaming_sessions()[:MAX_CLAIMED_SESSIONS]
        hello = DeviceHello(
            payload=DeviceHelloPayload(
                device_id=credentials.device_id,
                device_token=credentials.device_token,
                version=version,
                arch=arch,
                sessions=streaming or None,
            )
        )
        try:
            await ws.send(encode(hello))
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                while True:
                    message = decode(await ws.recv(), CloudToDevice)
                    if isinstance(message, HelloAck):
                        return message
                    if isinstance(message, Error) and message.payload.code == "not_authenticated":
                        raise HelloRefused(message.payload.message)
                    log.warning("signaling: unexpected %s before hello_ack", type(message).__name__)
        except SocketClosed as exc:
            if exc.code == CloseCode.UNAUTHENTICATED:
                raise HelloRefused(exc.reason) from None
            raise

    async def _serve(self, ws: Socket, ack: HelloAck) -> str:
        self.connections += 1
        self._backoff.reset()
        interval = self._heartbeat_interval or ack.payload.heartbeat_interval
        log.info(
            "signaling: connected to %s as device %s (%s)",
            self.url,
            ack.payload.id,
            "paired" if ack.payload.paired else "not paired",
        )
        self._connected.set()
        self._handler.connected(ack)
        tasks = [
            asyncio.create_task(self._read(ws), name="signaling-reader"),
            asyncio.create_task(self._write(ws), name="signaling-writer"),
            asyncio.create_task(self._heartbeats(ws, interval), name="heartbeats"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finished = done.pop()
        if finished.cancelled():
            return "cancelled"
        exc = finished.exception()
        if isinstance(exc, SocketClosed):
            self.last_close_code, self.last_close_reason = exc.code, exc.reason
            return f"connection closed ({exc.describe()})"
        if exc is not None:
            raise exc
        return str(finished.result())

    async def _read(self, ws: Socket) -> str:
        while True:
            try:
                text = await ws.recv()
            except SocketClosed as exc:
                self.last_close_code, self.last_close_reason = exc.code, exc.reason
                return f"connection closed ({exc.describe()})"
            try:
                message = decode(text, CloudToDevice)
            except ProtocolError as exc:
                log.warning("signaling: ignoring an invalid message from the cloud: %s", exc)
                continue
            if isinstance(message, Error):
                self.refusals += 1
                p = message.payload
                log.warning(
                    "the cloud refused %s: %s (%s)", p.ref or "a message", p.message, p.code
                )
                continue
            try:
                self._handler.received(message)
            except Exception:
                log.exception("handling %s failed", type(message).__name__)

    async def _write(self, ws: Socket) -> None:
        while True:
            while self._outbox:
                message = self._outbox[0]
                if self._handler.still_meaningful(message):
                    await ws.send(encode(message))
                    self.sent += 1
                else:
                    log.debug("dropping stale %s", type(message).__name__)
                    self.dropped += 1
                if self._outbox and self._outbox[0] is message:
                    self._outbox.popleft()
            self._outbox_ready.clear()
            self._drained.set()
            await self._outbox_ready.wait()

    async def _heartbeats(self, ws: Socket, interval: float) -> None:
        text = encode(Heartbeat())
        while True:
            await asyncio.sleep(interval)
            await ws.send(text)
