"""Fake ``picamera2.outputs``: the ``Output`` base class, as in picamera2."""

from __future__ import annotations

from typing import Any


class Output:
    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.ptsoutput = pts
        self.needs_pacing = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(
        self,
        frame: bytes | None,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        """Override to receive each encoded frame."""

    def outputtimestamp(self, timestamp: int | None = None) -> None:
        pass

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        pass
