"""The hub: one camera for every viewer, started and stopped with them, slow viewers bounded."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any

import pytest
from aiortc.mediastreams import MediaStreamError

from device.hal import Camera, CameraConfig, CameraError, open_camera
from device.hal.h264 import is_keyframe
from device.hal.synthetic import SyntheticCamera
from device.media import HubState, HubTrack, MediaHub
from tests.fakes import fake_picamera2  # noqa: F401  (a fixture)
from tests.media_peers import Viewer, connect

CONFIG = CameraConfig(width=640, height=360, fps=30, bitrate=800_000, keyframe_interval_s=30)


class RecordingFactory:
    """Opens synthetic cameras and keeps them, to look at their threads afterwards."""

    def __init__(self) -> None:
        self.cameras: list[SyntheticCamera] = []

    def __call__(self, config: CameraConfig) -> Camera:
        camera = SyntheticCamera(config)
        self.cameras.append(camera)
        return camera


@pytest.fixture
def factory() -> RecordingFactory:
    return RecordingFactory()


@pytest.fixture
async def hub(factory: RecordingFactory) -> AsyncIterator[MediaHub]:
    hub = MediaHub(factory, CONFIG)
    yield hub
    await hub.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def alive(camera: SyntheticCamera) -> bool:
    return camera._thread is not None and camera._thread.is_alive()


async def drain_packets(track: HubTrack, into: list[Any]) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            into.append(await track.recv())


async def drain(track: HubTrack, into: list[bytes], pause_s: float = 0.0) -> None:
    try:
        while True:
            packet = await track.recv()
            into.append(bytes(packet))
            if pause_s:
                await asyncio.sleep(pause_s)
    except MediaStreamError:
        pass


async def test_camera_starts_on_first_viewer_and_stops_after_the_last(
    hub: MediaHub, factory: RecordingFactory
) -> None:
    await asyncio.sleep(0.1)
    assert not hub.running and factory.cameras == []
    first = hub.subscribe()
    await hub.settled()
    assert hub.running and len(factory.cameras) == 1 and alive(factory.cameras[0])
    second = hub.subscribe()
    await hub.settled()
    assert len(factory.cameras) == 1, "one camera for every viewer"
    first.stop()
    await hub.settled()
    assert hub.running
    second.stop()
    await hub.settled()
    assert not hub.running and not alive(factory.cameras[0])
    third = hub.subscribe()  # and again
    await hub.settled()
    assert len(factory.cameras) == 2 and alive(factory.cameras[1])
    packets: list[bytes] = []
    task = asyncio.create_task(drain(third, packets))
    await wait_until(lambda: bool(packets))
    assert is_keyframe(packets[0])
    third.stop()
    await task
    await hub.settled()
    assert not alive(factory.cameras[1]) and hub.starts == 2


async def test_keep_warm_runs_the_camera_with_nobody_watching(factory: RecordingFactory) -> None:
    hub = MediaHub(factory, CONFIG, keep_warm=True)
    await hub.set_keep_warm(True)
    assert hub.running
    track = hub.subscribe()
    track.stop()
    await hub.settled()
    assert hub.running
    await hub.set_keep_warm(False)
    assert not hub.running and not alive(factory.cameras[0])
    await hub.close()


async def test_a_late_viewer_gets_a_keyframe_now_not_at_the_next_gop(hub: MediaHub) -> None:
    early = hub.subscribe()
    early_packets: list[bytes] = []
    early_task = asyncio.create_task(drain(early, early_packets))
    await wait_until(lambda: len(early_packets) >= 15)
    late = hub.subscribe()  # the next natural keyframe is 30 s away
    late_packets: list[bytes] = []
    late_task = asyncio.create_task(drain(late, late_packets))
    joined = time.monotonic()
    while not late_packets:
        assert time.monotonic() - joined < 1.0, "a new viewer waited for its first picture"
        await asyncio.sleep(0.01)
    assert is_keyframe(late_packets[0])
    early.stop()
    late.stop()
    await asyncio.gather(early_task, late_task)


async def test_slow_consumer_is_bounded_and_resumes_at_a_keyframe(hub: MediaHub) -> None:
    fast = [hub.subscribe(), hub.subscribe()]
    slow = hub.subscribe()
    got: list[list[bytes]] = [[], [], []]
    tasks = [
        asyncio.create_task(drain(fast[0], got[0])),
        asyncio.create_task(drain(fast[1], got[1])),
        asyncio.create_task(drain(slow, got[2], pause_s=0.1)),  # 10 pictures a second of 30
    ]
    await asyncio.sleep(0.5)
    start = [len(g) for g in got]
    await asyncio.sleep(2.0)
    counts = [len(g) - s for g, s in zip(got, start, strict=True)]
    for track in (*fast, slow):
        track.stop()
    await asyncio.gather(*tasks)
    # The fast viewers kept the full rate (about 60 pictures in 2 s), none dropped.
    assert min(counts[:2]) >= 45, counts
    assert all(t.stats.dropped == 0 and t.stats.overflows == 0 for t in fast)
    # The slow one lost pictures, never held more than its bound, and restarted at keyframes.
    assert slow.stats.overflows >= 1 and slow.stats.dropped > 0
    assert slow.stats.max_queued <= hub.queue_frames
    assert slow.stats.keyframes >= 2
    assert is_keyframe(got[2][0])


async def test_three_viewers_one_slow_over_webrtc(hub: MediaHub) -> None:
    viewers = [Viewer(read_timecodes=False), Viewer(read_timecodes=False), Viewer(slow_s=0.25)]
    devices = [await connect(v, hub) for v in viewers]
    try:
        for v in viewers[:2]:
            await v.wait_frames(10)
        start = [len(v.frames) for v in viewers]
        await asyncio.sleep(2.0)
        counts = [len(v.frames) - s for v, s in zip(viewers, start, strict=True)]
        assert min(counts[:2]) >= 45, counts  # ~60 in 2 s at 30 fps
        assert counts[2] <= 10, counts  # its consumer really was slow
        assert len(hub.camera_factory.cameras) == 1  # type: ignore[attr-defined]
        assert all(d.track.stats.max_queued <= hub.queue_frames for d in devices)
    finally:
        for v in viewers:
            await v.close()
        for d in devices:
            await d.close()
    await hub.settled()
    assert not hub.running


async def test_a_camera_that_cannot_start_is_retried_then_fails_and_ends_the_tracks() -> None:
    attempts: list[float] = []

    def broken(config: CameraConfig) -> Camera:
        attempts.append(time.monotonic())
        raise CameraError("no such camera")

    hub = MediaHub(broken, CONFIG)
    hub.restart_delay_s = 0.05
    states: list[HubState] = []
    hub.add_listener(states.append)
    track = hub.subscribe()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(track.recv(), 10)
    assert len(attempts) == 1 + hub.max_restarts
    assert states == [HubState.STARTING, HubState.RESTARTING, HubState.FAILED]
    assert hub.state is HubState.FAILED and track.ended_by == "camera_failed"
    assert isinstance(hub.last_error, CameraError) and not hub.running
    assert hub.gave_up == 1 and hub.viewers == 0
    # The next viewer tries again (the camera may have been plugged back in).
    again = hub.subscribe()
    assert hub.state is HubState.STARTING
    await hub.settled()
    assert hub.state is HubState.FAILED and again.readyState == "ended"
    assert len(attempts) == 2 * (1 + hub.max_restarts)
    await hub.close()


async def test_factory_can_be_open_camera() -> None:
    hub = MediaHub(functools.partial(open_camera, "synthetic"), CONFIG)
    track = hub.subscribe()
    packet = await asyncio.wait_for(track.recv(), 5)
    assert is_keyframe(bytes(packet)) and packet.time_base == Fraction(1, 90_000)
    assert hub.capabilities is not None and hub.capabilities.backend == "synthetic"
    await hub.close()
    assert track.readyState == "ended"


async def test_a_camera_that_fails_while_running_is_restarted() -> None:
    """A USB camera unplugged mid-stream: viewers keep their tracks and resume from a keyframe
    when the camera is back (here: the next fake camera the factory opens)."""
    from device.hal.v4l2 import V4L2Camera
    from tests.fakes.v4l2 import FakeUvcCamera

    fakes: list[FakeUvcCamera] = []

    def plug_in(config: CameraConfig) -> Camera:
        fake = FakeUvcCamera("MJPG", config.width, config.height, config.fps)
        fakes.append(fake)
        return V4L2Camera(config, fake.device)

    hub = MediaHub(plug_in, CONFIG)
    hub.restart_delay_s = 0.2
    hub.health_check_s = 0.1
    try:
        track = hub.subscribe()
        got: list[bytes] = []
        reader = asyncio.create_task(drain(track, got))
        await wait_until(lambda: len(got) >= 5)
        fakes[0].close()  # unplugged
        await wait_until(lambda: hub.failures == 1)
        assert isinstance(hub.last_error, CameraError)
        before = len(got)
        await wait_until(lambda: hub.starts == 2 and len(got) >= before + 5)
        assert track.readyState == "live"
        assert is_keyframe(got[before]), "pictures resume from a keyframe"
        reader.cancel()
    finally:
        await hub.close()
        for fake in fakes:
            fake.close()


@pytest.mark.usefixtures("fake_picamera2")
async def test_a_picamera2_that_stops_delivering_is_noticed_and_restarted() -> None:
    """picamera2 gives no word when its sensor stops (a CSI frontend timeout): the hub's own
    failure detector (no picture for ``stall_timeout_s``) restarts it, viewers staying."""
    import picamera2  # the fake

    from device.hal.picam import PicameraCamera

    hub = MediaHub(lambda config: PicameraCamera(config, 0, model="Raspberry Pi 4"), CONFIG)
    hub.stall_timeout_s = 0.5
    hub.health_check_s = 0.05
    hub.restart_delay_s = 0.05
    states: list[HubState] = []
    hub.add_listener(states.append)
    try:
        track = hub.subscribe()
        got: list[Any] = []
        reader = asyncio.create_task(drain_packets(track, got))
        await wait_until(lambda: len(got) >= 10)
        picamera2.INSTANCES[-1].stall()
        await wait_until(lambda: hub.failures == 1)
        assert hub.state is HubState.RESTARTING and track.readyState == "live"
        assert "no picture" in str(hub.last_error)
        before = len(got)
        await wait_until(lambda: hub.state is HubState.RUNNING and len(got) >= before + 10)
        assert is_keyframe(bytes(got[before])), "pictures resume from a keyframe"
        assert states == ["starting", "running", "restarting", "running"]
        assert len(picamera2.INSTANCES) == 2 and picamera2.INSTANCES[0].closed
        pts = [p.pts for p in got]
        assert all(b > a for a, b in itertools.pairwise(pts)), "one timeline, never backwards"
        gap = (pts[before] - pts[before - 1]) / 90_000
        assert gap >= hub.stall_timeout_s, "the timeline counts the time the camera was away"
        reader.cancel()
    finally:
        await hub.close()


@pytest.mark.usefixtures("fake_picamera2")
async def test_a_camera_that_never_comes_back_fails_and_says_so_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import picamera2  # the fake

    from device.hal.picam import PicameraCamera

    hub = MediaHub(lambda config: PicameraCamera(config, 0, model="Raspberry Pi 4"), CONFIG)
    hub.stall_timeout_s = 0.4
    hub.first_picture_s = 0.4
    hub.health_check_s = 0.05
    hub.restart_delay_s = 0.05
    seen: list[tuple[HubState, int]] = []
    hub.add_listener(lambda state: seen.append((state, hub.viewers)))
    try:
        tracks = [hub.subscribe(), hub.subscribe()]
        await hub.settled()
        monkeypatch.setattr(picamera2, "STALL_AFTER", 0)  # every new camera stays dark
        picamera2.INSTANCES[-1].stall()
        await wait_until(lambda: hub.state is HubState.FAILED)
        # Listeners heard it while the tracks were still there (to end their sessions with a
        # reason); then the tracks ended.
        assert seen[-1] == (HubState.FAILED, 2)
        assert all(t.readyState == "ended" and t.ended_by == "camera_failed" for t in tracks)
        assert hub.failures == 1 + hub.max_restarts and not hub.running
        assert all(p.closed for p in picamera2.INSTANCES)
    finally:
        await hub.close()


async def test_timestamps_continue_across_a_camera_restart_over_webrtc(
    factory: RecordingFactory,
) -> None:
    """The receiver's RTP timestamps (as aiortc unwraps them into frame pts) and the decoded
    pictures' capture times never go backwards when the camera is replaced mid-stream."""
    hub = MediaHub(factory, CONFIG)
    hub.health_check_s = 0.05
    hub.restart_delay_s = 0.05
    viewer = Viewer()
    device = await connect(viewer, hub)
    try:
        await viewer.wait_frames(20)
        factory.cameras[-1]._error = CameraError("unplugged")  # as its thread would record it
        await wait_until(lambda: hub.starts == 2)
        seen = len(viewer.frames)
        await viewer.wait_frames(seen + 20)
        pts = [f.pts for f in viewer.frames]
        assert None not in pts
        steps = [b - a for a, b in itertools.pairwise(pts)]  # type: ignore[operator]
        assert all(0 < s < 30 * 90_000 for s in steps), steps
        codes = [f.timecode for f in viewer.frames if f.timecode is not None]
        assert all(b >= a for a, b in itertools.pairwise(codes))
        assert hub.retimed == 0
    finally:
        await viewer.close()
        await device.close()
        await hub.close()


