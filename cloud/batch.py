"""Coalescing many small awaits into one round trip.

``Batcher(fetch)`` gathers the keys asked for by every caller within one turn of the event
loop and makes a single ``fetch(keys)`` call for all of them: a reconnect storm of thousands of
devices becomes a few dozen ``SELECT ... WHERE id IN (...)`` and ``SUBSCRIBE`` commands instead
of one per device.  A failed fetch fails every caller of that batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batcher(Generic[K, V]):
    def __init__(
        self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], max_batch: int = 500
    ) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._scheduled = False
        #: Round trips made and keys asked, for the curious (benchmarks).
        self.fetches = 0
        self.keys = 0

    async def get(self, key: K) -> V | None:
        """The value for ``key`` (``None`` when ``fetch`` did not return it)."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, {}
        keys = list(waiting)
        for start in range(0, len(keys), self._max_batch):
            chunk = keys[start : start + self._max_batch]
            asyncio.get_running_loop().create_task(self._run(chunk, {k: waiting[k] for k in chunk}))

    async def _run(self, keys: list[K], waiting: dict[K, list[asyncio.Future[V | None]]]) -> None:
        self.fetches += 1
        self.keys += len(keys)
        try:
            found = await self._fetch(keys)
        except BaseException as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(key))
