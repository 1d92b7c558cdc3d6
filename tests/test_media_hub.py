"""The hub: one camera for every viewer, started and stopped with them, slow viewers bounded."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction

import pytest
from aiortc.mediastreams import MediaStreamError

from device.hal import Camera, CameraConfig, CameraError, open_camera
from device.hal.h264 import is_keyframe
from device.hal.synthetic import SyntheticCamera
from device.media import HubTrack, MediaHub
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


async def test_a_camera_that_cannot_start_ends_the_tracks() -> None:
    def broken(config: CameraConfig) -> Camera:
        raise CameraError("no such camera")

    hub = MediaHub(broken, CONFIG)
    track = hub.subscribe()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(track.recv(), 5)
    assert isinstance(hub.last_error, CameraError) and not hub.running
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
