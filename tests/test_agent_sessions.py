"""``SessionManager`` in-process: the cloud's messages given directly, real aiortc viewers on the
other end, the real hub and synthetic camera.  Assertions read the manager's state, its
counters and what it sent (``tests.session_harness.Wire``), never its logs.  Memory,
descriptors and threads are measured on the agent alone in ``tests/test_agent_memory.py``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from device.hal import Camera, CameraConfig, CameraError
from device.hal.synthetic import SyntheticCamera
from device.media import HubState, MediaHub
from device.sessions import SessionManager
from protocol.messages import DeviceWatchRequestPayload, IceServer, SignalAnswer, SignalIce
from tests.browser import Coturn, coturn_server
from tests.session_harness import Watch, Wire, session_id, watch

CONFIG = CameraConfig(width=320, height=180, fps=15, bitrate=300_000, keyframe_interval_s=30)


class Cameras:
    """A factory of synthetic cameras that can be broken on purpose (it keeps only the last
    one: the hub must be the one that lets go of the others)."""

    def __init__(self) -> None:
        self.last: SyntheticCamera | None = None
        self.broken = False

    def __call__(self, config: CameraConfig) -> Camera:
        if self.broken:
            raise CameraError("the sensor does not answer")
        self.last = SyntheticCamera(config)
        return self.last


@pytest.fixture
def cameras() -> Cameras:
    return Cameras()


@pytest.fixture
async def hub(cameras: Cameras) -> AsyncIterator[MediaHub]:
    hub = MediaHub(cameras, CONFIG)
    hub.health_check_s = 0.05
    hub.restart_delay_s = 0.05
    yield hub
    await hub.close()


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
async def manager(hub: MediaHub, wire: Wire) -> AsyncIterator[SessionManager]:
    manager = SessionManager(hub, wire, max_sessions=3, frame_timeout=1.0, relay_timeout=2.0)
    manager.set_paired(True)
    yield manager
    await manager.close(notify=False)


@pytest.fixture
async def watches() -> AsyncIterator[list[Watch]]:
    made: list[Watch] = []
    yield made
    for w in made:
        await w.close()


async def connected(manager: SessionManager, w: Watch, frames: int = 5) -> None:
    await w.viewer.wait_frames(frames, timeout=20)
    session = manager.get(w.session_id)
    assert session is not None
    await asyncio.wait_for(session.connected.wait(), 20)


async def test_a_watch_streams_and_its_end_frees_the_camera(
    manager: SessionManager, hub: MediaHub, wire: Wire, watches: list[Watch]
) -> None:
    w = await watch(manager, wire)
    watches.append(w)
    await connected(manager, w, frames=10)
    assert manager.streaming() == [w.session_id] and manager.viewers == 1
    assert {(f.width, f.height) for f in w.viewer.frames} == {(CONFIG.width, CONFIG.height)}
    # No TURN: every candidate was in the answer, end-of-candidates right after it.
    ices = wire.of(w.session_id, SignalIce)
    assert [i.payload.candidate for i in ices] == [None]
    manager.ended(w.session_id, "viewer_ended")
    await manager.idle()
    await hub.settled()
    assert not hub.running and hub.state is HubState.IDLE
    assert manager.counters.closed == 1 and manager.counters.ended["viewer_ended"] == 1
    assert wire.ends(w.session_id) == [], "the cloud ended it: nothing to tell it"


async def test_the_cap_refuses_the_next_viewer_in_words_that_reach_it(
    manager: SessionManager, wire: Wire, watches: list[Watch]
) -> None:
    for _ in range(3):
        watches.append(await watch(manager, wire))
    for w in watches:
        await connected(manager, w)
    refused = session_id()
    manager.watch_request(DeviceWatchRequestPayload(session_id=refused, ice_servers=[]))
    (end,) = wire.ends(refused)
    assert end.payload.reason == "device_busy"
    assert not manager.alive(refused) and manager.counters.refused_busy == 1
    assert manager.viewers == 3, "the others are untouched"
    # A place frees up: the next one is accepted.
    manager.ended(watches[0].session_id, "viewer_ended")
    watches.append(await watch(manager, wire))
    await connected(manager, watches[-1])


async def test_a_camera_that_fails_ends_its_sessions_with_camera_failed(
    manager: SessionManager, hub: MediaHub, cameras: Cameras, wire: Wire, watches: list[Watch]
) -> None:
    w = await watch(manager, wire)
    watches.append(w)
    await connected(manager, w)
    cameras.broken = True  # nothing will open again
    assert cameras.last is not None
    cameras.last._error = CameraError("unplugged")  # as its thread would record it
    (end,) = await wire.until(lambda: wire.ends(w.session_id))
    assert end.payload.reason == "camera_failed"
    assert hub.state is HubState.FAILED and not manager.alive(w.session_id)
    await asyncio.wait_for(w.viewer.track_ended.wait(), 20)
    # Repaired: the next viewer tries the camera again and watches.
    cameras.broken = False
    again = await watch(manager, wire)
    watches.append(again)
    await connected(manager, again)
    assert hub.state is HubState.RUNNING


async def test_a_camera_that_cannot_open_fails_a_first_watch_the_same_way(
    manager: SessionManager, cameras: Cameras, wire: Wire, watches: list[Watch]
) -> None:
    cameras.broken = True
    w = await watch(manager, wire)
    watches.append(w)
    (end,) = await wire.until(lambda: wire.ends(w.session_id))
    assert end.payload.reason == "camera_failed"


async def test_a_frozen_sender_is_ended_by_its_watchdog(
    manager: SessionManager, wire: Wire, watches: list[Watch]
) -> None:
    w = await watch(manager, wire)
    watches.append(w)
    await connected(manager, w)
    session = manager.get(w.session_id)
    assert session is not None
    other = await watch(manager, wire)
    watches.append(other)
    await connected(manager, other)
    # aiortc's sender stops pulling pictures (as if its task had died): the camera delivers,
    # nothing leaves for this viewer.
    await session.pc.getTransceivers()[0].sender.stop()
    (end,) = await wire.until(lambda: wire.ends(w.session_id))
    assert end.payload.reason == "stream_stalled"
    assert manager.alive(other.session_id), "the other viewer was not frozen"
    seen = len(other.viewer.frames)
    await other.viewer.wait_frames(seen + 5)


async def test_a_new_owner_or_none_ends_every_session_at_once(
    manager: SessionManager, wire: Wire, watches: list[Watch]
) -> None:
    for _ in range(2):
        watches.append(await watch(manager, wire))
    await connected(manager, watches[0])
    manager.ownership_changed(True)  # paired to an account: a new owner
    assert manager.sessions == []
    for w in watches:
        assert [e.payload.reason for e in wire.ends(w.session_id)] == ["device_unpaired"]
    manager.ownership_changed(False)
    late = session_id()  # a request racing the unpair
    manager.watch_request(DeviceWatchRequestPayload(session_id=late, ice_servers=[]))
    assert [e.payload.reason for e in wire.ends(late)] == ["device_unpaired"]
    assert manager.counters.refused_unpaired == 1
    manager.ownership_changed(True)
    w = await watch(manager, wire)
    watches.append(w)
    await connected(manager, w)


async def test_after_a_reconnection_only_the_sessions_the_cloud_keeps_stay(
    manager: SessionManager, wire: Wire, watches: list[Watch]
) -> None:
    kept, dropped = await watch(manager, wire), await watch(manager, wire)
    watches += [kept, dropped]
    await connected(manager, kept)
    await connected(manager, dropped)
    assert sorted(manager.streaming()) == sorted([kept.session_id, dropped.session_id])
    manager.keep_only([kept.session_id])
    assert manager.streaming() == [kept.session_id]
    assert wire.ends(dropped.session_id) == [], "the cloud does not know it: nobody to tell"
    await asyncio.wait_for(dropped.viewer.track_ended.wait(), 20)
    seen = len(kept.viewer.frames)
    await kept.viewer.wait_frames(seen + 5)


# --- TURN ---------------------------------------------------------------------------------------


@pytest.fixture
def silent_turn() -> Iterator[IceServer]:
    """A TURN server that never answers (its host is up, the service is not): a bound UDP
    socket nobody reads."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield IceServer(urls=[f"turn:127.0.0.1:{port}?transport=udp"], username="u", credential="p")


