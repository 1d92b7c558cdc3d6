"""uvicorn's HTTP protocol with the bounds a server reached directly needs.

uvicorn waits for a request's headers and body as long as a client cares to trickle them (its
keep-alive timer only runs between requests), so a few slow clients could hold sockets forever.
``guarded_protocol(guard)`` returns its httptools protocol with:

- a header timeout: from the connection (or the first byte of a request) to the end of its
  headers (408, then closed);
- a body timeout: from the end of the headers to the end of the body (closed; the handler sees
  the client disconnect);
- a cap on HTTP connections per client address still sending a request head, counted from
  the moment the connection is accepted (503 + ``Retry-After``, then closed).  Counted only
  after a second of silence, one address opening connections in a loop held hundreds at once.
  A connection is refused only if its head has not *arrived*: the event loop accepts a whole
  backlog of connections (a NAT full of cameras coming back after a restart) before it reads
  any of them, so at the bound the kernel's receive buffer is peeked first, and a connection
  whose whole head already waits there is let through uncounted (it is read on the loop's next
  turn); one whose head has not arrived, or not whole, is refused.

A connection upgraded to a WebSocket leaves these bounds to the signaling layer.  Behind nginx
the proxy does most of this already (``client_header_timeout``, ``client_body_timeout``,
``limit_conn``); these hold when the cloud is exposed as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cloud.config import Settings
from cloud.metrics import Metrics

#: A sweep of an address's counted connections that freed nothing is not repeated for this
#: long (seconds): a stranger at the bound cannot make every refusal cost a sweep.
SWEEP_PAUSE_S = 0.05


@dataclass
class HttpGuard:
    header_timeout_s: float
    body_timeout_s: float
    connections_per_address: int
    metrics: Metrics | None = None
    #: Connections per client address that are still waiting for their request head.
    heads_by_address: dict[str, set[asyncio.BaseTransport]] = field(default_factory=dict)
    #: When a sweep of an address freed nothing (loop time), so as not to repeat it at once.
    _fruitless: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None) -> HttpGuard:
        return cls(
            settings.http_header_timeout_s,
            settings.http_body_timeout_s,
            settings.http_connections_per_address,
            metrics,
        )

    def closed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.http_closed.labels(reason).inc()

    def waiting(self, address: str) -> int:
        return len(self.heads_by_address.get(address, ()))

    def count(self, address: str, transport: asyncio.BaseTransport) -> None:
        self.heads_by_address.setdefault(address, set()).add(transport)

    def uncount(self, address: str, transport: asyncio.BaseTransport) -> None:
        counted = self.heads_by_address.get(address)
        if counted is not None:
            counted.discard(transport)
            if not counted:
                del self.heads_by_address[address]
                self._fruitless.pop(address, None)

    def has_room(self, address: str, now: float) -> bool:
        """Whether ``address`` may have one more connection waiting for its head.  At the
        bound, its counted connections whose whole head has arrived meanwhile (in the kernel's
        buffer, not yet read: the loop is busy with a burst) stop counting first."""
        if self.waiting(address) < self.connections_per_address:
            return True
        if now - self._fruitless.get(address, -SWEEP_PAUSE_S) < SWEEP_PAUSE_S:
            return False
        arrived = [t for t in self.heads_by_address[address] if head_arrived(t)]
        for transport in arrived:
            self.uncount(address, transport)
        if not arrived:
            self._fruitless[address] = now
        return self.waiting(address) < self.connections_per_address


def _response(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + extra
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


_408 = _response(b"408 Request Timeout", "request_timeout", "the request took too long to arrive")
#: Seconds a connection refused by the per-address bound is told to wait (``Retry-After``):
#: the connections that fill its place finish their heads within moments or time out.
RETRY_AFTER_S = 1
_503 = _response(
    b"503 Service Unavailable",
    "too_many_connections",
    "too many connections from your address; try again shortly",
    b"retry-after: " + str(RETRY_AFTER_S).encode() + b"\r\n",
)
#: How much of a connection's receive buffer is peeked for a whole head (a signaling upgrade's
#: is a few hundred bytes; a longer head is refused at the bound like a silent one).
PEEK_BYTES = 8192


def head_arrived(transport: asyncio.BaseTransport) -> bool:
    """Whether a whole request head already waits in the kernel's receive buffer of this
    connection: peeked (left there for the protocol to read), never read."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        probe = socket.socket(sock.family, sock.type, sock.proto, sock.fileno())
    except (OSError, ValueError):
        return False
    try:
        data = probe.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing there yet (BlockingIOError), or reset
        return False
    finally:
        probe.detach()  # the descriptor stays the transport's
    return b"\r\n\r\n" in data


def guarded_protocol(guard: HttpGuard) -> type[HttpToolsProtocol]:
    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        #: The address this connection is counted under while it waits for a request head.
        _head_of: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._timer is None:
                self._start_head()

        def on_headers_complete(self) -> None:
            self._stop()
            super().on_headers_complete()
            if not (self.parser.should_upgrade() and self._should_upgrade()):
                self._timer = self.loop.call_later(
                    guard.body_timeout_s, self._expired, "body_timeout"
                )

        def on_message_complete(self) -> None:
            self._stop()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._stop()
            super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop()
            super().connection_lost(exc)

        def _start_head(self) -> None:
            """A request head begins (or the connection opens): count it against its address
            until the head is complete; at the bound, let it through uncounted if its whole
            head has arrived already, or refuse it."""
            self._stop()
            if self.transport.is_closing():
                return
            self._timer = self.loop.call_later(
                guard.header_timeout_s, self._expired, "header_timeout"
            )
            address = self.client[0] if self.client else ""
            if guard.waiting(address) >= guard.connections_per_address:
                if head_arrived(self.transport):
                    return  # waits for nothing: read on the loop's next turn, uncounted
                if not guard.has_room(address, self.loop.time()):
                    self._stop()
                    guard.closed("per_address")
                    self.transport.write(_503)
                    self.transport.close()
                    return
            guard.count(address, self.transport)
            self._head_of = address

        def _stop(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            if self._head_of is not None:
                guard.uncount(self._head_of, self.transport)
                self._head_of = None

        def _expired(self, reason: str) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            guard.closed(reason)
            if reason == "header_timeout" and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(_408)
            self.transport.close()

    return GuardedHttpToolsProtocol


def uvicorn_http_options(guard: HttpGuard) -> dict[str, Any]:
    return {"http": guarded_protocol(guard), "h11_max_incomplete_event_size": 16 * 1024}


class CloudServer(uvicorn.Server):
    """uvicorn's server, draining the signaling sockets before its own shutdown (which would
    close them without a word on where to go, then cancel their handlers mid-cleanup)."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in getattr(self, "servers", []):
            server.close()  # stop accepting first
        try:
            await self._drain()
        except Exception:
            logging.getLogger(__name__).exception("draining the signaling sockets failed")
        await super().shutdown(sockets)
