"""Watch sessions: one aiortc peer connection per viewer, all fed by the one media hub.

The cloud's messages drive a :class:`SessionManager`::

    watch_request {session_id, ice_servers}  -> a peer connection with those ICE servers
    signal_offer  {session_id, sdp}          -> answer with the hub's H.264 track;
                                                send signal_answer, then signal_ice {null}
    signal_ice    {session_id, candidate}    -> add the viewer's candidate (null: ignored)
    watch_ended   {session_id, reason}       -> close that peer

aiortc puts all of its own candidates into the answer, so the device never trickles; the
``signal_ice {candidate: null}`` after the answer tells the viewer there will be none.  A peer
whose connection fails or closes sends ``watch_end`` and is cleaned up; so does a session whose
offer does not come within ``offer_timeout`` s, or that does not connect within
``connect_timeout`` s of its answer.

Peers do not depend on the signaling socket: a session that streams keeps streaming while the
cloud is unreachable.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from device.media import MediaHub, answer
from protocol.messages import (
    DeviceWatchRequestPayload,
    IceCandidate,
    SessionDescription,
    SessionPayload,
    SignalAnswer,
    SignalIce,
    SignalIcePayload,
    SignalOffer,
    SignalSdpPayload,
    WatchEnd,
)

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from device.media import HubTrack

log = logging.getLogger(__name__)

Send = Callable[[SignalAnswer | SignalIce | WatchEnd], None]


class Phase(enum.Enum):
    AWAITING_OFFER = "awaiting offer"
    ANSWERING = "answering"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(eq=False)
class Session:
    id: str
    pc: RTCPeerConnection
    started: float = field(default_factory=time.monotonic)
    phase: Phase = Phase.AWAITING_OFFER
    track: HubTrack | None = None
    #: Set once the viewer's offer is applied: candidates wait for it.
    remote_ready: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def short(self) -> str:
        return self.id[:8]


def ice_configuration(servers: list[Any]) -> Any:
    """``RTCConfiguration`` for the cloud's ``ice_servers`` (an empty list means none at all:
    aiortc would otherwise fall back to a public STUN server)."""
    from aiortc import RTCConfiguration, RTCIceServer

    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers
        ]
    )


def parse_candidate(candidate: IceCandidate) -> Any:
    """A browser's ``RTCIceCandidateInit`` as an aiortc ``RTCIceCandidate``; ``None`` for the
    empty end-of-candidates string.  ``ValueError`` if it cannot be read."""
    from aiortc.sdp import candidate_from_sdp

    text = candidate.candidate.strip()
    if not text:
        return None
    if text.startswith("a="):
        text = text[2:]
    try:
        parsed = candidate_from_sdp(text.split(":", 1)[1] if ":" in text else text)
    except (AssertionError, IndexError, ValueError) as exc:
        raise ValueError(f"unreadable ICE candidate {text[:80]!r}") from exc
    parsed.sdpMid = candidate.sdpMid
    parsed.sdpMLineIndex = candidate.sdpMLineIndex
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    return parsed


class SessionManager:
    def __init__(
        self,
        hub: MediaHub,
        send: Send,
        *,
        offer_timeout: float = 30.0,
        connect_timeout: float = 30.0,
        on_viewers: Callable[[int], None] | None = None,
    ) -> None:
        self.hub = hub
        self._send = send
        self.offer_timeout = offer_timeout
        self.connect_timeout = connect_timeout
        self._on_viewers = on_viewers
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._viewers = 0
        self._closing = False

    # --- queries ------------------------------------------------------------------------------

    def alive(self, session_id: str) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def viewers(self) -> int:
        """Sessions whose peer is connected."""
        return sum(s.phase is Phase.CONNECTED for s in self._sessions.values())

    # --- what the cloud says ------------------------------------------------------------------

    def watch_request(self, payload: DeviceWatchRequestPayload) -> None:
        from aiortc import RTCPeerConnection

        if self._closing:
            self._send(WatchEnd(payload=SessionPayload(session_id=payload.session_id)))
            return
        if payload.session_id in self._sessions:
            log.warning("session %s: duplicate watch_request ignored", payload.session_id[:8])
            return
        pc = RTCPeerConnection(ice_configuration(payload.ice_servers))
        session = Session(payload.session_id, pc)
        self._sessions[session.id] = session
        log.info(
            "session %s: watch request (%d ICE servers), %d session(s) now",
            session.short,
            len(payload.ice_servers),
            len(self._sessions),
        )

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._connection_state(session)

        self._spawn(self._supervise(session), f"session-{session.short}")

    def offer(self, message: SignalOffer) -> None:
        payload = message.payload
        session = self._sessions.get(payload.session_id)
        if session is None:
            log.warning("offer for unknown session %s ignored", payload.session_id[:8])
            return
        if payload.sdp.type != "offer" or session.phase is not Phase.AWAITING_OFFER:
            log.warning(
                "session %s: %s while %s ignored (no renegotiation)",
                session.short,
                payload.sdp.type,
                session.phase.value,
            )
            return
        session.phase = Phase.ANSWERING
        self._spawn(self._answer(session, payload), f"answer-{session.short}")

    def ice(self, payload: SignalIcePayload) -> None:
        session = self._sessions.get(payload.session_id)
        if session is None or payload.candidate is None:
            return  # a late candidate, or the viewer's end-of-candidates: nothing to do
        try:
            candidate = parse_candidate(payload.candidate)
        except ValueError as exc:
            log.warning("session %s: %s", session.short, exc)
            return
        if candidate is not None:
            self._spawn(self._add_candidate(session, candidate), f"ice-{session.short}")

    def ended(self, session_id: str, reason: str) -> None:
        """``watch_ended`` from the cloud: close the peer without answering."""
        session = self._sessions.get(session_id)
        if session is not None:
            log.info("session %s: ended by the cloud (%s)", session.short, reason)
            self.end(session, notify=False)

    # --- ending ---------------------------------------------------------------------------------

    def end(self, session: Session, *, notify: bool) -> None:
        """Close ``session``'s peer (in the background); ``notify``: send ``watch_end``."""
        if session.phase is Phase.CLOSED:
            return
        session.phase = Phase.CLOSED
        self._sessions.pop(session.id, None)
        if notify:
            self._send(WatchEnd(payload=SessionPayload(session_id=session.id)))
        if session.track is not None:
            session.track.stop()
        session.remote_ready.set()  # release waiting candidates and the supervisor
        session.connected.set()
        self._spawn(self._close_peer(session), f"close-{session.short}")
        self._viewers_changed()

    async def close(self, *, notify: bool = True, timeout: float = 3.0) -> None:
        """End every session (shutdown) and wait, at most ``timeout`` s, for peers to close."""
        self._closing = True
        for session in list(self._sessions.values()):
            self.end(session, notify=notify)
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d peer task(s) did not finish in %.0f s", len(pending), timeout)

    # --- internals ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _viewers_changed(self) -> None:
        viewers = self.viewers
        if viewers != self._viewers:
            self._viewers = viewers
            if self._on_viewers is not None:
                self._on_viewers(viewers)

    def _connection_state(self, session: Session) -> None:
        state = session.pc.connectionState
        log.info("session %s: peer %s", session.short, state)
        if session.phase is Phase.CLOSED:
            return
        if state == "connected":
            session.phase = Phase.CONNECTED
            session.connected.set()
            self._viewers_changed()
        elif state in ("failed", "closed"):
            self.end(session, notify=True)

    async def _supervise(self, session: Session) -> None:
        """End a session whose offer does not come, or which does not connect, in time."""
        try:
            async with asyncio.timeout(self.offer_timeout):
                await session.remote_ready.wait()
        except TimeoutError:
            if session.phase is Phase.AWAITING_OFFER:
                log.warning(
                    "session %s: no offer within %.0f s; ending", session.short, self.offer_timeout
                )
                self.end(session, notify=True)
            return
        try:
            async with asyncio.timeout(self.connect_timeout):
                await session.connected.wait()
        except TimeoutError:
            if session.phase is not Phase.CLOSED:
                log.warning(
                    "session %s: not connected within %.0f s of the answer; ending",
                    session.short,
                    self.connect_timeout,
                )
                self.end(session, notify=True)

    async def _answer(self, session: Session, payload: SignalSdpPayload) -> None:
        from aiortc import RTCSessionDescription

        offer = RTCSessionDescription(sdp=payload.sdp.sdp, type="offer")
        try:
            session.track = self.hub.subscribe()
            local = await answer(session.pc, offer, session.track)
        except Exception as exc:
            if session.phase is not Phase.CLOSED:
                log.warning("session %s: cannot answer the offer: %s", session.short, exc)
                self.end(session, notify=True)
            return
        if session.phase is Phase.CLOSED:
            return
        if session.phase is Phase.ANSWERING:
            session.phase = Phase.CONNECTING
        session.remote_ready.set()
        self._send(
            SignalAnswer(
                payload=SignalSdpPayload(
                    session_id=session.id,
                    sdp=SessionDescription(type="answer", sdp=local.sdp),
                )
            )
        )
        # aiortc's candidates are all in the answer: end-of-candidates right away.
        self._send(SignalIce(payload=SignalIcePayload(session_id=session.id, candidate=None)))
        log.info(
            "session %s: answered in %.0f ms",
            session.short,
            (time.monotonic() - session.started) * 1000,
        )

    async def _add_candidate(self, session: Session, candidate: Any) -> None:
        await session.remote_ready.wait()
        if session.phase is Phase.CLOSED:
            return
        try:
            await session.pc.addIceCandidate(candidate)
        except Exception as exc:
            log.warning("session %s: cannot add an ICE candidate: %s", session.short, exc)

    async def _close_peer(self, session: Session) -> None:
        try:
            await session.pc.close()
        except Exception:
            log.exception("session %s: closing the peer failed", session.short)
        log.info("session %s: closed, %d session(s) left", session.short, len(self._sessions))


def is_signal_of_session(message: msgspec.Struct) -> str | None:
    """The session a forwarded signal belongs to (``None`` for other messages)."""
    if isinstance(message, SignalOffer | SignalAnswer | SignalIce):
        return message.payload.session_id
    return None