async def test_an_unreachable_turn_server_does_not_hold_up_the_answer(
    manager: SessionManager, wire: Wire, watches: list[Watch], silent_turn: IceServer
) -> None:
    w = await watch(manager, wire, ice_servers=[silent_turn])
    watches.append(w)
    session = manager.get(w.session_id)
    assert session is not None and len(session.relays) == 1
    # The answer went out while the allocation was still pending (no end-of-candidates yet),
    # and the viewer connects on the host candidates meanwhile.
    assert wire.of(w.session_id, SignalIce) == []
    await connected(manager, w)
    ices = await wire.until(lambda: wire.of(w.session_id, SignalIce))
    assert [i.payload.candidate for i in ices] == [None]  # no relay candidate came
    assert manager.counters.relays_failed == 1 and manager.counters.relays_trickled == 0


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    with coturn_server("sessions-turn-secret") as server:
        yield server


def turn_server(coturn: Coturn) -> IceServer:
    import base64
    import hashlib
    import hmac
    import time

    username = f"{int(time.time()) + 600}:sessions-test"
    digest = hmac.new(coturn.secret.encode(), username.encode(), hashlib.sha1).digest()
    return IceServer(
        urls=[u for u in coturn.urls if "transport=udp" in u][:1],
        username=username,
        credential=base64.b64encode(digest).decode(),
    )


