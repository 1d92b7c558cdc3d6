"""The signaling WebSockets: admitting and authenticating devices and viewers, and turning their
messages into calls of the watch service.

One ``SignalingHub`` per cloud process.  Every connection is authenticated by its first message
(``hello``); every later message is validated against the protocol and handed to
:class:`~cloud.watch.WatchService`, which owns the sessions and their rules.  Each connection
has its own bounded outbound queue and writer (``cloud.connection``), so nothing here ever waits
for one client's socket on behalf of another.

Bounds (each configurable, counted in ``/metrics``, listed in ``docs/security.md``): sockets
whose ``hello`` has not arrived yet, per client address and in all, from the moment they are
accepted (``cloud.pending``; and the hello timeout), viewer sockets per account (across every
process), messages per second per socket, each socket's outbound queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from litestar import WebSocket

from cloud.auth import TokenError, TokenIssuer, device_token_matches
from cloud.batch import Batcher
from cloud.config import Settings
from cloud.connection import (
    CLOSE_BAD_HELLO,
    CLOSE_IDLE,
    CLOSE_RESTART,
    CLOSE_SIGNED_OUT,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHENTICATED,
    Connection,
    Ending,
    QueueLimits,
    Role,
    TokenBucket,
)
from cloud.device_settings import DeviceSettingsRelay
from cloud.faults import is_unavailable_cause
from cloud.identity import Authenticate, token_authenticator
from cloud.live import KICK, LiveState, SignOutFrame
from cloud.metrics import Metrics
from cloud.pending import PendingSockets, Waiting
from cloud.store import Device, Store
from cloud.watch import Party, WatchService
from protocol import ProtocolError, decode, encode
from protocol.close_codes import restart_reason, try_again_reason
from protocol.messages import (
    HEARTBEAT_INTERVAL_S,
    ConnectionsCause,
    DeviceHello,
    DevicesChanged,
    DevicesChangedPayload,
    DeviceSettings,
    DeviceSettingsRequest,
    DeviceStatus,
    DeviceStatusPayload,
    DeviceToCloud,
    Heartbeat,
    HeartbeatAck,
    HelloAck,
    HelloAckPayload,
    PairingStatus,
    PairingStatusPayload,
    SessionPayload,
    SignalAnswer,
    SignalIce,
    SignalOffer,
    SignInsChanged,
    UpdateStatus,
    ViewerHello,
    ViewerToCloud,
    WatchEnd,
    WatchPath,
    WatchReady,
    WatchReadyPayload,
    WatchRequest,
    WatchResume,
    WatchResumed,
)

if TYPE_CHECKING:
    from cloud.updates.service import UpdateService

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
#: Seconds a socket refused by a bound on waiting sockets is told to wait (``retry_after=`` in
#: its close reason): the sockets filling the bound say hello within moments or time out.
PENDING_RETRY_AFTER_S = 1
#: How often lapsed presence (a silent socket, a dead process) is looked for.
PRESENCE_SWEEP_S = 2.0
#: Close codes a client sends when it means to go (its sessions end at once); anything else
#: (1005 no status, 1006 dropped, ...) counts as a dropped socket that may come back.
_CLEAN_CLOSE_CODES = frozenset({1000, 1001})
_PROTOCOL_ERRORS = frozenset({"invalid_json", "invalid_message", "unknown_type", "too_large"})


def _abort_of(socket: WebSocket[Any, Any, Any]) -> Callable[[], None] | None:
    abort = socket.scope.get("mumu.abort")  # see cloud.app.expose_transport_abort
    return abort if callable(abort) else None


def _hang_up_of(socket: WebSocket[Any, Any, Any]) -> Callable[[], None] | None:
    hang_up = socket.scope.get("mumu.hang_up")  # see cloud.app.expose_transport_abort
    return hang_up if callable(hang_up) else None


class SignalingHub:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        live: LiveState,
        tokens: TokenIssuer,
        metrics: Metrics,
        authenticate: Authenticate | None = None,
        watch: WatchService | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.live = live
        self.tokens = tokens
        self.metrics = metrics
        self.authenticate = authenticate or token_authenticator(tokens, store)
        self.watch = watch or WatchService(settings, store, live, metrics)
        #: Device rows for hellos, one query for every hello of a turn of the event loop.
        self._devices: Batcher[str, Device] = Batcher(store.devices_by_id)
        #: The viewers a camera is shared with, for its online/offline news (batched alike).
        self._viewers: Batcher[str, list[str]] = Batcher(store.viewers_of)
        self._queue_limits = QueueLimits(settings.ws_queue_messages, settings.ws_queue_bytes)
        #: Sockets whose hello has not arrived, per client address and in all (this process).
        self.pending = PendingSockets(
            settings.max_pending_sockets_per_address,
            settings.max_pending_sockets,
            metrics.pending_sockets.set,
        )
        self._connections: set[Connection] = set()
        self._tasks: list[asyncio.Task[None]] = []
        #: Set by :meth:`drain`: the process is stopping; its sockets come back elsewhere.
        self.draining = False
        #: Over-the-air updates (cloud/updates/), set by ``Services``; None: not offered.
        self.updates: UpdateService | None = None
        #: Camera settings between an owner and the camera (cloud/device_settings.py).
        self.device_settings = DeviceSettingsRelay(store, live)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                self._every(
                    min(30.0, self.settings.session_ttl_s / 2),
                    self.watch.sweep,
                    # not before devices had the resume grace to re-claim their sessions after
                    # a restart (the embedded cloud forgets them): their records stay open
                    first=self.settings.resume_grace_s + 5.0,
                ),
                name="session-janitor",
            ),
            asyncio.create_task(
                self._every(PRESENCE_SWEEP_S, self.sweep_presence), name="presence-sweeper"
            ),
        ]

    async def stop(self) -> None:
        await self.watch.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(
        self, period: float, work: Callable[[], Awaitable[int]], first: float = 0.0
    ) -> None:
        await asyncio.sleep(max(0.0, first - period))
        while True:
            await asyncio.sleep(period)
            try:
                await work()
            except Exception as exc:
                if is_unavailable_cause(exc):
                    log.warning("%s: %s; trying again later", work.__name__, type(exc).__name__)
                else:
                    log.exception("%s failed", work.__name__)

    async def sweep_presence(self) -> int:
        """Devices whose presence lapsed (silent socket, dead process): record when they were
        last heard, end their sessions, tell their owners they are offline."""
        lapsed = await self.live.lapsed(self.settings.presence_ttl_s)
        if not lapsed:
            return 0
        await self.store.touch_devices(lapsed)
        owners = await self.store.owners_of([device_id for device_id, _ in lapsed])
        for device_id, _ in lapsed:
            await self.watch.device_left(device_id, clean=True)
            owner = owners.get(device_id)
            if owner is not None:
                await self._device_status(owner, device_id, online=False)
        return len(lapsed)

    async def drain(self, timeout: float = 4.0) -> None:
        """A graceful stop: every socket is told to come back (close 1012, with a window over
        which its client should spread its reconnection), devices' ``last_seen`` is written in
        one statement, and sessions are left to their resume grace: their parties come back to
        another process, or to this one restarted, and carry on."""
        self.draining = True
        connections = list(self._connections)
        heard = [(c.principal, c.last_heard) for c in connections if c.role == "device"]
        heard = [(device_id, at) for device_id, at in heard if device_id]
        window = max(1, min(60, -(-len(connections) // self.settings.reconnect_rate)))
        for conn in connections:
            conn.close(CLOSE_RESTART, restart_reason(window))
        try:
            await self.store.touch_devices(heard)
        except Exception as exc:
            log.warning("could not record last_seen of %d devices: %s", len(heard), exc)
        deadline = asyncio.get_running_loop().time() + timeout
        while self._connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        log.info(
            "drained %d socket(s) (%d devices) in a reconnect window of %d s; %d left",
            len(connections),
            len(heard),
            window,
            len(self._connections),
        )

    async def sweep(self) -> int:
        return await self.watch.sweep()

    def __len__(self) -> int:
        """Open sockets on this process."""
        return len(self._connections)

    # --- serving a socket ----------------------------------------------------------------------

    async def serve(self, socket: WebSocket[Any, Any, Any], role: Role) -> None:
        address = socket.client.host if socket.client else ""
        await socket.accept()
        # Counted from the moment it is accepted until its hello arrives (or it goes).
        refusal = self.pending.refusal(address)
        waiting = self.pending.admit(address) if refusal is None else None
        conn = Connection(
            role=role,
            socket=socket,
            limits=self._queue_limits,
            on_overflow=self._overflowed,
            address=address,
            abort=_abort_of(socket),
        )
        conn.start()
        self._connections.add(conn)
        self.metrics.connections.labels(role).inc()
        try:
            if self.draining:
                conn.close(CLOSE_RESTART, restart_reason(5))
                return
            if waiting is None:
                assert refusal is not None
                self.metrics.sockets_refused.labels(refusal).inc()
                by_address = refusal == "too_many_pending"
                # full for a moment (a NAT's cameras coming back at once): the close names
                # how soon to come back, and the client does without growing its backoff
                self._refuse(
                    conn,
                    CLOSE_TRY_AGAIN,
                    "too_many_connections",
                    "too many connections from your address are waiting to say hello"
                    if by_address
                    else "too many connections are waiting to say hello; try again shortly",
                    cause="address" if by_address else "everyone",
                    retry_after_s=PENDING_RETRY_AFTER_S,
                )
                return
            try:
                authenticated = await self._authenticate(conn, waiting)
            except Exception as exc:  # the database or Redis failed: say so, the client retries
                if not is_unavailable_cause(exc):
                    log.exception("could not authenticate a %s", conn.role)
                else:
                    log.warning("could not authenticate a %s: %s", role, type(exc).__name__)
                self._refuse(conn, CLOSE_TRY_AGAIN, "unavailable", "the cloud failed; try again")
                return
            if authenticated:
                await self._run(conn)
        finally:
            if waiting is not None:
                waiting.done()
            self._connections.discard(conn)
            self.metrics.connections.labels(role).dec()
            if conn.principal and not self.draining:
                try:
                    await self._cleanup(conn)
                except Exception as exc:
                    if not is_unavailable_cause(exc):
                        log.exception("cleaning up after a %s failed", role)
            await conn.finish()
            if not conn.principal:
                # Never authenticated: its close frame is written; do not keep the descriptor
                # for a closing handshake a stranger may never answer.
                hang_up = _hang_up_of(socket)
                if hang_up is not None:
                    hang_up()

    def _overflowed(self, conn: Connection) -> None:
        self.metrics.queue_overflows.labels(conn.role).inc()
        log.warning(
            "%s %s read too slowly (its queue passed %d frames or %d bytes); disconnected",
            conn.role,
            conn.principal[:8],
            self._queue_limits.messages,
            self._queue_limits.bytes,
        )

    async def _receive(
        self, conn: Connection, wait_s: float, *, close_when_silent: bool = True
    ) -> str | None:
        """The next text frame; None when the socket closed or stayed silent past ``wait_s``
        (then it is closed, unless ``close_when_silent`` is False: TimeoutError)."""
        while True:
            try:
                async with asyncio.timeout(wait_s):
                    event = await conn.socket.receive()
            except TimeoutError:
                if not close_when_silent:
                    raise
                conn.close(CLOSE_IDLE, "no message within the heartbeat timeout")
                conn.ending = Ending.DROPPED
                return None
            except Exception:
                if conn.ending is Ending.OPEN:
                    conn.ending = Ending.DROPPED
                return None
            if event["type"] == "websocket.disconnect":
                if conn.ending is Ending.OPEN:
                    clean = event.get("code") in _CLEAN_CLOSE_CODES
                    conn.ending = Ending.CLEAN if clean else Ending.DROPPED
                return None
            if conn.closed:
                return None  # closed by the cloud while this frame was on its way
            conn.last_heard = time.time()
            text = event.get("text")
            if text is None:
                self.metrics.messages.labels("invalid").inc()
                conn.send(
                    encode(
                        ProtocolError(
                            "binary_not_supported", "binary frames are not accepted; send JSON text"
                        ).to_message()
                    )
                )
                if not conn.principal:
                    conn.close(CLOSE_BAD_HELLO, "the first message must be hello")
                    return None
                continue
            return str(text)

    async def _authenticate(self, conn: Connection, waiting: Waiting) -> bool:
        try:
            # the first frame, within HELLO_TIMEOUT_S; it stops waiting once that arrives
            text = await self._receive(conn, HELLO_TIMEOUT_S)
        finally:
            waiting.done()
        if text is None:
            return False
        direction = DeviceToCloud if conn.role == "device" else ViewerToCloud
        try:
            hello = decode(text, direction)
        except ProtocolError as exc:
            self._refuse(conn, CLOSE_BAD_HELLO, exc.code, exc.message)
            return False
        if not isinstance(hello, DeviceHello | ViewerHello):
            self._refuse(
                conn, CLOSE_BAD_HELLO, "not_authenticated", "the first message must be hello"
            )
            return False
        self.metrics.messages.labels("hello").inc()
        if isinstance(hello, DeviceHello):
            return await self._device_hello(conn, hello)
        return await self._viewer_hello(conn, hello)

    async def _device_hello(self, conn: Connection, hello: DeviceHello) -> bool:
        device = await self._devices.get(hello.payload.device_id)
        if device is None or not device_token_matches(
            device.token_hash, hello.payload.device_token
        ):
            self._refuse(
                conn, CLOSE_UNAUTHENTICATED, "not_authenticated", "unknown device or wrong token"
            )
            return False
        conn.principal = device.id
        # Presence first, then kick an older socket of this device, if any, then listen.
        online = await self.live.set_online(
            device.id, conn.conn_id, self.settings.presence_ttl_s, conn.address
        )
        if online.previous is not None:
            await self.live.publish(f"device:{device.id}", KICK)
        await self.live.subscribe(f"device:{device.id}", conn.deliver)
        claimed = hello.payload.sessions
        kept = None
        if online.has_sessions or claimed:
            kept = await self.watch.device_returned(device, claimed)
        if claimed is not None and kept is None:
            kept = []
        conn.send(
            encode(
                HelloAck(
                    payload=HelloAckPayload(
                        role="device",
                        id=device.id,
                        paired=device.owner_id is not None,
                        sessions=kept if claimed is not None else None,
                    )
                )
            )
        )
        if device.owner_id is not None:
            await self._device_status(device.owner_id, device.id, online=True)
        self._updates_hello(device.id, hello.payload.version, hello.payload.arch)
        return True

    async def _viewer_hello(self, conn: Connection, hello: ViewerHello) -> bool:
        try:
            identity = await self.authenticate(hello.payload.token)
        except TokenError as exc:
            self._refuse(conn, CLOSE_UNAUTHENTICATED, "not_authenticated", str(exc))
            return False
        if not await self.live.acquire_slot(
            f"viewer-sockets:{identity.user_id}",
            conn.conn_id,
            self.settings.max_viewer_sockets_per_account,
            self._idle_timeout(),
        ):
            self.metrics.sockets_refused.labels("too_many_viewer_sockets").inc()
            self._refuse(
                conn,
                CLOSE_TRY_AGAIN,
                "too_many_connections",
                f"this account has {self.settings.max_viewer_sockets_per_account} connections "
                "open already; close another tab or device",
                cause="account",
            )
            return False
        conn.principal = identity.user_id
        conn.sign_in = identity.sign_in
        await self.live.subscribe(f"viewer:{conn.conn_id}", conn.deliver)
        await self.live.subscribe(f"user:{identity.user_id}", conn.deliver)
        # A sign-out commits, then publishes on ``user:<id>``. If it ran between the check above
        # and the subscription, the frame was missed: check again now that none can be.
        try:
            await self.authenticate(hello.payload.token)
        except TokenError:
            conn.close(CLOSE_SIGNED_OUT, "signed out")
            return False
        conn.send(encode(HelloAck(payload=HelloAckPayload(role="viewer", id=identity.user_id))))
        return True

    def _refuse(
        self,
        conn: Connection,
        close_code: int,
        code: Any,
        message: str,
        cause: ConnectionsCause | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        # (a cause only to viewers: older agents refuse an error with a field they do not know)
        said = cause if conn.role == "viewer" else None
        conn.send(encode(ProtocolError(code, message, ref="hello", cause=said).to_message()))
        reason = message if retry_after_s is None else try_again_reason(message, retry_after_s)
        conn.close(close_code, reason)

    def _idle_timeout(self) -> float:
        """Silence after which a socket is taken for dead: as long as presence lasts (two
        missed heartbeats and a margin)."""
        return max(self.settings.presence_ttl_s, HEARTBEAT_INTERVAL_S + 5.0)

    async def _run(self, conn: Connection) -> None:
        direction = DeviceToCloud if conn.role == "device" else ViewerToCloud
        idle_timeout = self._idle_timeout()
        party = Party(conn.role, conn.principal, conn.conn_id)
        budget = TokenBucket(self.settings.ws_message_rate, self.settings.ws_message_burst)
        while not conn.closed:
            text = await self._receive(conn, idle_timeout)
            if text is None:
                return
            if not budget.take():
                self.metrics.messages.labels("rate_limited").inc()
                conn.send(
                    encode(
                        ProtocolError(
                            "rate_limited", "too many messages; this one was dropped"
                        ).to_message()
                    )
                )
                continue
            try:
                message = decode(text, direction)
                self.metrics.messages.labels(type(message).__struct_config__.tag).inc()
                await self._handle(conn, party, message)
            except ProtocolError as exc:
                if exc.code in _PROTOCOL_ERRORS:
                    self.metrics.messages.labels("invalid").inc()
                conn.send(encode(exc.to_message()))
            except Exception as exc:
                if is_unavailable_cause(exc):
                    self.metrics.faults.labels("signaling").inc()
                    log.warning("a %s message failed: %s", conn.role, type(exc).__name__)
                    error = ProtocolError(
                        "unavailable", "the cloud is having trouble; try again in a moment"
                    )
                else:
                    log.exception("failed to handle a %s message", conn.role)
                    error = ProtocolError("internal", "the cloud could not handle that")
                conn.send(encode(error.to_message()))

    async def _handle(self, conn: Connection, party: Party, message: Any) -> None:
        if isinstance(message, DeviceHello | ViewerHello):
            raise ProtocolError(
                "already_authenticated", "this connection said hello already", "hello"
            )
        if isinstance(message, Heartbeat):
            await self._heartbeat(conn)
        elif isinstance(message, WatchRequest):
            if conn.role != "viewer":
                raise ProtocolError("forbidden", "only viewers may ask to watch", "watch_request")
            try:
                started = await self.watch.request(party, message.payload.device_id)
            except ProtocolError as exc:  # the viewer matches the refusal to its request
                exc.request_id = message.payload.request_id
                raise
            conn.send(
                encode(
                    WatchReady(
                        payload=WatchReadyPayload(
                            session_id=started.session_id,
                            device_id=started.device_id,
                            ice_servers=started.ice_servers,
                            request_id=message.payload.request_id,
                        )
                    )
                )
            )
        elif isinstance(message, WatchResume):
            await self.watch.resume(party, message.payload.session_id, message.payload.device_id)
            conn.send(
                encode(WatchResumed(payload=SessionPayload(session_id=message.payload.session_id)))
            )
        elif isinstance(message, SignalOffer | SignalAnswer | SignalIce):
            await self.watch.forward(party, message)
        elif isinstance(message, WatchEnd):
            # a device may say why (camera_failed, device_busy, ...)
            await self.watch.end_by(party, message.payload.session_id, message.payload.reason)
        elif isinstance(message, WatchPath):  # viewers only (ViewerToCloud)
            await self.watch.media_path(party, message.payload.session_id, message.payload.path)
        elif isinstance(message, UpdateStatus):
            if self.updates is not None:
                await self.updates.status(conn.principal, message.payload)
        elif isinstance(message, DeviceSettingsRequest):  # viewers only (ViewerToCloud)
            await self.device_settings.from_viewer(conn.principal, message.payload)
        elif isinstance(message, DeviceSettings):  # devices only (DeviceToCloud)
            await self.device_settings.from_device(conn.principal, message.payload)
        else:  # pragma: no cover - the direction unions hold nothing else
            raise ProtocolError("unknown_type", f"{type(message).__name__} is not handled here")

    async def _heartbeat(self, conn: Connection) -> None:
        s = self.settings
        if conn.role == "device":
            # One Redis call (or none, embedded); no database write: last_seen is written when
            # the device goes.
            if not await self.live.device_heartbeat(
                conn.principal, conn.conn_id, conn.address, s.presence_ttl_s, s.session_ttl_s
            ):
                # It had been silent long enough to be shown offline: it is back.
                owner = (await self.store.owners_of([conn.principal])).get(conn.principal)
                if owner is not None:
                    await self._device_status(owner, conn.principal, online=True)
        else:
            await self.live.viewer_heartbeat(conn.conn_id, s.session_ttl_s)
            await self.live.acquire_slot(
                f"viewer-sockets:{conn.principal}",
                conn.conn_id,
                s.max_viewer_sockets_per_account,
                self._idle_timeout(),
            )
        conn.send(encode(HeartbeatAck()))

    async def _cleanup(self, conn: Connection) -> None:
        clean = conn.ending is Ending.CLEAN
        if conn.role == "device":
            await self.live.unsubscribe(f"device:{conn.principal}", conn.deliver)
            if await self.live.set_offline(conn.principal, conn.conn_id):
                await self.store.touch_devices([(conn.principal, conn.last_heard)])
                await self.watch.device_left(conn.principal, clean=clean)
                device = await self.store.device(conn.principal)  # ownership may have changed
                if device is not None and device.owner_id is not None:
                    await self._device_status(device.owner_id, conn.principal, online=False)
            return
        await self.live.unsubscribe(f"viewer:{conn.conn_id}", conn.deliver)
        await self.live.unsubscribe(f"user:{conn.principal}", conn.deliver)
        await self.live.release_slot(f"viewer-sockets:{conn.principal}", conn.conn_id)
        await self.watch.viewer_left(conn.conn_id, clean=clean)

    # --- over-the-air updates (cloud/updates/): the hub's only hooks ---------------------------

    def _updates_hello(self, device_id: str, version: str | None, arch: str | None) -> None:
        """Record the device's version and offer it a rollout's release, after its hello."""
        updates = self.updates
        if updates is None:
            return

        async def record() -> None:
            try:
                await updates.device_connected(device_id, version, arch)
            except Exception as exc:
                if not is_unavailable_cause(exc):
                    log.exception("could not record the version of device %s", device_id)

        self.watch.later(record())

    # --- used by the HTTP API ------------------------------------------------------------------

    async def _device_status(self, owner_id: str, device_id: str, online: bool) -> None:
        """Tell the camera's owner and the accounts it is shared with that it came or went."""
        text = encode(DeviceStatus(payload=DeviceStatusPayload(device_id=device_id, online=online)))
        await self.live.publish(f"user:{owner_id}", text)
        for viewer_id in await self._viewers.get(device_id) or ():
            await self.live.publish(f"user:{viewer_id}", text)

    async def devices_changed(self, user_ids: Iterable[str | None], device_id: str) -> None:
        """Tell each of the accounts (every socket) that its camera list changed."""
        text = encode(DevicesChanged(payload=DevicesChangedPayload(device_id=device_id)))
        for user_id in dict.fromkeys(u for u in user_ids if u is not None):
            await self.live.publish(f"user:{user_id}", text)

    async def device_paired(self, device_id: str, owner_id: str) -> None:
        """After a claim committed: sessions of anyone else end, the device and owner hear."""
        await self.watch.end_device_sessions(device_id, "device_unpaired")
        await self.live.publish(
            f"device:{device_id}", encode(PairingStatus(payload=PairingStatusPayload(paired=True)))
        )
        online = device_id in await self.live.online([device_id])
        await self._device_status(owner_id, device_id, online=online)

    async def device_unpaired(self, device_id: str) -> None:
        """After an unpair (or reset, or account deletion) committed (its shares dropped with
        it): every session ends, its owner's and its viewers'."""
        await self.watch.end_device_sessions(device_id, "device_unpaired")
        await self.live.publish(
            f"device:{device_id}", encode(PairingStatus(payload=PairingStatusPayload(paired=False)))
        )

    async def close_viewer_sockets(
        self, user_id: str, *, sign_in: str | None = None, keep: str | None = None
    ) -> None:
        """Close the account's viewer sockets on every process (close ``SIGNED_OUT``): those opened
        with ``sign_in``'s tokens, or all of them but ``keep``'s, or all of them."""
        await self.live.publish(f"user:{user_id}", SignOutFrame(sign_in, keep).encode())

    async def sign_ins_changed(self, user_id: str) -> None:
        """Tell every viewer socket of the account, on every process, that its sign-ins changed
        (``sign_ins_changed``): the account page reads its list again.  Published after any
        sockets of ended sign-ins were told to close, so those never hear it."""
        await self.live.publish(f"user:{user_id}", encode(SignInsChanged()))
