"""Bounds on the update repository's transfers, which anybody may ask for.

``/updates/`` answers without signing in (bundles are signed, not secret, and a camera fetches
them with its own HTTP client), so a stranger could open download after download of a bundle of
tens of megabytes and keep the process's sockets, file handles and uplink busy.  Each transfer
holds a slot for as long as its body is being sent:

- at most ``per_address`` at a time from one client address (429 ``too_many_downloads``): a home
  of cameras behind one address updates a few at a time, the rest retry (the updater resumes
  where it stopped, at its next run);
- at most ``total`` at a time in this process (503 ``busy``), whoever asks.

Both answers carry ``Retry-After``.  Slots are per process: with several cloud processes behind
nginx each has its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator

from cloud.errors import ApiError
from cloud.metrics import Metrics

#: Seconds a refused client is asked to wait: about one bundle's transfer on a slow link.
RETRY_AFTER_S = 30


class DownloadSlots:
    def __init__(self, per_address: int, total: int, metrics: Metrics) -> None:
        self.per_address = per_address
        self.total = total
        self._by_address: Counter[str] = Counter()
        self._in_flight = 0
        metrics.update_downloads.set_function(lambda: self._in_flight)

    def hold(self, address: str, body: AsyncGenerator[bytes, None]) -> Held:
        """``body``, holding a slot of ``address``'s until the client has read it all or hung
        up (pass :meth:`Held.aclose` as the response's background task); or the refusal."""
        if self._by_address[address] >= self.per_address:
            raise ApiError(
                429,
                "too_many_downloads",
                f"at most {self.per_address} update downloads at a time from one address",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if self._in_flight >= self.total:
            raise ApiError(
                503,
                "busy",
                "the update server is busy; try again later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._by_address[address] += 1
        self._in_flight += 1
        return Held(self, address, body)

    def give(self, address: str) -> None:
        self._in_flight -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]


class Held:
    """An async iterator that gives its slot back when the body ends or fails, when the
    response is over (:meth:`aclose`, its background task: it runs after a hang-up too), and, as
    a last resort, when it is dropped.  Not a generator: one never started runs no ``finally``,
    and a response can end before its body begins."""

    def __init__(
        self, slots: DownloadSlots, address: str, body: AsyncGenerator[bytes, None]
    ) -> None:
        self._slots = slots
        self._address = address
        self._body = body
        self._holding = True

    def __aiter__(self) -> Held:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except BaseException:  # the end, a failure, or the response's task cancelled
            self._give()
            raise

    async def aclose(self) -> None:
        self._give()
        await self._body.aclose()  # the open file

    def _give(self) -> None:
        if self._holding:
            self._holding = False
            self._slots.give(self._address)

    def __del__(self) -> None:
        self._give()