async def test_a_working_turn_server_gives_a_relay_candidate_that_carries_video(
    manager: SessionManager, wire: Wire, watches: list[Watch], coturn: Coturn
) -> None:
    """The device's host candidates withheld from a relay-only viewer (as across a NAT that
    does not allow them): its relay candidate (in the answer, or trickled) is the way in."""
    w = await watch(
        manager,
        wire,
        ice_servers=[turn_server(coturn)],
        viewer_relay_only=True,
        withhold_device_host_candidates=True,
    )
    watches.append(w)
    await connected(manager, w)
    ices = await wire.until(
        lambda: (
            [i for i in wire.of(w.session_id, SignalIce) if i.payload.candidate is None]
            and wire.of(w.session_id, SignalIce)
        )
    )
    assert ices[-1].payload.candidate is None, "end-of-candidates after everything"
    # The allocation started at watch_request: the relay candidate is in the answer when it
    # was ready for it, else it was trickled; either way exactly once.
    (answer,) = wire.of(w.session_id, SignalAnswer)
    in_answer = answer.payload.sdp.sdp.count(" typ relay ")
    trickled = [
        i for i in ices if i.payload.candidate and " typ relay " in i.payload.candidate.candidate
    ]
    assert in_answer + len(trickled) == 1, (in_answer, trickled)
    assert manager.counters.relays_allocated == 1
    assert manager.counters.relays_trickled == len(trickled)


async def test_a_viewer_without_h264_is_told_codec_unsupported_and_the_camera_never_starts(
    manager: SessionManager, hub: MediaHub, wire: Wire
) -> None:
    """Firefox without H.264 offers VP8 (and VP9, AV1): the agent refuses its offer in words
    the page turns into "this browser cannot play this camera" instead of "camera offline"."""
    from aiortc import RTCPeerConnection, RTCRtpSender

    from protocol.messages import SessionDescription, SignalOffer, SignalSdpPayload

    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
        transceiver.setCodecPreferences(vp8)
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        offer = pc.localDescription.sdp
        assert "VP8/90000" in offer and "H264" not in offer
        sid = session_id()
        manager.watch_request(DeviceWatchRequestPayload(session_id=sid, ice_servers=[]))
        manager.offer(
            SignalOffer(
                payload=SignalSdpPayload(
                    session_id=sid, sdp=SessionDescription(type="offer", sdp=offer)
                )
            )
        )
        end = await wire.until(lambda: wire.ends(sid))
        assert end[0].payload.reason == "codec_unsupported"
        assert wire.of(sid, SignalAnswer) == []
        await manager.idle()
        assert manager.counters.refused_codec == 1 and not manager.alive(sid)
        assert hub.starts == 0 and not hub.running, "nobody could watch: the camera stays off"
    finally:
        await pc.close()


def test_which_offers_can_play_the_camera() -> None:
    from device.media import can_play

    def offer(*fmtp: str) -> str:
        lines = ["v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2"]
        lines.append("m=video 9 UDP/TLS/RTP/SAVPF " + " ".join(str(96 + i) for i in range(3)))
        lines += ["a=rtpmap:96 VP8/90000", "a=rtpmap:97 VP9/90000"]
        for i, params in enumerate(fmtp):
            lines += [f"a=rtpmap:{98 + i} H264/90000", f"a=fmtp:{98 + i} {params}"]
        return "\r\n".join(lines) + "\r\n"

    assert not can_play(offer())
    assert can_play(offer("profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1"))
    assert can_play(offer("packetization-mode=1"))  # no profile: constrained baseline
    assert not can_play(offer("profile-level-id=42e01f;packetization-mode=0"))
    assert not can_play(offer("profile-level-id=640c1f;packetization-mode=1"))  # High only
    assert can_play(
        offer(
            "profile-level-id=640c1f;packetization-mode=1",
            "profile-level-id=42e034;packetization-mode=1",
        )
    )
