"""Persistent state of sharing: a camera's viewers and its open invitations.

Every statement that could race a change of the camera's owner first takes the device row
(``UPDATE devices SET owner_id = owner_id WHERE id = :device AND owner_id = :owner``): on
PostgreSQL that locks the row, on SQLite it takes the write lock, so an unpair, a claim, a
factory reset or an account deletion (which update the device row first, then drop its shares:
``cloud.store.drop_shares``) runs wholly before or wholly after it.  Locks are always taken in
the order device, then shares, so two such transactions never deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.schema import device_viewers, devices, share_invites, users
from cloud.store import Device, SqlStore, _device, storable

Via = Literal["email", "link"]


@dataclass(frozen=True)
class Invite:
    id: str
    device_id: str
    owner_id: str
    #: The invited address; None for a link.
    email: str | None
    #: Keyed hash of a link's token; None for an e-mail invitation.
    token_hash: str | None
    created_at: float
    expires_at: float

    @property
    def via(self) -> Via:
        return "email" if self.email is not None else "link"


@dataclass(frozen=True)
class InviteTarget:
    """An invitation as its invitee sees it: which camera, whose."""

    invite: Invite
    device: Device
    owner_email: str


@dataclass(frozen=True)
class Viewer:
    user_id: str
    email: str
    added_at: float
    via: str


@dataclass(frozen=True)
class SharedDevice:
    """A camera shared with an account: the device, its owner's address, since when."""

    device: Device
    owner_email: str
    added_at: float


class InviteOutcome(Enum):
    CREATED = "created"
    NOT_OWNER = "not_owner"
    ALREADY_VIEWER = "already_viewer"
    TOO_MANY_INVITES = "too_many_invites"
    TOO_MANY_VIEWERS = "too_many_viewers"


class AcceptOutcome(Enum):
    ACCEPTED = "accepted"
    ALREADY_VIEWER = "already_viewer"
    INVALID = "invalid"
    EXPIRED = "expired"
    OWN_CAMERA = "own_camera"
    TOO_MANY_VIEWERS = "too_many_viewers"
    #: An e-mail invitation to the caller's address, which it has not proven yet.
    EMAIL_UNVERIFIED = "email_unverified"


@dataclass(frozen=True)
class AcceptResult:
    outcome: AcceptOutcome
    device: Device | None = None


async def _lock_owned(conn: AsyncConnection, device_id: str, owner_id: str) -> bool:
    """Take the device row (see the module's docstring); whether ``owner_id`` owns it."""
    done = await conn.execute(
        update(devices)
        .where(devices.c.id == device_id, devices.c.owner_id == owner_id)
        .values(owner_id=devices.c.owner_id)
    )
    return bool(done.rowcount == 1)


async def _verified(conn: AsyncConnection, user_id: str, email: str) -> bool:
    """Whether ``user_id``'s address is ``email`` and proven (a link mailed to it was opened):
    an e-mail invitation is bound to the person who reads that mailbox, not to whoever typed
    the address at sign-up."""
    row = (
        await conn.execute(
            select(users.c.email_verified_at).where(users.c.id == user_id, users.c.email == email)
        )
    ).first()
    return row is not None and row.email_verified_at is not None


