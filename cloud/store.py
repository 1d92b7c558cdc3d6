"""Persistent state: accounts, devices, ownership, pairing codes and watch-session history.

``Store`` is the interface; ``SqlStore`` implements it with SQLAlchemy Core over aiosqlite
(the embedded default) or asyncpg (production).  Every query is timed into the
``mumu_db_query_seconds`` histogram.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Protocol

from sqlalchemy import (
    and_,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from cloud import migrate
from cloud.schema import (
    account_links,
    device_viewers,
    devices,
    operators,
    pairing_codes,
    share_invites,
    sign_ins,
    users,
    watch_sessions,
)


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password_hash: str
    created_at: float
    last_login_at: float | None
    #: When the person proved the address (opened a link mailed to it); None: not yet.
    email_verified_at: float | None = None


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    model: str
    token_hash: str
    owner_id: str | None
    paired_at: float | None
    created_at: float
    last_seen: float | None
    retired_at: float | None = None


@dataclass(frozen=True)
class SignIn:
    """One browser's sign-in: its refresh token (hashed) and whether it still holds."""

    id: str
    user_id: str
    refresh_hash: str
    previous_hash: str | None
    rotated_at: float | None
    created_at: float
    last_used_at: float
    expires_at: float
    revoked_at: float | None
    revoke_reason: str | None
    user_agent: str | None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and self.expires_at > now


@dataclass(frozen=True)
class PairingTarget:
    """The device a live pairing code or claim token belongs to (read without claiming)."""

    device: Device
    expires_at: float


@dataclass(frozen=True)
class RetireResult:
    retired: bool
    previous_owner: str | None = None
    #: False when it had been retired already (retiring is idempotent).
    newly: bool = False


@dataclass(frozen=True)
class DeletedUser:
    """What deleting an account changed: the cameras it owned (now unowned, their viewers
    dropped) and the cameras shared with it (it is no longer their viewer)."""

    owned: list[str]
    viewed: list[str]


@dataclass(frozen=True)
class WatchSession:
    id: str
    device_id: str
    viewer_id: str
    started_at: float
    ended_at: float | None
    end_reason: str | None
    #: "direct" or "relay" as its viewer reported it; None: never reported.
    media_path: str | None = None


Role = Literal["owner", "viewer"]


@dataclass(frozen=True)
class Access:
    """A device and what one account may do with it: own it, watch it as a viewer, or nothing."""

    device: Device
    role: Role | None


@dataclass(frozen=True)
class HistoryScope:
    """Which sessions of one device a history shows: started at or after ``since`` (None: all),
    of ``viewer_id`` only (None: everyone's)."""

    device_id: str
    since: float | None
    viewer_id: str | None


#: How long a used or expired pairing code is remembered: long enough to tell "expired" and
#: "already yours" from a wrong code.
SPENT_CODE_RETENTION_S = 24 * 3600.0
#: How long a camera's codes are remembered once expired when it asks for a new one (a person
#: who read the old code and came back later)...
REPLACED_CODE_RETENTION_S = 3600.0
#: ...and how many of them at most, the oldest forgotten first: an hour of codes at one per
#: PAIRING_TTL_S, and no more however often a camera asks.
REPLACED_CODES_KEPT = 12


def unowned_name(device_id: str) -> str:
    """A camera's name while nobody owns it: an owner's name for it never reaches the next."""
    return f"Camera {device_id[:6]}"


UNOWNED_NAME_SQL = literal("Camera ") + func.substr(devices.c.id, 1, 6)


class ClaimOutcome(Enum):
    PAIRED = "paired"
    ALREADY_YOURS = "already_yours"
    NO_SUCH_CODE = "no_such_code"
    EXPIRED = "expired"
    OWNED_BY_OTHER = "owned_by_other"


@dataclass(frozen=True)
class ClaimResult:
    outcome: ClaimOutcome
    device: Device | None = None


