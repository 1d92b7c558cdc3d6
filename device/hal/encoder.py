"""Software (or V4L2 memory-to-memory) H.264 encoding of raw pictures through PyAV.

Used by the ``synthetic`` backend, by ``v4l2`` for cameras that do not give H.264, and by
``picamera2`` on a Raspberry Pi 5 (which has no H.264 encoder block).  ``libx264`` runs with
preset ultrafast, tune zerolatency (no lookahead, no B-frames: one picture in, one access unit
out) and profile baseline.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, cast

from device.hal.camera import TIME_BASE, AccessUnit, CameraConfig, CameraError
from device.hal.h264 import StreamNormalizer, parameter_sets_from_extradata

#: Largest picture a Pi encodes in software (libx264) at 30 fps with headroom for the rest.
SOFTWARE_MAX: Final = (1280, 720, 30)

if TYPE_CHECKING:
    import av
    from av.video.codeccontext import VideoCodecContext

log = logging.getLogger(__name__)

#: Encoders in order of preference when ``"auto"`` is asked for.
AUTO_ORDER: Final = ("h264_v4l2m2m", "libx264")


def available_encoders() -> list[str]:
    """The H.264 encoders this PyAV build has (whether their hardware exists is another matter)."""
    import av

    return [name for name in AUTO_ORDER if name in av.codecs_available]


def m2m_encoder_present() -> bool:
    """A V4L2 memory-to-memory H.264 encoder device exists (Pi 3/4/Zero 2 W, not Pi 5)."""
    import glob

    for path in sorted(glob.glob("/sys/class/video4linux/video*/name")):
        try:
            with open(path) as f:
                name = f.read().strip()
        except OSError:
            continue
        if "enc" in name.lower() and "isp" not in name.lower():
            return True
    return False


class H264SoftwareEncoder:
    """Encodes ``av.VideoFrame``s to :class:`AccessUnit`s.  One thread at a time."""

    def __init__(self, config: CameraConfig, codec: str = "libx264", pix_fmt: str = "yuv420p"):
        import av

        self.config = config
        self.codec_name = codec
        ctx = cast("VideoCodecContext", av.CodecContext.create(codec, "w"))
        ctx.width = config.width
        ctx.height = config.height
        ctx.pix_fmt = pix_fmt
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(config.fps)
        ctx.bit_rate = config.bitrate
        ctx.gop_size = config.gop_frames
        ctx.max_b_frames = 0
        if config.encoder_threads:
            ctx.thread_count = config.encoder_threads
        kbps = max(1, config.bitrate // 1000)
        if codec == "libx264":
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "profile": "baseline",
                # Cap bursts to half a second of bit rate: a WebRTC path has small buffers.
                "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={max(1, kbps // 2)}"
                ":repeat-headers=1:scenecut=0",
            }
        elif codec == "h264_v4l2m2m":
            # ffmpeg passes the profile to the V4L2 encoder; SPS/PPS then come in extradata
            # and the normalizer repeats them before each keyframe.
            try:
                ctx.profile = "Constrained Baseline"
            except (ValueError, AttributeError):
                log.warning("%s: cannot ask for constrained baseline", codec)
        try:
            ctx.open()
        except Exception as exc:  # av.error.FFmpegError and friends
            raise CameraError(f"cannot open H.264 encoder {codec}: {exc}") from exc
        self._ctx = ctx
        self._normalizer = StreamNormalizer(parameter_sets_from_extradata(ctx.extradata))
        self._force_keyframe = True
        self._capture_times: dict[int, float] = {}

    def request_keyframe(self) -> None:
        """The next picture is encoded as a keyframe (safe to call from any thread)."""
        self._force_keyframe = True

    @property
    def profile_level_id(self) -> str | None:
        return self._normalizer.profile_level_id

    def encode(self, frame: av.VideoFrame, pts: int, capture_time: float) -> list[AccessUnit]:
        """Encode one picture (``pts`` in 90 kHz units); returns what the encoder gives back."""
        from av.video.frame import PictureType

        frame.pts = pts
        frame.time_base = TIME_BASE
        if self._force_keyframe:
            self._force_keyframe = False
            frame.pict_type = PictureType.I
        else:
            frame.pict_type = PictureType.NONE
        self._capture_times[pts] = capture_time
        return self._collect(self._ctx.encode(frame))

    def flush(self) -> list[AccessUnit]:
        return self._collect(self._ctx.encode(None))

    def _collect(self, packets: list[av.Packet[Any]]) -> list[AccessUnit]:
        units: list[AccessUnit] = []
        for packet in packets:
            pts = packet.pts if packet.pts is not None else 0
            data, keyframe = self._normalizer.normalize(bytes(packet))
            capture_time = self._capture_times.pop(pts, 0.0)
            units.append(AccessUnit(data, pts, keyframe, capture_time))
        if len(self._capture_times) > 64:  # an encoder that drops pictures: forget old ones
            for old in sorted(self._capture_times)[:-64]:
                del self._capture_times[old]
        return units
