"""The outbox: mails wait here (bounded) and one task hands them to the transport, retrying a
refused or unreachable server with backoff.  A request only puts a mail in (``send`` never
awaits anything), so a slow or dead mail server slows nobody; a full outbox refuses the mail
(counted) instead of growing."""

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


@dataclass(frozen=True)
class OutboxLimits:
    #: Mails that may wait; more are refused (``outcome="dropped"``).
    capacity: int = 1000
    #: Attempts per mail before it is given up (``outcome="failed"``).
    attempts: int = 6
    #: First retry after this many seconds, doubling, at most ``max_backoff_s``.
    backoff_s: float = 2.0
    max_backoff_s: float = 300.0


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
        self._queue: asyncio.Queue[tuple[Mail, int]] = asyncio.Queue(limits.capacity)
        self._retrying = 0
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        queued.set_function(lambda: self._queue.qsize() + self._retrying)

    def send(self, mail: Mail) -> bool:
        """Queue ``mail``; False (and counted) when the outbox is full."""
        try:
            self._queue.put_nowait((mail, 1))
        except asyncio.QueueFull:
            self._sent.labels(mail.kind, "dropped").inc()
            log.warning("the outbox is full: a %s mail to %s was not sent", mail.kind, mail.to)
            return False
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mail-outbox")

    async def stop(self) -> None:
        for task in [self._task, *self._retries]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        while True:
            mail, attempt = await self._queue.get()
            try:
                await self.transport.deliver(mail, self.sender)
            except DeliveryError as exc:
                self._failed(mail, attempt, exc)
            except Exception:  # a transport's bug must not stop every later mail
                log.exception("sending a %s mail failed", mail.kind)
                self._sent.labels(mail.kind, "failed").inc()
            else:
                self._sent.labels(mail.kind, "sent").inc()

    def _failed(self, mail: Mail, attempt: int, exc: DeliveryError) -> None:
        if exc.permanent or attempt >= self.limits.attempts:
            self._sent.labels(mail.kind, "failed").inc()
            log.warning("a %s mail to %s was given up: %s", mail.kind, mail.to, exc)
            return
        self._sent.labels(mail.kind, "retried").inc()
        delay = min(self.limits.max_backoff_s, self.limits.backoff_s * 2 ** (attempt - 1))
        delay *= random.uniform(0.8, 1.2)
        log.info(
            "a %s mail to %s will be tried again in %.0f s: %s", mail.kind, mail.to, delay, exc
        )
        task = asyncio.create_task(self._later(mail, attempt + 1, delay))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _later(self, mail: Mail, attempt: int, delay: float) -> None:
        self._retrying += 1
        try:
            await self._sleep(delay)
        finally:
            self._retrying -= 1
        try:
            self._queue.put_nowait((mail, attempt))
        except asyncio.QueueFull:
            self._sent.labels(mail.kind, "dropped").inc()