class DuplicateError(Exception):
    """A unique value (an e-mail address, a pairing code) exists already."""


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def create_user(
        self, user_id: str, email: str, password_hash: str, now: float
    ) -> User: ...
    async def user_by_email(self, email: str) -> User | None: ...
    async def user_by_id(self, user_id: str) -> User | None: ...
    async def record_login(self, user_id: str, now: float) -> None: ...
    async def change_password(
        self, user_id: str, password_hash: str, now: float, revoke_reason: str
    ) -> bool: ...
    async def delete_user(self, user_id: str) -> DeletedUser | None: ...

    async def create_sign_in(
        self,
        sign_in: SignIn,
        max_active: int,
    ) -> list[str]: ...
    async def sign_in(self, sign_in_id: str) -> SignIn | None: ...
    async def rotate_refresh(
        self, sign_in_id: str, old_hash: str, new_hash: str, now: float, expires_at: float
    ) -> bool: ...
    async def touch_sign_in(self, sign_in_id: str, now: float) -> None: ...
    async def revoke_sign_in(self, sign_in_id: str, reason: str, now: float) -> bool: ...
    async def revoke_sign_ins(self, user_id: str, reason: str, now: float) -> list[str]: ...
    async def active_sign_ins(self, user_id: str, now: float) -> list[SignIn]: ...

    async def create_device(
        self, device_id: str, name: str, model: str, token_hash: str, now: float
    ) -> Device: ...
    async def device(self, device_id: str) -> Device | None: ...
    async def devices_by_id(self, device_ids: list[str]) -> dict[str, Device]: ...
    async def devices_of(self, owner_id: str) -> list[Device]: ...
    async def rename_device(self, device_id: str, owner_id: str, name: str) -> Device | None: ...
    async def unpair(self, device_id: str, owner_id: str) -> bool: ...
    async def touch_device(self, device_id: str, now: float) -> None: ...
    async def touch_devices(self, heard: list[tuple[str, float]]) -> None:
        """Record when each device was last heard, in one statement."""
        ...

    async def owners_of(self, device_ids: list[str]) -> dict[str, str]:
        """The owner of each of the owned ones of ``device_ids``."""
        ...

    async def access(self, device_id: str, user_id: str) -> Access | None:
        """The device and ``user_id``'s role on it, in one read (None: no such device)."""
        ...

    async def viewers_of(self, device_ids: list[str]) -> dict[str, list[str]]:
        """The viewers (user ids) of each of ``device_ids`` that is shared."""
        ...

    async def retire_device(self, device_id: str, token_hash: str, now: float) -> RetireResult: ...

    async def replace_pairing_code(
        self, device_id: str, code_hash: str, claim_hash: str, expires_at: float, now: float
    ) -> None: ...
    async def claim(
        self, *, code_hash: str | None, claim_hash: str | None, user_id: str, now: float
    ) -> ClaimResult: ...
    async def pairing_target(
        self, *, code_hash: str | None, claim_hash: str | None
    ) -> PairingTarget | None: ...

    async def start_session(
        self, session_id: str, device_id: str, viewer_id: str, now: float
    ) -> None: ...
    async def end_session(self, session_id: str, reason: str, now: float) -> bool: ...
    async def session(self, session_id: str) -> WatchSession | None: ...
    async def sessions_of_device(
        self, device_id: str, limit: int = 100, since: float | None = None
    ) -> list[WatchSession]:
        """Newest first; ``since``: only sessions started at or after it."""
        ...

    async def record_media_path(self, session_id: str, path: str) -> None: ...

    async def session_history(
        self, scopes: list[HistoryScope], limit: int
    ) -> list[WatchSession]: ...

    async def open_sessions(self, started_before: float) -> list[WatchSession]: ...


QueryObserver = Callable[[float], None]


