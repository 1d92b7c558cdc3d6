"""Relay (TURN) candidates after the answer, not before it.

aiortc gathers every local candidate before ``setLocalDescription`` returns, the TURN
allocation included, and puts them all in the answer.  A TURN server that does not answer
costs the whole gathering timeout (5 s in aioice) on every watch, even for a viewer on the same
LAN.  So the device answers with what it has at once (host and server-reflexive candidates) and
allocates the relay candidate afterwards, trickling it to the viewer as ``signal_ice``:

    await pc.setRemoteDescription(offer)
    relays = defer_relays(pc)                 # before setLocalDescription
    await pc.setLocalDescription(await pc.createAnswer())   # no TURN wait
    ... send the answer ...
    for relay in relays:
        candidate = await relay.allocate(timeout=10.0)      # None if it failed
        ... send it as signal_ice ...

The allocation may start as soon as the ICE agent exists (the session manager starts it at
``watch_request``, before the viewer's offer): if it is done by the time the answer's
candidates are gathered, the relay candidate goes in the answer; otherwise it follows.

aiortc has no trickle for local candidates, so this reaches into aioice's ``Connection`` (the
ICE agent behind aiortc's ``RTCIceGatherer``): it takes the TURN settings out before gathering
and, once allocated, adds the relay protocol and candidate, pairing it with the remote
candidates known so far the way aioice pairs its own (later remote candidates pair with it by
themselves; the viewer's checks to it are answered by aioice as for any candidate).  Never
before the agent's own gathering is done: aiortc starts ICE on a transport as soon as it has a
local candidate, and aioice refuses to start before gathering; a relay ready earlier is added
by a wrapper around that connection's ``gather_candidates``, right after it.  This relies on
``Connection.turn_server``/``turn_*``, ``gather_candidates``, ``_local_candidates_end``,
``_protocols``, ``_local_candidates``, ``_remote_candidates``, ``_pair_remote_candidate``,
``sort_check_list``, ``_components``, ``_closing`` and ``aioice.ice.relayed_candidate``
(aioice 0.9-0.13 at least); ``tests/test_agent_sessions.py`` checks it against a real coturn.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiortc import RTCIceCandidate, RTCPeerConnection

log = logging.getLogger(__name__)

_TURN_SETTINGS = ("turn_server", "turn_username", "turn_password", "turn_ssl", "turn_transport")


@dataclass(eq=False)
class LateRelay:
    """The TURN allocation of one ICE agent, deferred until after the answer."""

    connection: Any  # aioice.Connection
    settings: dict[str, Any]
    #: ``sdpMid`` / ``sdpMLineIndex`` to send its candidates with.
    mid: str | None
    mline_index: int
    protocols: list[Any] = field(default_factory=list)
    #: Allocated before the connection gathered: added right after its gathering.
    _waiting: list[tuple[Any, Any]] = field(default_factory=list)

    @property
    def server(self) -> str:
        host, port = self.settings["turn_server"]
        return f"{host}:{port}"

    async def allocate(self, timeout: float) -> list[RTCIceCandidate]:
        """Allocate the relay candidate(s) and add them to the ICE agent; ``[]`` if the TURN
        server did not answer within ``timeout`` s, refused, or the peer closed meanwhile."""
        from aioice.ice import StunProtocol, relayed_candidate
        from aiortc.rtcicetransport import candidate_from_aioice

        connection = self.connection
        found: list[RTCIceCandidate] = []
        for component in sorted(connection._components):
            try:
                async with asyncio.timeout(timeout):
                    candidate, protocol = await relayed_candidate(
                        component=component,
                        hide_related_address=False,
                        protocol_factory=lambda: StunProtocol(connection),
                        **self.settings,
                    )
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                log.info("no relay candidate from TURN %s: %s", self.server, exc or "timeout")
                continue
            except Exception as exc:  # aioice raises TransactionFailed and friends
                log.info("no relay candidate from TURN %s: %s", self.server, exc)
                continue
            if connection._closing:  # the session ended while we waited
                await protocol.close()
                break
            self.protocols.append(protocol)
            if connection._local_candidates_end:
                self._add(candidate, protocol)
            else:
                self._waiting.append((candidate, protocol))
            rtc = candidate_from_aioice(candidate)
            rtc.sdpMid = self.mid
            rtc.sdpMLineIndex = self.mline_index
            found.append(rtc)
        return found

    def _add(self, candidate: Any, protocol: Any) -> None:
        connection = self.connection
        connection._protocols.append(protocol)
        connection._local_candidates.append(candidate)
        for remote in list(connection._remote_candidates):
            connection._pair_remote_candidate(remote)
        connection.sort_check_list()

    def _gathered(self) -> None:
        """The connection's own gathering is done: add what was allocated before it."""
        waiting, self._waiting = self._waiting, []
        for candidate, protocol in waiting:
            if not self.connection._closing:
                self._add(candidate, protocol)


def _add_after_gathering(relay: LateRelay) -> None:
    connection = relay.connection
    gather = connection.gather_candidates

    async def gather_candidates() -> None:
        await gather()
        relay._gathered()

    # An instance attribute shadows Connection.gather_candidates, which RTCIceGatherer calls.
    setattr(connection, "gather_candidates", gather_candidates)  # noqa: B010


def defer_relays(pc: RTCPeerConnection) -> list[LateRelay]:
    """Take the TURN server out of each of ``pc``'s ICE agents (any time before
    ``setLocalDescription``, once its transceivers exist): gathering then gives host and
    server-reflexive candidates only, and each returned :class:`LateRelay` allocates when
    asked."""
    relays: list[LateRelay] = []
    seen: set[int] = set()
    for index, transceiver in enumerate(pc.getTransceivers()):
        dtls = transceiver.sender.transport
        if dtls is None:
            continue
        connection = dtls.transport.iceGatherer._connection
        if id(connection) in seen:
            continue
        seen.add(id(connection))
        if connection.turn_server is None:
            continue
        settings = {name: getattr(connection, name) for name in _TURN_SETTINGS}
        connection.turn_server = None
        relay = LateRelay(connection, settings, transceiver.mid, index)
        _add_after_gathering(relay)
        relays.append(relay)
    return relays


def candidate_line(candidate: RTCIceCandidate) -> str:
    """The ``candidate:...`` attribute value a browser's ``RTCIceCandidateInit`` carries."""
    from aiortc.sdp import candidate_to_sdp

    return "candidate:" + candidate_to_sdp(candidate)
