"""The outbox: mails wait here (bounded) and one task hands them to the transport, retrying a
refused or unreachable server with backoff.  A request only puts a mail in (``send`` never
awaits anything), so a slow or dead mail server slows nobody; a full outbox refuses the mail
(counted) instead of growing.  Stopping hands over what waits for a few seconds, then says how
many mails were left unsent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from cloud.mail.message import Mail
from cloud.mail.transport import DeliveryError, Transport

log = logging.getLogger("mumu.mail")

#: A queued mail and the attempt it is at (1: the first).
_Item = tuple[Mail, int]


@dataclass(frozen=True)
class OutboxLimits:
    #: Mails that may wait, retries included; more are refused (``outcome="dropped"``).
    capacity: int = 1000
    #: Attempts per mail before it is given up (``outcome="failed"``).
    attempts: int = 6
    #: First retry after this many seconds, doubling, at most ``max_backoff_s``.
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0
    #: How long a graceful stop keeps handing queued mails over.
    drain_s: float = 5.0


class Outbox:
    def __init__(
        self,
        transport: Transport,
        sender: str,
        limits: OutboxLimits,
        sent: Counter,
        queued: Gauge,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.transport = transport
        self.sender = sender
        self.limits = limits
        self._sent = sent
        # Unbounded itself: ``send`` enforces the bound on everything waiting (queued or in a
        # retry's backoff), so a retry coming back always finds room.
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        #: Mails in a retry's backoff, by the task that will queue them again.
        self._delayed: dict[asyncio.Task[None], _Item] = {}
        self._sending: Mail | None = None
        self._stopping = False
        self._unsent = 0
        self._queued = 0  # mails in ``_queue`` (it also holds the stop's end mark)
        queued.set_function(lambda: self.waiting)

    @property
    def waiting(self) -> int:
        """Mails not handed over yet: queued, in a retry's backoff, or being sent."""
        return self._queued + len(self._delayed) + (self._sending is not None)

    def send(self, mail: Mail) -> bool:
        """Queue ``mail``; False (and counted) when the outbox is full or stopping.  Never
        waits: a request's path calls it."""
        if self._stopping or self.waiting >= self.limits.capacity:
            self._sent.labels(mail.kind, "dropped").inc()
            log.warning(
                "a %s mail to %s was not sent: the outbox is %s",
                mail.kind,
                mail.to,
                "stopping" if self._stopping else "full",
            )
            return False
        self._put((mail, 1))
        return True

    def _put(self, item: _Item) -> None:
        self._queued += 1
        self._queue.put_nowait(item)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mail-outbox")

    async def stop(self, drain_s: float | None = None) -> int:
        """Hand over what waits (retries in backoff get one last try now) for at most
        ``drain_s`` seconds (``limits.drain_s``); the number of mails left unsent (logged)."""
        drain = self.limits.drain_s if drain_s is None else drain_s
        self._stopping = True
        for task, item in list(self._delayed.items()):
            task.cancel()
            self._put(item)
        self._delayed.clear()
        if self._task is not None:
            self._queue.put_nowait(None)  # the worker ends once everything before it is sent
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        left = self._unsent + self._queued + (self._sending is not None)
        self._sending = None
        if left:
            log.warning("the cloud stopped with %d mail(s) left unsent", left)
        return left

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            mail, attempt = item
            self._queued -= 1
            self._sending = mail
            try:
                await self.transport.deliver(mail, self.sender)
            except DeliveryError as exc:
                self._failed(mail, attempt, exc)
            except Exception:  # a transport's bug must not stop every later mail
                log.exception("sending a %s mail failed", mail.kind)
                self._sent.labels(mail.kind, "failed").inc()
            else:
                self._sent.labels(mail.kind, "sent").inc()
            self._sending = None  # (still set when a stop cancelled the delivery: unsent)

    def _failed(self, mail: Mail, attempt: int, exc: DeliveryError) -> None:
        if exc.permanent or attempt >= self.limits.attempts:
            self._sent.labels(mail.kind, "failed").inc()
            log.warning("a %s mail to %s was given up: %s", mail.kind, mail.to, exc)
            return
        if self._stopping:  # no time left to wait for the server
            self._unsent += 1
            return
        self._sent.labels(mail.kind, "retried").inc()
        delay = min(self.limits.max_backoff_s, self.limits.backoff_s * 2 ** (attempt - 1))
        delay *= random.uniform(0.8, 1.2)
        log.info(
            "a %s mail to %s will be tried again in %.0f s: %s", mail.kind, mail.to, delay, exc
        )
        task = asyncio.create_task(self._later(delay))
        self._delayed[task] = (mail, attempt + 1)

    async def _later(self, delay: float) -> None:
        await self._sleep(delay)
        task = asyncio.current_task()
        assert task is not None
        item = self._delayed.pop(task, None)
        if item is not None:
            self._put(item)