class SqlStore:
    """``Store`` on SQLite (aiosqlite) or PostgreSQL (asyncpg) through SQLAlchemy Core."""

    def __init__(
        self,
        url: str,
        observe: QueryObserver | None = None,
        *,
        pool_size: int = 10,
        pool_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self._observe = observe
        self._pool = (pool_size, pool_timeout_s)
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("SqlStore.open() was not called")
        return self._engine

    async def open(self) -> None:
        url, kwargs = engine_args(self.url, *self._pool)
        engine = create_async_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        self._engine = engine
        await migrate.upgrade(engine)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def transaction(self) -> Any:
        """One timed transaction (``async with store.transaction() as conn``), for the stores of
        other parts (``cloud.sharing_store``) that share this engine."""
        return self._tx()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        started = time.perf_counter()
        try:
            async with self.engine.begin() as conn:
                yield conn
        finally:
            if self._observe is not None:
                self._observe(time.perf_counter() - started)

    async def ping(self) -> None:
        async with self._tx() as conn:
            await conn.execute(text("SELECT 1"))

    # --- users ---------------------------------------------------------------------------------

    async def create_user(self, user_id: str, email: str, password_hash: str, now: float) -> User:
        try:
            async with self._tx() as conn:
                await conn.execute(
                    insert(users).values(
                        id=user_id, email=email, password_hash=password_hash, created_at=now
                    )
                )
        except IntegrityError:
            raise DuplicateError(email) from None
        return User(user_id, email, password_hash, now, None)

    async def user_by_email(self, email: str) -> User | None:
        if not storable(email):
            return None
        async with self._tx() as conn:
            row = (await conn.execute(select(users).where(users.c.email == email))).first()
        return _user(row)

    async def user_by_id(self, user_id: str) -> User | None:
        if not storable(user_id):
            return None
        async with self._tx() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row)

    async def record_login(self, user_id: str, now: float) -> None:
        async with self._tx() as conn:
            await conn.execute(update(users).where(users.c.id == user_id).values(last_login_at=now))

    async def change_password(
        self, user_id: str, password_hash: str, now: float, revoke_reason: str
    ) -> bool:
        """Set a new password hash, revoke every sign-in of the account and expire its open
        reset links (a link mailed before the change must not undo it), in one transaction."""
        async with self._tx() as conn:
            done = await conn.execute(
                update(users).where(users.c.id == user_id).values(password_hash=password_hash)
            )
            if done.rowcount != 1:
                return False
            await conn.execute(_revoke(sign_ins.c.user_id == user_id, revoke_reason, now))
            await conn.execute(
                update(account_links)
                .where(
                    account_links.c.user_id == user_id,
                    account_links.c.purpose == "reset",
                    account_links.c.used_at.is_(None),
                    account_links.c.expires_at > now,
                )
                .values(expires_at=now)
            )
        return True

    async def delete_user(self, user_id: str) -> DeletedUser | None:
        """Delete the account and everything of it; its cameras become unowned and their viewers
        and invitations go; it stops being a viewer of others' cameras.  What changed (live
        sessions of those cameras must end), or None if there was no such account."""
        async with self._tx() as conn:
            # The device rows first (locked on PostgreSQL), as every change of ownership does.
            owned = [
                row.id
                for row in await conn.execute(
                    select(devices.c.id).where(devices.c.owner_id == user_id)
                )
            ]
            await conn.execute(
                update(devices)
                .where(devices.c.owner_id == user_id)
                .values(owner_id=None, paired_at=None, name=UNOWNED_NAME_SQL)
            )
            await conn.execute(
                update(devices)
                .where(devices.c.former_owner_id == user_id)
                .values(former_owner_id=None, former_name=None)
            )
            await drop_shares(conn, owned)
            viewed = [
                row.device_id
                for row in await conn.execute(
                    select(device_viewers.c.device_id).where(device_viewers.c.user_id == user_id)
                )
            ]
            await conn.execute(delete(device_viewers).where(device_viewers.c.user_id == user_id))
            await conn.execute(delete(share_invites).where(share_invites.c.owner_id == user_id))
            await conn.execute(delete(watch_sessions).where(watch_sessions.c.viewer_id == user_id))
            await conn.execute(delete(sign_ins).where(sign_ins.c.user_id == user_id))
            await conn.execute(delete(operators).where(operators.c.user_id == user_id))
            await conn.execute(delete(account_links).where(account_links.c.user_id == user_id))
            done = await conn.execute(delete(users).where(users.c.id == user_id))
            if done.rowcount != 1:
                return None
        return DeletedUser(owned, viewed)

    # --- sign-ins ------------------------------------------------------------------------------

    async def create_sign_in(self, sign_in: SignIn, max_active: int) -> list[str]:
        """Record a new sign-in.  Beyond ``max_active`` active sign-ins of the account the least
        recently used are revoked (their ids are returned); long-dead rows are deleted."""
        now = sign_in.created_at
        async with self._tx() as conn:
            await conn.execute(
                delete(sign_ins).where(
                    sign_ins.c.user_id == sign_in.user_id,
                    or_(
                        sign_ins.c.expires_at < now - _KEEP_DEAD_SIGN_INS_S,
                        sign_ins.c.revoked_at < now - _KEEP_DEAD_SIGN_INS_S,
                    ),
                )
            )
            await conn.execute(
                insert(sign_ins).values(
                    id=sign_in.id,
                    user_id=sign_in.user_id,
                    refresh_hash=sign_in.refresh_hash,
                    previous_hash=None,
                    rotated_at=None,
                    created_at=now,
                    last_used_at=now,
                    expires_at=sign_in.expires_at,
                    user_agent=sign_in.user_agent,
                )
            )
            active = (
                await conn.execute(
                    select(sign_ins.c.id)
                    .where(
                        sign_ins.c.user_id == sign_in.user_id,
                        sign_ins.c.revoked_at.is_(None),
                        sign_ins.c.expires_at > now,
                    )
                    .order_by(sign_ins.c.last_used_at.desc(), sign_ins.c.created_at.desc())
                )
            ).all()
            excess = [row.id for row in active[max_active:] if row.id != sign_in.id]
            if excess:
                await conn.execute(_revoke(sign_ins.c.id.in_(excess), "too_many", now))
        return excess

    async def sign_in(self, sign_in_id: str) -> SignIn | None:
        if not storable(sign_in_id):
            return None
        async with self._tx() as conn:
            row = (await conn.execute(select(sign_ins).where(sign_ins.c.id == sign_in_id))).first()
        return _sign_in(row)

    async def rotate_refresh(
        self, sign_in_id: str, old_hash: str, new_hash: str, now: float, expires_at: float
    ) -> bool:
        """Replace the refresh token if ``old_hash`` is still the current one (compare and swap:
        of two concurrent rotations with the same token exactly one wins)."""
        async with self._tx() as conn:
            done = await conn.execute(
                update(sign_ins)
                .where(
                    sign_ins.c.id == sign_in_id,
                    sign_ins.c.refresh_hash == old_hash,
                    sign_ins.c.revoked_at.is_(None),
                    sign_ins.c.expires_at > now,
                )
                .values(
                    refresh_hash=new_hash,
                    previous_hash=old_hash,
                    rotated_at=now,
                    last_used_at=now,
                    expires_at=expires_at,
                )
            )
            return bool(done.rowcount == 1)

    async def touch_sign_in(self, sign_in_id: str, now: float) -> None:
        async with self._tx() as conn:
            await conn.execute(
                update(sign_ins).where(sign_ins.c.id == sign_in_id).values(last_used_at=now)
            )

    async def revoke_sign_in(self, sign_in_id: str, reason: str, now: float) -> bool:
        async with self._tx() as conn:
            done = await conn.execute(_revoke(sign_ins.c.id == sign_in_id, reason, now))
            return bool(done.rowcount == 1)

    async def revoke_sign_ins(self, user_id: str, reason: str, now: float) -> list[str]:
        """Revoke every active sign-in of the account; their ids."""
        async with self._tx() as conn:
            ids = [
                row.id
                for row in await conn.execute(
                    select(sign_ins.c.id).where(
                        sign_ins.c.user_id == user_id, sign_ins.c.revoked_at.is_(None)
                    )
                )
            ]
            await conn.execute(_revoke(sign_ins.c.user_id == user_id, reason, now))
        return ids

    async def active_sign_ins(self, user_id: str, now: float) -> list[SignIn]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(sign_ins)
                .where(
                    sign_ins.c.user_id == user_id,
                    sign_ins.c.revoked_at.is_(None),
                    sign_ins.c.expires_at > now,
                )
                .order_by(sign_ins.c.last_used_at.desc())
            )
            return [s for s in map(_sign_in, rows) if s is not None]

    # --- devices -------------------------------------------------------------------------------

    async def create_device(
        self, device_id: str, name: str, model: str, token_hash: str, now: float
    ) -> Device:
        async with self._tx() as conn:
            await conn.execute(
                insert(devices).values(
                    id=device_id, name=name, model=model, token_hash=token_hash, created_at=now
                )
            )
        return Device(device_id, name, model, token_hash, None, None, now, None)

    async def device(self, device_id: str) -> Device | None:
        if not storable(device_id):
            return None
        async with self._tx() as conn:
            row = (await conn.execute(select(devices).where(devices.c.id == device_id))).first()
        return _device(row)

    async def devices_by_id(self, device_ids: list[str]) -> dict[str, Device]:
        async with self._tx() as conn:
            rows = await conn.execute(select(devices).where(devices.c.id.in_(device_ids)))
            return {d.id: d for d in map(_device, rows) if d is not None}

    async def devices_of(self, owner_id: str) -> list[Device]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(devices).where(devices.c.owner_id == owner_id).order_by(devices.c.paired_at)
            )
            return [d for d in map(_device, rows) if d is not None]

    async def rename_device(self, device_id: str, owner_id: str, name: str) -> Device | None:
        if not storable(device_id, owner_id, name):
            return None
        async with self._tx() as conn:
            done = await conn.execute(
                update(devices)
                .where(devices.c.id == device_id, devices.c.owner_id == owner_id)
                .values(name=name)
            )
            if done.rowcount != 1:
                return None
            row = (await conn.execute(select(devices).where(devices.c.id == device_id))).first()
        return _device(row)

    async def unpair(self, device_id: str, owner_id: str) -> bool:
        if not storable(device_id, owner_id):
            return False
        async with self._tx() as conn:
            done = await conn.execute(
                update(devices)
                .where(devices.c.id == device_id, devices.c.owner_id == owner_id)
                .values(
                    owner_id=None,
                    paired_at=None,
                    name=unowned_name(device_id),
                    # kept for this owner alone: pairing it again gives its name back
                    former_owner_id=owner_id,
                    former_name=devices.c.name,
                )
            )
            if done.rowcount != 1:
                return False
            await drop_shares(conn, [device_id])
        return True

    async def touch_device(self, device_id: str, now: float) -> None:
        await self.touch_devices([(device_id, now)])

    async def touch_devices(self, heard: list[tuple[str, float]]) -> None:
        if not heard:
            return
        statement = (
            update(devices)
            .where(devices.c.id == bindparam("device_id"))
            .values(last_seen=bindparam("heard_at"))
        )
        async with self._tx() as conn:
            await conn.execute(statement, [{"device_id": d, "heard_at": at} for d, at in heard])

    async def owners_of(self, device_ids: list[str]) -> dict[str, str]:
        if not device_ids:
            return {}
        async with self._tx() as conn:
            rows = await conn.execute(
                select(devices.c.id, devices.c.owner_id).where(
                    devices.c.id.in_(device_ids), devices.c.owner_id.is_not(None)
                )
            )
            return {row.id: row.owner_id for row in rows}

    async def access(self, device_id: str, user_id: str) -> Access | None:
        if not storable(device_id, user_id):
            return None
        viewer = device_viewers.alias("viewer")
        query = (
            select(devices, viewer.c.user_id.label("viewer_id"))
            .select_from(
                devices.outerjoin(
                    viewer, and_(viewer.c.device_id == devices.c.id, viewer.c.user_id == user_id)
                )
            )
            .where(devices.c.id == device_id)
        )
        async with self._tx() as conn:
            row = (await conn.execute(query)).first()
        device = _device(row)
        if row is None or device is None:
            return None
        role: Role | None = None
        if device.owner_id is not None:
            if device.owner_id == user_id:
                role = "owner"
            elif row.viewer_id is not None:
                role = "viewer"
        return Access(device, role)

    async def viewers_of(self, device_ids: list[str]) -> dict[str, list[str]]:
        if not device_ids:
            return {}
        async with self._tx() as conn:
            rows = await conn.execute(
                select(device_viewers.c.device_id, device_viewers.c.user_id).where(
                    device_viewers.c.device_id.in_(device_ids)
                )
            )
            found: dict[str, list[str]] = {}
            for row in rows:
                found.setdefault(row.device_id, []).append(row.user_id)
            return found

    async def retire_device(self, device_id: str, token_hash: str, now: float) -> RetireResult:
        """A factory reset: the device loses its owner and its pairing codes, and its token is
        refused from now on (the stored hash gets a prefix no token hashes to).  Idempotent:
        retiring again with the same token succeeds."""
        retired_hash = RETIRED_PREFIX + token_hash
        async with self._tx() as conn:
            row = (await conn.execute(select(devices).where(devices.c.id == device_id))).first()
            if row is None or row.token_hash not in (token_hash, retired_hash):
                return RetireResult(False)
            await conn.execute(
                update(devices)
                .where(devices.c.id == device_id)
                .values(
                    owner_id=None,
                    paired_at=None,
                    token_hash=retired_hash,
                    retired_at=row.retired_at or now,
                    name=unowned_name(device_id),
                    former_owner_id=None,
                    former_name=None,
                )
            )
            await conn.execute(delete(pairing_codes).where(pairing_codes.c.device_id == device_id))
            await drop_shares(conn, [device_id])
        return RetireResult(True, row.owner_id, newly=row.retired_at is None)

    # --- pairing -------------------------------------------------------------------------------

    async def replace_pairing_code(
        self, device_id: str, code_hash: str, claim_hash: str, expires_at: float, now: float
    ) -> None:
        try:
            async with self._tx() as conn:
                # This camera's codes that expired a while ago go, codes of any camera that
                # expired (or were used) long ago too, and an expired one with the same hash:
                # once expired, a hash is free again.
                await conn.execute(
                    delete(pairing_codes).where(
                        or_(
                            and_(
                                pairing_codes.c.device_id == device_id,
                                pairing_codes.c.expires_at <= now - REPLACED_CODE_RETENTION_S,
                            ),
                            pairing_codes.c.expires_at <= now - SPENT_CODE_RETENTION_S,
                            and_(
                                pairing_codes.c.expires_at <= now,
                                or_(
                                    pairing_codes.c.code_hash == code_hash,
                                    pairing_codes.c.claim_hash == claim_hash,
                                ),
                            ),
                        )
                    )
                )
                # The camera's earlier codes are replaced: expired from now on, kept to say so.
                await conn.execute(
                    update(pairing_codes)
                    .where(pairing_codes.c.device_id == device_id, pairing_codes.c.expires_at > now)
                    .values(expires_at=now)
                )
                await conn.execute(
                    insert(pairing_codes).values(
                        device_id=device_id,
                        code_hash=code_hash,
                        claim_hash=claim_hash,
                        expires_at=expires_at,
                        created_at=now,
                    )
                )
                newest = (
                    select(pairing_codes.c.code_hash)
                    .where(pairing_codes.c.device_id == device_id)
                    .order_by(pairing_codes.c.created_at.desc())
                    .limit(REPLACED_CODES_KEPT + 1)
                )
                await conn.execute(
                    delete(pairing_codes).where(
                        pairing_codes.c.device_id == device_id,
                        pairing_codes.c.code_hash.not_in(newest.scalar_subquery()),
                    )
                )
        except IntegrityError:
            raise DuplicateError("pairing code") from None

    async def claim(
        self, *, code_hash: str | None, claim_hash: str | None, user_id: str, now: float
    ) -> ClaimResult:
        """Pair the device a live code (or claim token) belongs to with ``user_id``; single use.

        A used code is kept (spent: expired at once), so that its owner entering it again
        learns the camera is theirs already (ALREADY_YOURS) while anybody else learns nothing
        (NO_SUCH_CODE); an expired code of a camera nobody owns says so (EXPIRED), also when
        the camera shows a newer one."""
        column = pairing_codes.c.code_hash if code_hash is not None else pairing_codes.c.claim_hash
        value = code_hash if code_hash is not None else claim_hash
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(pairing_codes, devices.c.owner_id)
                    .join(devices, devices.c.id == pairing_codes.c.device_id)
                    .where(column == value)
                )
            ).first()
            if row is None:
                return ClaimResult(ClaimOutcome.NO_SUCH_CODE)
            if row.owner_id is not None and row.expires_at <= now:  # spent
                if row.owner_id != user_id:
                    return ClaimResult(ClaimOutcome.NO_SUCH_CODE)
                found = await conn.execute(select(devices).where(devices.c.id == row.device_id))
                return ClaimResult(ClaimOutcome.ALREADY_YOURS, _device(found.first()))
            if row.expires_at <= now:
                return ClaimResult(ClaimOutcome.EXPIRED)
            before = (
                await conn.execute(select(devices.c.owner_id).where(devices.c.id == row.device_id))
            ).first()
            taken = await conn.execute(
                update(devices)
                .where(
                    devices.c.id == row.device_id,
                    or_(devices.c.owner_id.is_(None), devices.c.owner_id == user_id),
                )
                .values(
                    owner_id=user_id,
                    paired_at=now,
                    # its former owner pairing it again gets its name back; anybody else
                    # keeps the unowned name, and the former one is forgotten either way
                    name=case(
                        (
                            and_(
                                devices.c.former_owner_id == user_id,
                                devices.c.former_name.is_not(None),
                            ),
                            devices.c.former_name,
                        ),
                        else_=devices.c.name,
                    ),
                    former_owner_id=None,
                    former_name=None,
                )
            )
            device = _device(
                (await conn.execute(select(devices).where(devices.c.id == row.device_id))).first()
            )
            if taken.rowcount != 1:
                return ClaimResult(ClaimOutcome.OWNED_BY_OTHER)
            if before is None or before.owner_id != user_id:
                # A new owner: nothing shared by anyone before carries over (unpairing dropped
                # it already; this holds even if a row were left over).
                await drop_shares(conn, [row.device_id])
            await conn.execute(
                update(pairing_codes)
                .where(pairing_codes.c.device_id == row.device_id, pairing_codes.c.expires_at > now)
                .values(expires_at=now)
            )
        return ClaimResult(ClaimOutcome.PAIRED, device)

    async def pairing_target(
        self, *, code_hash: str | None, claim_hash: str | None
    ) -> PairingTarget | None:
        column = pairing_codes.c.code_hash if code_hash is not None else pairing_codes.c.claim_hash
        value = code_hash if code_hash is not None else claim_hash
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(pairing_codes.c.expires_at, devices)
                    .join(devices, devices.c.id == pairing_codes.c.device_id)
                    .where(column == value)
                )
            ).first()
        if row is None:
            return None
        device = _device(row)
        assert device is not None
        return PairingTarget(device, float(row.expires_at))

    # --- watch sessions --------------------------------------------------------------------------

    async def start_session(
        self, session_id: str, device_id: str, viewer_id: str, now: float
    ) -> None:
        async with self._tx() as conn:
            await conn.execute(
                insert(watch_sessions).values(
                    id=session_id, device_id=device_id, viewer_id=viewer_id, started_at=now
                )
            )

    async def end_session(self, session_id: str, reason: str, now: float) -> bool:
        async with self._tx() as conn:
            done = await conn.execute(
                update(watch_sessions)
                .where(watch_sessions.c.id == session_id, watch_sessions.c.ended_at.is_(None))
                .values(ended_at=now, end_reason=reason)
            )
            return bool(done.rowcount == 1)

    async def record_media_path(self, session_id: str, path: str) -> None:
        """A live session's media path as its viewer reports it; "relay" is never replaced
        (part of the session was relayed), and an ended session is left as it was."""
        column = watch_sessions.c.media_path
        changeable = column.is_(None) if path == "direct" else or_(column.is_(None), column != path)
        async with self._tx() as conn:
            await conn.execute(
                update(watch_sessions)
                .where(
                    watch_sessions.c.id == session_id,
                    watch_sessions.c.ended_at.is_(None),
                    changeable,
                )
                .values(media_path=path)
            )

    async def session(self, session_id: str) -> WatchSession | None:
        if not storable(session_id):
            return None
        async with self._tx() as conn:
            row = (
                await conn.execute(select(watch_sessions).where(watch_sessions.c.id == session_id))
            ).first()
        return _session(row)

    async def sessions_of_device(
        self, device_id: str, limit: int = 100, since: float | None = None
    ) -> list[WatchSession]:
        """The device's sessions, newest first; ``since``: only those started then or later."""
        query = select(watch_sessions).where(watch_sessions.c.device_id == device_id)
        if since is not None:
            query = query.where(watch_sessions.c.started_at >= since)
        async with self._tx() as conn:
            rows = await conn.execute(
                query.order_by(watch_sessions.c.started_at.desc()).limit(limit)
            )
            return [s for s in map(_session, rows) if s is not None]

    async def session_history(self, scopes: list[HistoryScope], limit: int) -> list[WatchSession]:
        """Sessions in any of ``scopes``, newest first, at most ``limit``."""
        if not scopes:
            return []
        conditions = []
        for scope in scopes:
            parts = [watch_sessions.c.device_id == scope.device_id]
            if scope.since is not None:
                parts.append(watch_sessions.c.started_at >= scope.since)
            if scope.viewer_id is not None:
                parts.append(watch_sessions.c.viewer_id == scope.viewer_id)
            conditions.append(and_(*parts))
        async with self._tx() as conn:
            rows = await conn.execute(
                select(watch_sessions)
                .where(or_(*conditions))
                .order_by(watch_sessions.c.started_at.desc())
                .limit(limit)
            )
            return [s for s in map(_session, rows) if s is not None]

    async def open_sessions(self, started_before: float) -> list[WatchSession]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(watch_sessions).where(
                    and_(
                        watch_sessions.c.ended_at.is_(None),
                        watch_sessions.c.started_at < started_before,
                    )
                )
            )
            return [s for s in map(_session, rows) if s is not None]


