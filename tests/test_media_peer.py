"""A real aiortc viewer (offerer, recvonly) and the device's sender (answerer) over loopback."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver

from device.hal import CameraConfig, open_camera
from device.hal.timecode import MODULUS, latency_ms
from device.media import MediaHub, answer, attach_to_peer
from tests.media_peers import Viewer, connect

CONFIG = CameraConfig(width=640, height=360, fps=30, bitrate=800_000, keyframe_interval_s=30)


@pytest.fixture
async def hub() -> AsyncIterator[MediaHub]:
    hub = MediaHub(functools.partial(open_camera, "synthetic"), CONFIG)
    yield hub
    await hub.close()


def video_codecs(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith(("a=rtpmap", "a=fmtp"))]


async def test_viewer_decodes_real_frames_with_advancing_timecodes(hub: MediaHub) -> None:
    viewer = Viewer()
    device = await connect(viewer, hub)
    try:
        await viewer.wait_frames(45)
        frames = viewer.frames[:45]
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
        assert frames[0].keyframe
        codes = [f.timecode for f in frames]
        assert None not in codes, codes
        known = [c for c in codes if c is not None]
        steps = [(b - a) % MODULUS for a, b in itertools.pairwise(known)]
        assert all(0 < s < 1000 for s in steps), steps  # advancing, picture after picture
        # Glass-to-glass through encode, RTP and decode, read from the pixels (sanity bound).
        assert all(latency_ms(f.timecode, f.arrival) < 2000 for f in frames if f.timecode)
        assert device.track.stats.delivered >= 45
    finally:
        await viewer.close()
        await device.close()


async def test_answer_is_h264_constrained_baseline_mode_1_and_sendonly(hub: MediaHub) -> None:
    viewer = Viewer()
    device = await connect(viewer, hub)
    try:
        sdp = device.pc.localDescription.sdp
        codecs = video_codecs(sdp)
        names = [c.split()[1] for c in codecs if c.startswith("a=rtpmap")]
        assert [n.split("/")[0] for n in names] == ["H264", "rtx"], codecs
        assert any("packetization-mode=1" in c and "profile-level-id=42e01f" in c for c in codecs)
        assert "a=sendonly" in sdp
    finally:
        await viewer.close()
        await device.close()


async def test_pli_from_the_viewer_gets_a_keyframe_within_500_ms(hub: MediaHub) -> None:
    viewer = Viewer(read_timecodes=False)
    device = await connect(viewer, hub)
    try:
        await viewer.wait_frames(20)
        await asyncio.sleep(0.5)  # past the first keyframe; the next natural one is 30 s away
        seen = len(viewer.frames)
        requests = hub.keyframe_requests
        sent = time.monotonic()
        await viewer.send_pli()
        while not any(f.keyframe for f in viewer.frames[seen:]):
            assert time.monotonic() - sent < 0.5, "no keyframe within 500 ms of the PLI"
            await asyncio.sleep(0.005)
        assert hub.keyframe_requests == requests + 1
    finally:
        await viewer.close()
        await device.close()


async def test_offer_without_h264_is_refused(hub: MediaHub) -> None:
    viewer = Viewer()
    vp8 = [c for c in RTCRtpReceiver.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
    viewer.transceiver.setCodecPreferences(vp8)
    pc = RTCPeerConnection()
    track = hub.subscribe()
    try:
        with pytest.raises(Exception, match="send parameters"):
            await answer(pc, await viewer.offer(), track)
    finally:
        track.stop()
        await pc.close()
        await viewer.close()


async def test_track_attached_after_reading_the_offer_is_narrowed_to_h264(hub: MediaHub) -> None:
    """The order a browser's signaling suggests: setRemoteDescription first, then the track."""
    viewer = Viewer(read_timecodes=False)
    pc = RTCPeerConnection()
    track = hub.subscribe()
    try:
        await pc.setRemoteDescription(await viewer.offer())
        offered = pc.getTransceivers()
        sender = await attach_to_peer(pc, track)
        assert pc.getTransceivers() == offered  # the offer's transceiver, no new one
        assert sender.track is track
        await pc.setLocalDescription(await pc.createAnswer())
        codecs = video_codecs(pc.localDescription.sdp)
        assert [c.split()[1].split("/")[0] for c in codecs if "rtpmap" in c] == ["H264", "rtx"]
        await viewer.accept(pc.localDescription)
        await viewer.wait_frames(10)
        assert viewer.frames[0].keyframe
    finally:
        track.stop()
        await pc.close()
        await viewer.close()


#: The video section of Firefox ESR's offer as it writes it: every ``a=fmtp`` before the
#: ``a=rtpmap`` lines they belong to.
FIREFOX_OFFER = "\r\n".join(
    [
        "v=0",
        "o=mozilla...THIS_IS_SDPARTA-128.0 1 0 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 120 121 126 97",
        "c=IN IP4 0.0.0.0",
        "a=recvonly",
        "a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1",
        "a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1",
        "a=fmtp:120 max-fs=12288;max-fr=60",
        "a=ice-pwd:0123456789abcdef0123456789abcdef",
        "a=ice-ufrag:abcd",
        "a=mid:0",
        "a=rtcp-mux",
        "a=rtpmap:120 VP8/90000",
        "a=rtpmap:121 VP9/90000",
        "a=rtpmap:126 H264/90000",
        "a=rtpmap:97 H264/90000",
        "a=setup:actpass",
        "",
    ]
)


def test_firefox_s_offer_is_read_whatever_the_order_of_its_lines() -> None:
    from device.media.peer import can_play, offered_video_codecs

    codecs = offered_video_codecs(FIREFOX_OFFER)
    assert [name for name, _ in codecs] == ["VP8", "VP9", "H264", "H264"]
    assert codecs[2][1]["packetization-mode"] == "1"
    assert can_play(FIREFOX_OFFER)
    without_h264 = FIREFOX_OFFER.replace("packetization-mode=1", "packetization-mode=0")
    assert not can_play(without_h264)
