"""Keeping the garbage collector's pauses out of signaling latency, without keeping garbage.

A cloud process holding thousands of WebSockets has millions of long-lived objects; CPython's
full (generation 2) collection walks all of them, and at 10,000 devices that was measured at
hundreds of milliseconds to seconds per pause (bench/cloud_signaling.py).  The objects of a
held connection live as long as the connection, so scanning them again and again finds nothing.

The policy: every ``freeze_every_s`` move the survivors into CPython's permanent generation
(``gc.freeze()``) so later collections skip them (most garbage is freed by reference counting
the moment it dies; only cycles wait for the collector).  Frozen objects are never collected,
so the cycles of connections that closed since they were frozen would stay for good: whenever
the number of open connections has fallen well below its high-water mark since the last full
collection (devices moved to another process, a reconnect storm passed), and in any case every
``full_every_s``, unfreeze and collect everything once — one pause when it pays, not many.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _zero() -> int:
    return 0


async def steward(
    freeze_every_s: float = 5.0,
    full_every_s: float = 900.0,
    open_connections: Callable[[], int] = _zero,
    drop_fraction: float = 0.1,
    drop_at_least: int = 200,
) -> None:
    last_full = time.monotonic()
    high_water = open_connections()
    gc.freeze()
    while True:
        await asyncio.sleep(freeze_every_s)
        now_open = open_connections()
        high_water = max(high_water, now_open)
        dropped = high_water - now_open
        many_left = dropped >= drop_at_least and dropped >= high_water * drop_fraction
        if many_left or time.monotonic() - last_full >= full_every_s:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            last_full = time.monotonic()
            high_water = now_open
            log.info(
                "full collection (%s): %d objects freed in %.0f ms",
                f"{dropped} connections closed" if many_left else "periodic",
                found,
                (time.perf_counter() - started) * 1000,
            )
        gc.freeze()
