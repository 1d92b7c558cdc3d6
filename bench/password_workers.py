"""Benchmark: does argon2 in a worker thread leave the event loop alone?

An asyncio loop ticks every 1 ms (``asyncio.sleep(0.001)``) and records how late each tick is,
while argon2id verifications (the cloud's parameters) run back to back beside it:

- ``idle``: nothing beside the loop (the floor);
- ``python thread``: a thread running pure Python for as long (it holds the GIL: the reference
  for what *not* releasing the GIL looks like);
- ``argon2 thread``: argon2-cffi in a worker thread at normal priority;
- ``argon2 thread, SCHED_IDLE``: the same at the lowest priority, as ``cloud.passwords`` runs it;
- ``argon2 process``: in a worker process (no GIL at all).

A GIL held by the worker shows as a higher *median* lateness (the loop waits for the switch
interval, 5 ms); competing for CPU shows in the tail (p99).  Prints a table (``--json``).

    .venv/bin/python bench/password_workers.py [--jobs 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud import auth
from cloud.passwords import lowest_priority

HASH = auth.hash_password("the right password")


def verify() -> None:
    auth.verify_password(HASH, "a wrong password")


def python_for(seconds: float) -> Callable[[], None]:
    def spin() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return spin


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def lateness_while(pool: Executor | None, job: Callable[[], None], jobs: int) -> list[float]:
    """Tick lateness (ms) while ``jobs`` jobs run one after another in ``pool``."""
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append((time.perf_counter() - started - 0.001) * 1000)

    ticking = asyncio.create_task(ticker())
    loop = asyncio.get_running_loop()
    if pool is None:
        await asyncio.sleep(jobs * 0.15)
    else:
        for _ in range(jobs):
            await loop.run_in_executor(pool, job)
    done.set()
    await ticking
    return late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12, help="verifications per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    for _ in range(3):
        verify()
    one_s = (time.perf_counter() - started) / 3
    process_pool = ProcessPoolExecutor(1)
    process_pool.submit(verify).result()  # started and warm
    scenarios: list[tuple[str, Executor | None, Callable[[], None]]] = [
        ("idle", None, verify),
        ("python thread (holds the GIL)", ThreadPoolExecutor(1), python_for(one_s)),
        ("argon2 thread", ThreadPoolExecutor(1), verify),
        ("argon2 thread, SCHED_IDLE", ThreadPoolExecutor(1, initializer=lowest_priority), verify),
        ("argon2 process", process_pool, verify),
    ]
    rows: list[dict[str, Any]] = []
    for name, pool, job in scenarios:
        runs = [asyncio.run(lateness_while(pool, job, args.jobs)) for _ in range(args.repeats)]
        rows.append(
            {
                "scenario": name,
                "tick_late_p50_ms": round(statistics.median(percentile(r, 50) for r in runs), 2),
                "tick_late_p99_ms": round(statistics.median(percentile(r, 99) for r in runs), 2),
                "tick_late_max_ms": round(max(max(r) for r in runs), 2),
                "ticks": sum(len(r) for r in runs),
            }
        )
    process_pool.shutdown()
    meta = {"cpus": os.cpu_count(), "verify_ms": round(one_s * 1000, 1), "jobs": args.jobs}
    if args.json:
        print(json.dumps({"meta": meta, "results": rows}, indent=2))
        return
    print(
        f"event-loop tick lateness while argon2id verifies ({meta['verify_ms']} ms each, "
        f"{args.jobs} in a row, median of {args.repeats} runs), {meta['cpus']} cpus"
    )
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))


if __name__ == "__main__":
    main()
