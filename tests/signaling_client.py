"""A bare signaling client for tests: a real WebSocket speaking the protocol's JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

#: How long an expected message may take.  Generous: only a failing test waits it out, and a
#: busy CI machine (other jobs beside the suite) can stall a process for seconds.
WAIT_S = 15.0


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls, ws_base: str, role: str, rcvbuf: int | None = None, source: str | None = None
    ) -> Client:
        """``rcvbuf``: a fixed TCP receive buffer (bytes) instead of the kernel's autotuning;
        ``source``: the local address to connect from (e.g. 127.0.0.2: another client)."""
        url = f"{ws_base}/ws/{role}"
        if rcvbuf is None:
            local: dict[str, Any] = {"local_addr": (source, 0)} if source else {}
            return cls(await websockets.connect(url, max_size=2**21, **local))
        host, port = urlsplit(url).hostname, urlsplit(url).port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return cls(await websockets.connect(url, max_size=2**21, sock=sock))

    async def send(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        await self.ws.send(json.dumps({"type": kind, "payload": payload or {}}))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, kind: str | None = None, timeout: float = WAIT_S) -> dict[str, Any]:
        """The next message (of ``kind``, if given; others are kept for later)."""
        for i, message in enumerate(self.inbox):
            if kind is None or message["type"] == kind:
                return self.inbox.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if kind is None or message["type"] == kind:
                    return dict(message)
                self.inbox.append(message)

    async def became(self, device_id: str, online: bool, timeout: float = WAIT_S) -> None:
        """Wait for ``device_status`` saying ``device_id`` is ``online``.  A status published
        just before this viewer connected can still reach it (Redis delivers to whoever is
        subscribed when the message arrives): earlier statuses may say the opposite, which was
        true then."""
        async with asyncio.timeout(timeout):
            while True:
                status = (await self.recv("device_status", timeout))["payload"]
                assert status["device_id"] == device_id, status
                if status["online"] is online:
                    assert status == {"device_id": device_id, "online": online}
                    return

    async def error(self, timeout: float = WAIT_S) -> dict[str, Any]:
        payload: dict[str, Any] = (await self.recv("error", timeout))["payload"]
        return payload

    async def nothing(self, wait: float = 0.3) -> None:
        """Assert that no message arrives for a moment."""
        try:
            message = await asyncio.wait_for(self.ws.recv(), wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message {message!r}")

    async def closed(self, timeout: float = WAIT_S) -> int | None:
        """Wait for the server to close the socket; its close code (1006: dropped, no code)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else 1006
        return None

    async def close(self) -> None:
        """A clean close (close frame 1000): the client means to go."""
        await self.ws.close()

    async def drop(self) -> None:
        """The network breaks: the TCP connection ends without a close frame."""
        self.ws.transport.abort()
        with contextlib.suppress(ConnectionClosed):
            await self.ws.wait_closed()


async def device(ws_base: str, hello: dict[str, Any]) -> Client:
    client = await Client.connect(ws_base, "device")
    await client.send_raw(json.dumps(hello))
    ack = await client.recv("hello_ack")
    assert ack["payload"]["role"] == "device"
    return client


async def viewer(ws_base: str, token: str, rcvbuf: int | None = None) -> Client:
    client = await Client.connect(ws_base, "viewer", rcvbuf)
    await client.send("hello", {"token": token})
    ack = await client.recv("hello_ack")
    assert ack["payload"]["role"] == "viewer"
    return client
