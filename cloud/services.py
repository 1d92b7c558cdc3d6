"""Everything a request handler needs, built once per process from the settings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from cloud import gc_policy
from cloud.account_links import AccountLinks
from cloud.auth import PairingHasher, RefreshTokens, TokenIssuer
from cloud.config import Settings
from cloud.identity import token_authenticator
from cloud.live import LiveState, MemoryLiveState
from cloud.mail.outbox import Outbox, OutboxLimits
from cloud.mail.transport import LogTransport, SmtpSettings, SmtpTransport, Transport
from cloud.metrics import Metrics
from cloud.passwords import PasswordWork
from cloud.ratelimit import RateLimits
from cloud.sharing_store import SharingStore
from cloud.signaling import SignalingHub
from cloud.store import SqlStore, Store
from cloud.updates.downloads import DownloadSlots
from cloud.updates.operators import OperatorStore
from cloud.updates.service import UpdateService
from cloud.updates.store import UpdateStore


@dataclass
class Services:
    settings: Settings
    store: Store
    live: LiveState
    limits: RateLimits
    tokens: TokenIssuer
    refresh: RefreshTokens
    passwords: PasswordWork
    pairing: PairingHasher
    metrics: Metrics
    hub: SignalingHub
    updates: UpdateService
    sharing: SharingStore
    links: AccountLinks
    downloads: DownloadSlots
    mail: Outbox
    operators: OperatorStore
    _gc: asyncio.Task[None] = field(init=False, repr=False)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        metrics = Metrics()
        store = SqlStore(
            settings.database_url,
            observe=metrics.db_latency.observe,
            pool_size=settings.db_pool_size,
            pool_timeout_s=settings.db_pool_timeout_s,
        )
        live: LiveState
        if settings.redis_url:
            from cloud.live_redis import RedisLiveState

            redis_live = RedisLiveState(settings.redis_url)
            metrics.redis_resubscribes.set_function(lambda: redis_live.resubscribes)
            live = redis_live
        else:
            live = MemoryLiveState()
        tokens = TokenIssuer(settings.jwt_secret, settings.jwt_ttl_s)
        hub = SignalingHub(
            settings, store, live, tokens, metrics, authenticate=token_authenticator(tokens, store)
        )

        async def owner_of(device_id: str) -> str | None:
            device = await store.device(device_id)
            return None if device is None else device.owner_id

        updates = UpdateService(
            UpdateStore(lambda: store.engine), live, owner_of, poll_s=settings.rollout_poll_s
        )
        hub.updates = updates
        transport: Transport = (
            SmtpTransport(SmtpSettings.parse(settings.smtp_url, settings.smtp_ca_file))
            if settings.smtp_url
            else LogTransport(settings.mail_log)
        )
        mail = Outbox(
            transport,
            settings.mail_from,
            OutboxLimits(capacity=settings.mail_queue, attempts=settings.mail_attempts),
            metrics.mail,
            metrics.mail_queued,
        )
        return cls(
            mail=mail,
            settings=settings,
            store=store,
            live=live,
            limits=RateLimits(settings.redis_url),
            tokens=tokens,
            refresh=RefreshTokens(settings.jwt_secret),
            passwords=PasswordWork(
                settings.password_workers,
                settings.password_queue,
                settings.password_timeout_s,
                metrics,
            ),
            pairing=PairingHasher(settings.jwt_secret),
            metrics=metrics,
            hub=hub,
            updates=updates,
            sharing=SharingStore(store),
            links=AccountLinks(store),
            downloads=DownloadSlots(
                settings.update_downloads_per_address, settings.update_downloads, metrics
            ),
            operators=OperatorStore(lambda: store.engine),
        )

    async def start(self) -> None:
        if self.settings.smtp_url and not self.settings.public_url:
            # Links in mails never take a Host a request names unless it is loopback
            # (cloud/link_origin.py); elsewhere they use the cloud's own address, which may
            # not be the one people open.
            logging.getLogger("mumu.mail").warning(
                "MUMU_SMTP_URL is set but MUMU_PUBLIC_URL is not: links in mails use localhost "
                "or the cloud's own address; set MUMU_PUBLIC_URL to the web app's origin"
            )
        await self.store.open()
        await self.operators.report(self.settings.operators)  # MUMU_OPERATORS grants nothing
        await self.live.open()
        self.hub.start()
        self.updates.start()
        self.mail.start()
        self._gc = asyncio.create_task(
            gc_policy.steward(open_connections=lambda: len(self.hub)), name="gc-steward"
        )

    async def stop(self) -> None:
        self._gc.cancel()
        await self.mail.stop()
        await self.updates.stop()
        await self.hub.stop()
        await self.live.close()
        await self.store.close()
        self.passwords.close()
