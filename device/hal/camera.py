"""What every camera backend is: the :class:`Camera` protocol and the values it deals in.

A camera delivers **encoded H.264 access units** (Annex B, constrained baseline, SPS and PPS in
front of every keyframe), one per captured picture, to a *sink* it is given when started.  The
sink is called from the camera's own thread (each camera runs one), never from the asyncio
loop: a sink that wants to reach the loop uses ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final, Protocol

#: Clock of :attr:`AccessUnit.pts`: the RTP video clock, so no conversion is needed downstream.
CLOCK_RATE: Final = 90_000
TIME_BASE: Final = Fraction(1, CLOCK_RATE)


class CameraError(RuntimeError):
    """A camera could not be opened or stopped working."""


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """What the agent asks a camera for.  Backends do their best and report what they do."""

    width: int = 1280
    height: int = 720
    fps: int = 30
    #: Target bit rate of the H.264 stream, bits per second.
    bitrate: int = 2_000_000
    #: Longest time between two keyframes, in seconds (keyframes also come on request).
    keyframe_interval_s: float = 2.0
    #: Backend-specific device: a ``/dev/videoN`` path for ``v4l2``, a camera index for
    #: ``picamera2``; ``None`` picks the first one found.
    device: str | None = None
    #: Software encoder threads (0 = let the encoder decide).
    encoder_threads: int = 0
    #: Mirror the picture left-right, and upside down (both: rotated by 180 degrees).
    hflip: bool = False
    vflip: bool = False

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.fps * self.keyframe_interval_s))


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One encoded picture."""

    #: Annex B bytes (``00 00 00 01`` start codes); a keyframe starts with SPS and PPS.
    data: bytes
    #: Presentation time in :data:`TIME_BASE` units (90 kHz), increasing.
    pts: int
    #: True for an IDR picture (decodable on its own).
    keyframe: bool
    #: Wall-clock time of capture (``time.time()`` seconds) as well as the camera knows it.
    capture_time: float


#: Receives access units; called from the camera's thread.
AccessUnitSink = Callable[[AccessUnit], None]


@dataclass(frozen=True, slots=True)
class CameraMode:
    """A picture size a camera offers, with its highest frame rate."""

    width: int
    height: int
    max_fps: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a camera is and does, for ``probe`` and for logs."""

    backend: str
    #: Human-readable camera name (sensor, USB product, ``test pattern``).
    camera: str
    #: Who makes the H.264: ``camera`` (passed through), ``h264_v4l2m2m``, ``libx264``,
    #: ``picamera2 H264Encoder``...
    encoder: str
    hardware_encoder: bool
    #: Resolution and frame rate actually delivered.
    width: int
    height: int
    fps: float
    #: Whether :meth:`Camera.request_keyframe` produces a keyframe promptly.
    keyframe_on_request: bool = True
    #: Other resolutions the camera offers, when it says.
    resolutions: tuple[tuple[int, int], ...] = field(default_factory=tuple)
    #: The sizes (and frame rates) the agent may ask this camera for; empty: only the current.
    modes: tuple[CameraMode, ...] = field(default_factory=tuple)
    #: Whether ``CameraConfig.hflip``/``vflip`` are honoured.
    flips: bool = False


class Camera(Protocol):
    """An opened camera.  ``open_camera`` (or a backend's factory) makes one; nothing runs yet.

    ``start`` begins capture and encoding in the camera's own thread, delivering every access
    unit to ``sink``; ``request_keyframe`` (any thread) makes the next one a keyframe;
    ``close`` stops, joins the thread and releases the device.  A camera is started at most
    once; ``close`` is idempotent and blocks for at most about a second (call it from a worker
    thread in async code).  If capture fails after start and the backend learns of it, the
    camera logs it, calls no more sinks, and :attr:`error` holds the exception.  Some cannot
    learn of it (picamera2 gives no word when the sensor stops): the media hub's failure
    detector treats a camera that delivers nothing for a couple of seconds as failed, whatever
    :attr:`error` says (``device/media/hub.py``).
    """

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def error(self) -> BaseException | None: ...

    def start(self, sink: AccessUnitSink) -> None: ...

    def request_keyframe(self) -> None: ...

    def close(self) -> None: ...
