"""Watch sessions: who may watch, the live record of each session, and forwarding signals.

``WatchService`` knows nothing of sockets.  A *party* is a device or one viewer socket, named by
its principal (device id or user id) and connection id; frames reach parties by publishing to
their addresses in the live state (``device:<id>``, ``viewer:<conn id>``).

**Ownership is an invariant, not a check.**  A live session exists only while its viewer may
watch its device (:func:`may_watch`: its owner, or a viewer the owner shared it with):

- ``request`` writes the session into the live state *first* and reads the viewer's right from
  the database *after*; every change of that right commits to the database *first* and ends
  the affected live sessions *after*: a change of ownership (unpair, pairing by another
  account, a reset camera, a deleted account; it drops every share of the camera in the same
  transaction) ends all the device's sessions (:meth:`WatchService.end_device_sessions`), a
  revoked share (or a viewer leaving) ends that viewer's sessions on the device
  (:meth:`WatchService.end_viewer_sessions`).  Whichever runs second sees the other, so no
  interleaving leaves a session of a former owner or viewer alive, on any process.
- every forwarded ``signal_*`` is checked against the live record it names (never a cache held
  by a connection): it must come from one of the session's two parties — for a viewer, from the
  very socket the session is bound to — and goes only to the other.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from cloud.config import Settings
from cloud.live import LiveSession, LiveState
from cloud.metrics import Metrics
from cloud.store import Access, Device, Store
from cloud.turn import ice_servers
from protocol import ProtocolError, encode
from protocol.messages import (
    DeviceEndReason,
    DeviceWatchRequest,
    DeviceWatchRequestPayload,
    EndReason,
    IceServer,
    MediaPath,
    PeerStatus,
    PeerStatusPayload,
    SignalAnswer,
    SignalIce,
    SignalOffer,
    WatchEnded,
    WatchEndedPayload,
)

log = logging.getLogger(__name__)

Role = Literal["device", "viewer"]
Signal = SignalOffer | SignalAnswer | SignalIce


@dataclass(frozen=True)
class Party:
    role: Role
    #: The device id, or the viewer's user id.
    principal: str
    #: The socket's connection id.
    conn_id: str


@dataclass(frozen=True)
class Started:
    session_id: str
    device_id: str
    ice_servers: list[IceServer]


def may_watch(access: Access | None) -> bool:
    """The one rule of who may watch a camera: its owner, or an account its owner shared it with
    (``Store.access``, read from the database; a camera without an owner has no viewers)."""
    return access is not None and access.device.owner_id is not None and access.role is not None


#: What the camera hears when a viewer's share is revoked.  Agents decode ``watch_ended``
#: strictly and ignore a frame they cannot decode (keeping the peer streaming!), and agents
#: released before sharing existed do not know ``access_revoked``; for a camera both mean
#: the same: this viewer lost its right to watch.
_DEVICE_REASON: dict[str, EndReason] = {"access_revoked": "device_unpaired"}


def _lost(access: Access | None) -> EndReason:
    """Why a viewer without the right to watch lost it: its share was revoked (the camera still
    has its owner), or the camera changed hands."""
    if access is not None and access.device.owner_id is not None:
        return "access_revoked"
    return "device_unpaired"


class WatchService:
    def __init__(self, settings: Settings, store: Store, live: LiveState, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.live = live
        self.metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()

    # --- starting ------------------------------------------------------------------------------

    async def request(self, viewer: Party, device_id: str) -> Started:
        """Start a session for ``viewer`` on ``device_id``; ``ProtocolError`` if it may not."""
        ref = "watch_request"
        if not may_watch(await self.store.access(device_id, viewer.principal)):
            self._refused("forbidden")
            raise ProtocolError("forbidden", "no such camera on your account", ref)
        if device_id not in await self.live.online([device_id]):
            self._refused("device_offline")
            raise ProtocolError("device_offline", "the camera is offline", ref)
        session_id = secrets.token_urlsafe(24)
        now = time.time()
        await self.store.start_session(session_id, device_id, viewer.principal, now)
        session = LiveSession(session_id, device_id, viewer.principal, viewer.conn_id, now)
        if not await self.live.add_session(
            session, self.settings.session_ttl_s, cap=self.settings.max_sessions_per_device
        ):
            await self.store.end_session(session_id, "device_busy", time.time())
            self._refused("device_busy")
            raise ProtocolError(
                "device_busy",
                f"this camera already streams to {self.settings.max_sessions_per_device} "
                "viewers; try again when one of them stops",
                ref,
            )
        # The session is visible to every process now: read the right to watch again.  An
        # unpair or a revoked share that committed before this read is seen here; one that
        # commits after it finds the session in the live state and ends it.
        if not may_watch(await self.store.access(device_id, viewer.principal)):
            await self.end_session(session_id, "device_unpaired", notify=False)
            self.metrics.ownership_races.inc()
            self._refused("forbidden")
            raise ProtocolError("forbidden", "no such camera on your account", ref)
        delivered = await self.live.publish(
            f"device:{device_id}",
            encode(
                DeviceWatchRequest(
                    payload=DeviceWatchRequestPayload(
                        session_id=session_id, ice_servers=self.ice_servers(device_id)
                    )
                )
            ),
        )
        if not delivered:
            await self.end_session(session_id, "device_disconnected", notify=False)
            self._refused("device_offline")
            raise ProtocolError("device_offline", "the camera is offline", ref)
        if await self.live.get_session(session_id) is None:
            # Ended (its device changed hands, or the share was revoked) between the read above
            # and the device hearing of it: that ending may have reached the device before our
            # request did, so say it again.
            await self._tell_device_ended(device_id, session_id, "device_unpaired")
            self.metrics.ownership_races.inc()
            self._refused("forbidden")
            raise ProtocolError("forbidden", "no such camera on your account", ref)
        self.metrics.sessions_started.inc()
        return Started(session_id, device_id, self.ice_servers(viewer.principal))

    def _refused(self, reason: str) -> None:
        self.metrics.watch_refused.labels(reason).inc()

    async def resume(
        self, viewer: Party, session_id: str, device_id: str | None = None
    ) -> LiveSession:
        """Bind a live session to the viewer's new socket (its old one dropped, or the cloud
        restarted and the device re-claimed the session: then it waits unbound, see
        :meth:`device_returned`).  ``device_id``: the device the viewer says it watches."""
        session = await self.live.get_session(session_id)
        if (
            session is None
            or session.viewer_id != viewer.principal
            or (device_id is not None and session.device_id != device_id)
        ):
            raise ProtocolError("session_not_found", "that watch session has ended", session_id)
        access = await self.store.access(session.device_id, viewer.principal)
        if not may_watch(access):
            await self.end_session(session_id, _lost(access))
            raise ProtocolError("session_not_found", "that watch session has ended", session_id)
        await self.live.rebind_viewer(session_id, viewer.conn_id, self.settings.session_ttl_s)
        await self._peer_status(f"device:{session.device_id}", session, "connected")
        return session

    # --- forwarding ----------------------------------------------------------------------------

    async def party_session(self, party: Party, session_id: str, kind: str) -> LiveSession:
        """The live session ``party`` belongs to; ``ProtocolError`` if none."""
        session = await self.live.get_session(session_id)
        if session is None:
            raise ProtocolError("session_not_found", f"{kind}: no such live session", session_id)
        if party.role == "device":
            is_party = session.device_id == party.principal
        else:
            is_party = session.viewer_id == party.principal and session.viewer_conn == party.conn_id
        if not is_party:
            raise ProtocolError(
                "not_session_party", f"{kind}: you are not a party of that session", session_id
            )
        return session

    async def forward(self, sender: Party, message: Signal) -> None:
        kind = str(type(message).__struct_config__.tag)
        session = await self.party_session(sender, message.payload.session_id, kind)
        text = encode(message)
        if sender.role == "device":
            # A viewer between sockets misses it; it resumes or restarts ICE on its own.
            await self.live.publish(f"viewer:{session.viewer_conn}", text)
            return
        if not await self.live.publish(f"device:{session.device_id}", text):
            raise ProtocolError("device_offline", "the camera is offline", session.session_id)

    async def media_path(self, viewer: Party, session_id: str, path: MediaPath) -> None:
        """``watch_path`` from the session's viewer: recorded for the history (one conditional
        database update; relayed once, the record stays relayed)."""
        session = await self.party_session(viewer, session_id, "watch_path")
        await self.store.record_media_path(session.session_id, path)

    # --- ending --------------------------------------------------------------------------------

    async def end_by(
        self, party: Party, session_id: str, reason: DeviceEndReason | None = None
    ) -> None:
        """``watch_end`` from a party; a device may say why (camera_failed, device_busy...)."""
        session = await self.party_session(party, session_id, "watch_end")
        why: EndReason = "viewer_ended"
        if party.role == "device":
            why = reason or "device_ended"
        await self.end_session(session.session_id, why)

    async def end_session(self, session_id: str, reason: EndReason, notify: bool = True) -> bool:
        """End a live session once (whoever removes it first), record it, tell both parties."""
        session = await self.live.remove_session(session_id)
        if session is None:
            return False
        await self.store.end_session(session_id, reason, time.time())
        self.metrics.sessions_ended.labels(reason).inc()
        if notify:
            text = encode(
                WatchEnded(payload=WatchEndedPayload(session_id=session_id, reason=reason))
            )
            device_reason = _DEVICE_REASON.get(reason, reason)
            if device_reason != reason:
                device_text = encode(
                    WatchEnded(
                        payload=WatchEndedPayload(session_id=session_id, reason=device_reason)
                    )
                )
            else:
                device_text = text
            await self.live.publish(f"device:{session.device_id}", device_text)
            await self.live.publish(f"viewer:{session.viewer_conn}", text)
        return True

    async def end_device_sessions(self, device_id: str, reason: EndReason) -> int:
        """End every live session of a device: called *after* a change of its ownership has
        been committed to the database (see the module's docstring)."""
        ended = 0
        for session in await self.live.sessions_of_device(device_id):
            ended += await self.end_session(session.session_id, reason)
        return ended

    async def end_viewer_sessions(self, device_id: str, user_id: str, reason: EndReason) -> int:
        """End every live session of ``user_id`` on a device: called *after* the end of that
        viewer's right to watch it (a revoked share) has been committed to the database."""
        ended = 0
        for session in await self.live.sessions_of_device(device_id):
            if session.viewer_id == user_id:
                ended += await self.end_session(session.session_id, reason)
        return ended

    async def _tell_device_ended(self, device_id: str, session_id: str, reason: EndReason) -> None:
        text = encode(WatchEnded(payload=WatchEndedPayload(session_id=session_id, reason=reason)))
        await self.live.publish(f"device:{device_id}", text)

    # --- parties leaving -----------------------------------------------------------------------

    async def device_left(self, device_id: str, *, clean: bool) -> None:
        """The device's socket is gone (and no newer one holds its presence)."""
        sessions = await self.live.sessions_of_device(device_id)
        if not sessions:
            return
        if clean:
            for session in sessions:
                await self.end_session(session.session_id, "device_disconnected")
            return
        for session in sessions:
            await self._peer_status(f"viewer:{session.viewer_conn}", session, "reconnecting")
        self.later(self._end_unless_device_returns(device_id, sessions))

    async def device_returned(self, device: Device, claimed: list[str] | None) -> list[str]:
        """The device said hello again, listing the sessions whose video still flows
        (``claimed``).  Its viewers hear that it is back.  A claimed session this cloud no
        longer holds (the embedded cloud restarted and forgot it) is re-adopted when its record
        says it is this device's and its viewer may still watch it: it waits, unbound, for the
        viewer's ``watch_resume`` for the resume grace, and counts against the camera's cap.
        Returns the ids the device should keep (``hello_ack.sessions``)."""
        held = await self.live.sessions_of_device(device.id)
        for session in held:
            if session.viewer_conn:
                await self._peer_status(f"viewer:{session.viewer_conn}", session, "connected")
        kept = [s.session_id for s in held]
        for session_id in dict.fromkeys(claimed or ()):
            if session_id in kept:
                continue
            record = await self.store.session(session_id)
            if (
                record is None
                or record.device_id != device.id
                or record.ended_at is not None
                or not may_watch(await self.store.access(device.id, record.viewer_id))
            ):
                continue
            adopted = LiveSession(session_id, device.id, record.viewer_id, "", record.started_at)
            if await self.live.add_session(
                adopted, self.settings.resume_grace_s, cap=self.settings.max_sessions_per_device
            ):
                self.metrics.sessions_adopted.inc()
                kept.append(session_id)
        return kept

    async def viewer_left(self, conn_id: str, *, clean: bool) -> None:
        """A viewer socket is gone."""
        sessions = await self.live.sessions_of_viewer_conn(conn_id)
        if not sessions:
            return
        if clean:
            for session in sessions:
                await self.end_session(session.session_id, "viewer_disconnected")
            return
        for session in sessions:
            await self._peer_status(f"device:{session.device_id}", session, "reconnecting")
        self.later(self._end_unless_viewer_resumes(conn_id, sessions))

    async def _peer_status(
        self, address: str, session: LiveSession, state: Literal["reconnecting", "connected"]
    ) -> None:
        peer: Role = "viewer" if address.startswith("device:") else "device"
        text = encode(
            PeerStatus(
                payload=PeerStatusPayload(session_id=session.session_id, peer=peer, state=state)
            )
        )
        await self.live.publish(address, text)

    # The media of a session flows peer to peer, so a dropped signaling socket need not end it:
    # its party gets ``resume_grace_s`` to come back (a viewer with ``watch_resume``, a device
    # with a new ``hello``) before the session is ended and the other party told.

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background (cancelled at stop)."""
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

    # --- housekeeping --------------------------------------------------------------------------

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

    def ice_servers(self, ident: str) -> list[IceServer]:
        s = self.settings
        return ice_servers(
            stun_urls=s.stun_urls,
            turn_urls=s.turn_urls,
            turn_secret=s.turn_secret,
            ttl_s=s.turn_ttl_s,
            ident=ident,
        )
