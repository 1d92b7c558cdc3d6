"""One suite for the storage layer, run against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from cloud import migrate
from cloud.schema import devices, users
from cloud.store import ClaimOutcome, DuplicateError, SqlStore, engine_args


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    observed: list[float] = []
    s = SqlStore(db_url, observe=observed.append)
    await s.open()
    yield s
    await s.close()
    assert observed, "every query is timed"


async def test_users_unique_by_email(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h1", 1.0)
    with pytest.raises(DuplicateError):
        await store.create_user("u2", "a@example.com", "h2", 2.0)
    user = await store.user_by_email("a@example.com")
    assert user is not None and user.id == "u1" and user.password_hash == "h1"
    assert await store.user_by_id("u2") is None
    await store.record_login("u1", 5.0)
    again = await store.user_by_id("u1")
    assert again is not None and again.last_login_at == 5.0


async def test_pairing_is_single_use_and_replaced(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_device("d1", "Porch", "pi4", "tok", 1.0)
    await store.replace_pairing_code("d1", "code-a", "claim-a", 100.0, 2.0)
    await store.replace_pairing_code("d1", "code-b", "claim-b", 100.0, 3.0)  # replaces a
    old = await store.claim(code_hash="code-a", claim_hash=None, user_id="u1", now=4.0)
    assert old.outcome is ClaimOutcome.NO_SUCH_CODE
    won = await store.claim(code_hash="code-b", claim_hash=None, user_id="u1", now=4.0)
    assert won.outcome is ClaimOutcome.PAIRED and won.device is not None
    assert won.device.owner_id == "u1" and won.device.paired_at == 4.0
    again = await store.claim(code_hash="code-b", claim_hash=None, user_id="u1", now=5.0)
    assert again.outcome is ClaimOutcome.NO_SUCH_CODE
    gone = await store.claim(code_hash=None, claim_hash="claim-b", user_id="u1", now=5.0)
    assert gone.outcome is ClaimOutcome.NO_SUCH_CODE, "the claim token dies with its code"


async def test_claim_token_expiry_and_foreign_owner(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_user("u2", "b@example.com", "h", 1.0)
    await store.create_device("d1", "Porch", "pi4", "tok", 1.0)
    await store.replace_pairing_code("d1", "c1", "k1", 10.0, 1.0)
    late = await store.claim(code_hash=None, claim_hash="k1", user_id="u1", now=10.0)
    assert late.outcome is ClaimOutcome.EXPIRED
    await store.replace_pairing_code("d1", "c2", "k2", 100.0, 11.0)
    assert (await store.claim(code_hash=None, claim_hash="k2", user_id="u1", now=12.0)).outcome is (
        ClaimOutcome.PAIRED
    )
    # A code minted while owned (it should not be, the API refuses) still cannot move it.
    await store.replace_pairing_code("d1", "c3", "k3", 100.0, 13.0)
    stolen = await store.claim(code_hash="c3", claim_hash=None, user_id="u2", now=14.0)
    assert stolen.outcome is ClaimOutcome.OWNED_BY_OTHER
    device = await store.device("d1")
    assert device is not None and device.owner_id == "u1"


async def test_code_hashes_are_unique_among_live_codes(store: SqlStore) -> None:
    await store.create_device("d1", "a", "m", "t", 1.0)
    await store.create_device("d2", "b", "m", "t", 1.0)
    await store.replace_pairing_code("d1", "same", "k1", 100.0, 1.0)
    with pytest.raises(DuplicateError):
        await store.replace_pairing_code("d2", "same", "k2", 100.0, 2.0)
    # Once expired, the hash is free again.
    await store.replace_pairing_code("d2", "same", "k2", 300.0, 150.0)


async def test_devices_rename_unpair_touch(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_user("u2", "b@example.com", "h", 1.0)
    await store.create_device("d1", "Porch", "pi4", "tok", 1.0)
    await store.replace_pairing_code("d1", "c", "k", 100.0, 1.0)
    await store.claim(code_hash="c", claim_hash=None, user_id="u1", now=2.0)
    assert [d.id for d in await store.devices_of("u1")] == ["d1"]
    assert await store.devices_of("u2") == []
    assert await store.rename_device("d1", "u2", "Mine now") is None
    renamed = await store.rename_device("d1", "u1", "Garden")
    assert renamed is not None and renamed.name == "Garden"
    await store.touch_device("d1", 9.0)
    seen = await store.device("d1")
    assert seen is not None and seen.last_seen == 9.0
    assert not await store.unpair("d1", "u2")
    assert await store.unpair("d1", "u1")
    assert await store.devices_of("u1") == []
    unowned = await store.device("d1")
    assert unowned is not None and unowned.owner_id is None and unowned.paired_at is None


async def test_watch_session_history(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_device("d1", "Porch", "pi4", "tok", 1.0)
    await store.start_session("s1", "d1", "u1", 10.0)
    await store.start_session("s2", "d1", "u1", 20.0)
    assert {s.id for s in await store.open_sessions(started_before=25.0)} == {"s1", "s2"}
    assert await store.end_session("s1", "viewer_ended", 15.0)
    assert not await store.end_session("s1", "expired", 16.0), "ends once"
    history = await store.sessions_of_device("d1")
    assert [s.id for s in history] == ["s2", "s1"]
    assert history[1].ended_at == 15.0 and history[1].end_reason == "viewer_ended"
    assert [s.id for s in await store.open_sessions(started_before=25.0)] == ["s2"]
    one = await store.session("s2")
    assert one is not None and one.ended_at is None


async def test_migrating_an_older_database_keeps_its_rows(db_url: str) -> None:
    """A database made by the first release, with data in it, upgraded by this one."""
    old = SqlStore(db_url)
    engine_url, engine_kwargs = engine_args(db_url)
    engine = create_async_engine(engine_url, **engine_kwargs)
    await migrate.upgrade(engine, "0001")
    assert await migrate.current(engine) == "0001"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (id, email, password_hash, created_at) "
                "VALUES ('u1', 'old@example.com', 'h', 1.0)"
            )
        )
        await conn.execute(
            insert(devices).values(
                id="d1",
                name="Old cam",
                model="pi3",
                token_hash="t",
                owner_id="u1",
                paired_at=2.0,
                created_at=1.0,
            )
        )
    await engine.dispose()

    await old.open()  # runs the newer migrations
    try:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
        assert await migrate.current(old.engine) == head
        user = await old.user_by_email("old@example.com")
        assert user is not None and user.last_login_at is None
        assert [d.name for d in await old.devices_of("u1")] == ["Old cam"]
        async with old.engine.connect() as conn:
            count = (await conn.execute(select(users.c.id))).all()
        assert len(count) == 1
    finally:
        await old.close()


def test_two_processes_migrate_the_same_database_at_once(db_url: str, tmp_path: Path) -> None:
    """Cloud processes started together (scale-out) do not trip over each other's migrations."""
    env = {**os.environ, "MUMU_DATABASE_URL": db_url, "MUMU_DATA_DIR": str(tmp_path)}
    cli = str(Path(sys.executable).parent / "mumu-cloud")
    procs = [
        subprocess.Popen(
            [cli, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out.decode()

    async def check() -> None:
        store = SqlStore(db_url)
        await store.open()
        try:
            from alembic.script import ScriptDirectory

            head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
            assert await migrate.current(store.engine) == head
        finally:
            await store.close()

    asyncio.run(check())
