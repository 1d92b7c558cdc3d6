"""WebSocket signaling: authenticating devices and viewers, watch sessions, forwarding signals.

One ``SignalingHub`` per cloud process.  Every connection is authenticated by its first message
(``hello``); every later message is validated against the protocol, and every forwarded signal
is checked against the live session it names: it must come from one of that session's two
parties and goes only to the other.  Ownership is read from the database on every
``watch_request``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from litestar import WebSocket

from cloud.auth import TokenError, TokenIssuer, device_token_matches
from cloud.config import Settings
from cloud.identity import Authenticate, token_authenticator
from cloud.live import KICK, LiveSession, LiveState, SignOutFrame
from cloud.metrics import Metrics
from cloud.store import Store
from cloud.turn import ice_servers
from protocol import ProtocolError, decode, encode
from protocol.close_codes import CloseCode
from protocol.messages import (
    HEARTBEAT_INTERVAL_S,
    DeviceHello,
    DeviceStatus,
    DeviceStatusPayload,
    DeviceToCloud,
    DeviceWatchRequest,
    DeviceWatchRequestPayload,
    EndReason,
    Heartbeat,
    HeartbeatAck,
    HelloAck,
    HelloAckPayload,
    IceServer,
    PairingStatus,
    PairingStatusPayload,
    SessionPayload,
    SignalAnswer,
    SignalIce,
    SignalOffer,
    ViewerHello,
    ViewerToCloud,
    WatchEnd,
    WatchEnded,
    WatchEndedPayload,
    WatchReady,
    WatchReadyPayload,
    WatchRequest,
    WatchResume,
    WatchResumed,
)

log = logging.getLogger(__name__)

Role = Literal["device", "viewer"]
#: Close codes: defined once in ``protocol.close_codes`` (see docs/protocol.md).
CLOSE_BAD_HELLO = CloseCode.BAD_HELLO
CLOSE_UNAUTHENTICATED = CloseCode.UNAUTHENTICATED
CLOSE_REPLACED = CloseCode.REPLACED
CLOSE_IDLE = CloseCode.IDLE
CLOSE_TRY_AGAIN = CloseCode.TRY_AGAIN
CLOSE_SIGNED_OUT = CloseCode.SIGNED_OUT
CLOSE_TOO_SLOW = CloseCode.TOO_SLOW
HELLO_TIMEOUT_S = 10.0
#: A device's ``last_seen`` is written on connect, on disconnect and at most this often between.
LAST_SEEN_EVERY_S = 300.0
_WATCH_ENDED_PREFIX = '{"type":"watch_ended"'
_WATCH_REQUEST_PREFIX = '{"type":"watch_request"'


@dataclass(eq=False)
class Connection:
    role: Role
    socket: WebSocket[Any, Any, Any]
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    principal: str = ""  # device id or user id, once authenticated
    #: Viewers: the sign-in whose access token opened this socket (see ``cloud.identity``).
    sign_in: str | None = None
    #: The live sessions this socket is a party of, as far as it has heard: id -> device id.
    sessions: dict[str, str] = field(default_factory=dict)
    closed: bool = False
    #: The client's address (behind trusted proxies: the one they forwarded).
    address: str = ""
    last_seen_written: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str) -> None:
        if self.closed:
            return
        try:
            async with self._lock:
                await self.socket.send_text(text)
        except Exception:  # the peer went away; the receive loop notices and cleans up
            self.closed = True

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            async with self._lock:
                await self.socket.close(code=code, reason=reason)

    async def deliver(self, text: str) -> None:
        """Callback for routed frames."""
        if text == KICK:
            await self.close(CLOSE_REPLACED, "replaced by a newer connection of this device")
            return
        if text.startswith(SignOutFrame.PREFIX):
            if SignOutFrame.decode(text).applies_to(self.sign_in):
                await self.close(CLOSE_SIGNED_OUT, "signed out")
            return
        if text.startswith(_WATCH_ENDED_PREFIX):
            with contextlib.suppress(msgspec.DecodeError):
                ended = msgspec.json.decode(text, type=WatchEnded)
                self.sessions.pop(ended.payload.session_id, None)
        elif self.role == "device" and text.startswith(_WATCH_REQUEST_PREFIX):
            with contextlib.suppress(msgspec.DecodeError):
                request = msgspec.json.decode(text, type=DeviceWatchRequest)
                self.sessions[request.payload.session_id] = self.principal
        await self.send(text)


class SignalingHub:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        live: LiveState,
        tokens: TokenIssuer,
        metrics: Metrics,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.live = live
        self.tokens = tokens
        self.metrics = metrics
        self.authenticate = authenticate or token_authenticator(tokens, store)
        self._viewers: set[Connection] = set()
        self._janitor: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        metrics.active_sessions.set_function(lambda: sum(len(c.sessions) for c in self._viewers))

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._janitor = asyncio.create_task(self._sweep_forever(), name="session-janitor")

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.settings.session_ttl_s / 2))
            try:
                await self.sweep()
            except Exception:
                log.exception("session janitor failed")

    async def sweep(self) -> int:
        """End recorded sessions whose live entry expired (their parties vanished)."""
        open_sessions = await self.store.open_sessions(time.time() - 5.0)
        live = await self.live.live_session_ids([s.id for s in open_sessions])
        ended = 0
        for session in open_sessions:
            if session.id not in live and await self.store.end_session(
                session.id, "expired", time.time()
            ):
                ended += 1
        return ended

    # --- serving a socket ----------------------------------------------------------------------

    async def serve(self, socket: WebSocket[Any, Any, Any], role: Role) -> None:
        await socket.accept()
        conn = Connection(
            role=role, socket=socket, address=socket.client.host if socket.client else ""
        )
        self.metrics.connections.labels(role).inc()
        try:
            try:
                authenticated = await self._authenticate(conn)
            except Exception:  # the database or Redis failed: say so, the client retries
                log.exception("could not authenticate a %s", conn.role)
                await self._refuse(conn, CLOSE_TRY_AGAIN, "internal", "the cloud failed; try again")
                return
            if authenticated:
                await self._run(conn)
        finally:
            self.metrics.connections.labels(role).dec()
            if conn.principal:
                await self._cleanup(conn)
            await conn.close(1000, "bye")

    async def _receive(self, conn: Connection, wait_s: float) -> str | None:
        """The next text frame; None when the socket closed or stayed silent past ``wait_s``."""
        while True:
            try:
                event = await asyncio.wait_for(conn.socket.receive(), wait_s)
            except TimeoutError:
                await conn.close(CLOSE_IDLE, "no message within the heartbeat timeout")
                return None
            except Exception:
                return None
            if event["type"] == "websocket.disconnect":
                conn.closed = True
                return None
            text = event.get("text")
            if text is None:
                self.metrics.messages.labels("invalid").inc()
                await conn.send(
                    encode(
                        ProtocolError(
                            "binary_not_supported", "binary frames are not accepted; send JSON text"
                        ).to_message()
                    )
                )
                if not conn.principal:
                    await conn.close(CLOSE_BAD_HELLO, "the first message must be hello")
                    return None
                continue
            return str(text)

    async def _authenticate(self, conn: Connection) -> bool:
        text = await self._receive(conn, HELLO_TIMEOUT_S)
        if text is None:
            return False
        direction = DeviceToCloud if conn.role == "device" else ViewerToCloud
        try:
            hello = decode(text, direction)
        except ProtocolError as exc:
            await self._refuse(conn, CLOSE_BAD_HELLO, exc.code, exc.message)
            return False
        if not isinstance(hello, DeviceHello | ViewerHello):
            await self._refuse(
                conn, CLOSE_BAD_HELLO, "not_authenticated", "the first message must be hello"
            )
            return False
        self.metrics.messages.labels("hello").inc()
        if isinstance(hello, DeviceHello):
            device = await self.store.device(hello.payload.device_id)
            if device is None or not device_token_matches(
                device.token_hash, hello.payload.device_token
            ):
                await self._refuse(
                    conn,
                    CLOSE_UNAUTHENTICATED,
                    "not_authenticated",
                    "unknown device or wrong token",
                )
                return False
            conn.principal = device.id
            # Presence first, then kick any older socket of this device, then listen.
            await self.live.set_online(
                device.id, conn.conn_id, self.settings.presence_ttl_s, conn.address
            )
            await self.live.publish(f"device:{device.id}", KICK)
            await self.live.subscribe(f"device:{device.id}", conn.deliver)
            conn.last_seen_written = time.time()
            await self.store.touch_device(device.id, conn.last_seen_written)
            conn.sessions = {
                s.session_id: s.device_id for s in await self.live.sessions_of_device(device.id)
            }
            await conn.send(
                encode(
                    HelloAck(
                        payload=HelloAckPayload(
                            role="device", id=device.id, paired=device.owner_id is not None
                        )
                    )
                )
            )
            if device.owner_id is not None:
                await self._device_status(device.owner_id, device.id, online=True)
            return True
        try:
            identity = await self.authenticate(hello.payload.token)
        except TokenError as exc:
            await self._refuse(conn, CLOSE_UNAUTHENTICATED, "not_authenticated", str(exc))
            return False
        user_id = identity.user_id
        conn.principal = user_id
        conn.sign_in = identity.sign_in
        self._viewers.add(conn)
        await self.live.subscribe(f"viewer:{conn.conn_id}", conn.deliver)
        await self.live.subscribe(f"user:{user_id}", conn.deliver)
        await conn.send(encode(HelloAck(payload=HelloAckPayload(role="viewer", id=user_id))))
        return True

    async def _refuse(self, conn: Connection, close_code: int, code: Any, message: str) -> None:
        await conn.send(encode(ProtocolError(code, message, ref="hello").to_message()))
        await conn.close(close_code, message[:120])

    async def _run(self, conn: Connection) -> None:
        direction = DeviceToCloud if conn.role == "device" else ViewerToCloud
        idle_timeout = self.settings.presence_ttl_s + HEARTBEAT_INTERVAL_S
        while not conn.closed:
            text = await self._receive(conn, idle_timeout)
            if text is None:
                return
            try:
                message = decode(text, direction)
                self.metrics.messages.labels(type(message).__struct_config__.tag).inc()
                await self._handle(conn, message)
            except ProtocolError as exc:
                if exc.code in ("invalid_json", "invalid_message", "unknown_type", "too_large"):
                    self.metrics.messages.labels("invalid").inc()
                await conn.send(encode(exc.to_message()))
            except Exception:
                log.exception("failed to handle a %s message", conn.role)
                await conn.send(
                    encode(
                        ProtocolError("internal", "the cloud could not handle that").to_message()
                    )
                )

    async def _handle(self, conn: Connection, message: Any) -> None:
        if isinstance(message, DeviceHello | ViewerHello):
            raise ProtocolError(
                "already_authenticated", "this connection said hello already", "hello"
            )
        if isinstance(message, Heartbeat):
            await self._heartbeat(conn)
        elif isinstance(message, WatchRequest):
            try:
                await self._watch_request(conn, message)
            except ProtocolError as exc:  # the viewer matches the refusal to its request
                exc.request_id = message.payload.request_id
                raise
        elif isinstance(message, WatchResume):
            await self._watch_resume(conn, message)
        elif isinstance(message, SignalOffer | SignalAnswer | SignalIce):
            await self._forward(conn, message)
        elif isinstance(message, WatchEnd):
            session = await self._party_session(conn, message.payload.session_id, "watch_end")
            reason: EndReason = "viewer_ended"
            if conn.role == "device":  # a device may say why (camera_failed, device_busy, ...)
                reason = message.payload.reason or "device_ended"
            await self.end_session(session.session_id, reason)
        else:  # pragma: no cover - the direction unions hold nothing else
            raise ProtocolError("unknown_type", f"{type(message).__name__} is not handled here")

    async def _heartbeat(self, conn: Connection) -> None:
        if conn.role == "device":
            await self.live.set_online(
                conn.principal, conn.conn_id, self.settings.presence_ttl_s, conn.address
            )
            now = time.time()
            if now - conn.last_seen_written >= LAST_SEEN_EVERY_S:
                conn.last_seen_written = now
                await self.store.touch_device(conn.principal, now)
        await self.live.refresh_sessions(list(conn.sessions), self.settings.session_ttl_s)
        await conn.send(encode(HeartbeatAck()))

    async def _watch_request(self, conn: Connection, message: WatchRequest) -> None:
        device_id = message.payload.device_id
        if conn.role != "viewer":
            raise ProtocolError("forbidden", "only viewers may ask to watch", "watch_request")
        device = await self.store.device(device_id)  # ownership from the database, every time
        if device is None or device.owner_id != conn.principal:
            raise ProtocolError("forbidden", "no such camera on your account", "watch_request")
        if device_id not in await self.live.online([device_id]):
            raise ProtocolError("device_offline", "the camera is offline", "watch_request")
        session_id = secrets.token_urlsafe(24)
        now = time.time()
        await self.store.start_session(session_id, device_id, conn.principal, now)
        await self.live.add_session(
            LiveSession(session_id, device_id, conn.principal, conn.conn_id, now),
            self.settings.session_ttl_s,
        )
        conn.sessions[session_id] = device_id
        delivered = await self.live.publish(
            f"device:{device_id}",
            encode(
                DeviceWatchRequest(
                    payload=DeviceWatchRequestPayload(
                        session_id=session_id, ice_servers=self._ice_servers(device_id)
                    )
                )
            ),
        )
        if not delivered:
            await self.end_session(session_id, "device_disconnected", notify=False)
            conn.sessions.pop(session_id, None)
            raise ProtocolError("device_offline", "the camera is offline", "watch_request")
        await conn.send(
            encode(
                WatchReady(
                    payload=WatchReadyPayload(
                        session_id=session_id,
                        device_id=device_id,
                        ice_servers=self._ice_servers(conn.principal),
                        request_id=message.payload.request_id,
                    )
                )
            )
        )

    async def _watch_resume(self, conn: Connection, message: WatchResume) -> None:
        session_id = message.payload.session_id
        session = await self.live.get_session(session_id)
        if session is None or session.viewer_id != conn.principal:
            raise ProtocolError("session_not_found", "that watch session has ended", session_id)
        await self.live.rebind_viewer(session_id, conn.conn_id, self.settings.session_ttl_s)
        conn.sessions[session_id] = session.device_id
        await conn.send(encode(WatchResumed(payload=SessionPayload(session_id=session_id))))

    async def _party_session(self, conn: Connection, session_id: str, kind: str) -> LiveSession:
        session = await self.live.get_session(session_id)
        if session is None:
            raise ProtocolError("session_not_found", f"{kind}: no such live session", session_id)
        if conn.role == "device":
            party = session.device_id == conn.principal
        else:
            party = session.viewer_id == conn.principal and session.viewer_conn == conn.conn_id
        if not party:
            raise ProtocolError(
                "not_session_party", f"{kind}: you are not a party of that session", session_id
            )
        return session

    async def _forward(
        self, conn: Connection, message: SignalOffer | SignalAnswer | SignalIce
    ) -> None:
        session_id = message.payload.session_id
        device_id = conn.sessions.get(session_id) if conn.role == "viewer" else None
        if device_id is not None:
            # This socket opened (or resumed) the session and has not heard it end: it is a
            # party, and the device is known without asking the live state.
            if not await self.live.publish(f"device:{device_id}", encode(message)):
                raise ProtocolError("device_offline", "the camera is offline", session_id)
            return
        kind = str(type(message).__struct_config__.tag)
        session = await self._party_session(conn, session_id, kind)
        if conn.role == "device":
            # A viewer between sockets misses it; it resumes or restarts ICE on its own.
            await self.live.publish(f"viewer:{session.viewer_conn}", encode(message))
            return
        if not await self.live.publish(f"device:{session.device_id}", encode(message)):
            raise ProtocolError("device_offline", "the camera is offline", session.session_id)

    async def end_session(self, session_id: str, reason: EndReason, notify: bool = True) -> bool:
        """End a live session once (whoever removes it first), record it, tell both parties."""
        session = await self.live.remove_session(session_id)
        if session is None:
            return False
        await self.store.end_session(session_id, reason, time.time())
        if notify:
            text = encode(
                WatchEnded(payload=WatchEndedPayload(session_id=session_id, reason=reason))
            )
            await self.live.publish(f"device:{session.device_id}", text)
            await self.live.publish(f"viewer:{session.viewer_conn}", text)
        return True

    async def _cleanup(self, conn: Connection) -> None:
        if conn.role == "device":
            await self.live.unsubscribe(f"device:{conn.principal}", conn.deliver)
            if await self.live.set_offline(conn.principal, conn.conn_id):
                await self.store.touch_device(conn.principal, time.time())
                sessions = await self.live.sessions_of_device(conn.principal)
                if sessions:
                    self._later(self._end_unless_device_returns(conn.principal, sessions))
                device = await self.store.device(conn.principal)  # ownership may have changed
                if device is not None and device.owner_id is not None:
                    await self._device_status(device.owner_id, conn.principal, online=False)
            return
        self._viewers.discard(conn)
        await self.live.unsubscribe(f"viewer:{conn.conn_id}", conn.deliver)
        await self.live.unsubscribe(f"user:{conn.principal}", conn.deliver)
        sessions = await self.live.sessions_of_viewer_conn(conn.conn_id)
        if sessions:
            self._later(self._end_unless_viewer_resumes(conn.conn_id, sessions))

    # The media of a session flows peer to peer, so a dropped signaling socket need not end it:
    # its party gets ``resume_grace_s`` to come back (a viewer with ``watch_resume``, a device
    # with a new ``hello``) before the session is ended and the other party told.

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _end_unless_viewer_resumes(self, conn_id: str, sessions: list[LiveSession]) -> None:
        await asyncio.sleep(self.settings.resume_grace_s)
        for old in sessions:
            now = await self.live.get_session(old.session_id)
            if now is not None and now.viewer_conn == conn_id:
                await self.end_session(old.session_id, "viewer_disconnected")

    async def _end_unless_device_returns(self, device_id: str, sessions: list[LiveSession]) -> None:
        await asyncio.sleep(self.settings.resume_grace_s)
        if device_id in await self.live.online([device_id]):
            return
        for old in sessions:
            await self.end_session(old.session_id, "device_disconnected")

    # --- used by the HTTP API ------------------------------------------------------------------

    async def _device_status(self, owner_id: str, device_id: str, online: bool) -> None:
        await self.live.publish(
            f"user:{owner_id}",
            encode(DeviceStatus(payload=DeviceStatusPayload(device_id=device_id, online=online))),
        )

    async def device_paired(self, device_id: str, owner_id: str) -> None:
        await self.live.publish(
            f"device:{device_id}", encode(PairingStatus(payload=PairingStatusPayload(paired=True)))
        )
        online = device_id in await self.live.online([device_id])
        await self._device_status(owner_id, device_id, online=online)

    async def close_viewer_sockets(
        self, user_id: str, *, sign_in: str | None = None, keep: str | None = None
    ) -> None:
        """Close the account's viewer sockets on every process (close ``SIGNED_OUT``): those opened
        with ``sign_in``'s tokens, or all of them but ``keep``'s, or all of them."""
        await self.live.publish(f"user:{user_id}", SignOutFrame(sign_in, keep).encode())

    async def device_unpaired(self, device_id: str) -> None:
        for session in await self.live.sessions_of_device(device_id):
            await self.end_session(session.session_id, "device_unpaired")
        await self.live.publish(
            f"device:{device_id}", encode(PairingStatus(payload=PairingStatusPayload(paired=False)))
        )

    def _ice_servers(self, ident: str) -> list[IceServer]:
        s = self.settings
        return ice_servers(
            stun_urls=s.stun_urls,
            turn_urls=s.turn_urls,
            turn_secret=s.turn_secret,
            ttl_s=s.turn_ttl_s,
            ident=ident,
        )
