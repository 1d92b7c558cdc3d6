"""``SignalingClient`` in-process, through its connect seam: an in-memory socket pair whose far
end the test plays as the cloud.  No process, no port, no sleep: every step waits for an event
and every check reads state the client exposes."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from device.credentials import Credentials
from device.signaling import (
    Backoff,
    SignalingClient,
    SocketClosed,
    TryAgain,
    parse_retry_after,
)
from protocol.close_codes import (
    RESTART_WINDOW_MAX_S,
    RETRY_AFTER_MAX_S,
    CloseCode,
    restart_reason,
    retry_after,
    try_again_reason,
)
from protocol.messages import (
    HelloAck,
    SessionDescription,
    SignalAnswer,
    SignalSdpPayload,
    WatchEnd,
    WatchEndPayload,
)
from tests.memory_socket import MemoryCloud
from tests.session_harness import ChildDevice, Watch, watch

CREDENTIALS = Credentials(device_id="dev-1", device_token="token-1")


@dataclass
class Handler:
    """A SignalingHandler that records what it is told (the agent's part, in miniature)."""

    credentials_given: list[Credentials] = field(default_factory=lambda: [CREDENTIALS])
    refused: list[Credentials] = field(default_factory=list)
    acks: list[HelloAck] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    alive: set[str] = field(default_factory=set)
    streaming: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def credentials(self) -> Credentials:
        return self.credentials_given[-1]

    async def credentials_refused(self, refused: Credentials) -> None:
        self.refused.append(refused)
        self.credentials_given.append(Credentials(device_id="dev-2", device_token="token-2"))

    def connected(self, ack: HelloAck) -> None:
        self.acks.append(ack)
        self._changed()

    def disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)
        self._changed()

    def received(self, message: Any) -> None:
        self.messages.append(message)
        self._changed()

    def still_meaningful(self, message: msgspec.Struct) -> bool:
        if isinstance(message, SignalAnswer):
            return message.payload.session_id in self.alive
        return True

    def streaming_sessions(self) -> list[str]:
        return list(self.streaming)

    def _changed(self) -> None:
        self.changed.set()

    async def until(self, check: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def setup() -> AsyncIterator[tuple[MemoryCloud, Handler, SignalingClient]]:
    cloud = MemoryCloud()
    handler = Handler()
    client = SignalingClient(
        "https://cam.example.com",
        handler,
        Backoff(base=0.001, cap=0.01, rng=random.Random(1)),
        heartbeat_interval=3600,
        connect=cloud,
    )
    task = asyncio.create_task(client.run())
    yield cloud, handler, client
    await client.close()
    await asyncio.wait_for(task, 5)


def answer(session_id: str) -> SignalAnswer:
    return SignalAnswer(
        payload=SignalSdpPayload(
            session_id=session_id, sdp=SessionDescription(type="answer", sdp="v=0\r\n")
        )
    )


async def test_hello_carries_credentials_and_the_sessions_that_stream(
    setup: tuple[MemoryCloud, Handler, SignalingClient],
) -> None:
    cloud, handler, client = setup
    first, hello = await cloud.welcome()
    assert cloud.urls == ["wss://cam.example.com/ws/device"]
    assert {k: hello[k] for k in ("device_id", "device_token", "sessions")} == {
        "device_id": "dev-1",
        "device_token": "token-1",
        "sessions": None,
    }
    assert hello["version"] and hello["arch"]  # for the cloud's rollouts
    await handler.until(lambda: handler.acks)
    handler.streaming = ["s-1", "s_2"]  # peers that still carry video when the cloud restarts
    first.drop()
    socket, hello = await cloud.welcome(sessions=["s-1"])
    assert hello["sessions"] == ["s-1", "s_2"]
    await handler.until(lambda: len(handler.acks) == 2)
    assert client.is_connected and client.connections == 2
    assert handler.acks[1].payload.sessions == ["s-1"]
    # Messages from the cloud reach the handler; an error is counted, not passed on.
    await socket.send_json("watch_ended", {"session_id": "s-1", "reason": "viewer_ended"})
    await socket.send_json("error", {"code": "session_not_found", "message": "gone", "ref": "x"})
    await socket.send_json("pairing_status", {"paired": False})
    await handler.until(lambda: len(handler.messages) == 2)
    assert [type(m).__name__ for m in handler.messages] == ["WatchEnded", "PairingStatus"]
    assert client.refusals == 1


async def test_the_outbox_waits_for_the_cloud_and_drops_what_went_stale(
    setup: tuple[MemoryCloud, Handler, SignalingClient],
) -> None:
    cloud, handler, client = setup
    first, _ = await cloud.welcome()
    await handler.until(lambda: handler.acks)
    first.drop()  # the network goes away: no close frame
    await handler.until(lambda: handler.disconnects)
    assert "no close frame" in handler.disconnects[0] and client.last_close_code is None
    cloud.refusing = True
    handler.alive = {"kept"}
    client.send(answer("kept"))
    client.send(answer("ended-meanwhile"))
    client.send(WatchEnd(payload=WatchEndPayload(session_id="gone", reason="camera_failed")))
    await handler.until(lambda: len(handler.disconnects) >= 3)  # refused dials, backing off
    assert not client.is_connected and client.sent == 0
    cloud.refusing = False
    second, _ = await cloud.welcome()
    got = [await second.recv_json() for _ in range(2)]
    assert got[0]["type"] == "signal_answer" and got[0]["payload"]["session_id"] == "kept"
    assert got[1] == {
        "type": "watch_end",
        "payload": {"session_id": "gone", "reason": "camera_failed"},
    }
    await client.flush(5)
    assert client.sent == 2 and client.dropped == 1


async def test_unauthenticated_close_registers_anew(
    setup: tuple[MemoryCloud, Handler, SignalingClient],
) -> None:
    cloud, handler, client = setup
    socket = await cloud.accept()
    await socket.recv_json("hello")
    await socket.close(CloseCode.UNAUTHENTICATED, "unknown device")
    _, hello = await cloud.welcome()
    assert handler.refused == [CREDENTIALS]
    assert hello["device_id"] == "dev-2"
    await handler.until(lambda: handler.acks)
    assert client.connections == 1 and client.failures == 1


async def test_a_replaced_socket_reconnects_and_says_why(
    setup: tuple[MemoryCloud, Handler, SignalingClient],
) -> None:
    cloud, handler, client = setup
    first, _ = await cloud.welcome()
    await handler.until(lambda: handler.acks)
    await first.close(CloseCode.REPLACED, "replaced")
    await handler.until(lambda: handler.disconnects)
    assert client.last_close_code == CloseCode.REPLACED
    await cloud.welcome()
    await handler.until(lambda: len(handler.acks) == 2)
    assert client.connections == 2


class LowestRandom(random.Random):
    """Always the lower end of ``uniform`` (no wait), remembering each upper end asked for."""

    def __init__(self) -> None:
        super().__init__(1)
        self.windows: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.windows.append(b)
        return a


async def test_a_restarting_cloud_is_rejoined_within_its_window_with_the_backoff_started_over() -> (
    None
):
    cloud, handler, rng = MemoryCloud(), Handler(), LowestRandom()
    backoff = Backoff(base=0.5, cap=30.0, rng=rng)
    client = SignalingClient(
        "https://cam.example.com", handler, backoff, heartbeat_interval=3600, connect=cloud
    )
    task = asyncio.create_task(client.run())
    try:
        socket, _ = await cloud.welcome()
        await handler.until(lambda: len(handler.acks) == 1)
        backoff.attempt = 5  # as if earlier failures had grown it
        await socket.close(CloseCode.RESTART, restart_reason(7))
        socket, _ = await cloud.welcome()
        await handler.until(lambda: len(handler.acks) == 2)
        assert rng.windows == [7.0] and backoff.attempt == 0, "spread over the hinted window"
        # A window out of reason is cut; a restart without one backs off as after any drop.
        await socket.close(CloseCode.RESTART, restart_reason(100_000))
        socket, _ = await cloud.welcome()
        await handler.until(lambda: len(handler.acks) == 3)
        await socket.close(CloseCode.RESTART, "restarting")
        socket, _ = await cloud.welcome()
        await handler.until(lambda: len(handler.acks) == 4)
        socket.drop()
        await cloud.welcome()
        await handler.until(lambda: len(handler.acks) == 5)
        assert rng.windows == [7.0, float(RESTART_WINDOW_MAX_S), 0.5, 0.5]
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)


