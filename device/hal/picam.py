"""``picamera2``: Raspberry Pi CSI cameras through libcamera's ``picamera2``.

On a Pi Zero 2 W, 3 or 4 the Pi's hardware H.264 encoder (``picamera2.encoders.H264Encoder``,
the ``bcm2835-codec`` V4L2 device) encodes, with SPS/PPS repeated inline (``repeat=True``), an
IDR every ``iperiod`` pictures and profile baseline.  A Raspberry Pi 5 has no H.264 block:
picamera2 then hands out its libx264 encoder under the same name (``LibavH264Encoder``:
ultrafast, zerolatency) and we ask for no more than 1280x720 at 30 fps, which its CPU holds.

Encoded pictures arrive through a :class:`picamera2.outputs.Output` subclass's
``outputframe(frame, keyframe, timestamp, packet, audio)``, called from picamera2's encoder
thread.  The model is read from ``/proc/device-tree/model`` when a camera is opened, never at
import; ``picamera2`` itself is imported only here, inside functions.

picamera2 reports failures only when starting: a sensor that stops at runtime (a CSI frontend
timeout, a loose ribbon cable) just stops calling ``outputframe``, so :attr:`error` stays
``None``; the media hub notices the silence and restarts the camera (tested with the fake's
``Picamera2.stall``).
"""

from __future__ import annotations

import fcntl
import logging
import struct
import threading
import time
from pathlib import Path
from typing import Any, Final

from device.hal.camera import (
    CLOCK_RATE,
    AccessUnit,
    AccessUnitSink,
    CameraConfig,
    CameraError,
    CameraMode,
    Capabilities,
)
from device.hal.encoder import SOFTWARE_MAX
from device.hal.h264 import StreamNormalizer

log = logging.getLogger(__name__)

NAME = "picamera2"

MODEL_PATH: Final = Path("/proc/device-tree/model")

_VIDIOC_S_CTRL: Final = 0xC008561C  # _IOWR('V', 28, struct v4l2_control)
_CID_FORCE_KEY_FRAME: Final = 0x009909E5  # V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME


def pi_model(path: Path = MODEL_PATH) -> str | None:
    """``Raspberry Pi 4 Model B Rev 1.4`` and the like, or ``None`` off a Pi."""
    try:
        return path.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
    except OSError:
        return None


def has_hardware_h264(model: str | None) -> bool:
    """Pis before the 5 have the H.264 encoder block; the 5 (and unknown boards) do not."""
    if model is None or "Raspberry Pi" not in model:
        return False
    return not any(f"Raspberry Pi {n}" in model for n in ("5", "500", "Compute Module 5"))


def cameras() -> list[dict[str, Any]]:
    """``Picamera2.global_camera_info()``: one dict per camera (``Model``, ``Num``, ...)."""
    from picamera2 import Picamera2

    return list(Picamera2.global_camera_info())


class _Sink:
    """Adapts picamera2's ``Output.outputframe`` to an :data:`AccessUnitSink` (made lazily,
    because the base class lives in picamera2)."""

    @staticmethod
    def make(camera: PicameraCamera, sink: AccessUnitSink) -> Any:
        from picamera2.outputs import Output

        class AccessUnitOutput(Output):  # type: ignore[misc]
            def outputframe(
                self,
                frame: bytes | None,
                keyframe: bool = True,
                timestamp: int | None = None,
                packet: Any = None,
                audio: bool = False,
            ) -> None:
                if audio or frame is None:
                    return
                camera._deliver(bytes(frame), timestamp, sink)

        return AccessUnitOutput()


