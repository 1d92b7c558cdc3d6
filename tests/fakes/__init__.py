"""Fakes of hardware this machine lacks, written against the real libraries' APIs.

* ``tests/fakes/picamera2``: an importable stand-in for the ``picamera2`` package (put
  ``tests/fakes`` on ``sys.path``); its "VideoCore" encoder is libx264 through PyAV.
* :mod:`tests.fakes.v4l2`: a UVC camera standing behind a FIFO that PyAV reads.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKES = Path(__file__).parent


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``import picamera2`` finds the fake for the duration of a test (import this fixture)."""
    monkeypatch.syspath_prepend(str(FAKES))
    for name in [m for m in sys.modules if m == "picamera2" or m.startswith("picamera2.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m == "picamera2" or m.startswith("picamera2.")]:
        del sys.modules[name]
