"""The camera contract (``tests/test_hal_contract.py``) against real cameras on a Raspberry Pi.

Each class skips when its hardware is absent: a CSI camera through the real ``picamera2``, a
USB camera through V4L2.  Plus one real WebRTC session from whichever camera would be picked.
"""

from __future__ import annotations

import functools

import pytest

from device.hal import CameraConfig, open_camera
from device.hal.registry import BACKENDS, pick_backend
from tests.test_hal_contract import CameraContract, OpenCamera


def _found(name: str) -> bool:
    try:
        return bool(BACKENDS[name].find())
    except Exception:
        return False


@pytest.mark.skipif(not _found("picamera2"), reason="no CSI camera (or no picamera2)")
class TestRealPicamera2(CameraContract):
    config = CameraConfig(width=1280, height=720, fps=30, bitrate=2_000_000, keyframe_interval_s=10)

    @pytest.fixture
    def open_camera(self) -> OpenCamera:
        return lambda config: open_camera("picamera2", config)


@pytest.mark.skipif(not _found("v4l2"), reason="no V4L2 capture device")
class TestRealV4L2(CameraContract):
    config = CameraConfig(width=640, height=480, fps=30, bitrate=1_500_000, keyframe_interval_s=10)

    @pytest.fixture
    def open_camera(self) -> OpenCamera:
        from device.hal import v4l2

        device = v4l2.find_devices()[0]
        self.keyframes_on_request = device.best_format != "H264"
        return lambda config: v4l2.V4L2Camera(config, device)


async def test_webrtc_session_from_the_picked_camera() -> None:
    from device.media import MediaHub
    from tests.media_peers import Viewer, connect

    backend = pick_backend()
    if backend == "synthetic":
        pytest.skip("no camera here: the suite covers the synthetic camera")
    config = CameraConfig(width=1280, height=720, fps=30, bitrate=2_000_000)
    hub = MediaHub(functools.partial(open_camera, backend), config)
    viewer = Viewer(read_timecodes=False)
    device = await connect(viewer, hub)
    try:
        await viewer.wait_frames(60, timeout=20)
        assert viewer.frames[0].keyframe
    finally:
        await viewer.close()
        await device.close()
        await hub.close()


@pytest.mark.skipif(not _found("v4l2"), reason="no V4L2 capture device")
def test_a_usb_camera_lists_its_sizes_and_each_listed_size_opens() -> None:
    """The sizes a real UVC camera lists (``VIDIOC_ENUM_FRAMESIZES``) are what the settings
    panel offers: each one, asked for, opens and delivers pictures."""
    import asyncio

    from device.hal import v4l2
    from device.media import MediaHub

    device = v4l2.find_devices()[0]
    assert device.modes, f"{device.card} lists no discrete sizes in {device.best_format}"
    for mode in device.modes[:3]:
        config = CameraConfig(width=mode.width, height=mode.height, fps=min(mode.max_fps, 30))

        async def pictures(config: CameraConfig = config) -> int:
            hub = MediaHub(lambda c: v4l2.V4L2Camera(c, device), config)
            track = hub.subscribe()
            try:
                for _ in range(10):
                    await asyncio.wait_for(track.recv_unit(), 20)
                return 10
            finally:
                track.stop()
                await hub.close()

        assert asyncio.run(pictures()) == 10, mode
