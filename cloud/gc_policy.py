"""Keeping the garbage collector's pauses out of signaling latency.

A cloud process holding thousands of WebSockets has millions of long-lived objects; CPython's
full (generation 2) collection walks all of them, and at 10,000 devices that was measured at
hundreds of milliseconds to seconds per pause (bench/cloud_signaling.py).  The objects of a
held connection live as long as the connection, so scanning them again and again finds nothing.

The policy: every ``freeze_every_s`` move the survivors into CPython's permanent generation
(``gc.freeze()``) so later collections skip them (most garbage is freed by reference counting
the moment it dies; only cycles wait for the collector), and
every ``full_every_s`` unfreeze and collect everything once, so that garbage cycles that were
frozen (closed connections) are reclaimed: one long pause per ``full_every_s`` instead of many.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)


async def steward(freeze_every_s: float = 5.0, full_every_s: float = 900.0) -> None:
    last_full = time.monotonic()
    gc.freeze()
    while True:
        await asyncio.sleep(freeze_every_s)
        if time.monotonic() - last_full >= full_every_s:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            last_full = time.monotonic()
            log.info(
                "full collection: %d objects freed in %.0f ms",
                found,
                (time.perf_counter() - started) * 1000,
            )
        gc.freeze()