async def test_a_new_viewer_of_a_camera_without_keyframe_requests_starts_from_the_gop_cache() -> (
    None
):
    """UVC H.264 passed through cannot make a keyframe on request: a late viewer gets the last
    keyframe and what followed, at once, squeezed into a few ticks, then live pictures."""
    from device.hal.v4l2 import V4L2Camera
    from tests.fakes.v4l2 import FakeUvcCamera

    fakes: list[FakeUvcCamera] = []

    def plug_in(config: CameraConfig) -> Camera:
        fake = FakeUvcCamera("H264", config.width, config.height, config.fps, gop=150)  # 5 s
        fakes.append(fake)
        return V4L2Camera(config, fake.device)

    hub = MediaHub(plug_in, CONFIG)
    try:
        early = hub.subscribe()
        early_got: list[Any] = []
        early_task = asyncio.create_task(drain_packets(early, early_got))
        await wait_until(lambda: len(early_got) >= 30)  # a second into a five-second GOP
        assert hub.capabilities is not None and not hub.capabilities.keyframe_on_request
        cached = hub.gop_cached
        assert cached >= 30
        late = hub.subscribe()
        assert late.stats.preloaded >= cached
        first = await asyncio.wait_for(late.recv(), 1)
        assert is_keyframe(bytes(first)), "the late viewer starts from the cached keyframe"
        late_got = [first]
        late_task = asyncio.create_task(drain_packets(late, late_got))
        await wait_until(lambda: len(late_got) >= late.stats.preloaded + 10)
        pts = [p.pts for p in late_got]
        assert all(b > a for a, b in itertools.pairwise(pts))
        preloaded = late.stats.preloaded
        assert pts[preloaded - 1] - pts[0] == preloaded - 1, "history squeezed into ticks"
        assert hub.keyframe_requests == 0
        for track in (early, late):
            track.stop()
        await asyncio.gather(early_task, late_task)
    finally:
        await hub.close()
        for fake in fakes:
            fake.close()
