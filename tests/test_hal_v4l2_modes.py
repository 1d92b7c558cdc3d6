"""The sizes and frame rates a V4L2 camera lists, read with ``VIDIOC_ENUM_FRAMESIZES`` and
``VIDIOC_ENUM_FRAMEINTERVALS``.  No V4L2 device here: the ioctls are answered by a fake that
fills the kernel's structures (``struct v4l2_frmsizeenum``, ``struct v4l2_frmivalenum``) as the
kernel does, EINVAL past the last entry; a real camera is listed by ``hardware-tests/``."""

from __future__ import annotations

import errno
import struct

import pytest

from device.hal import CameraConfig, CameraMode
from device.hal.v4l2 import V4L2Camera, V4L2Device, frame_modes

ENUM_FRAMESIZES = 0xC02C564A
ENUM_FRAMEINTERVALS = 0xC034564B
DISCRETE, CONTINUOUS, STEPWISE = 1, 2, 3


def fourcc(text: str) -> int:
    return int.from_bytes(text.encode(), "little")


class FakeKernel:
    """``ioctl`` of a UVC camera: ``sizes[fourcc] = [(w, h, [(num, den), ...]), ...]``."""

    def __init__(self, sizes: dict[str, list[tuple[int, int, list[tuple[int, int]]]]]):
        self.sizes = {fourcc(k): v for k, v in sizes.items()}
        self.stepwise_sizes = False
        self.calls = 0

    def __call__(self, fd: int, request: int, buf: bytearray) -> int:
        self.calls += 1
        if request == ENUM_FRAMESIZES:
            assert len(buf) == 44
            index, code = struct.unpack_from("<II", buf, 0)
            if self.stepwise_sizes:
                if index > 0:
                    raise OSError(errno.EINVAL, "Invalid argument")
                struct.pack_into("<I6I", buf, 8, STEPWISE, 160, 1920, 8, 120, 1080, 8)
                return 0
            sizes = self.sizes.get(code, [])
            if index >= len(sizes):
                raise OSError(errno.EINVAL, "Invalid argument")
            width, height, _ = sizes[index]
            struct.pack_into("<III", buf, 8, DISCRETE, width, height)
            return 0
        if request == ENUM_FRAMEINTERVALS:
            assert len(buf) == 52
            index, code, width, height = struct.unpack_from("<IIII", buf, 0)
            intervals = next(
                (i for w, h, i in self.sizes.get(code, []) if (w, h) == (width, height)), None
            )
            if intervals is None or index >= len(intervals):
                raise OSError(errno.EINVAL, "Invalid argument")
            struct.pack_into("<III", buf, 16, DISCRETE, *intervals[index])
            return 0
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")


C920 = {
    "MJPG": [
        (640, 480, [(1, 30), (1, 24), (1, 15)]),
        (1920, 1080, [(1, 30), (1, 15)]),
        (1280, 720, [(1, 15), (1, 30)]),
        (320, 240, [(1001, 30000)]),  # NTSC-style 29.97
    ],
    "YUYV": [(640, 480, [(1, 30)]), (1920, 1080, [(1, 2)])],
}


def test_sizes_come_largest_first_each_with_its_highest_frame_rate() -> None:
    kernel = FakeKernel(C920)
    assert frame_modes(3, "MJPG", kernel) == (
        CameraMode(1920, 1080, 30),
        CameraMode(1280, 720, 30),
        CameraMode(640, 480, 30),
        CameraMode(320, 240, 29),
    )
    assert frame_modes(3, "YUYV", kernel) == (CameraMode(1920, 1080, 2), CameraMode(640, 480, 30))
    assert frame_modes(3, "H264", kernel) == (), "a format it does not have: nothing"


def test_a_range_of_sizes_is_not_a_list() -> None:
    kernel = FakeKernel(C920)
    kernel.stepwise_sizes = True
    assert frame_modes(3, "MJPG", kernel) == ()


@pytest.mark.parametrize(
    ("formats", "encoder", "expected"),
    [
        # the camera's own H.264 is passed through: every size it has
        (
            ("H264",),
            None,
            (CameraMode(1920, 1080, 30), CameraMode(1280, 720, 60), CameraMode(640, 480, 30)),
        ),
        # a hardware encoder: the same
        (
            ("MJPG",),
            "h264_v4l2m2m",
            (CameraMode(1920, 1080, 30), CameraMode(1280, 720, 60), CameraMode(640, 480, 30)),
        ),
        # encoded in software on the Pi: what it encodes in time
        (("MJPG",), "libx264", (CameraMode(1280, 720, 30), CameraMode(640, 480, 30))),
    ],
)
def test_the_agent_offers_what_it_can_encode(
    formats: tuple[str, ...], encoder: str | None, expected: tuple[CameraMode, ...]
) -> None:
    modes = (CameraMode(1920, 1080, 30), CameraMode(1280, 720, 60), CameraMode(640, 480, 30))
    device = V4L2Device("/dev/video9", "USB camera", formats, modes=modes)
    camera = V4L2Camera(CameraConfig(width=640, height=480, fps=30), device, encoder=encoder)
    assert camera.capabilities.modes == expected
