"""The camera contract, run against every backend.

``CameraContract`` holds the checks; each ``Test...`` class below gives it a way to open a
camera: the ``synthetic`` backend for real, ``picamera2`` through ``tests/fakes/picamera2`` and
``v4l2`` through a fake UVC camera behind a FIFO.  ``hardware-tests/`` runs the same class
against the real libraries on a Raspberry Pi.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import av
import pytest

from device.hal import AccessUnit, Camera, CameraConfig
from device.hal.h264 import NAL_IDR, NAL_PPS, NAL_SPS, nal_type, profile_level_id, split_nals
from tests.fakes import fake_picamera2  # noqa: F401  (a fixture)

OpenCamera = Callable[[CameraConfig], Camera]


class Collector:
    """A camera sink that keeps what it gets (thread-safe)."""

    def __init__(self) -> None:
        self.units: list[AccessUnit] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.threads: set[str] = set()

    def __call__(self, unit: AccessUnit) -> None:
        with self._changed:
            self.units.append(unit)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    def wait_for(self, check: Callable[[list[AccessUnit]], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: check(self.units), timeout)

    def snapshot(self) -> list[AccessUnit]:
        with self._lock:
            return list(self.units)


class CameraContract:
    """What every backend must do.  Subclasses provide the ``open_camera`` fixture."""

    config = CameraConfig(width=640, height=360, fps=30, bitrate=1_000_000, keyframe_interval_s=10)
    #: Whether the camera makes a keyframe when asked (a UVC camera giving H.264 cannot).
    keyframes_on_request = True
    startup_timeout = 10.0

    @pytest.fixture
    def open_camera(self) -> OpenCamera:
        raise NotImplementedError

    @pytest.fixture
    def running(self, open_camera: OpenCamera) -> Iterator[tuple[Camera, Collector]]:
        camera = open_camera(self.config)
        sink = Collector()
        camera.start(sink)
        try:
            assert sink.wait_for(lambda u: len(u) >= 20, self.startup_timeout), camera.error
            yield camera, sink
        finally:
            camera.close()

    def test_capabilities_describe_the_stream(self, open_camera: OpenCamera) -> None:
        camera = open_camera(self.config)
        try:
            caps = camera.capabilities
            assert caps.backend and caps.camera and caps.encoder
            assert (caps.width, caps.height) == (self.config.width, self.config.height)
            assert caps.fps > 0
            assert caps.keyframe_on_request is self.keyframes_on_request
        finally:
            camera.close()

    def test_annex_b_constrained_baseline_with_parameter_sets_on_keyframes(
        self, running: tuple[Camera, Collector]
    ) -> None:
        camera, sink = running
        units = sink.snapshot()
        assert units[0].keyframe, "the first access unit a camera gives is a keyframe"
        for unit in units:
            assert unit.data.startswith(b"\x00\x00\x00\x01")
            kinds = [nal_type(n) for n in split_nals(unit.data)]
            assert unit.keyframe == (NAL_IDR in kinds)
            if unit.keyframe:
                idr = kinds.index(NAL_IDR)
                assert NAL_SPS in kinds[:idr] and NAL_PPS in kinds[:idr], kinds
                sps = next(n for n in split_nals(unit.data) if nal_type(n) == NAL_SPS)
                assert profile_level_id(sps).startswith("42e0"), profile_level_id(sps)
        assert camera.error is None

    def test_timestamps_advance_and_capture_time_is_now(
        self, running: tuple[Camera, Collector]
    ) -> None:
        _, sink = running
        units = sink.snapshot()
        pts = [u.pts for u in units]
        assert all(b > a for a, b in itertools.pairwise(pts)), pts
        span_s = (pts[-1] - pts[0]) / 90_000
        assert 0.3 * len(units) / self.config.fps < span_s < 3 * len(units) / self.config.fps
        now = time.time()
        assert all(now - 10 < u.capture_time <= now + 0.01 for u in units)
        # Capture times follow the pictures' timestamps.
        elapsed = units[-1].capture_time - units[0].capture_time
        assert abs(elapsed - span_s) < 0.5

    def test_decodes_at_the_requested_size(self, running: tuple[Camera, Collector]) -> None:
        _, sink = running
        decoder = av.CodecContext.create("h264", "r")
        frames = []
        for unit in sink.snapshot():
            frames.extend(decoder.decode(av.Packet(unit.data)))
        assert len(frames) >= 15
        assert {(f.width, f.height) for f in frames} == {(self.config.width, self.config.height)}

    def test_delivers_from_its_own_thread_at_about_its_frame_rate(
        self, running: tuple[Camera, Collector]
    ) -> None:
        _, sink = running
        assert threading.current_thread().name not in sink.threads
        before = len(sink.snapshot())
        time.sleep(1.0)
        got = len(sink.snapshot()) - before
        assert got >= self.config.fps * 0.5, got  # real time, loosely: no speed assertion

    def test_keyframe_on_request(self, running: tuple[Camera, Collector]) -> None:
        camera, sink = running
        if not self.keyframes_on_request:
            # By contract such a camera says so, and a request is harmless (a viewer then
            # waits for the camera's own next keyframe).
            assert camera.capabilities.keyframe_on_request is False
            camera.request_keyframe()
            assert camera.error is None
            return
        assert camera.capabilities.keyframe_on_request is True
        time.sleep(0.3)
        start = len(sink.snapshot())
        asked = time.monotonic()
        camera.request_keyframe()
        assert sink.wait_for(lambda u: any(x.keyframe for x in u[start:]), 0.5)
        assert time.monotonic() - asked < 0.5

    def test_close_is_clean_and_idempotent(self, open_camera: OpenCamera) -> None:
        camera = open_camera(self.config)
        sink = Collector()
        camera.start(sink)
        assert sink.wait_for(lambda u: len(u) >= 3, self.startup_timeout), camera.error
        started = time.monotonic()
        camera.close()
        assert time.monotonic() - started < 3
        after = len(sink.snapshot())
        time.sleep(0.3)
        assert len(sink.snapshot()) == after, "no access unit after close"
        camera.close()
        assert camera.error is None


class TestSynthetic(CameraContract):
    @pytest.fixture
    def open_camera(self) -> OpenCamera:
        from device.hal import open_camera

        return lambda config: open_camera("synthetic", config)

    def test_pictures_carry_their_capture_time(self, running: tuple[Camera, Collector]) -> None:
        from device.hal.timecode import read_timecode_rgb24, timecode_ms

        _, sink = running
        decoder = av.CodecContext.create("h264", "r")
        checked = 0
        for unit in sink.snapshot():
            for frame in decoder.decode(av.Packet(unit.data)):
                rgb = frame.reformat(format="rgb24")
                plane = rgb.planes[0]
                code = read_timecode_rgb24(bytes(plane), rgb.width, rgb.height, plane.line_size)
                assert code == timecode_ms(unit.capture_time)
                checked += 1
        assert checked >= 15


@pytest.mark.usefixtures("fake_picamera2")
class TestPicamera2OnPi4(CameraContract):
    """The hardware-encoder path (the fake's VideoCore encoder is libx264)."""

    model = "Raspberry Pi 4 Model B Rev 1.4"

    @pytest.fixture
    def open_camera(self) -> OpenCamera:
        from device.hal.picam import PicameraCamera

        return lambda config: PicameraCamera(config, 0, model=self.model)


class TestPicamera2OnPi5(TestPicamera2OnPi4):
    """No H.264 block: picamera2's libav encoder, and at most 720p30."""

    model = "Raspberry Pi 5 Model B Rev 1.0"


class TestV4L2H264PassThrough(CameraContract):
    fourcc = "H264"
    keyframes_on_request = False

    @pytest.fixture
    def open_camera(self) -> Iterator[OpenCamera]:
        from device.hal.v4l2 import V4L2Camera
        from tests.fakes.v4l2 import FakeUvcCamera

        fakes: list[FakeUvcCamera] = []

        def open_fake(config: CameraConfig) -> Camera:
            # Every picture of the fake is an IDR once a second: the pass-through stream still
            # starts with one and repeats SPS/PPS, though the fake sends them only once.
            fake = FakeUvcCamera(self.fourcc, config.width, config.height, config.fps, gop=10)
            fakes.append(fake)
            return V4L2Camera(config, fake.device)

        yield open_fake
        for fake in fakes:
            fake.close()
            assert fake.error is None


class TestV4L2Mjpeg(TestV4L2H264PassThrough):
    fourcc = "MJPG"
    keyframes_on_request = True


class TestV4L2Yuyv(TestV4L2H264PassThrough):
    fourcc = "YUYV"
    keyframes_on_request = True
