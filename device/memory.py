"""Giving memory back to the system after a burst of viewers has gone.

A few dozen peer connections (aiortc's DTLS, SRTP and ICE state, the packets in flight) leave
the heap fragmented: CPython and glibc keep the freed pages for later, so the agent's RSS stays
near its peak for good (on a Pi Zero 2 W, 512 MB shared with the GPU, that matters).  When the
last viewer has left, :func:`give_back` collects reference cycles and asks glibc to return free
pages (``malloc_trim``); measured in ``tests/test_agent_memory.py`` and ``bench/agent_soak.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has none): nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def give_back() -> None:
    """Collect garbage and return free heap pages to the system (cheap when there are none;
    a few milliseconds after a crowd).  Call it when nothing is streaming."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
