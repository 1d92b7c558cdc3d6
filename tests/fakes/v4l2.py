"""A fake UVC camera: a FIFO fed in real time, read by PyAV in place of ``/dev/videoN``.

``FakeUvcCamera("H264" | "MJPG" | "YUYV", width, height, fps)`` gives a
:class:`device.hal.v4l2.V4L2Device` whose ``path`` is the FIFO and whose demuxer is the one
PyAV needs for that stream (``h264``, ``mjpeg``, ``rawvideo``) instead of ``v4l2``.  As a UVC
camera does, the H.264 one sends SPS/PPS once, before its first IDR only, and makes an IDR
every ``gop`` pictures; it cannot be asked for one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

from device.hal import CameraMode
from device.hal.synthetic import PatternGenerator
from device.hal.v4l2 import V4L2Device


class FakeUvcCamera:
    def __init__(
        self, fourcc: str, width: int = 640, height: int = 360, fps: int = 30, gop: int = 30
    ):
        self.fourcc, self.width, self.height, self.fps, self.gop = fourcc, width, height, fps, gop
        self._dir = Path(tempfile.mkdtemp(prefix="mumu-fake-uvc-"))
        self.path = self._dir / "video0"
        os.mkfifo(self.path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-uvc")
        self.frames_written = 0
        self.error: BaseException | None = None
        self._thread.start()

    @property
    def device(self) -> V4L2Device:
        rate = str(self.fps)
        demuxers: dict[str, tuple[str, dict[str, str]]] = {
            "H264": ("h264", {"framerate": rate}),
            "MJPG": ("mjpeg", {"framerate": rate}),
            "YUYV": (
                "rawvideo",
                {
                    "video_size": f"{self.width}x{self.height}",
                    "pixel_format": "yuyv422",
                    "framerate": rate,
                },
            ),
        }
        demuxer, options = demuxers[self.fourcc]
        options = {**options, "probesize": "32", "analyzeduration": "0"}
        # the one size it sends, as a camera lists its sizes (VIDIOC_ENUM_FRAMESIZES)
        modes = (CameraMode(self.width, self.height, self.fps),)
        return V4L2Device(
            str(self.path), "Fake UVC Camera", (self.fourcc,), demuxer, options, modes=modes
        )

    def _encoder(self) -> Any:
        import av

        if self.fourcc == "YUYV":
            return None
        if self.fourcc == "MJPG":
            ctx = av.CodecContext.create("mjpeg", "w")
            ctx.pix_fmt = "yuvj420p"
        else:
            ctx = av.CodecContext.create("libx264", "w")
            ctx.pix_fmt = "yuv420p"
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "profile": "baseline",
                "x264-params": "repeat-headers=0:scenecut=0",
            }
            ctx.gop_size = self.gop
            ctx.flags |= av.codec.context.Flags.global_header  # SPS/PPS go to extradata
        ctx.width, ctx.height = self.width, self.height
        ctx.time_base = Fraction(1, self.fps)
        ctx.framerate = Fraction(self.fps)
        ctx.bit_rate = 2_000_000
        ctx.open()
        return ctx

    def _run(self) -> None:
        try:
            encoder = self._encoder()
            pattern = PatternGenerator(self.width, self.height)
            with open(self.path, "wb", buffering=0) as fifo:  # blocks until the reader opens
                start = time.monotonic()
                n = 0
                while not self._stop.wait(max(0.0, start + n / self.fps - time.monotonic())):
                    frame = pattern.frame(n, time.time())
                    frame.pts = n
                    if encoder is None:
                        chunks = [bytes(frame.reformat(format="yuyv422").planes[0])]
                    else:
                        chunks = [bytes(p) for p in encoder.encode(frame)]
                        if n == 0 and self.fourcc == "H264" and encoder.extradata:
                            chunks.insert(0, bytes(encoder.extradata))  # SPS/PPS, once
                    for chunk in chunks:
                        fifo.write(chunk)
                    self.frames_written += 1
                    n += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            # Unblock an open() still waiting for a reader.
            with contextlib.suppress(OSError):
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.path.unlink()
            self._dir.rmdir()

    def __enter__(self) -> FakeUvcCamera:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
