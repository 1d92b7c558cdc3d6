"""A fake ``picamera2`` (the parts MuMu uses), for machines without libcamera.

It mirrors the real API: ``Picamera2(camera_num)``, ``Picamera2.global_camera_info()``,
``camera_properties``, ``create_video_configuration(main=..., controls=...)``, ``configure``,
``start_recording(encoder, output)``, ``stop_recording``, ``close``.  The "sensor" is the
synthetic test pattern, captured in a thread at the configured ``FrameRate``; the encoder gets
each picture with a sensor timestamp in microseconds since the first one, as picamera2's do.

:meth:`Picamera2.stall` is the fault the real library gives no word of: the sensor stops
delivering (libcamera's "Camera frontend has timed out!", a loose ribbon cable).  picamera2 has
no error callback for it and ``outputframe`` is simply never called again; ``stop_recording`` and
``close`` still work.  ``STALL_AFTER`` makes every new instance stall after that many pictures
(``0``: a camera that opens but never delivers).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from device.hal.synthetic import PatternGenerator

#: What the fake "finds" (tests may replace it to simulate a Pi without a camera).
CAMERAS: list[dict[str, Any]] = [
    {
        "Model": "imx708",
        "Location": 2,
        "Rotation": 180,
        "Id": "/base/soc/i2c0mux/imx708@1a",
        "Num": 0,
    }
]

#: Every instance made, so tests can look at what the backend did with them.
INSTANCES: list[Picamera2] = []

#: When not ``None``: each new camera stalls after this many pictures (see ``Picamera2.stall``).
STALL_AFTER: int | None = None


class Picamera2:
    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= len(CAMERAS):
            raise IndexError(f"camera {camera_num} not found")
        self.camera_properties = {
            "Model": CAMERAS[camera_num]["Model"],
            "PixelArraySize": (4608, 2592),
        }
        self.camera_config: dict[str, Any] | None = None
        self.encoder: Any = None
        self.closed = False
        self.started = False
        self._stop = threading.Event()
        self._stalled = threading.Event()
        self._stall_after = STALL_AFTER
        self._thread: threading.Thread | None = None
        #: Pictures the "sensor" delivered to the encoder.
        self.pictures = 0
        INSTANCES.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [dict(c) for c in CAMERAS]

    def create_video_configuration(
        self, main: dict[str, Any] | None = None, controls: dict[str, Any] | None = None, **_: Any
    ) -> dict[str, Any]:
        main = {"size": (1280, 720), "format": "XBGR8888", **(main or {})}
        return {
            "use_case": "video",
            "main": main,
            "controls": {"FrameRate": 30.0, **(controls or {})},
        }

    def configure(self, config: dict[str, Any]) -> None:
        self.camera_config = config

    def start_recording(self, encoder: Any, output: Any, quality: Any = None) -> None:
        if self.camera_config is None:
            raise RuntimeError("Camera must be configured before recording")
        main = self.camera_config["main"]
        encoder.size = tuple(main["size"])
        encoder.format = main["format"]
        encoder.output = output
        self.encoder = encoder
        encoder.start(quality)
        self.started = True
        fps = float(self.camera_config["controls"]["FrameRate"])
        self._thread = threading.Thread(target=self._capture, args=(fps,), daemon=True)
        self._thread.start()

    def _capture(self, fps: float) -> None:
        width, height = self.encoder.size
        pattern = PatternGenerator(width, height)
        start = time.monotonic()
        n = 0
        while not self._stop.wait(max(0.0, start + n / fps - time.monotonic())):
            if self._stall_after is not None and self.pictures >= self._stall_after:
                self._stalled.set()
            if self._stalled.is_set():
                n += 1  # the sensor is silent; the thread still answers stop_recording
                continue
            sensor_ns = time.monotonic_ns()
            self.encoder._encode_picture(pattern.frame(n, time.time()), sensor_ns)
            self.pictures += 1
            n += 1

    def stall(self) -> None:
        """The sensor stops delivering pictures, without a word (see the module doc)."""
        self._stalled.set()

    def stop_recording(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.encoder is not None and self.encoder.running:
            self.encoder.stop()
        self.started = False

    def close(self) -> None:
        self.closed = True
