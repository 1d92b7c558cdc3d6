"""Fake ``picamera2.encoders``: ``H264Encoder`` stands for the Pi's VideoCore encoder.

Same constructor as picamera2's (``bitrate, repeat, iperiod, framerate, enable_sps_framerate,
qp, profile``), same behaviour where MuMu relies on it: SPS/PPS in front of each IDR only with
``repeat=True``; an IDR every ``iperiod`` pictures; ``profile=None`` gives a high-profile
stream like the hardware's default; ``force_key_frame()``; encoded frames go to each output's
``outputframe(frame, keyframe, timestamp_us)``.  libx264 (PyAV) does the encoding.
"""

from __future__ import annotations

import threading
from enum import Enum
from fractions import Fraction
from typing import Any

from picamera2.outputs import Output


class Quality(Enum):
    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


class Encoder:
    def __init__(self) -> None:
        self.size = (0, 0)
        self.format: str | None = None
        self._output: list[Output] = []
        self._running = False
        self.firsttimestamp: int | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def output(self) -> Any:
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value: Any) -> None:
        outputs = value if isinstance(value, list) else [value]
        if not all(isinstance(o, Output) for o in outputs):
            raise RuntimeError("Must pass Output")
        self._output = outputs

    def start(self, quality: Any = None) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            self._running = True
            for out in self._output:
                out.start()
            self._start()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            for out in self._output:
                out.stop()

    def _start(self) -> None:
        pass

    def outputframe(
        self, frame: bytes, keyframe: bool = True, timestamp: int | None = None
    ) -> None:
        for out in self._output:
            out.outputframe(frame, keyframe, timestamp, None, False)


class H264Encoder(Encoder):
    def __init__(
        self,
        bitrate: int | None = None,
        repeat: bool = True,
        iperiod: int | None = None,
        framerate: float | None = None,
        enable_sps_framerate: bool = False,
        qp: int | None = None,
        profile: str | None = None,
    ) -> None:
        super().__init__()
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.framerate = framerate
        self.profile = profile
        self.forced_keyframes = 0
        self._force = False
        self._ctx: Any = None

    def force_key_frame(self) -> None:
        self.forced_keyframes += 1
        self._force = True

    def _start(self) -> None:
        import av

        width, height = self.size
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        ctx.framerate = Fraction(round(self.framerate or 30))
        ctx.bit_rate = self.bitrate or 5_000_000
        ctx.gop_size = self.iperiod or 60
        x264 = "repeat-headers=1" if self.repeat else "repeat-headers=0"
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": (self.profile or "high").lower(),
            "x264-params": f"{x264}:scenecut=0",
        }
        if not self.repeat:
            ctx.flags |= av.codec.context.Flags.global_header
        ctx.open()
        self._ctx = ctx
        self.firsttimestamp = None

    def _encode_picture(self, frame: Any, sensor_ns: int) -> None:
        """Called by the fake camera for each picture (picamera2: ``encode(stream, request)``)."""
        from av.video.frame import PictureType

        if not self._running:
            return
        ts = sensor_ns // 1000
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
        frame.pts = ts - self.firsttimestamp
        frame.time_base = Fraction(1, 1_000_000)
        frame.pict_type = PictureType.I if self._force else PictureType.NONE
        self._force = False
        for packet in self._ctx.encode(frame):
            self.outputframe(bytes(packet), bool(packet.is_keyframe), packet.pts)


#: On a Pi 5 picamera2 hands its libx264 encoder out under the name ``H264Encoder``.
LibavH264Encoder = H264Encoder
