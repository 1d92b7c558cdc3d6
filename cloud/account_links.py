"""One-time links mailed to an account's address: prove the address ("verify"), prove a new
address before it replaces the old one ("email"), choose a new password ("reset").

Only a link's SHA-256 hash is stored (``account_links``, migration 0008); the token itself is
in the mail alone.  A link is used at most once: using it is a compare-and-swap on
``used_at IS NULL`` and the first statement of its transaction (on SQLite it takes the write
lock, on PostgreSQL the row's lock), so of two concurrent uses exactly one wins, and what the
link does (verify, replace the address, set the password and revoke every sign-in) commits
with it or not at all.

A new link leaves at most ``OPEN_LINKS_KEPT`` open of its purpose per account (older ones are
expired: a person who pressed "Send again" twice can open either of the last mails), and one
"email" link (only the newest new address is pending).  A password change or reset expires
every open "reset" link of the account (one mailed before must not undo the change).  Used
and expired rows are kept ``DEAD_LINKS_KEPT_S`` (to tell "used" and "expired" from a wrong
link), then deleted.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.schema import account_links, sign_ins, users
from cloud.store import SqlStore

Purpose = Literal["verify", "reset", "email"]

#: Open links of one purpose an account may have ("email": one).
OPEN_LINKS_KEPT = 3
#: Used and expired links are remembered this long, then deleted.
DEAD_LINKS_KEPT_S = 7 * 86400.0
#: ``secrets.token_urlsafe(32)``: 43 characters of A-Z a-z 0-9 - _.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}\Z")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str | None:
    """The stored form of a token, or None if it cannot be one of ours (malformed)."""
    if not _TOKEN.match(token):
        return None
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccountLink:
    token_hash: str
    user_id: str
    purpose: Purpose
    #: The address it was mailed to ("email": the new address it proves).
    email: str
    created_at: float
    expires_at: float
    used_at: float | None = None


class LinkOutcome(Enum):
    DONE = "done"
    INVALID = "invalid"  # no such link (or not of the purpose asked)
    EXPIRED = "expired"  # too old, replaced by a newer one, or the address changed since
    USED = "used"
    EMAIL_TAKEN = "email_taken"  # an "email" link whose address got an account meanwhile


@dataclass(frozen=True)
class LinkResult:
    outcome: LinkOutcome
    link: AccountLink | None = None
    #: For a used "email" link: the address it replaced.
    old_email: str | None = None


class _Void(Exception):
    """Roll the transaction back (the link stays unused) and answer ``outcome``."""

    def __init__(self, outcome: LinkOutcome) -> None:
        self.outcome = outcome


def _link(row: Row[Any]) -> AccountLink:
    return AccountLink(
        row.token_hash,
        row.user_id,
        row.purpose,
        row.email,
        row.created_at,
        row.expires_at,
        row.used_at,
    )


async def _expire_open(
    conn: AsyncConnection, user_id: str, purposes: tuple[str, ...], now: float
) -> None:
    await conn.execute(
        update(account_links)
        .where(
            account_links.c.user_id == user_id,
            account_links.c.purpose.in_(purposes),
            account_links.c.used_at.is_(None),
            account_links.c.expires_at > now,
        )
        .values(expires_at=now)
    )


class AccountLinks:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def _tx(self) -> Any:
        return self._store.transaction()

    async def create(self, link: AccountLink) -> None:
        """Record a new link; older open ones of its purpose beyond the few kept expire."""
        now = link.created_at
        keep = 1 if link.purpose == "email" else OPEN_LINKS_KEPT
        async with self._tx() as conn:
            await conn.execute(
                delete(account_links).where(
                    account_links.c.user_id == link.user_id,
                    or_(
                        account_links.c.expires_at < now - DEAD_LINKS_KEPT_S,
                        account_links.c.used_at < now - DEAD_LINKS_KEPT_S,
                    ),
                )
            )
            older = [
                row.token_hash
                for row in await conn.execute(
                    select(account_links.c.token_hash)
                    .where(
                        account_links.c.user_id == link.user_id,
                        account_links.c.purpose == link.purpose,
                        account_links.c.used_at.is_(None),
                        account_links.c.expires_at > now,
                    )
                    .order_by(account_links.c.created_at.desc())
                    .offset(keep - 1)
                )
            ]
            if older:
                await conn.execute(
                    update(account_links)
                    .where(account_links.c.token_hash.in_(older))
                    .values(expires_at=now)
                )
            await conn.execute(
                insert(account_links).values(
                    token_hash=link.token_hash,
                    user_id=link.user_id,
                    purpose=link.purpose,
                    email=link.email,
                    created_at=link.created_at,
                    expires_at=link.expires_at,
                    used_at=None,
                )
            )

    async def check(self, hash_: str, purposes: tuple[Purpose, ...], now: float) -> LinkResult:
        """What using the link would answer now, without using it."""
        async with self._tx() as conn:
            return await self._state(conn, hash_, purposes, now)

    async def _state(
        self, conn: AsyncConnection, hash_: str, purposes: tuple[Purpose, ...], now: float
    ) -> LinkResult:
        row = (
            await conn.execute(select(account_links).where(account_links.c.token_hash == hash_))
        ).first()
        if row is None or row.purpose not in purposes:
            return LinkResult(LinkOutcome.INVALID)
        link = _link(row)
        if link.used_at is not None:
            return LinkResult(LinkOutcome.USED, link)
        if link.expires_at <= now:
            return LinkResult(LinkOutcome.EXPIRED, link)
        return LinkResult(LinkOutcome.DONE, link)

    async def _take(
        self, conn: AsyncConnection, hash_: str, purposes: tuple[Purpose, ...], now: float
    ) -> LinkResult:
        """Use the link (the compare-and-swap), or say why not."""
        taken = await conn.execute(
            update(account_links)
            .where(
                account_links.c.token_hash == hash_,
                account_links.c.purpose.in_(purposes),
                account_links.c.used_at.is_(None),
                account_links.c.expires_at > now,
            )
            .values(used_at=now)
        )
        state = await self._state(conn, hash_, purposes, now)
        if taken.rowcount != 1:
            return state
        assert state.link is not None
        return LinkResult(LinkOutcome.DONE, state.link)

    async def verify(self, hash_: str, now: float) -> LinkResult:
        """Use a "verify" link (the account's address is proven) or an "email" link (the new
        address replaces the old one, proven; the account's other open links, all for the old
        address, expire)."""
        try:
            async with self._tx() as conn:
                result = await self._take(conn, hash_, ("verify", "email"), now)
                link = result.link
                if result.outcome is not LinkOutcome.DONE or link is None:
                    return result
                user = (
                    await conn.execute(select(users.c.email).where(users.c.id == link.user_id))
                ).first()
                if user is None:
                    raise _Void(LinkOutcome.INVALID)
                if link.purpose == "verify":
                    if user.email != link.email:
                        raise _Void(LinkOutcome.EXPIRED)  # mailed to an address it left
                    await conn.execute(
                        update(users)
                        .where(users.c.id == link.user_id, users.c.email_verified_at.is_(None))
                        .values(email_verified_at=now)
                    )
                    return result
                taken = await conn.execute(
                    select(users.c.id).where(
                        users.c.email == link.email, users.c.id != link.user_id
                    )
                )
                if taken.first() is not None:
                    raise _Void(LinkOutcome.EMAIL_TAKEN)
                # a sign-up of the address racing this one: the unique constraint decides
                await conn.execute(
                    update(users)
                    .where(users.c.id == link.user_id)
                    .values(email=link.email, email_verified_at=now)
                )
                await _expire_open(conn, link.user_id, ("verify", "reset", "email"), now)
                return LinkResult(LinkOutcome.DONE, link, old_email=user.email)
        except _Void as void:
            return LinkResult(void.outcome)
        except IntegrityError:
            return LinkResult(LinkOutcome.EMAIL_TAKEN)

    async def reset_password(
        self, hash_: str, password_hash: str, revoke_reason: str, now: float
    ) -> LinkResult:
        """Use a "reset" link: the new password is set, every sign-in of the account revoked
        (``revoke_reason``), the address counts as proven, the other open reset links expire."""
        try:
            async with self._tx() as conn:
                result = await self._take(conn, hash_, ("reset",), now)
                link = result.link
                if result.outcome is not LinkOutcome.DONE or link is None:
                    return result
                done = await conn.execute(
                    update(users)
                    .where(users.c.id == link.user_id, users.c.email == link.email)
                    .values(password_hash=password_hash)
                )
                if done.rowcount != 1:  # the account is gone or has another address now
                    raise _Void(LinkOutcome.EXPIRED)
                await conn.execute(
                    update(users)
                    .where(users.c.id == link.user_id, users.c.email_verified_at.is_(None))
                    .values(email_verified_at=now)
                )
                await conn.execute(
                    update(sign_ins)
                    .where(sign_ins.c.user_id == link.user_id, sign_ins.c.revoked_at.is_(None))
                    .values(revoked_at=now, revoke_reason=revoke_reason)
                )
                await _expire_open(conn, link.user_id, ("reset",), now)
                return result
        except _Void as void:
            return LinkResult(void.outcome)

    async def pending_email(self, user_id: str, now: float) -> str | None:
        """The new address an open "email" link would prove, if any."""
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(account_links.c.email)
                    .where(
                        account_links.c.user_id == user_id,
                        account_links.c.purpose == "email",
                        account_links.c.used_at.is_(None),
                        account_links.c.expires_at > now,
                    )
                    .order_by(account_links.c.created_at.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else str(row.email)

    async def of_user(self, user_id: str) -> list[AccountLink]:
        """Every stored link of the account (for tests and the operator's eyes)."""
        async with self._tx() as conn:
            rows = await conn.execute(
                select(account_links)
                .where(account_links.c.user_id == user_id)
                .order_by(account_links.c.created_at)
            )
            return [_link(r) for r in rows]
