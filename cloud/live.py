"""Transient shared state: device presence, live watch sessions, and message routing.

``LiveState`` is the interface.  ``MemoryLiveState`` keeps everything in this process (the
embedded default: one cloud process); ``RedisLiveState`` (in ``cloud.live_redis``) shares it
between cloud processes so that a device on one process and a viewer on another can talk.

Routing works by *address*: ``device:<id>`` (the device's connection), ``viewer:<conn id>`` (one
viewer socket) and ``user:<id>`` (every socket of one account).  A connection subscribes its
addresses with a callback; ``publish`` delivers a text frame to every subscriber of an address,
wherever it is, and says whether anybody received it.  Delivery never awaits a socket: the
callback of a connection only queues the frame (``cloud.connection``), so one slow client cannot
hold up the routing of everybody else's frames.

*Slots* bound how many of a thing one key may hold at once across every process (the viewer
sockets of one account): a member holds a slot until it is released or its TTL lapses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Protocol

#: Called with each text delivered to an address; it must not block (it only queues the frame).
Deliver = Callable[[str], None]

#: A control frame: the receiving connection closes itself (a newer connection replaced it).
KICK = "\x00kick"


@dataclass(frozen=True)
class SignOutFrame:
    """A control frame to ``user:<id>``: viewer sockets of that account close themselves.

    ``sign_in`` set: only sockets opened with that sign-in's tokens; ``keep`` set: every socket
    but that sign-in's; neither: all of them."""

    sign_in: str | None = None
    keep: str | None = None
    PREFIX: ClassVar[str] = "\x00signout "

    def encode(self) -> str:
        return f"{self.PREFIX}{self.sign_in or '-'} {self.keep or '-'}"

    @classmethod
    def decode(cls, text: str) -> SignOutFrame:
        only, _, keep = text.removeprefix(cls.PREFIX).partition(" ")
        return cls(None if only == "-" else only, None if keep in ("", "-") else keep)

    def applies_to(self, sign_in: str | None) -> bool:
        if self.sign_in is not None:
            return sign_in == self.sign_in
        return self.keep is None or sign_in != self.keep


@dataclass(frozen=True)
class LiveSession:
    """A watch session while it lasts: its two parties and how to reach them."""

    session_id: str
    device_id: str
    viewer_id: str
    viewer_conn: str
    started_at: float


@dataclass(frozen=True)
class Online:
    """What ``set_online`` found: the connection that held the presence before (another one,
    to be kicked), and whether the device has live sessions."""

    previous: str | None
    has_sessions: bool


@dataclass(frozen=True)
class Presence:
    conn_id: str
    #: The client address of the device's socket.
    address: str
    #: When the device was last heard (its hello or heartbeat), wall-clock seconds.
    heard_at: float


