"""Bring the database to the newest schema with Alembic, safely from several processes at once."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")
#: Arbitrary key for PostgreSQL's advisory lock: only one process migrates at a time.
_LOCK_KEY = 0x6D756D75


def alembic_config(connection: Any = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    if engine.dialect.name == "sqlite" and engine.url.database:
        # SQLite: another process may be migrating the same file; hold a lock file meanwhile.
        lock_path = Path(f"{engine.url.database}.migrate-lock")
        fd = await asyncio.to_thread(_lock_file, lock_path)
        try:
            await _upgrade(engine, revision)
        finally:
            os.close(fd)
        return
    await _upgrade(engine, revision)


def _lock_file(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


async def _upgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            await conn.commit()
        try:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
            await conn.commit()
        finally:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                await conn.commit()


async def current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def _current(sync_conn: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    rev = MigrationContext.configure(sync_conn).get_current_revision()
    return None if rev is None else str(rev)
