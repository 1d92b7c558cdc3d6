"""``v4l2``: USB (UVC) and other V4L2 capture devices, read through PyAV.

If the camera offers H.264 itself, its access units are passed through (re-stamped with SPS/PPS
before each keyframe, see :mod:`device.hal.h264`); otherwise MJPEG or YUYV pictures are decoded
and encoded with ``h264_v4l2m2m`` where such a hardware encoder exists, else ``libx264``.

Devices are found with read-only ioctls on ``/dev/video*`` (``VIDIOC_QUERYCAP``,
``VIDIOC_ENUM_FMT``; the sizes and frame rates of the format used with
``VIDIOC_ENUM_FRAMESIZES`` and ``VIDIOC_ENUM_FRAMEINTERVALS``); nothing is opened at import time.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from device.hal.camera import (
    CLOCK_RATE,
    AccessUnit,
    AccessUnitSink,
    CameraConfig,
    CameraError,
    CameraMode,
    Capabilities,
)
from device.hal.encoder import SOFTWARE_MAX, H264SoftwareEncoder, m2m_encoder_present
from device.hal.h264 import StreamNormalizer, parameter_sets_from_extradata
from device.hal.worker import CameraThread

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

NAME = "v4l2"

_VIDIOC_QUERYCAP: Final = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
_VIDIOC_ENUM_FMT: Final = 0xC0405602  # _IOWR('V', 2, struct v4l2_fmtdesc), 64 bytes
_VIDIOC_ENUM_FRAMESIZES: Final = 0xC02C564A  # _IOWR('V', 74, struct v4l2_frmsizeenum), 44 bytes
_VIDIOC_ENUM_FRAMEINTERVALS: Final = 0xC034564B  # _IOWR('V', 75, struct v4l2_frmivalenum), 52
_FRMSIZE_TYPE_DISCRETE: Final = 1
_FRMIVAL_TYPE_DISCRETE: Final = 1
_CAP_VIDEO_CAPTURE: Final = 0x00000001
_CAP_DEVICE_CAPS: Final = 0x80000000
_BUF_TYPE_VIDEO_CAPTURE: Final = 1

#: V4L2 fourcc -> ffmpeg ``input_format``, in order of preference.
INPUT_FORMATS: Final = {"H264": "h264", "MJPG": "mjpeg", "YUYV": "yuyv422"}


@dataclass(frozen=True)
class V4L2Device:
    """A capture device and the formats it offers (V4L2 fourccs such as ``H264``, ``MJPG``)."""

    path: str
    card: str
    formats: tuple[str, ...]
    #: The PyAV demuxer and its options; ``v4l2`` for a real device.  Tests stand a FIFO fed by a
    #: fake camera in for ``/dev/videoN`` by naming another demuxer (``h264``, ``mjpeg``,
    #: ``rawvideo``) and its options.
    demuxer: str = "v4l2"
    demuxer_options: dict[str, str] = field(default_factory=dict)
    #: The sizes (each with its highest frame rate) the device offers in ``best_format``; empty
    #: when it does not list them (a size range: the size asked for is tried as it is).
    modes: tuple[CameraMode, ...] = ()

    @property
    def best_format(self) -> str | None:
        return next((f for f in INPUT_FORMATS if f in self.formats), None)


Ioctl = Callable[[int, int, bytearray], object]


def frame_modes(fd: int, fourcc: str, ioctl: Ioctl = fcntl.ioctl) -> tuple[CameraMode, ...]:
    """The discrete sizes a device offers in ``fourcc``, each with its highest frame rate,
    largest first (``VIDIOC_ENUM_FRAMESIZES``, ``VIDIOC_ENUM_FRAMEINTERVALS``)."""
    code = int.from_bytes(fourcc.ljust(4).encode("ascii"), "little")
    modes: set[CameraMode] = set()
    for index in range(64):
        size = bytearray(44)
        struct.pack_into("<II", size, 0, index, code)
        try:
            ioctl(fd, _VIDIOC_ENUM_FRAMESIZES, size)
        except OSError:
            break
        kind, width, height = struct.unpack_from("<III", size, 8)
        if kind != _FRMSIZE_TYPE_DISCRETE:
            return ()  # a range of sizes (stepwise, continuous): no list to offer
        fps = _max_fps(fd, code, width, height, ioctl)
        if fps > 0:
            modes.add(CameraMode(width, height, fps))
    return tuple(sorted(modes, key=lambda m: (m.width * m.height, m.max_fps), reverse=True))


def _max_fps(fd: int, code: int, width: int, height: int, ioctl: Ioctl) -> int:
    best = 0.0
    for index in range(64):
        interval = bytearray(52)
        struct.pack_into("<IIII", interval, 0, index, code, width, height)
        try:
            ioctl(fd, _VIDIOC_ENUM_FRAMEINTERVALS, interval)
        except OSError:
            break
        # discrete: the interval; stepwise/continuous: the shortest one comes first
        kind, numerator, denominator = struct.unpack_from("<III", interval, 16)
        if numerator > 0:
            best = max(best, denominator / numerator)
        if kind != _FRMIVAL_TYPE_DISCRETE:
            break
    return min(240, int(best + 0.01))  # 30000/1001 -> 29


def _query(path: str) -> V4L2Device | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        cap = bytearray(104)
        fcntl.ioctl(fd, _VIDIOC_QUERYCAP, cap)
        card = bytes(cap[16:48]).split(b"\0", 1)[0].decode(errors="replace")
        caps, device_caps = struct.unpack_from("<II", cap, 84)
        if caps & _CAP_DEVICE_CAPS:
            caps = device_caps
        if not caps & _CAP_VIDEO_CAPTURE:  # encoders, decoders, ISP outputs, metadata nodes
            return None
        formats: list[str] = []
        for index in range(64):
            desc = bytearray(64)
            struct.pack_into("<II", desc, 0, index, _BUF_TYPE_VIDEO_CAPTURE)
            try:
                fcntl.ioctl(fd, _VIDIOC_ENUM_FMT, desc)
            except OSError:
                break
            (fourcc,) = struct.unpack_from("<I", desc, 44)
            formats.append(fourcc.to_bytes(4, "little").decode(errors="replace").strip())
        device = V4L2Device(path, card, tuple(formats))
        if device.best_format is None:
            return device
        return dataclasses.replace(device, modes=frame_modes(fd, device.best_format))
    except OSError:
        return None
    finally:
        os.close(fd)


def find_devices() -> list[V4L2Device]:
    """Capture devices that offer a format we can use."""
    paths = sorted(glob.glob("/dev/video*"), key=lambda p: int("0" + p[len("/dev/video") :]))
    found = [d for d in (_query(p) for p in paths) if d is not None]
    return [d for d in found if d.best_format is not None]


def pick_encoder() -> str:
    return "h264_v4l2m2m" if m2m_encoder_present() else "libx264"


class V4L2Camera(CameraThread):
    """One V4L2 device, read in a thread of its own."""

    def __init__(self, config: CameraConfig, device: V4L2Device, encoder: str | None = None):
        super().__init__()
        fmt = device.best_format
        if fmt is None:
            raise CameraError(f"{device.path} offers none of {', '.join(INPUT_FORMATS)}")
        self.config = config
        self.device = device
        self.input_format = fmt
        self.passthrough = fmt == "H264"
        self._encoder_name = "camera" if self.passthrough else (encoder or pick_encoder())
        self._encoder: H264SoftwareEncoder | None = None
        self._keyframe_wanted = False
        self.frames = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            backend=NAME,
            camera=f"{self.device.card} ({self.device.path}, {self.input_format})",
            encoder=self._encoder_name,
            hardware_encoder=self._encoder_name != "libx264",
            width=self.config.width,
            height=self.config.height,
            fps=float(self.config.fps),
            # UVC cameras have no standard way to ask for an IDR: a viewer waits for the next.
            keyframe_on_request=not self.passthrough,
            modes=self.modes(),
        )

    def modes(self) -> tuple[CameraMode, ...]:
        """The device's sizes; encoded in software, only those a Pi encodes in time."""
        if self._encoder_name != "libx264":
            return self.device.modes
        w, h, fps = SOFTWARE_MAX
        return tuple(
            CameraMode(m.width, m.height, min(m.max_fps, fps))
            for m in self.device.modes
            if m.width * m.height <= w * h
        )

    def start(self, sink: AccessUnitSink) -> None:
        if self._thread is not None:
            raise CameraError("camera already started")
        self._start_thread(self._run, self._open(), sink, name=f"camera {self.device.path}")

    def request_keyframe(self) -> None:
        if self._encoder is not None:
            self._encoder.request_keyframe()
        else:
            self._keyframe_wanted = True

    def _open(self) -> av.container.InputContainer:
        import av

        cfg = self.config
        if self.device.demuxer == "v4l2":
            options = {
                "input_format": INPUT_FORMATS[self.input_format],
                "video_size": f"{cfg.width}x{cfg.height}",
                "framerate": str(cfg.fps),
            }
        else:
            options = dict(self.device.demuxer_options)
        try:
            return av.open(
                self.device.path, format=self.device.demuxer, options=options, timeout=(10.0, 5.0)
            )
        except Exception as exc:
            raise CameraError(f"cannot open {self.device.path}: {exc}") from exc

    def _run(self, container: av.container.InputContainer, sink: AccessUnitSink) -> None:
        with container:
            stream = container.streams.video[0]
            if self.passthrough:
                self._pass_through(container, stream, sink)
            else:
                self._transcode(container, stream, sink)
        if not self._stop.is_set():  # unplugged, or the driver gave up
            raise CameraError(f"{self.device.path} stopped delivering pictures")

    def _pass_through(
        self, container: av.container.InputContainer, stream: av.VideoStream, sink: AccessUnitSink
    ) -> None:
        normalizer = StreamNormalizer(parameter_sets_from_extradata(stream.codec_context.extradata))
        start = time.monotonic()
        for packet in container.demux(stream):
            if self._stop.is_set():
                return
            if packet.size == 0:
                continue
            capture = time.time()
            data, keyframe = normalizer.normalize(bytes(packet))
            if not keyframe and self.frames == 0:
                continue  # a stream joined mid-GOP: nothing decodes before its first IDR
            pts = round((time.monotonic() - start) * CLOCK_RATE)
            self.frames += 1
            sink(AccessUnit(data, pts, keyframe, capture))

    def _transcode(
        self, container: av.container.InputContainer, stream: av.VideoStream, sink: AccessUnitSink
    ) -> None:
        cfg = self.config
        try:
            self._encoder = H264SoftwareEncoder(cfg, self._encoder_name)
        except CameraError:
            if self._encoder_name == "libx264":
                raise
            log.warning("%s unusable, encoding with libx264", self._encoder_name)
            self._encoder_name = "libx264"
            self._encoder = H264SoftwareEncoder(cfg, "libx264")
        if self._keyframe_wanted:
            self._encoder.request_keyframe()
        start = time.monotonic()
        for packet in container.demux(stream):
            if self._stop.is_set():
                return
            capture = time.time()
            for frame in packet.decode():
                size = (frame.width, frame.height)
                if size != (cfg.width, cfg.height) or frame.format.name != "yuv420p":
                    frame = frame.reformat(cfg.width, cfg.height, "yuv420p")
                pts = round((time.monotonic() - start) * CLOCK_RATE)
                self.frames += 1
                for unit in self._encoder.encode(frame, pts, capture):
                    sink(unit)


def open_v4l2(config: CameraConfig) -> V4L2Camera:
    devices = find_devices()
    if config.device is not None:
        devices = [d for d in devices if d.path == config.device]
    if not devices:
        where = f" at {config.device}" if config.device else ""
        raise CameraError(f"no V4L2 capture device found{where}")
    return V4L2Camera(config, devices[0])
