"""Operators for tests: an account made an operator the way a person running the cloud does it
(``mumu-cloud operator add <e-mail>`` on the server), once its address is verified.

``mark_email_verified_for_test`` is a STAND-IN for the e-mail verification flow, which is being
built beside this (sign-up mails a link; ``POST /api/auth/verify {token}``): it sets
``users.email_verified_at`` in the test cloud's database through the cloud's own store, not over
HTTP.  Once that flow is merged, switch the callers to it and delete this function.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import update

from cloud import config
from cloud.schema import users
from cloud.store import SqlStore
from tests.cloud_process import CloudProcess

BIN = Path(sys.executable).parent


def _env(cloud: CloudProcess) -> dict[str, str]:
    return {**os.environ, **cloud.env, "MUMU_DATA_DIR": str(cloud.data_dir)}


def mark_email_verified_for_test(cloud: CloudProcess, email: str) -> None:
    """TEST STAND-IN (see the module's docs): the account with ``email`` counts as having
    opened its verification link.  Safe to call from async tests (runs in its own thread)."""
    database_url = config.load(_env(cloud)).database_url

    async def mark() -> int:
        store = SqlStore(database_url)
        await store.open()
        try:
            async with store.engine.begin() as conn:
                done = await conn.execute(
                    update(users)
                    .where(users.c.email == email.lower())
                    .values(email_verified_at=time.time())
                )
                return int(done.rowcount)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        marked = pool.submit(asyncio.run, mark()).result()
    assert marked == 1, f"no account {email} to mark verified"


def operator_command(cloud: CloudProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``mumu-cloud operator ARGS`` against this cloud's database, as on its server."""
    return subprocess.run(
        [str(BIN / "mumu-cloud"), "operator", *args],
        env=_env(cloud),
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_operator(cloud: CloudProcess, email: str) -> None:
    """The (signed-up) account with ``email``: verified, then granted operator rights."""
    mark_email_verified_for_test(cloud, email)
    added = operator_command(cloud, "add", email)
    assert added.returncode == 0, added.stderr
