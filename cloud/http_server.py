"""uvicorn's HTTP protocol with the bounds a server reached directly needs.

uvicorn waits for a request's headers and body as long as a client cares to trickle them (its
keep-alive timer only runs between requests), so a few slow clients could hold sockets forever.
``guarded_protocol(guard)`` returns its httptools protocol with:

- a header timeout: from the connection (or the first byte of a request) to the end of its
  headers (408, then closed);
- a body timeout: from the end of the headers to the end of the body (closed; the handler sees
  the client disconnect);
- a cap on *slow* HTTP connections per client address — those still sending a request head
  after a second (503 + ``Retry-After``, then closed).  Fast clients are never counted, so a
  burst of handshakes from one address (a NAT full of cameras coming back) is not refused.

A connection upgraded to a WebSocket leaves these bounds to the signaling layer.  Behind nginx
the proxy does most of this already (``client_header_timeout``, ``client_body_timeout``,
``limit_conn``); these hold when the cloud is exposed as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cloud.config import Settings
from cloud.metrics import Metrics


@dataclass
class HttpGuard:
    header_timeout_s: float
    body_timeout_s: float
    connections_per_address: int
    metrics: Metrics | None = None
    #: Connections per client address that are still sending a request head after a second.
    slow_by_address: Counter[str] = field(default_factory=Counter)

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


#: A connection whose request head is not complete after this long counts as slow.
SLOW_AFTER_S = 1.0


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
_503 = _response(
    b"503 Service Unavailable",
    "too_many_connections",
    "too many connections from your address; try again shortly",
    b"retry-after: 5\r\n",
)


def guarded_protocol(guard: HttpGuard) -> type[HttpToolsProtocol]:
    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _slow_timer: asyncio.TimerHandle | None = None
        #: The address this connection is counted under as slow, while it is.
        _slow_as: str | None = None

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
            self._stop()
            self._timer = self.loop.call_later(
                guard.header_timeout_s, self._expired, "header_timeout"
            )
            self._slow_timer = self.loop.call_later(
                min(SLOW_AFTER_S, guard.header_timeout_s), self._slow
            )

        def _stop(self) -> None:
            for timer in (self._timer, self._slow_timer):
                if timer is not None:
                    timer.cancel()
            self._timer = self._slow_timer = None
            if self._slow_as is not None:
                guard.slow_by_address[self._slow_as] -= 1
                if guard.slow_by_address[self._slow_as] <= 0:
                    del guard.slow_by_address[self._slow_as]
                self._slow_as = None

        def _slow(self) -> None:
            """Still no request head after a second: count it against its address."""
            self._slow_timer = None
            if self.transport.is_closing():
                return
            address = self.client[0] if self.client else ""
            if guard.slow_by_address[address] >= guard.connections_per_address:
                guard.closed("per_address")
                self.transport.write(_503)
                self.transport.close()
                return
            guard.slow_by_address[address] += 1
            self._slow_as = address

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
