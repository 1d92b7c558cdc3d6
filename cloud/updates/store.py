"""Releases, rollouts and device update rows (SQLAlchemy Core, SQLite and PostgreSQL alike)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.updates.schema import device_updates, releases, rollouts

FAILED_STATES = ("rolled_back", "failed")
#: States of a device that has not tried the rollout's version yet.
NOT_TRIED = ("waiting",)


@dataclass(frozen=True)
class Release:
    version: str
    arches: tuple[str, ...]
    notes: str
    created_at: float


@dataclass(frozen=True)
class Rollout:
    id: int
    version: str
    channel: str
    percentage: float
    state: str  # active | paused | finished | cancelled
    failure_threshold: float
    min_sample: int
    paused_reason: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class DeviceUpdate:
    device_id: str
    agent_version: str | None
    arch: str | None
    channel: str
    window: str | None
    rollout_id: int | None
    target_version: str | None
    state: str | None
    reason: str | None
    progress: float | None
    seq: int
    updated_at: float


@dataclass(frozen=True)
class RolloutCounts:
    offered: int
    tried: int
    failed: int
    committed: int
    reasons: dict[str, int]


class DuplicateRelease(Exception):
    pass


def _release(row: Row[Any]) -> Release:
    return Release(row.version, tuple(row.arches.split(",")), row.notes, row.created_at)


def _rollout(row: Row[Any]) -> Rollout:
    return Rollout(
        row.id,
        row.version,
        row.channel,
        row.percentage,
        row.state,
        row.failure_threshold,
        row.min_sample,
        row.paused_reason,
        row.created_at,
        row.updated_at,
    )


def _device(row: Row[Any]) -> DeviceUpdate:
    return DeviceUpdate(
        row.device_id,
        row.agent_version,
        row.arch,
        row.channel,
        row.window,
        row.rollout_id,
        row.target_version,
        row.state,
        row.reason,
        row.progress,
        row.seq,
        row.updated_at,
    )


class UpdateStore:
    def __init__(self, engine: Callable[[], AsyncEngine]) -> None:
        """``engine``: the cloud store's engine (opened and migrated by it)."""
        self._engine = engine

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine().begin() as conn:
            yield conn

    # --- releases ------------------------------------------------------------------------------

    async def add_release(self, version: str, arches: list[str], notes: str = "") -> Release:
        now = time.time()
        try:
            async with self._tx() as conn:
                await conn.execute(
                    insert(releases).values(
                        version=version, arches=",".join(arches), notes=notes, created_at=now
                    )
                )
        except IntegrityError:
            raise DuplicateRelease(version) from None
        return Release(version, tuple(arches), notes, now)

    async def release(self, version: str) -> Release | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(select(releases).where(releases.c.version == version))
            ).first()
        return None if row is None else _release(row)

    async def releases(self) -> list[Release]:
        async with self._tx() as conn:
            rows = (await conn.execute(select(releases).order_by(releases.c.created_at))).all()
        return [_release(r) for r in rows]

    # --- rollouts ------------------------------------------------------------------------------

    async def create_rollout(
        self,
        version: str,
        channel: str,
        percentage: float,
        failure_threshold: float,
        min_sample: int,
    ) -> Rollout:
        """A new active rollout; any other active or paused one on the channel is finished."""
        now = time.time()
        async with self._tx() as conn:
            await conn.execute(
                update(rollouts)
                .where(rollouts.c.channel == channel)
                .where(rollouts.c.state.in_(["active", "paused"]))
                .values(state="finished", updated_at=now)
            )
            result = await conn.execute(
                insert(rollouts).values(
                    version=version,
                    channel=channel,
                    percentage=percentage,
                    state="active",
                    failure_threshold=failure_threshold,
                    min_sample=min_sample,
                    created_at=now,
                    updated_at=now,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            rollout_id = int(key[0])
        rollout = await self.rollout(rollout_id)
        assert rollout is not None
        return rollout

    async def rollout(self, rollout_id: int) -> Rollout | None:
        async with self._tx() as conn:
            row = (await conn.execute(select(rollouts).where(rollouts.c.id == rollout_id))).first()
        return None if row is None else _rollout(row)

    async def rollouts(self) -> list[Rollout]:
        async with self._tx() as conn:
            rows = (await conn.execute(select(rollouts).order_by(rollouts.c.id.desc()))).all()
        return [_rollout(r) for r in rows]

    async def active_rollout(self, channel: str) -> Rollout | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(rollouts)
                    .where(and_(rollouts.c.channel == channel, rollouts.c.state == "active"))
                    .order_by(rollouts.c.id.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else _rollout(row)

    async def update_rollout(self, rollout_id: int, **values: Any) -> Rollout | None:
        async with self._tx() as conn:
            await conn.execute(
                update(rollouts)
                .where(rollouts.c.id == rollout_id)
                .values(**values, updated_at=time.time())
            )
        return await self.rollout(rollout_id)

    async def pause_if_active(self, rollout_id: int, reason: str) -> bool:
        """Pause once (whichever process sees the threshold first)."""
        async with self._tx() as conn:
            result = await conn.execute(
                update(rollouts)
                .where(and_(rollouts.c.id == rollout_id, rollouts.c.state == "active"))
                .values(state="paused", paused_reason=reason, updated_at=time.time())
            )
        return bool(result.rowcount)

    async def last_change(self) -> float:
        async with self._tx() as conn:
            value = (await conn.execute(select(func.max(rollouts.c.updated_at)))).scalar()
        return float(value or 0.0)

    async def counts(self, rollout_id: int) -> RolloutCounts:
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    select(device_updates.c.state, device_updates.c.reason).where(
                        device_updates.c.rollout_id == rollout_id
                    )
                )
            ).all()
        tried = [r for r in rows if r.state is not None and r.state not in NOT_TRIED]
        failed = [r for r in tried if r.state in FAILED_STATES]
        reasons: dict[str, int] = {}
        for r in failed:
            key = (r.reason or r.state)[:200]
            reasons[key] = reasons.get(key, 0) + 1
        return RolloutCounts(
            offered=len(rows),
            tried=len(tried),
            failed=len(failed),
            committed=sum(1 for r in tried if r.state == "committed"),
            reasons=reasons,
        )

    async def version_counts(self) -> dict[str, int]:
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    select(device_updates.c.agent_version, func.count()).group_by(
                        device_updates.c.agent_version
                    )
                )
            ).all()
        return {str(version or "unknown"): int(count) for version, count in rows}

    # --- devices -------------------------------------------------------------------------------

    async def device(self, device_id: str) -> DeviceUpdate | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(device_updates).where(device_updates.c.device_id == device_id)
                )
            ).first()
        return None if row is None else _device(row)

    async def devices(self, device_ids: list[str]) -> dict[str, DeviceUpdate]:
        if not device_ids:
            return {}
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    select(device_updates).where(device_updates.c.device_id.in_(device_ids))
                )
            ).all()
        return {r.device_id: _device(r) for r in rows}

    async def devices_on_channel(self, channel: str) -> list[DeviceUpdate]:
        async with self._tx() as conn:
            rows = (
                await conn.execute(
                    select(device_updates).where(device_updates.c.channel == channel)
                )
            ).all()
        return [_device(r) for r in rows]

    async def record_hello(
        self, device_id: str, version: str | None, arch: str | None
    ) -> DeviceUpdate:
        now = time.time()
        async with self._tx() as conn:
            changed = await conn.execute(
                update(device_updates)
                .where(device_updates.c.device_id == device_id)
                .values(agent_version=version, arch=arch, updated_at=now)
            )
            if not changed.rowcount:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(device_updates).values(
                                device_id=device_id,
                                agent_version=version,
                                arch=arch,
                                channel="stable",
                                seq=0,
                                updated_at=now,
                            )
                        )
                except IntegrityError:  # a second process inserted it meanwhile
                    await conn.execute(
                        update(device_updates)
                        .where(device_updates.c.device_id == device_id)
                        .values(agent_version=version, arch=arch, updated_at=now)
                    )
        device = await self.device(device_id)
        assert device is not None
        return device

    async def ensure_device(self, device_id: str) -> DeviceUpdate:
        """The device's row, created empty if there is none."""
        try:
            async with self._tx() as conn:
                await conn.execute(
                    insert(device_updates).values(
                        device_id=device_id, channel="stable", seq=0, updated_at=time.time()
                    )
                )
        except IntegrityError:
            pass
        device = await self.device(device_id)
        assert device is not None
        return device

    async def set_device(self, device_id: str, **values: Any) -> None:
        async with self._tx() as conn:
            await conn.execute(
                update(device_updates)
                .where(device_updates.c.device_id == device_id)
                .values(**values, updated_at=time.time())
            )

    async def record_offer(self, device_id: str, rollout_id: int, version: str) -> None:
        """Remember the offer (once per rollout: a status already reported is kept)."""
        async with self._tx() as conn:
            await conn.execute(
                update(device_updates)
                .where(
                    and_(
                        device_updates.c.device_id == device_id,
                        (device_updates.c.rollout_id.is_(None))
                        | (device_updates.c.rollout_id != rollout_id),
                    )
                )
                .values(
                    rollout_id=rollout_id,
                    target_version=version,
                    state=None,
                    reason=None,
                    progress=None,
                    updated_at=time.time(),
                )
            )
