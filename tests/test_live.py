"""One suite for presence, live sessions and routing, run in-process and against a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from cloud.live import KICK, LiveSession, LiveState, MemoryLiveState
from cloud.live_redis import RedisLiveState


@pytest.fixture(params=["memory", "redis"])
async def make_live(request: pytest.FixtureRequest) -> AsyncIterator[list[LiveState]]:
    """A list to which each call of ``new()`` adds another "process" sharing the same state."""
    made: list[LiveState] = []
    if request.param == "memory":
        shared = MemoryLiveState()
        await shared.open()
        made.append(shared)
        yield made
    else:
        url: str = request.getfixturevalue("redis_url")
        for _ in range(2):
            live = RedisLiveState(url)
            await live.open()
            made.append(live)
        yield made
    for live in made:
        await live.close()


def two(made: list[LiveState]) -> tuple[LiveState, LiveState]:
    """Two processes' views: the same object in-process, two clients for Redis."""
    return made[0], made[-1]


class Inbox:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.event = asyncio.Event()

    def __call__(self, text: str) -> None:
        self.items.append(text)
        self.event.set()

    async def next(self, timeout: float = 5.0) -> str:
        async with asyncio.timeout(timeout):
            while not self.items:
                self.event.clear()
                await self.event.wait()
        return self.items.pop(0)


async def test_presence_is_held_by_one_connection_and_expires(make_live: list[LiveState]) -> None:
    a, b = two(make_live)
    await a.set_online("d1", "conn-1", ttl=0.3, address="203.0.113.7")
    assert await b.device_address("d1") == "203.0.113.7"
    assert await b.online(["d1", "d2"]) == {"d1"}
    assert not await b.set_offline("d1", "conn-old"), "a stale connection cannot clear it"
    assert await b.online(["d1"]) == {"d1"}
    await asyncio.sleep(0.5)
    assert await a.online(["d1"]) == set(), "presence expires without heartbeats"
    await a.set_online("d1", "conn-2", ttl=30)
    assert await b.set_offline("d1", "conn-2")
    assert await a.online(["d1"]) == set()
    assert await a.online([]) == set()


async def test_sessions_index_remove_once_and_rebind(make_live: list[LiveState]) -> None:
    a, b = two(make_live)
    s1 = LiveSession("s1", "d1", "u1", "c1", 1.0)
    s2 = LiveSession("s2", "d1", "u2", "c2", 2.0)
    await a.add_session(s1, ttl=30)
    await a.add_session(s2, ttl=30)
    assert await b.get_session("s1") == s1
    assert {s.session_id for s in await b.sessions_of_device("d1")} == {"s1", "s2"}
    assert [s.session_id for s in await b.sessions_of_viewer_conn("c1")] == ["s1"]
    await b.rebind_viewer("s1", "c9", ttl=30)
    assert await a.sessions_of_viewer_conn("c1") == []
    moved = await a.get_session("s1")
    assert moved is not None and moved.viewer_conn == "c9"
    removed = await asyncio.gather(a.remove_session("s1"), b.remove_session("s1"))
    assert sum(r is not None for r in removed) == 1, "exactly one remover wins"
    assert await a.get_session("s1") is None
    assert [s.session_id for s in await b.sessions_of_device("d1")] == ["s2"]
    assert await a.live_session_ids(["s1", "s2", "s3"]) == {"s2"}


async def test_sessions_expire_unless_a_party_heartbeats(make_live: list[LiveState]) -> None:
    a, b = two(make_live)
    await a.add_session(LiveSession("s1", "d1", "u1", "c1", 1.0), ttl=1.0)
    await a.add_session(LiveSession("s2", "d2", "u1", "c2", 1.0), ttl=1.0)
    await a.add_session(LiveSession("s3", "d3", "u1", "c3", 1.0), ttl=1.0)
    await b.device_heartbeat("d1", "conn-d1", "198.51.100.1", presence_ttl=30, session_ttl=30)
    await b.viewer_heartbeat("c2", ttl=30)
    assert await a.online(["d1"]) == {"d1"}
    assert await a.device_address("d1") == "198.51.100.1"
    await asyncio.sleep(1.3)
    assert await a.live_session_ids(["s1", "s2", "s3"]) == {"s1", "s2"}
    assert [s.session_id for s in await b.sessions_of_device("d1")] == ["s1"]
    assert await b.sessions_of_device("d3") == []


async def test_sessions_per_device_are_capped_and_a_freed_place_is_reused(
    make_live: list[LiveState],
) -> None:
    a, b = two(make_live)
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).add_session(LiveSession(f"s{i}", "d1", "u1", f"c{i}", 1.0), 30, 3)
            for i in range(8)
        )
    )
    assert sum(results) == 3, "no more than the cap, even when added at once from two processes"
    held = await a.sessions_of_device("d1")
    assert len(held) == 3
    assert not await a.add_session(LiveSession("late", "d1", "u1", "c9", 1.0), 30, cap=3)
    await b.remove_session(held[0].session_id)
    assert await a.add_session(LiveSession("late", "d1", "u1", "c9", 1.0), 30, cap=3)
    assert await b.add_session(LiveSession("other", "d2", "u1", "c9", 1.0), 30, cap=3)


