"""Watch sessions: one aiortc peer connection per viewer, all fed by the one media hub.

The cloud's messages drive a :class:`SessionManager`::

    watch_request {session_id, ice_servers}  -> a peer connection with those ICE servers
                                                (refused with watch_end {device_busy} at the
                                                cap, {device_unpaired} while unpaired)
    signal_offer  {session_id, sdp}          -> refused with watch_end {codec_unsupported} when
                                                the offer has no H.264 the camera sends (before
                                                the camera starts for it); else answer with the
                                                hub's H.264 track and the host and server-
                                                reflexive candidates (and the relay one if TURN
                                                allocated it meanwhile: that starts at
                                                watch_request); else the relay candidate as
                                                signal_ice once allocated; then signal_ice {null}
    signal_ice    {session_id, candidate}    -> add the viewer's candidate (null: ignored)
    watch_ended   {session_id, reason}       -> close that peer

A session ends (``watch_end`` with a reason where there is one) when its peer connection fails
or closes; when its offer does not come within ``offer_timeout`` s, or it does not connect
within ``connect_timeout`` s of its answer; when the camera has failed (``camera_failed``);
when its watchdog sees no picture leave for ``frame_timeout`` s while the camera delivers
(``stream_stalled``: a frozen sender); when the device is unpaired or paired to someone else
(``device_unpaired``, all of them at once); and when the cloud, after a reconnection, does not
list it among those it keeps.

Peers do not depend on the signaling socket: a session that streams keeps streaming while the
cloud is unreachable.  All counters are plain attributes (see :class:`Counters`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import msgspec

from device.media import (
    HubState,
    LateRelay,
    MediaHub,
    answer,
    can_play,
    candidate_line,
    defer_relays,
    offered_video_codecs,
    prepare_sender,
)
from device.memory import give_back
from device.systemd import log_context
from protocol.messages import (
    DEVICE_END_REASONS,
    DeviceEndReason,
    DeviceWatchRequestPayload,
    IceCandidate,
    SessionDescription,
    SignalAnswer,
    SignalIce,
    SignalIcePayload,
    SignalOffer,
    SignalSdpPayload,
    WatchEnd,
    WatchEndPayload,
)
from protocol.snapshot import SNAPSHOT_CHANNEL

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from device.media import HubTrack
    from device.snapshots import Snapshots

log = logging.getLogger(__name__)

Send = Callable[[SignalAnswer | SignalIce | WatchEnd], None]
Clock = Callable[[], float]

#: Data channels a session may open (a browser opens one, ``snapshot``); more are closed.
MAX_CHANNELS_PER_SESSION = 4

#: A Raspberry Pi Zero 2 W (512 MB, four A53 cores) serves this many viewers of a 720p stream
#: comfortably; ``max_sessions`` in ``agent.yaml`` changes it.
DEFAULT_MAX_SESSIONS = 4


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
    started: float
    phase: Phase = Phase.AWAITING_OFFER
    track: HubTrack | None = None
    connected_at: float | None = None
    #: Why it ended (``None`` while it lasts, or when the cloud ended it without a reason).
    end_reason: str | None = None
    transceiver: Any = None  # aiortc RTCRtpTransceiver, made before the offer
    relays: list[LateRelay] = field(default_factory=list)
    #: Relay candidates allocated so far; set once every allocation finished or failed.
    relay_candidates: list[Any] = field(default_factory=list)
    relays_done: asyncio.Event = field(default_factory=asyncio.Event)
    relay_task: asyncio.Task[None] | None = None
    #: Set once the viewer's offer is applied: candidates wait for it.
    remote_ready: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    #: Data channels the viewer opened (``snapshot``).
    channels: int = 0

    @property
    def short(self) -> str:
        return self.id[:8]


@dataclass
class Counters:
    """What the session manager did, for tests, the soak benchmark and logs."""

    #: watch_requests accepted, and refused (at the cap; while unpaired).
    accepted: int = 0
    refused_busy: int = 0
    refused_unpaired: int = 0
    #: Offers refused because the viewer cannot play H.264 (``codec_unsupported``).
    refused_codec: int = 0
    #: Sessions whose peer connected.
    connected: int = 0
    #: Peer connections closed (each accepted session's is closed exactly once).
    closed: int = 0
    #: Ended sessions by why ("viewer_ended" etc. from the cloud; our own reasons).
    ended: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Relay candidates allocated (in the answer if ready for it, else trickled after it),
    #: trickled, and TURN allocations that failed.
    relays_allocated: int = 0
    relays_trickled: int = 0
    relays_failed: int = 0
    #: Times the memory of a crowd that had gone was returned to the system.
    memory_returned: int = 0
    #: Data channels closed at once (an unknown label, or past the per-session bound).
    channels_refused: int = 0


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
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        offer_timeout: float = 30.0,
        connect_timeout: float = 30.0,
        frame_timeout: float = 10.0,
        relay_timeout: float = 10.0,
        on_viewers: Callable[[int], None] | None = None,
        snapshots: Snapshots | None = None,
    ) -> None:
        """``frame_timeout``: a connected session none of whose pictures left for this long,
        while the camera delivers, is frozen and ends (``stream_stalled``).
        ``relay_timeout``: how long a deferred TURN allocation may take.  ``snapshots``: answers
        the ``snapshot`` data channels of sessions (none: such channels are closed)."""
        self.hub = hub
        self.snapshots = snapshots
        self._send = send
        self.max_sessions = max_sessions
        self.offer_timeout = offer_timeout
        self.connect_timeout = connect_timeout
        self.frame_timeout = frame_timeout
        self.relay_timeout = relay_timeout
        self._on_viewers = on_viewers
        self._sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._viewers = 0
        self._closing = False
        self._peers_closing = 0
        self._give_back: asyncio.TimerHandle | None = None
        #: Seconds after the last viewer left before memory is returned (see device.memory).
        self.give_back_after_s = 2.0
        #: ``False`` after the cloud said the device is not paired: watch requests are refused.
        self._paired: bool | None = None
        self.counters = Counters()
        hub.add_listener(self._camera_state)

    # --- queries ------------------------------------------------------------------------------

    def alive(self, session_id: str) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def streaming(self) -> list[str]:
        """Sessions whose peer connection is connected (it carries video)."""
        return [s.id for s in self._sessions.values() if s.phase is Phase.CONNECTED]

    @property
    def viewers(self) -> int:
        """Sessions whose peer is connected."""
        return sum(s.phase is Phase.CONNECTED for s in self._sessions.values())

    @property
    def pending_tasks(self) -> int:
        """Background work still running (answers, candidates, closing peers, supervisors)."""
        return len(self._tasks)

    async def idle(self) -> None:
        """Wait until no session is left and every peer has finished closing (each session
        has a supervising task for as long as it lasts)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    # --- what the cloud says ------------------------------------------------------------------

    def watch_request(self, payload: DeviceWatchRequestPayload) -> None:
        from aiortc import RTCPeerConnection

        session_id = payload.session_id
        if payload.session_id in self._sessions:
            log.warning("session %s: duplicate watch_request ignored", session_id[:8])
            return
        refusal: DeviceEndReason | None = None
        if self._closing:
            refusal = "device_ended"
        elif self._paired is False:
            refusal = "device_unpaired"
            self.counters.refused_unpaired += 1
        elif len(self._sessions) >= self.max_sessions:
            refusal = "device_busy"
            self.counters.refused_busy += 1
        if refusal is not None:
            log.warning(
                "session %s: refused (%s; %d session(s), at most %d)",
                session_id[:8],
                refusal,
                len(self._sessions),
                self.max_sessions,
            )
            self.counters.ended[refusal] += 1
            self._send(WatchEnd(payload=WatchEndPayload(session_id=session_id, reason=refusal)))
            return
        pc = RTCPeerConnection(ice_configuration(payload.ice_servers))
        session = Session(session_id, pc, started=self.hub.clock())
        self._sessions[session.id] = session
        # The sender and its ICE agent now, so that a TURN allocation overlaps the viewer's
        # offer instead of delaying the answer (late_relay).
        session.transceiver = prepare_sender(pc)
        session.relays = defer_relays(pc)
        if session.relays:
            session.relay_task = self._spawn(session, self._allocate_relays(session), "relay")
        else:
            session.relays_done.set()
        self.counters.accepted += 1
        log.info(
            "session %s: watch request (%d ICE servers), %d session(s) now",
            session.short,
            len(payload.ice_servers),
            len(self._sessions),
        )

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._connection_state(session)

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            self._data_channel(session, channel)

        self._spawn(session, self._supervise(session), "session")

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
        self._spawn(session, self._answer(session, payload), "answer")

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
            self._spawn(session, self._add_candidate(session, candidate), "ice")

    def ended(self, session_id: str, reason: str) -> None:
        """``watch_ended`` from the cloud: close the peer without answering."""
        session = self._sessions.get(session_id)
        if session is not None:
            log.info("session %s: ended by the cloud (%s)", session.short, reason)
            self.end(session, notify=False, reason=reason)

    def set_paired(self, paired: bool) -> None:
        """``hello_ack.paired``: whether an account owns the device now.  Unpaired ends every
        session; while unpaired, watch requests are refused."""
        self._paired = paired
        if not paired:
            self.end_all("device_unpaired")

    def ownership_changed(self, paired: bool) -> None:
        """``pairing_status``: the device was unpaired, or paired to an account (a new owner).
        Either way no viewer of the old owner may go on watching: every session ends at once."""
        if self._sessions:
            log.warning(
                "ownership changed (%s): ending %d session(s)",
                "paired" if paired else "unpaired",
                len(self._sessions),
            )
        self.end_all("device_unpaired")
        self._paired = paired

    def keep_only(self, session_ids: Iterable[str]) -> None:
        """``hello_ack.sessions``: the cloud keeps these; every other session ends (the cloud
        does not know it, so nobody is told)."""
        kept = set(session_ids)
        for session in list(self._sessions.values()):
            if session.id not in kept:
                log.info("session %s: the cloud no longer knows it; ending", session.short)
                self.end(session, notify=False, reason="unknown_to_cloud")

    # --- ending ---------------------------------------------------------------------------------

    def end(self, session: Session, *, notify: bool, reason: str | None = None) -> None:
        """Close ``session``'s peer (in the background); ``notify``: send ``watch_end`` with
        ``reason`` if it is one a device may give."""
        if session.phase is Phase.CLOSED:
            return
        session.phase = Phase.CLOSED
        session.end_reason = reason
        self.counters.ended[reason or "device_ended"] += 1
        self._sessions.pop(session.id, None)
        if notify:
            said = cast("DeviceEndReason", reason) if reason in DEVICE_END_REASONS else None
            self._send(WatchEnd(payload=WatchEndPayload(session_id=session.id, reason=said)))
        if session.track is not None:
            session.track.stop()
        if self.snapshots is not None:
            self.snapshots.forget(session.id)
        if session.relay_task is not None:
            session.relay_task.cancel()  # nobody needs the allocation any more
        session.remote_ready.set()  # release waiting candidates and the supervisor
        session.connected.set()
        self._peers_closing += 1
        self._spawn(session, self._close_peer(session), "close")
        self._viewers_changed()

    def end_all(self, reason: DeviceEndReason, *, notify: bool = True) -> None:
        for session in list(self._sessions.values()):
            self.end(session, notify=notify, reason=reason)

    async def close(self, *, notify: bool = True, timeout: float = 3.0) -> None:
        """End every session (shutdown) and wait, at most ``timeout`` s, for peers to close."""
        self._closing = True
        if self._give_back is not None:
            self._give_back.cancel()
        self.end_all("device_ended", notify=notify)
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d peer task(s) did not finish in %.0f s", len(pending), timeout)

    # --- internals ------------------------------------------------------------------------------

    def _spawn(
        self, session: Session, coro: Coroutine[Any, Any, None], what: str
    ) -> asyncio.Task[None]:
        """A task of ``session``'s: its log records carry the session's id in the journal
        (``SESSION_ID``), and so do the tasks it creates."""
        with log_context(session_id=session.id):
            task = asyncio.get_running_loop().create_task(coro, name=f"{what}-{session.short}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

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

    def _camera_state(self, state: HubState) -> None:
        if state is not HubState.FAILED:
            return
        watching = [s for s in self._sessions.values() if s.track is not None]
        if watching:
            log.error("the camera failed: ending %d session(s)", len(watching))
        for session in watching:
            self.end(session, notify=True, reason="camera_failed")

    def _data_channel(self, session: Session, channel: Any) -> None:
        session.channels += 1
        if (
            channel.label != SNAPSHOT_CHANNEL
            or self.snapshots is None
            or session.channels > MAX_CHANNELS_PER_SESSION
            or session.phase is Phase.CLOSED
        ):
            self.counters.channels_refused += 1
            channel.close()
            return
        self.snapshots.attach(channel, session.id)

    def _connection_state(self, session: Session) -> None:
        state = session.pc.connectionState
        log.info("session %s: peer %s", session.short, state)
        if session.phase is Phase.CLOSED:
            return
        if state == "connected":
            session.phase = Phase.CONNECTED
            session.connected_at = self.hub.clock()
            self.counters.connected += 1
            session.connected.set()
            self._viewers_changed()
        elif state in ("failed", "closed"):
            self.end(session, notify=True, reason=f"peer_{state}")

    async def _supervise(self, session: Session) -> None:
        """End a session whose offer does not come, or which does not connect, in time; then
        watch that its pictures keep leaving."""
        try:
            async with asyncio.timeout(self.offer_timeout):
                await session.remote_ready.wait()
        except TimeoutError:
            if session.phase is Phase.AWAITING_OFFER:
                log.warning(
                    "session %s: no offer within %.0f s; ending", session.short, self.offer_timeout
                )
                self.end(session, notify=True, reason="no_offer")
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
                self.end(session, notify=True, reason="not_connected")
            return
        await self._watchdog(session)

    async def _watchdog(self, session: Session) -> None:
        """A connected session whose sender took no picture for ``frame_timeout`` s while the
        camera delivers pictures is frozen: end it, with a reason the viewer acts on."""
        hub = self.hub
        period = max(0.05, min(1.0, self.frame_timeout / 4))
        while True:
            await asyncio.sleep(period)
            track = session.track
            if track is None or not self.alive(session.id):
                return
            if hub.state is not HubState.RUNNING:
                continue  # restarting: no pictures for anybody; the hub decides
            now = hub.clock()
            last_sent = track.last_delivered_at or session.connected_at or now
            last_picture = hub.last_picture_at
            camera_delivers = last_picture is not None and now - last_picture < hub.stall_timeout_s
            if camera_delivers and now - last_sent > self.frame_timeout:
                log.warning(
                    "session %s: no picture left for %.1f s while the camera delivers; ending",
                    session.short,
                    now - last_sent,
                )
                self.end(session, notify=True, reason="stream_stalled")
                return

    async def _answer(self, session: Session, payload: SignalSdpPayload) -> None:
        from aiortc import RTCSessionDescription

        offer = RTCSessionDescription(sdp=payload.sdp.sdp, type="offer")
        if not can_play(offer.sdp):
            # Before the camera is started for it: a browser that cannot decode H.264 (Firefox
            # without its H.264 decoder offers VP8, VP9, AV1) is told so, and does not retry.
            offered = sorted({name for name, _ in offered_video_codecs(offer.sdp)})
            log.warning(
                "session %s: the viewer cannot play H.264 (it offers %s); refused",
                session.short,
                ", ".join(offered) or "no video",
            )
            self.counters.refused_codec += 1
            self.end(session, notify=True, reason="codec_unsupported")
            return
        try:
            session.track = self.hub.subscribe()
            local = await answer(session.pc, offer, session.track, transceiver=session.transceiver)
        except Exception as exc:
            if session.phase is not Phase.CLOSED:
                log.warning("session %s: cannot answer the offer: %s", session.short, exc)
                self.end(session, notify=True, reason="bad_offer")
            return
        if session.phase is Phase.CLOSED:
            return
        if session.phase is Phase.ANSWERING:
            session.phase = Phase.CONNECTING
        session.remote_ready.set()
        pending = not session.relays_done.is_set()
        sdp = local.sdp
        if pending:  # more candidates will follow: the answer must not say there are none
            sdp = "".join(f"{x}\r\n" for x in sdp.splitlines() if x != "a=end-of-candidates")
        self._send(
            SignalAnswer(
                payload=SignalSdpPayload(
                    session_id=session.id,
                    sdp=SessionDescription(type="answer", sdp=sdp),
                )
            )
        )
        log.info(
            "session %s: answered in %.0f ms%s",
            session.short,
            (self.hub.clock() - session.started) * 1000,
            "; the relay candidate follows when TURN allocates it" if pending else "",
        )
        if pending:
            self._spawn(session, self._trickle_relays(session, local.sdp), "trickle")
        else:  # every candidate is in the answer: end-of-candidates right away
            self._send(SignalIce(payload=SignalIcePayload(session_id=session.id, candidate=None)))

    async def _allocate_relays(self, session: Session) -> None:
        try:
            for relay in session.relays:
                found = await relay.allocate(self.relay_timeout)
                if not found:
                    self.counters.relays_failed += 1
                session.relay_candidates.extend(found)
                self.counters.relays_allocated += len(found)
        finally:
            session.relays_done.set()

    async def _trickle_relays(self, session: Session, answered: str) -> None:
        """After the answer: the relay candidates that were not ready for it, then the end."""
        await session.relays_done.wait()
        if session.phase is Phase.CLOSED:
            return
        for candidate in session.relay_candidates:
            if f" {candidate.ip} {candidate.port} typ relay" in answered:
                continue  # allocated while the answer was being made: it is in there
            self.counters.relays_trickled += 1
            self._send(
                SignalIce(
                    payload=SignalIcePayload(
                        session_id=session.id,
                        candidate=IceCandidate(
                            candidate=candidate_line(candidate),
                            sdpMid=session.transceiver.mid,  # known since the offer
                            sdpMLineIndex=0,  # one media section: the video
                        ),
                    )
                )
            )
        self._send(SignalIce(payload=SignalIcePayload(session_id=session.id, candidate=None)))

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
            try:
                await session.pc.close()
            except Exception:
                log.exception("session %s: closing the peer failed", session.short)
            for relay in session.relays:  # an allocation that finished after the peer closed
                for protocol in relay.protocols:
                    with contextlib.suppress(Exception):
                        await protocol.close()
            session.relays.clear()
        finally:
            self.counters.closed += 1
            self._peers_closing -= 1
        log.info("session %s: closed, %d session(s) left", session.short, len(self._sessions))
        if not self._sessions and not self._peers_closing and self._give_back is None:
            # The last viewer left: once aiortc's own closing work is done and the camera has
            # stopped, return the crowd's memory to the system.
            loop = asyncio.get_running_loop()
            self._give_back = loop.call_later(self.give_back_after_s, self._return_memory)

    def _return_memory(self) -> None:
        self._give_back = None
        if not self._sessions and not self._peers_closing:
            give_back()
            self.counters.memory_returned += 1


def is_signal_of_session(message: msgspec.Struct) -> str | None:
    """The session a forwarded signal belongs to (``None`` for other messages)."""
    if isinstance(message, SignalOffer | SignalAnswer | SignalIce):
        return message.payload.session_id
    return None