#: Revoked and expired sign-ins are kept this long (so a late refresh hears why), then deleted.
_KEEP_DEAD_SIGN_INS_S = 7 * 86400.0
#: A retired device's token hash gets this prefix: no SHA-256 hex digest starts with it.
RETIRED_PREFIX = "retired:"


async def drop_shares(conn: AsyncConnection, device_ids: list[str]) -> None:
    """Delete the viewers and invitations of ``device_ids``: part of every transaction that
    changes a device's owner (after the device row, so that locks are always taken in the order
    device, then shares)."""
    if not device_ids:
        return
    await conn.execute(delete(device_viewers).where(device_viewers.c.device_id.in_(device_ids)))
    await conn.execute(delete(share_invites).where(share_invites.c.device_id.in_(device_ids)))


def storable(*values: str) -> bool:
    """Whether text can be stored or looked up on every backend: PostgreSQL refuses NUL.  The
    API refuses such input with a 422 before it gets here; lookups answer "not found"."""
    return not any("\x00" in v for v in values)


def _revoke(where: Any, reason: str, now: float) -> Any:
    return (
        update(sign_ins)
        .where(where, sign_ins.c.revoked_at.is_(None))
        .values(revoked_at=now, revoke_reason=reason)
    )


def engine_args(
    url: str, pool_size: int = 10, pool_timeout_s: float = 5.0
) -> tuple[str, dict[str, Any]]:
    """The SQLAlchemy URL and engine options.  A request that finds every pooled connection
    busy waits ``pool_timeout_s`` at most (then ``sqlalchemy.exc.TimeoutError``: a 503)."""
    if url.startswith("sqlite:///"):
        from pathlib import Path

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{path}", {
            "connect_args": {"timeout": 30},
            "pool_timeout": pool_timeout_s,
        }
    if url.startswith(("postgresql://", "postgres://")):
        rest = url.split("://", 1)[1]
        return f"postgresql+asyncpg://{rest}", {
            "pool_size": pool_size,
            "max_overflow": pool_size * 2,
            "pool_timeout": pool_timeout_s,
            "pool_pre_ping": True,
            # An unreachable server fails a connection attempt in seconds, not asyncpg's 60.
            "connect_args": {"timeout": pool_timeout_s},
        }
    raise ValueError(f"unsupported database URL {url!r}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _user(row: Row[Any] | None) -> User | None:
    if row is None:
        return None
    return User(
        row.id,
        row.email,
        row.password_hash,
        row.created_at,
        row.last_login_at,
        row.email_verified_at,
    )


def _device(row: Row[Any] | None) -> Device | None:
    if row is None:
        return None
    return Device(
        row.id,
        row.name,
        row.model,
        row.token_hash,
        row.owner_id,
        row.paired_at,
        row.created_at,
        row.last_seen,
        row.retired_at,
    )


def _sign_in(row: Row[Any] | None) -> SignIn | None:
    if row is None:
        return None
    return SignIn(
        row.id,
        row.user_id,
        row.refresh_hash,
        row.previous_hash,
        row.rotated_at,
        row.created_at,
        row.last_used_at,
        row.expires_at,
        row.revoked_at,
        row.revoke_reason,
        row.user_agent,
    )


def _session(row: Row[Any] | None) -> WatchSession | None:
    if row is None:
        return None
    return WatchSession(
        row.id,
        row.device_id,
        row.viewer_id,
        row.started_at,
        row.ended_at,
        row.end_reason,
        row.media_path,
    )