async def _count(conn: AsyncConnection, table: Any, *where: Any) -> int:
    value = (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar()
    return int(value or 0)


class SharingStore:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def _tx(self) -> Any:
        return self._store.transaction()

    # --- the owner's side ----------------------------------------------------------------------

    async def create_invite(
        self, invite: Invite, max_invites: int, max_viewers: int
    ) -> InviteOutcome:
        """Record an invitation by the camera's owner.  Expired invitations of the camera are
        deleted first; an open one to the same address is replaced (a new expiry)."""
        if not storable(invite.device_id, invite.owner_id, invite.email or ""):
            return InviteOutcome.NOT_OWNER
        async with self._tx() as conn:
            if not await _lock_owned(conn, invite.device_id, invite.owner_id):
                return InviteOutcome.NOT_OWNER
            await conn.execute(
                delete(share_invites).where(
                    share_invites.c.device_id == invite.device_id,
                    share_invites.c.expires_at <= invite.created_at,
                )
            )
            if invite.email is not None:
                already = await conn.execute(
                    select(device_viewers.c.user_id)
                    .join(users, users.c.id == device_viewers.c.user_id)
                    .where(
                        device_viewers.c.device_id == invite.device_id,
                        users.c.email == invite.email,
                    )
                )
                if already.first() is not None:
                    return InviteOutcome.ALREADY_VIEWER
                await conn.execute(
                    delete(share_invites).where(
                        share_invites.c.device_id == invite.device_id,
                        share_invites.c.email == invite.email,
                    )
                )
            if (
                await _count(conn, device_viewers, device_viewers.c.device_id == invite.device_id)
                >= max_viewers
            ):
                return InviteOutcome.TOO_MANY_VIEWERS
            if (
                await _count(conn, share_invites, share_invites.c.device_id == invite.device_id)
                >= max_invites
            ):
                return InviteOutcome.TOO_MANY_INVITES
            await conn.execute(
                insert(share_invites).values(
                    id=invite.id,
                    device_id=invite.device_id,
                    owner_id=invite.owner_id,
                    email=invite.email,
                    token_hash=invite.token_hash,
                    created_at=invite.created_at,
                    expires_at=invite.expires_at,
                )
            )
        return InviteOutcome.CREATED

    async def invites_of_device(self, device_id: str, now: float) -> list[Invite]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(share_invites)
                .where(share_invites.c.device_id == device_id, share_invites.c.expires_at > now)
                .order_by(share_invites.c.created_at)
            )
            return [_invite(r) for r in rows]

    async def viewers_of_device(self, device_id: str) -> list[Viewer]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(device_viewers, users.c.email)
                .join(users, users.c.id == device_viewers.c.user_id)
                .where(device_viewers.c.device_id == device_id)
                .order_by(device_viewers.c.added_at)
            )
            return [Viewer(r.user_id, r.email, r.added_at, r.via) for r in rows]

    async def cancel_invite(self, device_id: str, owner_id: str, invite_id: str) -> bool:
        if not storable(device_id, owner_id, invite_id):
            return False
        async with self._tx() as conn:
            if not await _lock_owned(conn, device_id, owner_id):
                return False
            done = await conn.execute(
                delete(share_invites).where(
                    share_invites.c.id == invite_id, share_invites.c.device_id == device_id
                )
            )
            return bool(done.rowcount == 1)

    async def remove_viewer(self, device_id: str, user_id: str, *, owner_id: str | None) -> bool:
        """End ``user_id``'s right to watch the device: by its owner (``owner_id``, checked) or by
        the viewer itself (``owner_id=None``).  Commits before returning; the caller then ends
        the viewer's live sessions (``WatchService.end_viewer_sessions``)."""
        if not storable(device_id, user_id, owner_id or ""):
            return False
        async with self._tx() as conn:
            if owner_id is not None:
                if not await _lock_owned(conn, device_id, owner_id):
                    return False
            else:
                await conn.execute(
                    update(devices)
                    .where(devices.c.id == device_id)
                    .values(owner_id=devices.c.owner_id)
                )
            done = await conn.execute(
                delete(device_viewers).where(
                    device_viewers.c.device_id == device_id, device_viewers.c.user_id == user_id
                )
            )
            return bool(done.rowcount == 1)

    # --- the invitee's side --------------------------------------------------------------------

    async def target(
        self, *, token_hash: str | None = None, invite_id: str | None = None
    ) -> InviteTarget | None:
        """The invitation (by its link's token hash or its id) with its camera and owner."""
        if not storable(token_hash or "", invite_id or ""):
            return None
        where = (
            share_invites.c.token_hash == token_hash
            if token_hash is not None
            else share_invites.c.id == invite_id
        )
        async with self._tx() as conn:
            row = (await conn.execute(_targets().where(where))).first()
        return None if row is None else _target(row)

    async def invites_for(self, email: str, now: float, limit: int = 50) -> list[InviteTarget]:
        """Open invitations to ``email``, newest first, of cameras their inviter still owns."""
        async with self._tx() as conn:
            rows = await conn.execute(
                _targets()
                .where(
                    share_invites.c.email == email,
                    share_invites.c.expires_at > now,
                    devices.c.owner_id == share_invites.c.owner_id,
                )
                .order_by(share_invites.c.created_at.desc())
                .limit(limit)
            )
            return [_target(r) for r in rows]

    async def accept(
        self,
        *,
        token_hash: str | None = None,
        invite_id: str | None = None,
        user_id: str,
        email: str,
        now: float,
        max_viewers: int,
    ) -> AcceptResult:
        """Make ``user_id`` a viewer through an invitation; single use.  An e-mail invitation is
        accepted only by the account with that address, once it is verified (read in the same
        transaction), a link invitation only by its token (never by ``invite_id``); either kind
        is void once its camera has another owner than the one who made it."""
        if not storable(token_hash or "", invite_id or "", user_id):
            return AcceptResult(AcceptOutcome.INVALID)
        where = (
            share_invites.c.token_hash == token_hash
            if token_hash is not None
            else share_invites.c.id == invite_id
        )
        try:
            async with self._tx() as conn:
                row = (await conn.execute(select(share_invites).where(where))).first()
                if row is None:
                    return AcceptResult(AcceptOutcome.INVALID)
                invite = _invite(row)
                if invite.email is not None and invite.email != email:
                    return AcceptResult(AcceptOutcome.INVALID)
                if token_hash is None and invite.email is None:
                    # a link invitation: only its token accepts it (its id is in the owner's
                    # listing and in proxy logs), so its id alone does nothing
                    return AcceptResult(AcceptOutcome.INVALID)
                if invite.owner_id == user_id:
                    return AcceptResult(AcceptOutcome.OWN_CAMERA)
                if not await _lock_owned(conn, invite.device_id, invite.owner_id):
                    return AcceptResult(AcceptOutcome.INVALID)
                if invite.expires_at <= now:
                    await conn.execute(delete(share_invites).where(share_invites.c.id == invite.id))
                    return AcceptResult(AcceptOutcome.EXPIRED)
                if invite.email is not None and not await _verified(conn, user_id, invite.email):
                    return AcceptResult(AcceptOutcome.EMAIL_UNVERIFIED)
                device = _device(
                    (
                        await conn.execute(select(devices).where(devices.c.id == invite.device_id))
                    ).first()
                )
                viewing = await _count(
                    conn,
                    device_viewers,
                    device_viewers.c.device_id == invite.device_id,
                    device_viewers.c.user_id == user_id,
                )
                if not viewing and (
                    await _count(
                        conn, device_viewers, device_viewers.c.device_id == invite.device_id
                    )
                    >= max_viewers
                ):
                    return AcceptResult(AcceptOutcome.TOO_MANY_VIEWERS, device)
                used = await conn.execute(
                    delete(share_invites).where(share_invites.c.id == invite.id)
                )
                if used.rowcount != 1:  # another account used it a moment ago
                    return AcceptResult(AcceptOutcome.INVALID)
                if viewing:
                    return AcceptResult(AcceptOutcome.ALREADY_VIEWER, device)
                await conn.execute(
                    insert(device_viewers).values(
                        device_id=invite.device_id, user_id=user_id, added_at=now, via=invite.via
                    )
                )
        except IntegrityError:  # the account or camera was deleted meanwhile
            return AcceptResult(AcceptOutcome.INVALID)
        return AcceptResult(AcceptOutcome.ACCEPTED, device)

    async def email_verified(self, user_id: str, email: str) -> bool:
        """Whether ``user_id``'s address is ``email`` and verified."""
        if not storable(user_id, email):
            return False
        async with self._tx() as conn:
            return await _verified(conn, user_id, email)

    async def decline(self, invite_id: str, email: str) -> bool:
        if not storable(invite_id):
            return False
        async with self._tx() as conn:
            done = await conn.execute(
                delete(share_invites).where(
                    share_invites.c.id == invite_id, share_invites.c.email == email
                )
            )
            return bool(done.rowcount == 1)

    async def shared_with(self, user_id: str) -> list[SharedDevice]:
        owner = users.alias("owner")
        async with self._tx() as conn:
            rows = await conn.execute(
                select(
                    devices,
                    owner.c.email.label("owner_email"),
                    device_viewers.c.added_at.label("shared_at"),
                )
                .join(device_viewers, device_viewers.c.device_id == devices.c.id)
                .join(owner, owner.c.id == devices.c.owner_id)
                .where(device_viewers.c.user_id == user_id)
                .order_by(device_viewers.c.added_at)
            )
            out = []
            for row in rows:
                device = _device(row)
                assert device is not None
                out.append(SharedDevice(device, row.owner_email, row.shared_at))
            return out

    async def viewer_counts(self, device_ids: list[str]) -> dict[str, int]:
        if not device_ids:
            return {}
        async with self._tx() as conn:
            rows = await conn.execute(
                select(device_viewers.c.device_id, func.count().label("n"))
                .where(device_viewers.c.device_id.in_(device_ids))
                .group_by(device_viewers.c.device_id)
            )
            return {row.device_id: int(row.n) for row in rows}

    async def emails_of(self, user_ids: list[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        async with self._tx() as conn:
            rows = await conn.execute(
                select(users.c.id, users.c.email).where(users.c.id.in_(user_ids))
            )
            return {row.id: row.email for row in rows}

    async def viewer_since(self, device_id: str, user_id: str) -> float | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(device_viewers.c.added_at).where(
                        and_(
                            device_viewers.c.device_id == device_id,
                            device_viewers.c.user_id == user_id,
                        )
                    )
                )
            ).first()
        return None if row is None else float(row.added_at)


def _targets() -> Any:
    owner = users.alias("owner")
    return (
        select(share_invites, devices, owner.c.email.label("owner_email"))
        .join(devices, devices.c.id == share_invites.c.device_id)
        .join(owner, owner.c.id == share_invites.c.owner_id)
    )


def _invite(row: Row[Any]) -> Invite:
    return Invite(
        row.id,
        row.device_id,
        row.owner_id,
        row.email,
        row.token_hash,
        row.created_at,
        row.expires_at,
    )


def _target(row: Row[Any]) -> InviteTarget:
    m = row._mapping
    invite = Invite(
        m[share_invites.c.id],
        m[share_invites.c.device_id],
        m[share_invites.c.owner_id],
        m[share_invites.c.email],
        m[share_invites.c.token_hash],
        m[share_invites.c.created_at],
        m[share_invites.c.expires_at],
    )
    device = Device(
        m[devices.c.id],
        m[devices.c.name],
        m[devices.c.model],
        m[devices.c.token_hash],
        m[devices.c.owner_id],
        m[devices.c.paired_at],
        m[devices.c.created_at],
        m[devices.c.last_seen],
        m[devices.c.retired_at],
    )
    return InviteTarget(invite, device, m["owner_email"])
