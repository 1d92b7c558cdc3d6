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
        for rate, scope, key in checks:
            item = self._item(rate)
            if not await self._limiter.hit(item, scope, key):
                stats = await self._limiter.get_window_stats(item, scope, key)
                worst = max(worst, math.ceil(stats.reset_time - time.time()), 1)
        return Verdict(allowed=worst == 0, retry_after_s=worst)
