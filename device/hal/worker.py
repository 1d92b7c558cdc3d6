"""The thread a software-driven camera backend captures and encodes in (synthetic, v4l2).

:class:`CameraThread` holds what those backends share: starting once, the stop flag, joining
on close (idempotent, also safe from the thread itself) and recording a failure as
:attr:`error` unless it came from being stopped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from device.hal.camera import CameraError

log = logging.getLogger(__name__)


class CameraThread:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def error(self) -> BaseException | None:
        return self._error

    def _start_thread(self, run: Callable[..., None], *args: Any, name: str) -> None:
        if self._thread is not None:
            raise CameraError("camera already started")
        self._thread = threading.Thread(
            target=self._guarded, args=(run, name, *args), name=name, daemon=True
        )
        self._thread.start()

    def _guarded(self, run: Callable[..., None], name: str, *args: Any) -> None:
        try:
            run(*args)
        except BaseException as exc:
            if not self._stop.is_set():
                self._error = exc
                log.exception("%s failed", name)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
