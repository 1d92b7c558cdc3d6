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
The client never touches peer connections: media keeps flowing while the cloud is away.

A hello refused with close code 4401 (unknown device or wrong token: the cloud was reset) is
reported to the handler, which registers anew before the next attempt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

import msgspec

from device.credentials import Credentials
from protocol import ProtocolError, decode, encode
from protocol.messages import (
    MAX_MESSAGE_BYTES,
    CloudToDevice,
    DeviceHello,
    DeviceHelloPayload,
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
#: Close code of a refused hello (``cloud.signaling.CLOSE_UNAUTHENTICATED``).
CLOSE_UNAUTHENTICATED: Final = 4401
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


class HelloRefused(Exception):
    """The cloud does not know this device id and token (close code 4401)."""


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


Outgoing = SignalOffer | SignalAnswer | SignalIce | WatchEnd | UpdateStatus


class SignalingClient:
    def __init__(
        self,
        cloud: str,
        handler: SignalingHandler,
        backoff: Backoff,
        *,
        heartbeat_interval: float | None = None,
        ping_interval: float = 20.0,
    ) -> None:
        """``heartbeat_interval``: seconds between heartbeats (``None``: as ``hello_ack``
        says).  ``ping_interval``: WebSocket pings that notice a silently dead connection."""
        self.url = ws_url(cloud)
        self._handler = handler
        self._backoff = backoff
        self._heartbeat_interval = heartbeat_interval
        self._ping_interval = ping_interval
        self._outbox: collections.deque[Outgoing] = collections.deque(maxlen=OUTBOX_LIMIT)
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._ws: Any = None
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        #: Connections established (``hello_ack`` received) and failures so far.
        self.connections = 0
        self.failures = 0

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def send(self, message: Outgoing) -> None:
        """Queue ``message``; it goes out now if connected, else after reconnecting."""
        if len(self._outbox) == self._outbox.maxlen:
            log.warning("signaling outbox full: dropping the oldest message")
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
            self._handler.disconnected(reason)
            delay = self._backoff.next_delay()
            log.warning("signaling: %s; reconnecting in %.2f s", reason, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

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
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, WebSocketException

        try:
            credentials = await self._handler.credentials()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return f"no credentials: {exc}"
        if self._stopping.is_set():
            return "stopping"
        try:
            async with connect(
                self.url,
                open_timeout=OPEN_TIMEOUT_S,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_interval,
                close_timeout=2.0,
                max_size=MAX_MESSAGE_BYTES,
            ) as ws:
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
        except ConnectionClosed as exc:
            return f"connection closed ({_close_text(exc)})"
        except (OSError, TimeoutError, WebSocketException) as exc:
            return f"cannot reach {self.url}: {exc or type(exc).__name__}"
        except ProtocolError as exc:
            return f"the cloud sent an invalid message: {exc}"
        finally:
            self._ws = None
            self._connected.clear()

    async def _hello(self, ws: Any, credentials: Credentials) -> HelloAck:
        from websockets.exceptions import ConnectionClosed

        from device.update.link import agent_release  # over-the-air updates: who we are

        version, arch = agent_release()
        hello = DeviceHello(
            payload=DeviceHelloPayload(
                device_id=credentials.device_id,
                device_token=credentials.device_token,
                version=version,
                arch=arch,
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
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_UNAUTHENTICATED:
                raise HelloRefused(exc.rcvd.reason) from None
            raise

    async def _serve(self, ws: Any, ack: HelloAck) -> str:
        from websockets.exceptions import ConnectionClosed

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
        if isinstance(exc, ConnectionClosed):
            return f"connection closed ({_close_text(exc)})"
        if exc is not None:
            raise exc
        return str(finished.result())

    async def _read(self, ws: Any) -> str:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                text = await ws.recv()
            except ConnectionClosed as exc:
                return f"connection closed ({_close_text(exc)})"
            try:
                message = decode(text, CloudToDevice)
            except ProtocolError as exc:
                log.warning("signaling: ignoring an invalid message from the cloud: %s", exc)
                continue
            if isinstance(message, Error):
                p = message.payload
                log.warning(
                    "the cloud refused %s: %s (%s)", p.ref or "a message", p.message, p.code
                )
                continue
            try:
                self._handler.received(message)
            except Exception:
                log.exception("handling %s failed", type(message).__name__)

    async def _write(self, ws: Any) -> None:
        while True:
            while self._outbox:
                message = self._outbox[0]
                if self._handler.still_meaningful(message):
                    await ws.send(encode(message))
                else:
                    log.debug("dropping stale %s", type(message).__name__)
                if self._outbox and self._outbox[0] is message:
                    self._outbox.popleft()
            self._outbox_ready.clear()
            self._drained.set()
            await self._outbox_ready.wait()

    async def _heartbeats(self, ws: Any, interval: float) -> None:
        text = encode(Heartbeat())
        while True:
            await asyncio.sleep(interval)
            await ws.send(text)


def _close_text(exc: Any) -> str:
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is None:
        return "no close frame"
    return f"code {rcvd.code}" + (f": {rcvd.reason}" if rcvd.reason else "")