async def test_a_bound_full_for_a_moment_is_retried_after_the_delay_it_names() -> None:
    """A refusal that names a delay (close 1013 ``retry_after=``; an HTTP 503 ``Retry-After``
    before the socket opens: a NAT's cameras coming back at once) is retried after that delay
    plus a random part of it, the backoff neither grown nor started over; a refusal that names
    none (the database failed) backs off as after any drop."""
    cloud, handler, rng = MemoryCloud(), Handler(), LowestRandom()
    backoff = Backoff(base=0.5, cap=30.0, rng=rng)
    client = SignalingClient(
        "https://cam.example.com", handler, backoff, heartbeat_interval=3600, connect=cloud
    )
    task = asyncio.create_task(client.run())
    try:
        socket = await cloud.accept()
        await socket.recv_json("hello")
        backoff.attempt = 3  # as if earlier failures had grown it
        message = "too many connections from your address are waiting to say hello"
        await socket.send_json(
            "error", {"code": "too_many_connections", "message": message, "ref": "hello"}
        )
        cloud.dialled.clear()
        cloud.refusal = TryAgain("HTTP 503", parse_retry_after("1"))  # the next dial: a 503
        await socket.close(CloseCode.TRY_AGAIN, try_again_reason(message, 1))
        await asyncio.wait_for(cloud.dialled.wait(), 5)
        cloud.refusal = None
        socket = await cloud.accept()
        # a delay of 1 s and up to as much again at random, each time; the backoff untouched
        assert rng.windows == [1.0, 1.0] and backoff.attempt == 3
        await socket.recv_json("hello")
        await socket.close(CloseCode.TRY_AGAIN, "the cloud failed; try again")
        cloud.dialled.clear()
        cloud.refusal = TryAgain("HTTP 503", parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"))
        await asyncio.wait_for(cloud.dialled.wait(), 5)
        cloud.refusal = None
        await cloud.welcome()
        await handler.until(lambda: len(handler.acks) == 1)
        assert rng.windows == [1.0, 1.0, 4.0, 8.0], "no delay named: the next backoff steps"
        assert backoff.attempt == 0, "started over once connected"
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)
    # the delays a reason or a header may name
    assert retry_after(try_again_reason("full", 3)) == 3.0
    assert retry_after(try_again_reason("full", 10**5)) == float(RETRY_AFTER_MAX_S)
    assert retry_after("the cloud failed; try again") is None
    assert parse_retry_after(" 2 ") == 2.0 and parse_retry_after(None) is None


