"""A STAND-IN for the address-verification flow (the link mailed at sign-up), for the sharing
tests written before that flow landed: marks accounts' addresses verified by writing
``users.email_verified_at`` through the cloud's own store (``cloud.store.SqlStore`` on the test
cloud's database), not over HTTP.  Once ``POST /api/auth/verify`` exists, callers should read
the "verify" mail from ``mail_server`` and open its link instead, and this module go."""

from __future__ import annotations

import time

from sqlalchemy import update

from cloud.schema import users
from cloud.store import SqlStore
from tests.cloud_process import Account, CloudProcess


async def mark_verified_in_store(cloud: CloudProcess, *accounts: Account) -> None:
    url = cloud.env.get("MUMU_DATABASE_URL") or f"sqlite:///{cloud.data_dir / 'mumu.db'}"
    await mark_verified_at(url, *(a.email for a in accounts))


async def mark_verified_at(database_url: str, *emails: str) -> None:
    """The same on a cloud's database named by its URL (the demo's SQLite file)."""
    store = SqlStore(database_url, pool_size=1)
    await store.open()
    try:
        async with store.transaction() as conn:
            done = await conn.execute(
                update(users)
                .where(users.c.email.in_([e.lower() for e in emails]))
                .values(email_verified_at=time.time())
            )
        assert done.rowcount == len(emails), "an account to verify does not exist"
    finally:
        await store.close()
