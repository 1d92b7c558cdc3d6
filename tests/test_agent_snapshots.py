"""Snapshots peer to peer: a real aiortc viewer asks the agent's session manager for the
camera's current picture over its ``snapshot`` data channel (protocol/snapshot.py)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from PIL import Image

from device.hal import CameraConfig
from device.hal.synthetic import SyntheticCamera
from device.media import MediaHub
from device.sessions import SessionManager
from device.snapshots import Snapshots
from protocol.snapshot import SNAPSHOT_CHUNK_BYTES, SnapshotError, SnapshotHeader, SnapshotReply
from tests.session_harness import Watch, Wire, watch

CONFIG = CameraConfig(width=640, height=360, fps=15, bitrate=400_000, keyframe_interval_s=30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Asker:
    """The viewer's end of the channel: sends requests, collects replies and JPEGs."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.replies: list[SnapshotReply] = []
        self.pictures: dict[str, bytes] = {}
        self._pending: tuple[SnapshotHeader, bytearray] | None = None
        self._changed = asyncio.Event()
        self._open = asyncio.Event()
        channel.on("open", self._open.set)
        channel.on("message", self._message)
        if channel.readyState == "open":
            self._open.set()

    def _message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            reply = msgspec.json.decode(message, type=SnapshotReply)
            self.replies.append(reply)
            if isinstance(reply, SnapshotHeader):
                self._pending = (reply, bytearray())
        else:
            assert self._pending is not None, "binary data without a header"
            assert len(message) <= SNAPSHOT_CHUNK_BYTES
            header, data = self._pending
            data += message
            if len(data) >= header.bytes:
                assert len(data) == header.bytes
                self.pictures[header.id] = bytes(data)
                self._pending = None
        self._changed.set()

    async def ask(self, request_id: str, **fields: Any) -> SnapshotReply:
        await asyncio.wait_for(self._open.wait(), 10)
        self.channel.send(
            msgspec.json.encode({"type": "snapshot_request", "id": request_id, **fields}).decode()
        )
        return await self.reply(request_id)

    async def reply(self, request_id: str) -> SnapshotReply:
        async with asyncio.timeout(15):
            while True:
                for reply in self.replies:
                    if reply.id == request_id and (
                        isinstance(reply, SnapshotError) or request_id in self.pictures
                    ):
                        return reply
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def hub() -> AsyncIterator[MediaHub]:
    hub = MediaHub(SyntheticCamera, CONFIG)
    yield hub
    await hub.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def snapshots(hub: MediaHub, clock: Clock) -> AsyncIterator[Snapshots]:
    shots = Snapshots(hub, interval_s=2.0, workers=1, queue=0, clock=clock)
    yield shots
    await shots.close()


@pytest.fixture
async def manager(
    hub: MediaHub, snapshots: Snapshots
) -> AsyncIterator[tuple[SessionManager, Wire]]:
    wire = Wire()
    manager = SessionManager(hub, wire, max_sessions=4, snapshots=snapshots)
    manager.set_paired(True)
    yield manager, wire
    await manager.close(notify=False)


@pytest.fixture
async def watches() -> AsyncIterator[list[Watch]]:
    made: list[Watch] = []
    yield made
    for w in made:
        await w.close()


async def test_a_viewer_gets_the_current_picture_as_a_jpeg_and_keeps_watching(
    manager: tuple[SessionManager, Wire], snapshots: Snapshots, clock: Clock, watches: list[Watch]
) -> None:
    sessions, wire = manager
    w = await watch(sessions, wire, snapshot_channel=True)
    watches.append(w)
    await w.viewer.wait_frames(3, timeout=20)
    asker = Asker(w.channel)
    before = time.time()
    reply = await asker.ask("first")
    assert isinstance(reply, SnapshotHeader), reply
    image = Image.open(io.BytesIO(asker.pictures["first"]))
    assert image.format == "JPEG" and image.size == (CONFIG.width, CONFIG.height)
    assert (reply.width, reply.height) == image.size
    assert before - 1 <= reply.taken_at <= time.time()
    # Too soon: refused in words, nothing decoded; later, a smaller one as asked.
    again = await asker.ask("again")
    assert isinstance(again, SnapshotError) and again.code == "rate_limited"
    clock.now += 2.0
    small = await asker.ask("small", max_width=320)
    assert isinstance(small, SnapshotHeader) and (small.width, small.height) == (320, 180)
    assert Image.open(io.BytesIO(asker.pictures["small"])).size == (320, 180)
    assert snapshots.counters.sent == 2 and snapshots.counters.rate_limited == 1
    # The video went on meanwhile.
    count = len(w.viewer.frames)
    await w.viewer.wait_frames(count + 5, timeout=10)


async def test_bad_requests_a_full_pool_and_unknown_channels_are_refused(
    manager: tuple[SessionManager, Wire], snapshots: Snapshots, watches: list[Watch]
) -> None:
    sessions, wire = manager
    first = await watch(sessions, wire, snapshot_channel=True)
    second = await watch(sessions, wire, snapshot_channel=True)
    watches += [first, second]
    await first.viewer.wait_frames(2, timeout=20)
    await second.viewer.wait_frames(2, timeout=20)
    a, b = Asker(first.channel), Asker(second.channel)
    bad = await asyncio.gather(a.ask("x", max_width=1), a.ask("x", colour="red"))
    assert all(isinstance(r, SnapshotError) and r.code == "invalid_request" for r in bad)
    # One worker, no queue: two sessions asking at once, one is told the camera is busy.
    await asyncio.gather(a._open.wait(), b._open.wait())
    replies = await asyncio.gather(a.ask("a1"), b.ask("b1"))
    codes = sorted(r.code if isinstance(r, SnapshotError) else "ok" for r in replies)
    assert codes == ["busy", "ok"], replies
    assert snapshots.counters.busy == 1 and snapshots.counters.invalid == 2
    # Another label is closed at once.
    other = first.viewer.pc.createDataChannel("shell")
    closed = asyncio.Event()
    other.on("close", closed.set)
    await asyncio.wait_for(closed.wait(), 10)
    assert sessions.counters.channels_refused == 1


async def test_the_rate_limit_is_the_sessions_not_the_channels(
    manager: tuple[SessionManager, Wire], watches: list[Watch]
) -> None:
    sessions, wire = manager
    w = await watch(sessions, wire, snapshot_channel=True)
    watches.append(w)
    await w.viewer.wait_frames(2, timeout=20)
    assert isinstance(await Asker(w.channel).ask("one"), SnapshotHeader)
    from protocol.snapshot import SNAPSHOT_CHANNEL

    more = Asker(w.viewer.pc.createDataChannel(SNAPSHOT_CHANNEL))
    reply = await more.ask("two")
    assert isinstance(reply, SnapshotError) and reply.code == "rate_limited"