async def test_slots_bound_members_across_processes_and_expire(make_live: list[LiveState]) -> None:
    a, b = two(make_live)
    assert await a.acquire_slot("viewer-sockets:u1", "c1", limit=2, ttl=30)
    assert await b.acquire_slot("viewer-sockets:u1", "c2", limit=2, ttl=0.5)
    assert not await a.acquire_slot("viewer-sockets:u1", "c3", limit=2, ttl=30)
    assert await a.acquire_slot("viewer-sockets:u1", "c1", limit=2, ttl=30), "refreshing is fine"
    assert await a.acquire_slot("viewer-sockets:u2", "c3", limit=2, ttl=30), "per group"
    await b.release_slot("viewer-sockets:u1", "c1")
    assert await a.acquire_slot("viewer-sockets:u1", "c3", limit=2, ttl=30)
    assert not await a.acquire_slot("viewer-sockets:u1", "c4", limit=2, ttl=30)
    await asyncio.sleep(0.7)  # c2's slot lapses (a crashed process never released it)
    assert await a.acquire_slot("viewer-sockets:u1", "c4", limit=2, ttl=30)


async def test_routing_reaches_other_processes_and_reports_delivery(
    make_live: list[LiveState],
) -> None:
    a, b = two(make_live)
    device, viewer = Inbox(), Inbox()
    await a.subscribe("device:d1", device)
    await b.subscribe("viewer:c1", viewer)
    await asyncio.sleep(0.05)  # let Redis register the subscriptions
    assert await b.publish("device:d1", "to the device")
    assert await a.publish("viewer:c1", "to the viewer")
    assert await device.next() == "to the device"
    assert await viewer.next() == "to the viewer"
    assert not await a.publish("device:nobody", "lost"), "no subscriber anywhere: not delivered"
    await a.unsubscribe("device:d1", device)
    await asyncio.sleep(0.05)
    assert not await b.publish("device:d1", "gone")


async def test_user_address_reaches_every_socket_of_the_account(make_live: list[LiveState]) -> None:
    a, b = two(make_live)
    tab1, tab2 = Inbox(), Inbox()
    await a.subscribe("user:u1", tab1)
    await b.subscribe("user:u1", tab2)
    await asyncio.sleep(0.05)
    assert await a.publish("user:u1", "status")
    assert await tab1.next() == "status"
    assert await tab2.next() == "status"


async def test_kick_reaches_the_older_connection(make_live: list[LiveState]) -> None:
    a, b = two(make_live)
    old = Inbox()
    await a.subscribe("device:d1", old)
    await asyncio.sleep(0.05)
    assert await b.publish("device:d1", KICK)
    assert await old.next() == KICK


async def test_presence_says_who_held_it_and_a_lapse_is_claimed_once(
    make_live: list[LiveState],
) -> None:
    a, b = two(make_live)
    first = await a.set_online("d1", "conn-1", ttl=0.5, address="198.51.100.4")
    assert first.previous is None and not first.has_sessions
    assert (await b.set_online("d1", "conn-1", ttl=0.5, address="198.51.100.4")).previous is None
    again = await b.set_online("d1", "conn-2", ttl=0.5, address="198.51.100.4")
    assert again.previous == "conn-1"
    await a.add_session(LiveSession("s1", "d9", "u1", "c1", 1.0), ttl=30)
    assert (await b.set_online("d9", "conn-9", ttl=30)).has_sessions
    await a.set_online("d2", "conn-3", ttl=30)
    [(conn_id, address, heard)] = [
        (p.conn_id, p.address, p.heard_at) for p in (await a.presence(["d1"])).values()
    ]
    assert (conn_id, address) == ("conn-2", "198.51.100.4") and abs(heard - time.time()) < 5
    assert await a.lapsed(ttl=0.5) == [], "nothing has lapsed yet"
    await asyncio.sleep(0.8)
    claims = await asyncio.gather(a.lapsed(ttl=0.5), b.lapsed(ttl=0.5), a.lapsed(ttl=0.5))
    claimed = [c for claim in claims for c in claim]
    assert [device_id for device_id, _ in claimed] == ["d1"], "claimed by exactly one caller"
    assert abs(claimed[0][1] - heard) < 1.0, "when it was last heard"
    assert await b.online(["d1", "d2"]) == {"d2"}
    # a device set offline by its own socket is not reported as lapsed later
    await a.set_online("d3", "conn-4", ttl=0.3)
    assert await b.set_offline("d3", "conn-4")
    await asyncio.sleep(0.5)
    assert await a.lapsed(ttl=0.3) == []
    # a heartbeat after a lapse says so
    await a.set_online("d4", "conn-5", ttl=0.3)
    assert await b.device_heartbeat("d4", "conn-5", "", presence_ttl=0.3, session_ttl=30)
    await asyncio.sleep(0.5)
    assert not await b.device_heartbeat("d4", "conn-5", "", presence_ttl=30, session_ttl=30)
