"""Password hashing (argon2id) off the event loop: a bounded pool of low-priority threads.

Each argon2id hash or verification takes ~150 ms of CPU on 4 lanes.  On the event loop it would
stall every socket of the process for that long (4 failed logins a second took relay latency
from p50 0.4 ms to 95 ms).  argon2-cffi releases the GIL while the C code runs (measured: a
thread hashing leaves the loop's median tick unchanged, a thread running Python adds 5 ms), so
threads suffice; they run at the lowest scheduling priority so that the loop always wins a core.

The pool is bounded twice: ``workers`` threads, and at most ``queue`` jobs waiting for one.
A job that finds the queue full, or waits longer than ``timeout_s``, is refused with
:class:`PasswordBusy` (the API answers 503 with ``Retry-After``), never queued without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cloud import auth
from cloud.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class PasswordBusy(Exception):
    """Too much password work queued already; try again in ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"password work is busy; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def lowest_priority() -> None:
    """Runs in each worker thread: the scheduler gives the thread (and the lane threads argon2
    starts from it, which inherit its policy) a core only when nothing else wants one."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, tid, 19)


class PasswordWork:
    def __init__(self, workers: int, queue: int, timeout_s: float, metrics: Metrics) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(
            workers, thread_name_prefix="argon2", initializer=lowest_priority
        )
        self._inflight = 0
        self._mean_s = 0.15  # moving average of one job, for Retry-After
        metrics.password_inflight.set_function(lambda: self._inflight)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        return await self._run("hash", auth.hash_password, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Like :func:`cloud.auth.verify_password` (a missing account costs the same time)."""
        return await self._run("verify", auth.verify_password, password_hash, password)

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._inflight * self._mean_s / self.workers))

    async def _run(self, kind: str, fn: Callable[..., T], *args: object) -> T:
        jobs = self.metrics.password_jobs
        if self._inflight >= self.capacity:
            jobs.labels(kind, "rejected").inc()
            raise PasswordBusy(self._retry_after())
        loop = asyncio.get_running_loop()
        self._inflight += 1

        def finished(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed while shutting down
                loop.call_soon_threadsafe(self._finished)

        work = self._executor.submit(self._timed, fn, *args)
        work.add_done_callback(finished)
        try:
            # Waiting is bounded; a job that has not started by then is dropped from the queue.
            result = await asyncio.wait_for(asyncio.wrap_future(work), self.timeout_s)
        except TimeoutError:
            jobs.labels(kind, "timeout").inc()
            raise PasswordBusy(self._retry_after()) from None
        jobs.labels(kind, "done").inc()
        return result

    def _finished(self) -> None:
        self._inflight -= 1

    def _timed(self, fn: Callable[..., T], *args: object) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - started
            self._mean_s = 0.8 * self._mean_s + 0.2 * took
            self.metrics.password_seconds.observe(took)