async def test_heartbeats_and_invalid_frames() -> None:
    cloud = MemoryCloud()
    handler = Handler()
    client = SignalingClient(
        "http://127.0.0.1:1", handler, Backoff(0.001, 0.01), heartbeat_interval=0.01, connect=cloud
    )
    task = asyncio.create_task(client.run())
    try:
        socket, _ = await cloud.welcome()
        await socket.send(json.dumps({"type": "no_such_thing", "payload": {}}))
        await socket.send("not json at all")
        for _ in range(3):  # heartbeats keep coming; the invalid frames did not end anything
            assert (await socket.recv_json())["type"] == "heartbeat"
        assert client.is_connected and client.failures == 0 and handler.messages == []
    finally:
        await client.close()
        await asyncio.wait_for(task, 5)
    with pytest.raises(SocketClosed) as closed:  # a normal closure, after any heartbeat left
        while True:
            await socket.recv()
    assert closed.value.code == 1000


async def test_the_real_agent_claims_its_streaming_sessions_and_keeps_what_the_cloud_keeps(
    tmp_path: Path,
) -> None:
    """The agent in a child process, over a pipe: after its connection drops, its ``hello``
    lists the sessions that carry video; of those, it keeps only the ones ``hello_ack`` lists
    (the contract a restarted cloud re-adopts sessions by)."""
    child = await ChildDevice.start(
        tmp_path / "state",
        {"camera.backend": "synthetic", "camera.width": 320, "camera.height": 180},
    )
    made: list[Watch] = []
    try:
        assert child.hellos[0]["sessions"] is None
        made = [await watch(child, child.wire) for _ in range(2)]
        for w in made:
            await w.viewer.wait_frames(3, timeout=30)
        await child.until(lambda s: s["viewers"] == 2)
        kept, dropped = made
        child.keep = [kept.session_id]
        hello = await child.reconnect()
        assert sorted(hello["sessions"]) == sorted(w.session_id for w in made)
        state = await child.until(lambda s: s["sessions"] == 1)
        assert state["streaming"] == [kept.session_id]
        assert state["counters"]["ended"] == {"unknown_to_cloud": 1}
        assert child.wire.ends(dropped.session_id) == [], "nobody to tell: the cloud forgot it"
        seen = len(kept.viewer.frames)
        await kept.viewer.wait_frames(seen + 5, timeout=30)
        await asyncio.wait_for(dropped.viewer.track_ended.wait(), 30)
        # A cloud that says nothing about sessions (null) leaves the agent's peers alone.
        child.keep = None
        await child.reconnect()
        assert (await child.state())["streaming"] == [kept.session_id]
    finally:
        for w in made:
            await w.close()
        assert await child.stop() == 0
