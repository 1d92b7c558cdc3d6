"""The Litestar application: HTTP API, the two signaling WebSockets, OpenAPI."""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, WebSocket, websocket
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Receive, Scope, Send

from cloud.api import ROUTES, services
from cloud.api_accounts import ACCOUNT_ROUTES
from cloud.api_sharing import SHARING_ROUTES
from cloud.config import Settings
from cloud.errors import ApiError, handle_http_exception, handle_unexpected
from cloud.services import Services
from cloud.updates.api import ROUTES as UPDATE_ROUTES
from protocol.codec import nesting_exceeds


@websocket("/ws/device")
async def ws_device(socket: WebSocket[object, object, State]) -> None:
    """Signaling for cameras: first message ``hello {device_id, device_token}``."""
    await services(socket.app.state).hub.serve(socket, "device")


@websocket("/ws/viewer")
async def ws_viewer(socket: WebSocket[object, object, State]) -> None:
    """Signaling for viewers: first message ``hello {token}`` (an access token)."""
    await services(socket.app.state).hub.serve(socket, "viewer")


def reset(transport: Any) -> None:
    """Drop a connection now: RST rather than FIN, so that the kernel does not keep trying to
    deliver what a client that reads nothing left in its send buffer."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def expose_transport_abort(app: ASGIApp) -> ASGIApp:
    """Middleware: gives a WebSocket's scope ``mumu.abort``, the server transport's ``abort``,
    so that a socket that reads nothing can be reset (``cloud.connection``) rather than linger
    with a full buffer, and ``mumu.hang_up``, its ``close`` (sends what is written, then lets
    the descriptor go without waiting for the client's closing handshake: for sockets refused
    before their hello).  Servers that do not expose their transport simply go without."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            transport = getattr(getattr(receive, "__self__", None), "transport", None)
            if callable(getattr(transport, "abort", None)):  # asyncio's or uvloop's transport
                scope["mumu.abort"] = functools.partial(reset, transport)  # type: ignore[typeddict-unknown-key]
                scope["mumu.hang_up"] = transport.close  # type: ignore[typeddict-unknown-key,union-attr]
        await app(scope, receive, send)

    return middleware


def create_app(settings: Settings) -> Litestar:
    svc = Services.build(settings)

    async def bounded_json(request: Request[Any, Any, Any]) -> None:
        """Bodies are at most ``MUMU_MAX_BODY_BYTES`` (413, enforced by Litestar) and nest at
        most ``MUMU_MAX_JSON_DEPTH`` deep (400), checked before anything decodes them."""
        if request.method in {"POST", "PUT", "PATCH", "DELETE"}:
            body = await request.body()
            if nesting_exceeds(body, settings.max_json_depth):
                raise ApiError(
                    400,
                    "too_deep",
                    f"the request body nests deeper than {settings.max_json_depth} levels",
                )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    handlers: list[Any] = [
        *ACCOUNT_ROUTES,
        *ROUTES,
        *SHARING_ROUTES,
        *UPDATE_ROUTES,
        ws_device,
        ws_viewer,
    ]
    if settings.web_dir is not None:
        handlers.append(
            create_static_files_router(
                path="/", directories=[settings.web_dir], html_mode=True, include_in_schema=False
            )
        )
    return Litestar(
        route_handlers=handlers,
        state=State({"services": svc}),
        middleware=[expose_transport_abort],
        lifespan=[lifespan],
        before_request=bounded_json,
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        openapi_config=OpenAPIConfig(
            title="MuMu Camera cloud",
            version="0.1.0",
            description="Accounts, devices, pairing and TURN credentials. Signaling is over "
            "the WebSockets /ws/device and /ws/viewer (see docs/protocol.md).",
            path="/api/docs",
            render_plugins=[SwaggerRenderPlugin()],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                }
            ),
        ),
        debug=False,
    )
