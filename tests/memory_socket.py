"""An in-memory WebSocket pair for :class:`device.signaling.SignalingClient` (its connect seam).

``MemoryCloud`` is the connect factory: each ``connect(url)`` the client makes opens a new
:class:`MemorySocket` pair and hands the far end to the test (``await cloud.accept()``), which
plays the cloud: reads the ``hello``, answers ``hello_ack``, sends and receives messages, closes
with a close code.  ``refusing`` makes the next dials fail as a refused TCP connection would;
``refusal``, with the exception a dial raises instead (e.g. ``TryAgain``: an HTTP 503).
Nothing here sleeps: every wait is on a queue or an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from device.signaling import Socket, SocketClosed


class MemorySocket:
    """One end of a pair: text frames in, text frames out, a close frame either way."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[str | SocketClosed] = asyncio.Queue()
        self.peer: MemorySocket | None = None
        self.closed: SocketClosed | None = None
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        if self.closed is not None:
            raise self.closed
        assert self.peer is not None
        self.sent.append(text)
        self.peer._inbox.put_nowait(text)

    async def recv(self) -> str:
        if self.closed is not None and self._inbox.empty():
            raise self.closed
        item = await self._inbox.get()
        if isinstance(item, SocketClosed):
            self.closed = item
            raise item
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is not None:
            return
        self.closed = SocketClosed(code, reason)
        self._inbox.put_nowait(self.closed)
        if self.peer is not None and self.peer.closed is None:
            self.peer._inbox.put_nowait(SocketClosed(code, reason))

    def drop(self) -> None:
        """The connection vanishes without a close frame (both ends see code ``None``)."""
        for end in (self, self.peer):
            if end is not None and end.closed is None:
                end._inbox.put_nowait(SocketClosed(None))

    # --- the test's side, as JSON -----------------------------------------------------------

    async def send_json(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        await self.send(json.dumps({"type": kind, "payload": payload or {}}))

    async def recv_json(self, kind: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The next message (of ``kind``: others before it are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message: dict[str, Any] = json.loads(await self.recv())
                if kind is None or message["type"] == kind:
                    return message


def pair() -> tuple[MemorySocket, MemorySocket]:
    a, b = MemorySocket(), MemorySocket()
    a.peer, b.peer = b, a
    return a, b


class MemoryCloud:
    """The connect factory the client is given (see the module doc)."""

    def __init__(self) -> None:
        self._accepted: asyncio.Queue[MemorySocket] = asyncio.Queue()
        self.urls: list[str] = []
        self.refusing = False
        self.refusal: BaseException | None = None
        self.dials = 0
        self.dialled = asyncio.Event()

    @contextlib.asynccontextmanager
    async def __call__(self, url: str) -> AsyncIterator[Socket]:
        self.dials += 1
        self.urls.append(url)
        self.dialled.set()
        if self.refusal is not None:
            raise self.refusal
        if self.refusing:
            raise ConnectionRefusedError(111, "Connection refused")
        client, server = pair()
        self._accepted.put_nowait(server)
        try:
            yield client
        finally:
            await client.close(1000, "")

    async def accept(self, timeout: float = 5.0) -> MemorySocket:
        """The cloud's end of the client's next connection."""
        return await asyncio.wait_for(self._accepted.get(), timeout)

    async def welcome(
        self, *, paired: bool = True, sessions: list[str] | None = None, timeout: float = 5.0
    ) -> tuple[MemorySocket, dict[str, Any]]:
        """Accept the next connection, read its ``hello`` and answer ``hello_ack``."""
        socket = await self.accept(timeout)
        hello = await socket.recv_json("hello", timeout)
        ack: dict[str, Any] = {"role": "device", "id": hello["payload"]["device_id"]}
        ack["paired"] = paired
        if sessions is not None:
            ack["sessions"] = sessions
        await socket.send_json("hello_ack", ack)
        return socket, hello["payload"]
