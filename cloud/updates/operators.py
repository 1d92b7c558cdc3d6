"""Who may manage releases and rollouts: accounts granted operator rights on the server.

Rights are granted with ``mumu-cloud operator add <e-mail>`` (a person with a shell on the
server), and only to an account that exists and whose address is verified (a link mailed to it
was opened): nobody gets them by signing up with an address first.  A grant names the account,
not the address, and lasts until ``operator remove`` or the account is deleted; an account whose
address is no longer verified holds no rights meanwhile.

``MUMU_OPERATORS`` grants nothing: at start-up each listed address is reported (a log line) with
what it lacks, so that a setting carried over from older versions is not silently ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.schema import operators, users

log = logging.getLogger(__name__)


class Grant(Enum):
    ADDED = "added"
    ALREADY = "already"
    NO_ACCOUNT = "no_account"
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class Operator:
    email: str
    user_id: str
    added_at: float
    #: False when the account's address is not verified (now): it holds no rights meanwhile.
    verified: bool


class OperatorStore:
    def __init__(self, engine: Callable[[], AsyncEngine]) -> None:
        """``engine``: the cloud store's engine (opened and migrated by it)."""
        self._engine = engine

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine().begin() as conn:
            yield conn

    async def is_operator(self, user_id: str) -> bool:
        """Whether this account holds operator rights now (granted, and its address verified).
        One indexed read per request: never a cached answer."""
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(operators.c.user_id)
                    .join(users, users.c.id == operators.c.user_id)
                    .where(operators.c.user_id == user_id, users.c.email_verified_at.is_not(None))
                )
            ).first()
        return row is not None

    async def grant(self, email: str, now: float | None = None) -> Grant:
        """Operator rights for the account with this address, if it exists and is verified."""
        async with self._tx() as conn:
            user = (
                await conn.execute(
                    select(users.c.id, users.c.email_verified_at).where(
                        users.c.email == email.strip().lower()
                    )
                )
            ).first()
            if user is None:
                return Grant.NO_ACCOUNT
            if user.email_verified_at is None:
                return Grant.UNVERIFIED
            held = (
                await conn.execute(select(operators).where(operators.c.user_id == user.id))
            ).first()
            if held is not None:
                return Grant.ALREADY
            try:
                await conn.execute(
                    insert(operators).values(user_id=user.id, added_at=now or time.time())
                )
            except IntegrityError:  # granted by another command a moment ago, or deleted
                return Grant.ALREADY
        return Grant.ADDED

    async def revoke(self, email: str) -> bool:
        """Take the rights of the account with this address away; False if it held none."""
        async with self._tx() as conn:
            user_id = (
                await conn.execute(select(users.c.id).where(users.c.email == email.strip().lower()))
            ).scalar()
            if user_id is None:
                return False
            done = await conn.execute(delete(operators).where(operators.c.user_id == user_id))
        return bool(done.rowcount == 1)

    async def all(self) -> list[Operator]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(
                    users.c.email,
                    operators.c.user_id,
                    operators.c.added_at,
                    users.c.email_verified_at,
                )
                .join(users, users.c.id == operators.c.user_id)
                .order_by(operators.c.added_at)
            )
            return [
                Operator(r.email, r.user_id, r.added_at, r.email_verified_at is not None)
                for r in rows
            ]

    async def listed_but_not_operators(self, listed: tuple[str, ...]) -> dict[str, str]:
        """For each address of ``MUMU_OPERATORS`` that is not an operator: what it lacks."""
        if not listed:
            return {}
        granted = {o.email for o in await self.all() if o.verified}
        async with self._tx() as conn:
            rows = await conn.execute(
                select(users.c.email, users.c.email_verified_at).where(users.c.email.in_(listed))
            )
            accounts = {r.email: r.email_verified_at is not None for r in rows}
        out: dict[str, str] = {}
        for email in listed:
            if email in granted:
                continue
            if email not in accounts:
                out[email] = "no account has this address"
            elif not accounts[email]:
                out[email] = "its account has not verified the address"
            else:
                out[email] = "a verified account, not granted"
        return out

    async def report(self, listed: tuple[str, ...]) -> None:
        """Log, at start-up, every ``MUMU_OPERATORS`` address that holds no rights and why: the
        setting grants nothing (nobody can claim a listed address by signing up with it)."""
        for email, why in (await self.listed_but_not_operators(listed)).items():
            log.warning(
                "MUMU_OPERATORS lists %s, which is not an operator (%s); the setting grants "
                "nothing: run 'mumu-cloud operator add %s' for a verified account",
                email,
                why,
                email,
            )