class PicameraCamera:
    """A CSI camera with the Pi's encoder (hardware, or libx264 on a Pi 5)."""

    def __init__(self, config: CameraConfig, index: int = 0, model: str | None = None) -> None:
        self.model = model if model is not None else pi_model()
        self.hardware = has_hardware_h264(self.model)
        if not self.hardware:
            w, h, fps = SOFTWARE_MAX
            if config.width * config.height > w * h or config.fps > fps:
                log.info("no H.264 hardware on %s: encoding %dx%d@%d", self.model, w, h, fps)
                config = CameraConfig(
                    width=min(config.width, w),
                    height=min(config.height, h),
                    fps=min(config.fps, fps),
                    bitrate=config.bitrate,
                    keyframe_interval_s=config.keyframe_interval_s,
                    device=config.device,
                    encoder_threads=config.encoder_threads,
                    hflip=config.hflip,
                    vflip=config.vflip,
                )
        self.config = config
        self.index = index
        self._picam: Any = None
        self._encoder: Any = None
        self._normalizer = StreamNormalizer()
        self._anchor: float | None = None  # wall clock minus sensor time, smallest seen
        self._lock = threading.Lock()
        self._closed = False
        self._error: BaseException | None = None
        self._camera_name = "CSI camera"
        self.frames = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            backend=NAME,
            camera=f"{self._camera_name} on {self.model or 'unknown board'}",
            encoder="picamera2 H264Encoder" + ("" if self.hardware else " (libx264)"),
            hardware_encoder=self.hardware,
            width=self.config.width,
            height=self.config.height,
            fps=float(self.config.fps),
            modes=self.modes(),
            flips=True,
        )

    def modes(self) -> tuple[CameraMode, ...]:
        """The usual video sizes, within what the board's encoder takes (30 fps)."""
        sizes = [(640, 360), (1280, 720), (1920, 1080)]
        if not self.hardware:
            w, h, fps = SOFTWARE_MAX
            return tuple(CameraMode(x, y, fps) for x, y in sizes if x * y <= w * h)
        return tuple(CameraMode(x, y, 30) for x, y in sizes)

    @property
    def error(self) -> BaseException | None:
        return self._error

    def start(self, sink: AccessUnitSink) -> None:
        from picamera2 import Picamera2
        from picamera2.encoders import H264Encoder

        if self._picam is not None:
            raise CameraError("camera already started")
        cfg = self.config
        try:
            picam = Picamera2(self.index)
            self._picam = picam
            self._camera_name = str(picam.camera_properties.get("Model", self._camera_name))
            extra: dict[str, Any] = {}
            if cfg.hflip or cfg.vflip:  # libcamera flips on the sensor: no cost
                from libcamera import Transform

                extra["transform"] = Transform(hflip=int(cfg.hflip), vflip=int(cfg.vflip))
            video = picam.create_video_configuration(
                main={"size": (cfg.width, cfg.height), "format": "YUV420"},
                controls={"FrameRate": float(cfg.fps)},
                **extra,
            )
            picam.configure(video)
            kwargs: dict[str, Any] = {
                "bitrate": cfg.bitrate,
                "repeat": True,
                "iperiod": cfg.gop_frames,
                "framerate": cfg.fps,
                "profile": "baseline",
            }
            try:
                encoder = H264Encoder(**kwargs)
            except TypeError:  # picamera2 before 0.3.17 knows only bitrate, repeat, iperiod
                encoder = H264Encoder(cfg.bitrate, True, cfg.gop_frames)
            self._encoder = encoder
            picam.start_recording(encoder, _Sink.make(self, sink))
        except Exception as exc:
            self.close()
            raise CameraError(f"cannot start CSI camera {self.index}: {exc}") from exc

    def request_keyframe(self) -> None:
        encoder = self._encoder
        if encoder is None:
            return
        force = getattr(encoder, "force_key_frame", None)
        if force is not None:  # picamera2 >= 0.3.17 (both its hardware and libav encoders)
            force()
            return
        vd = getattr(encoder, "vd", None)  # older: the encoder's V4L2 device, set the control
        if vd is not None and not vd.closed:
            try:
                fcntl.ioctl(vd, _VIDIOC_S_CTRL, struct.pack("<Ii", _CID_FORCE_KEY_FRAME, 1))
            except OSError as exc:
                log.warning("cannot force a keyframe: %s", exc)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        picam = self._picam
        if picam is None:
            return
        try:
            if self._encoder is not None:
                picam.stop_recording()
        except Exception:
            log.exception("stopping the CSI camera")
        finally:
            picam.close()

    def _deliver(self, frame: bytes, timestamp_us: int | None, sink: AccessUnitSink) -> None:
        if self._closed:
            return
        now = time.time()
        sensor_s = (timestamp_us or 0) / 1e6
        # picamera2 gives sensor time since the first picture: anchor it to the wall clock with
        # the smallest delay seen (a lower bound of the capture-to-here pipeline).
        anchor = now - sensor_s
        if self._anchor is None or anchor < self._anchor:
            self._anchor = anchor
        data, keyframe = self._normalizer.normalize(frame)
        self.frames += 1
        sink(AccessUnit(data, round(sensor_s * CLOCK_RATE), keyframe, self._anchor + sensor_s))


def open_picamera2(config: CameraConfig) -> PicameraCamera:
    found = cameras()
    if not found:
        raise CameraError("no CSI camera found by libcamera")
    index = int(config.device) if config.device is not None else 0
    return PicameraCamera(config, index)