class LiveState(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    # presence
    async def set_online(
        self, device_id: str, conn_id: str, ttl: float, address: str = ""
    ) -> Online:
        """Mark the device online through ``conn_id`` for ``ttl`` s (its ``hello``);
        ``address``: the client address its socket comes from (its network's public address
        behind a NAT).  Says which connection held its presence before, if another one, and
        whether the device has live sessions (it is coming back to them)."""
        ...

    async def device_heartbeat(
        self, device_id: str, conn_id: str, address: str, presence_ttl: float, session_ttl: float
    ) -> bool:
        """Presence and the TTL of every live session of the device, in one go.  False if its
        presence had lapsed (it was shown offline and is back)."""
        ...

    async def set_offline(self, device_id: str, conn_id: str) -> bool:
        """Clear presence if ``conn_id`` still holds it; True if it did."""
        ...

    async def presence(self, device_ids: list[str]) -> dict[str, Presence]:
        """The presence of those of ``device_ids`` that are online."""
        ...

    async def online(self, device_ids: list[str]) -> set[str]: ...
    async def device_address(self, device_id: str) -> str | None:
        """The address an online device's socket comes from; ``None`` when it is offline."""
        ...

    async def lapsed(self, ttl: float, limit: int = 500) -> list[tuple[str, float]]:
        """Claim devices whose presence lapsed (no heartbeat for ``ttl`` s) without being set
        offline — their socket went silent, or the process holding it died.  Each is returned
        to exactly one caller, with when it was last heard (wall-clock seconds)."""
        ...

    # live sessions
    async def add_session(self, session: LiveSession, ttl: float, cap: int = 0) -> bool:
        """Add a session unless its device has ``cap`` live ones already (0: no cap)."""
        ...

    async def get_session(self, session_id: str) -> LiveSession | None: ...
    async def remove_session(self, session_id: str) -> LiveSession | None:
        """Remove and return the session; None if it was gone (somebody else ended it)."""
        ...

    async def rebind_viewer(self, session_id: str, viewer_conn: str, ttl: float) -> None: ...
    async def sessions_of_device(self, device_id: str) -> list[LiveSession]: ...
    async def sessions_of_viewer_conn(self, viewer_conn: str) -> list[LiveSession]: ...
    async def viewer_heartbeat(self, viewer_conn: str, ttl: float) -> None:
        """Refresh the TTL of every live session bound to this viewer socket."""
        ...

    async def live_session_ids(self, session_ids: list[str]) -> set[str]: ...

    # slots
    async def acquire_slot(self, group: str, member: str, limit: int, ttl: float) -> bool:
        """Take (or refresh) ``member``'s slot in ``group`` unless ``limit`` are held."""
        ...

    async def release_slot(self, group: str, member: str) -> None: ...

    # routing
    async def subscribe(self, address: str, deliver: Deliver) -> None: ...
    async def unsubscribe(self, address: str, deliver: Deliver) -> None: ...
    async def publish(self, address: str, text: str) -> bool: ...


class LocalSubscribers:
    """The callbacks of this process's connections, by address (used by both implementations)."""

    def __init__(self) -> None:
        self._by_address: dict[str, list[Deliver]] = {}

    def add(self, address: str, deliver: Deliver) -> bool:
        """Add a callback; True if it is the address's first one here."""
        callbacks = self._by_address.setdefault(address, [])
        callbacks.append(deliver)
        return len(callbacks) == 1

    def remove(self, address: str, deliver: Deliver) -> bool:
        """Remove a callback; True if the address has none left here."""
        callbacks = self._by_address.get(address)
        if not callbacks:
            return False
        if deliver in callbacks:
            callbacks.remove(deliver)
        if callbacks:
            return False
        del self._by_address[address]
        return True

    def get(self, address: str) -> list[Deliver]:
        return list(self._by_address.get(address, ()))

    def deliver(self, address: str, text: str) -> int:
        callbacks = self._by_address.get(address, ())
        for deliver in tuple(callbacks):
            deliver(text)
        return len(callbacks)

    def addresses(self) -> list[str]:
        return list(self._by_address)


class MemoryLiveState:
    """``LiveState`` for a single cloud process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: device -> (connection id, deadline on the clock, address, heard at wall-clock)
        self._presence: dict[str, tuple[str, float, str, float]] = {}
        self._sessions: dict[str, tuple[LiveSession, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._subscribers = LocalSubscribers()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._presence.clear()
        self._sessions.clear()

    async def ping(self) -> None:
        return None

    async def set_online(
        self, device_id: str, conn_id: str, ttl: float, address: str = ""
    ) -> Online:
        before = self._presence.get(device_id)
        self._presence[device_id] = (conn_id, self._clock() + ttl, address, time.time())
        previous = before[0] if before is not None and before[0] != conn_id else None
        return Online(previous, bool(await self.sessions_of_device(device_id)))

    async def set_offline(self, device_id: str, conn_id: str) -> bool:
        held = self._presence.get(device_id)
        if held is None or held[0] != conn_id or held[1] <= self._clock():
            return False
        del self._presence[device_id]
        return True

    async def presence(self, device_ids: list[str]) -> dict[str, Presence]:
        now = self._clock()
        found = {}
        for device_id in device_ids:
            held = self._presence.get(device_id)
            if held is not None and held[1] > now:
                found[device_id] = Presence(held[0], held[2], held[3])
        return found

    async def online(self, device_ids: list[str]) -> set[str]:
        return set(await self.presence(device_ids))

    async def device_address(self, device_id: str) -> str | None:
        held = (await self.presence([device_id])).get(device_id)
        return None if held is None else held.address

    async def lapsed(self, ttl: float, limit: int = 500) -> list[tuple[str, float]]:
        now = self._clock()
        gone = [(d, held[3]) for d, held in self._presence.items() if held[1] <= now][:limit]
        for device_id, _ in gone:
            del self._presence[device_id]
        return gone

    def _live(self, session_id: str) -> LiveSession | None:
        held = self._sessions.get(session_id)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._sessions[session_id]
            return None
        return held[0]

    async def device_heartbeat(
        self, device_id: str, conn_id: str, address: str, presence_ttl: float, session_ttl: float
    ) -> bool:
        held = self._presence.get(device_id)
        was_online = held is not None and held[1] > self._clock()
        await self.set_online(device_id, conn_id, presence_ttl, address)
        deadline = self._clock() + session_ttl
        for session in await self.sessions_of_device(device_id):
            self._sessions[session.session_id] = (session, deadline)
        return was_online

    async def add_session(self, session: LiveSession, ttl: float, cap: int = 0) -> bool:
        if cap and len(await self.sessions_of_device(session.device_id)) >= cap:
            return False
        self._sessions[session.session_id] = (session, self._clock() + ttl)
        return True

    async def get_session(self, session_id: str) -> LiveSession | None:
        return self._live(session_id)

    async def remove_session(self, session_id: str) -> LiveSession | None:
        session = self._live(session_id)
        self._sessions.pop(session_id, None)
        return session

    async def rebind_viewer(self, session_id: str, viewer_conn: str, ttl: float) -> None:
        session = self._live(session_id)
        if session is not None:
            self._sessions[session_id] = (
                replace(session, viewer_conn=viewer_conn),
                self._clock() + ttl,
            )

    async def sessions_of_device(self, device_id: str) -> list[LiveSession]:
        return [s for s in self._all() if s.device_id == device_id]

    async def sessions_of_viewer_conn(self, viewer_conn: str) -> list[LiveSession]:
        return [s for s in self._all() if s.viewer_conn == viewer_conn]

    async def viewer_heartbeat(self, viewer_conn: str, ttl: float) -> None:
        deadline = self._clock() + ttl
        for session in await self.sessions_of_viewer_conn(viewer_conn):
            self._sessions[session.session_id] = (session, deadline)

    async def live_session_ids(self, session_ids: list[str]) -> set[str]:
        return {s for s in session_ids if self._live(s) is not None}

    def _all(self) -> list[LiveSession]:
        return [s for s in (self._live(k) for k in list(self._sessions)) if s is not None]

    async def acquire_slot(self, group: str, member: str, limit: int, ttl: float) -> bool:
        now = self._clock()
        held = self._slots.setdefault(group, {})
        for other, deadline in list(held.items()):
            if deadline <= now:
                del held[other]
        if member not in held and len(held) >= limit:
            return False
        held[member] = now + ttl
        return True

    async def release_slot(self, group: str, member: str) -> None:
        held = self._slots.get(group)
        if held is not None:
            held.pop(member, None)
            if not held:
                del self._slots[group]

    async def subscribe(self, address: str, deliver: Deliver) -> None:
        self._subscribers.add(address, deliver)

    async def unsubscribe(self, address: str, deliver: Deliver) -> None:
        self._subscribers.remove(address, deliver)

    async def publish(self, address: str, text: str) -> bool:
        return self._subscribers.deliver(address, text) > 0
