"""Rate limits (the ``limits`` library): moving windows in memory, or in Redis when shared."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    #: The scopes of the limits that refused (for ``mumu_rate_limited_total``).
    refused: tuple[str, ...] = ()


class RateLimits:
    def __init__(self, redis_url: str | None) -> None:
        storage: Storage
        if redis_url:
            uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
            storage = RedisStorage(uri, implementation="redispy", key_prefix="mumu-limits")
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._items: dict[str, RateLimitItem] = {}

    def _item(self, rate: str) -> RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = parse(rate)
        return item

    async def hit(self, *checks: tuple[str, str, str]) -> Verdict:
        """Count one attempt against each ``(rate, scope, key)``; refused if any is exhausted."""
        worst = 0
        refused: list[str] = []
        for rate, scope, key in checks:
            item = self._item(rate)
            if not await self._limiter.hit(item, scope, key):
                refused.append(scope)
                worst = max(worst, await self._retry_after(item, scope, key))
        return Verdict(allowed=not refused, retry_after_s=worst, refused=tuple(refused))

    async def available(self, rate: str, scope: str, key: str) -> Verdict:
        """Whether one more attempt would be allowed, without counting one."""
        item = self._item(rate)
        if await self._limiter.test(item, scope, key):
            return Verdict(allowed=True)
        return Verdict(False, await self._retry_after(item, scope, key), (scope,))

    async def _retry_after(self, item: RateLimitItem, scope: str, key: str) -> int:
        stats = await self._limiter.get_window_stats(item, scope, key)
        return max(math.ceil(stats.reset_time - time.time()), 1)
