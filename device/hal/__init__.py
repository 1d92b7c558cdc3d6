"""The camera HAL: every camera gives encoded H.264 access units through one interface.

* :class:`~device.hal.camera.Camera` is the interface, :data:`BACKENDS` the registry
  (``picamera2``, ``v4l2``, ``synthetic``), :func:`open_camera` the way in.
* :func:`probe_report` is what ``mumu-agent probe`` prints.

Vendor libraries (picamera2, PyAV) are imported inside the backends, when a camera is opened.
"""

from device.hal.camera import (
    CLOCK_RATE,
    TIME_BASE,
    AccessUnit,
    AccessUnitSink,
    Camera,
    CameraConfig,
    CameraError,
    CameraMode,
    Capabilities,
)
from device.hal.registry import BACKENDS, Backend, open_camera, pick_backend, probe_report

__all__ = [
    "BACKENDS",
    "CLOCK_RATE",
    "TIME_BASE",
    "AccessUnit",
    "AccessUnitSink",
    "Backend",
    "Camera",
    "CameraConfig",
    "CameraError",
    "CameraMode",
    "Capabilities",
    "open_camera",
    "pick_backend",
    "probe_report",
]
