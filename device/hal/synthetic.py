"""``synthetic``: a moving test pattern, stamped with its capture time, encoded with libx264.

The camera of CI, of the demo and of the benchmarks.  Pictures are drawn straight into YUV 4:2:0
planes (no colour conversion): four bands of luma ramps sliding at different speeds, a bouncing
square, static colour bars, and in the top-left corner the capture time as a
:mod:`device.hal.timecode` stamp (when the picture is at least 608 pixels wide).  One thread per
camera draws and encodes in real time; it drops pictures rather than fall behind.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from device.hal import timecode
from device.hal.camera import (
    CLOCK_RATE,
    AccessUnitSink,
    CameraConfig,
    CameraError,
    CameraMode,
    Capabilities,
)
from device.hal.encoder import H264SoftwareEncoder
from device.hal.worker import CameraThread

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

NAME = "synthetic"

#: The sizes the test pattern offers (any even size works; these are the usual ones).
MODES = (CameraMode(640, 360, 30), CameraMode(1280, 720, 30), CameraMode(1920, 1080, 30))


def flip_plane(plane: bytes, stride: int, width: int, hflip: bool, vflip: bool) -> bytes:
    """A picture plane (``stride`` bytes a row, ``width`` of them the picture's) mirrored."""
    rows = [plane[i : i + stride] for i in range(0, len(plane), stride)]
    if hflip:
        rows = [row[:width][::-1] + row[width:] for row in rows]
    if vflip:
        rows.reverse()
    return b"".join(rows)


class PatternGenerator:
    """Draws picture ``n`` of the pattern as a ``yuv420p`` ``av.VideoFrame``."""

    BOX = 96

    def __init__(self, width: int, height: int) -> None:
        import av

        if width % 2 or height % 2 or width < 64 or height < 64:
            raise CameraError(f"test pattern needs even sizes of at least 64, not {width}x{height}")
        self.width, self.height = width, height
        probe = av.VideoFrame(width, height, "yuv420p")
        self.strides = [plane.line_size for plane in probe.planes]
        ys = self.strides[0]
        self._ramp = bytes((x * 2) & 0xFF for x in range(width + 256))
        self._pad = bytes(ys - width)
        self._bands = 4
        self._box_row = bytes([200]) * self.BOX
        self.chroma = [
            self._chroma_plane(plane, stride)
            for plane, stride in zip((1, 2), self.strides[1:], strict=True)
        ]

    def _chroma_plane(self, plane: int, stride: int) -> bytes:
        w, h = self.width // 2, self.height // 2
        bars_u = (128, 44, 156, 72, 184, 100, 212, 128)
        bars_v = (128, 140, 44, 58, 198, 212, 114, 128)
        bars = bars_u if plane == 1 else bars_v
        row = bytes(bars[min(7, x * 8 // w)] for x in range(w)) + bytes(stride - w)
        stamp_rows = timecode.HEIGHT // 2
        stamp_w = min(w, timecode.WIDTH // 2)
        stamp_row = bytes([128]) * stamp_w + row[stamp_w:]
        return stamp_row * stamp_rows + row * (h - stamp_rows)

    def luma(self, n: int, stamp: int | None) -> bytearray:
        w, h, ys = self.width, self.height, self.strides[0]
        band_h = h // self._bands
        rows: list[bytes] = []
        for b in range(self._bands):
            speed = 2 * (b + 1)
            off = (n * speed) % 256 if b % 2 == 0 else 255 - (n * speed) % 256
            count = band_h if b < 3 else h - 3 * band_h
            rows.append((self._ramp[off : off + w] + self._pad) * count)
        plane = bytearray(b"".join(rows))
        # A square bouncing around the picture.
        span_x, span_y = w - self.BOX, h - self.BOX - timecode.HEIGHT
        px, py = (n * 7) % (2 * span_x), (n * 5) % (2 * span_y)
        bx = px if px < span_x else 2 * span_x - px
        by = timecode.HEIGHT + (py if py < span_y else 2 * span_y - py)
        for y in range(by, by + self.BOX):
            plane[y * ys + bx : y * ys + bx + self.BOX] = self._box_row
        if stamp is not None and w >= timecode.WIDTH:
            row = timecode.luma_row(stamp)
            for y in range(timecode.HEIGHT):
                plane[y * ys : y * ys + timecode.WIDTH] = row
        return plane

    def frame(
        self, n: int, capture_time: float, hflip: bool = False, vflip: bool = False
    ) -> av.VideoFrame:
        import av

        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        planes = [
            bytes(self.luma(n, timecode.timecode_ms(capture_time))),
            self.chroma[0],
            self.chroma[1],
        ]
        if hflip or vflip:
            widths = (self.width, self.width // 2, self.width // 2)
            planes = [
                flip_plane(p, stride, w, hflip, vflip)
                for p, stride, w in zip(planes, self.strides, widths, strict=True)
            ]
        for plane, data in zip(frame.planes, planes, strict=True):
            plane.update(data)
        return frame


class SyntheticCamera(CameraThread):
    """The test pattern at the configured size and rate, through :class:`H264SoftwareEncoder`."""

    def __init__(self, config: CameraConfig, encoder: str = "libx264") -> None:
        super().__init__()
        self.config = config
        self._pattern = PatternGenerator(config.width, config.height)
        self._encoder = H264SoftwareEncoder(config, encoder)
        #: Pictures drawn, and those skipped because drawing + encoding fell behind.
        self.frames = 0
        self.dropped = 0
        #: Seconds of thread CPU time spent drawing, and encoding (for the benchmark).
        self.draw_cpu_s = 0.0
        self.encode_cpu_s = 0.0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            backend=NAME,
            camera="test pattern with timecode",
            encoder=self._encoder.codec_name,
            hardware_encoder=self._encoder.codec_name != "libx264",
            width=self.config.width,
            height=self.config.height,
            fps=float(self.config.fps),
            modes=MODES,
            flips=True,
        )

    def start(self, sink: AccessUnitSink) -> None:
        self._start_thread(self._run, sink, name="camera-synthetic")

    def request_keyframe(self) -> None:
        self._encoder.request_keyframe()

    def _run(self, sink: AccessUnitSink) -> None:
        period = 1.0 / self.config.fps
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            now = time.monotonic()
            due = start + n * period
            if now < due:
                if self._stop.wait(due - now):
                    break
            elif now - due > period:  # late by more than a picture: skip ahead
                skipped = int((now - due) / period)
                self.dropped += skipped
                n += skipped
            capture = time.time()
            t0 = time.thread_time()
            frame = self._pattern.frame(n, capture, self.config.hflip, self.config.vflip)
            t1 = time.thread_time()
            units = self._encoder.encode(frame, round(n * period * CLOCK_RATE), capture)
            self.encode_cpu_s += time.thread_time() - t1
            self.draw_cpu_s += t1 - t0
            self.frames += 1
            n += 1
            for unit in units:
                sink(unit)


def open_synthetic(config: CameraConfig) -> SyntheticCamera:
    return SyntheticCamera(config)
