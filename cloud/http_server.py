"""uvicorn's HTTP protocol with the bounds a server reached directly needs.

uvicorn waits for a request's headers and body as long as a client cares to trickle them (its
keep-alive timer only runs between requests), so a few slow clients could hold sockets forever.
``guarded_protocol(guard)`` returns its httptools protocol with:

- a header timeout: from the connection (or the first byte of a request) to the end of its
  headers (408, then closed);
- a body timeout: from the end of the headers to the end of the body (closed; the handler sees
  the client disconnect);
- a cap on open HTTP connections per client address (503 + ``Retry-After``, then closed).

A connection upgraded to a WebSocket leaves these bounds to the signaling layer.  Behind nginx
the proxy does most of this already (``client_header_timeout``, ``client_body_timeout``,
``limit_conn``); these hold when the cloud is exposed as it is.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cloud.config import Settings
from cloud.metrics import Metrics


@dataclass
class HttpGuard:
    header_timeout_s: float
    body_timeout_s: float
    connections_per_address: int
    metrics: Metrics | None = None
    open_by_address: Counter[str] = field(default_factory=Counter)

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
        _address: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if guard.open_by_address[address] >= guard.connections_per_address:
                guard.closed("per_address")
                transport.write(_503)
                transport.close()
                return
            guard.open_by_address[address] += 1
            self._address = address
            self._arm(guard.header_timeout_s, "header_timeout")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._timer is None:
                self._arm(guard.header_timeout_s, "header_timeout")

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            if not (self.parser.should_upgrade() and self._should_upgrade()):
                self._arm(guard.body_timeout_s, "body_timeout")

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            self._release()
            super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._release()
            super().connection_lost(exc)

        def _arm(self, after: float, reason: str) -> None:
            self._disarm()
            self._timer = self.loop.call_later(after, self._expired, reason)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _release(self) -> None:
            if self._address is None:
                return
            guard.open_by_address[self._address] -= 1
            if guard.open_by_address[self._address] <= 0:
                del guard.open_by_address[self._address]
            self._address = None

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
