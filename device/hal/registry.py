"""The camera backends by name, and how one is picked.

``BACKENDS`` is the whole registry: a name, a way to list what it would find, a factory.  The
automatic choice is the first of ``AUTO_ORDER`` that finds a camera; with none found it falls
back to ``synthetic`` (a test pattern), and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from device.hal.camera import Camera, CameraConfig, CameraError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    name: str
    #: What a short description of each camera this backend would use (empty: none).
    #: Raises :class:`CameraError` when the backend cannot work here at all (library missing).
    find: Callable[[], list[str]]
    open: Callable[[CameraConfig], Camera]
    description: str


def _find_picamera2() -> list[str]:
    try:
        from device.hal import picam

        found = picam.cameras()
    except ImportError as exc:
        raise CameraError("picamera2 is not installed (it comes with Raspberry Pi OS)") from exc
    except Exception as exc:  # libcamera can fail in many ways off a Pi
        raise CameraError(f"libcamera: {exc}") from exc
    model = picam.pi_model()
    encoder = "hardware H.264" if picam.has_hardware_h264(model) else "software H.264 (libx264)"
    return [f"#{c.get('Num', i)} {c.get('Model', '?')}, {encoder}" for i, c in enumerate(found)]


def _open_picamera2(config: CameraConfig) -> Camera:
    from device.hal import picam

    return picam.open_picamera2(config)


def _find_v4l2() -> list[str]:
    from device.hal import v4l2

    encoder = v4l2.pick_encoder()
    found = []
    for d in v4l2.find_devices():
        fmt = d.best_format
        how = "H.264 from the camera" if fmt == "H264" else f"{fmt} -> {encoder}"
        found.append(f"{d.path} {d.card} [{', '.join(d.formats)}]: {how}")
    return found


def _open_v4l2(config: CameraConfig) -> Camera:
    from device.hal import v4l2

    return v4l2.open_v4l2(config)


def _find_synthetic() -> list[str]:
    return ["test pattern with timecode, libx264"]


def _open_synthetic(config: CameraConfig) -> Camera:
    from device.hal import synthetic

    return synthetic.open_synthetic(config)


BACKENDS: Final[dict[str, Backend]] = {
    "picamera2": Backend("picamera2", _find_picamera2, _open_picamera2, "Raspberry Pi CSI cameras"),
    "v4l2": Backend("v4l2", _find_v4l2, _open_v4l2, "USB/UVC and other V4L2 cameras"),
    "synthetic": Backend("synthetic", _find_synthetic, _open_synthetic, "moving test pattern"),
}

#: Tried in this order by :func:`open_camera` with no name.
AUTO_ORDER: Final = ("picamera2", "v4l2")


def _found(backend: Backend) -> tuple[list[str], str | None]:
    try:
        return backend.find(), None
    except CameraError as exc:
        return [], str(exc)
    except Exception as exc:
        return [], f"{type(exc).__name__}: {exc}"


def pick_backend() -> str:
    """The backend :func:`open_camera` would use with no name."""
    for name in AUTO_ORDER:
        found, _ = _found(BACKENDS[name])
        if found:
            return name
    return "synthetic"


def open_camera(name: str | None, config: CameraConfig) -> Camera:
    """Open camera ``name`` (a key of :data:`BACKENDS`), or pick one when ``None``."""
    if name is None:
        name = pick_backend()
        if name == "synthetic":
            log.warning("no camera found: streaming the synthetic test pattern")
    backend = BACKENDS.get(name)
    if backend is None:
        raise CameraError(f"unknown camera backend {name!r}; known: {', '.join(BACKENDS)}")
    return backend.open(config)


def probe_report() -> str:
    """Human-readable: cameras and encoders found per backend, and the one that would be used."""
    from device.hal.encoder import available_encoders, m2m_encoder_present

    lines = ["Camera backends:"]
    for backend in BACKENDS.values():
        found, problem = _found(backend)
        lines.append(f"  {backend.name} ({backend.description}):")
        if problem:
            lines.append(f"    unavailable: {problem}")
        elif not found:
            lines.append("    no camera found")
        lines.extend(f"    {item}" for item in found)
    try:
        encoders = available_encoders()
    except ImportError:
        encoders = []
    hw = "present" if m2m_encoder_present() else "absent"
    lines.append(
        f"Software H.264 encoders (PyAV): {', '.join(encoders) or 'none'}; "
        f"V4L2 memory-to-memory H.264 encoder device: {hw}"
    )
    lines.append(f"Would use: {pick_backend()}")
    return "\n".join(lines)
