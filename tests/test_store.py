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
from cloud.store import (
    REPLACED_CODE_RETENTION_S,
    REPLACED_CODES_KEPT,
    ClaimOutcome,
    DuplicateError,
    SignIn,
    SqlStore,
    engine_args,
)


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
    assert old.outcome is ClaimOutcome.EXPIRED, "a replaced code says it expired"
    wrong = await store.claim(code_hash="nope", claim_hash=None, user_id="u1", now=4.0)
    assert wrong.outcome is ClaimOutcome.NO_SUCH_CODE
    won = await store.claim(code_hash="code-b", claim_hash=None, user_id="u1", now=4.0)
    assert won.outcome is ClaimOutcome.PAIRED and won.device is not None
    assert won.device.owner_id == "u1" and won.device.paired_at == 4.0
    # Spent: its owner is told the camera is theirs, anybody else learns nothing.
    again = await store.claim(code_hash="code-b", claim_hash=None, user_id="u1", now=5.0)
    assert again.outcome is ClaimOutcome.ALREADY_YOURS and again.device is not None
    assert again.device.id == "d1"
    link = await store.claim(code_hash=None, claim_hash="claim-b", user_id="u1", now=5.0)
    assert link.outcome is ClaimOutcome.ALREADY_YOURS, "the claim token is spent with its code"
    await store.create_user("u2", "b@example.com", "h", 1.0)
    for code, claim in (("code-b", None), (None, "claim-b")):
        other = await store.claim(code_hash=code, claim_hash=claim, user_id="u2", now=5.0)
        assert other.outcome is ClaimOutcome.NO_SUCH_CODE
    # Unpaired: the spent code pairs nobody, and a new code replaces it; the old ones say they
    # expired for an hour, then are forgotten.
    assert await store.unpair("d1", "u1")
    late = await store.claim(code_hash="code-b", claim_hash=None, user_id="u2", now=6.0)
    assert late.outcome is ClaimOutcome.EXPIRED
    await store.replace_pairing_code("d1", "code-c", "claim-c", 100.0, 7.0)
    for code in ("code-a", "code-b"):
        gone = await store.claim(code_hash=code, claim_hash=None, user_id="u2", now=8.0)
        assert gone.outcome is ClaimOutcome.EXPIRED
    later = 8.0 + REPLACED_CODE_RETENTION_S
    await store.replace_pairing_code("d1", "code-d", "claim-d", later + 300, later)
    for code in ("code-a", "code-b"):
        gone = await store.claim(code_hash=code, claim_hash=None, user_id="u2", now=later)
        assert gone.outcome is ClaimOutcome.NO_SUCH_CODE
    still = await store.claim(code_hash="code-c", claim_hash=None, user_id="u2", now=later)
    assert still.outcome is ClaimOutcome.EXPIRED, "replaced within the hour: remembered"
    won = await store.claim(code_hash="code-d", claim_hash=None, user_id="u2", now=later)
    assert won.outcome is ClaimOutcome.PAIRED


async def test_a_camera_asking_for_codes_in_a_loop_keeps_a_bounded_few(
    store: SqlStore,
) -> None:
    await store.create_device("d1", "Porch", "pi4", "tok", 1.0)
    await store.create_device("d2", "Shed", "pi4", "tok", 1.0)
    await store.replace_pairing_code("d2", "other", "other-claim", 1000.0, 1.0)
    asked = REPLACED_CODES_KEPT + 8
    for i in range(asked):
        await store.replace_pairing_code("d1", f"code-{i}", f"claim-{i}", 1000.0, 2.0 + i)
    kept = [
        i
        for i in range(asked)
        if (await store.pairing_target(code_hash=f"code-{i}", claim_hash=None)) is not None
    ]
    assert kept == list(range(asked - REPLACED_CODES_KEPT - 1, asked)), "the newest, and no more"
    assert await store.pairing_target(code_hash="other", claim_hash=None) is not None


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


def _sign_in(sid: str, user: str, now: float, refresh: str = "r1") -> SignIn:
    return SignIn(sid, user, refresh, None, None, now, now, now + 100, None, None, "agent")


async def test_sign_ins_rotate_once_and_revoke(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_user("u2", "b@example.com", "h", 1.0)
    assert await store.create_sign_in(_sign_in("s1", "u1", 10.0), max_active=5) == []
    await store.create_sign_in(_sign_in("s2", "u1", 11.0), max_active=5)
    await store.create_sign_in(_sign_in("s3", "u2", 11.0), max_active=5)
    # Compare and swap: the same old token rotates once.
    assert await store.rotate_refresh("s1", "r1", "r2", 12.0, 200.0)
    assert not await store.rotate_refresh("s1", "r1", "r3", 12.0, 200.0)
    row = await store.sign_in("s1")
    assert row is not None and (row.refresh_hash, row.previous_hash) == ("r2", "r1")
    assert row.rotated_at == 12.0 and row.expires_at == 200.0 and row.active(13.0)
    assert not await store.rotate_refresh("s1", "r2", "r3", 250.0, 300.0), "expired"
    assert await store.revoke_sign_in("s1", "signed_out", 13.0)
    assert not await store.revoke_sign_in("s1", "signed_out", 14.0), "revoked once"
    assert not await store.rotate_refresh("s1", "r2", "r3", 14.0, 200.0), "revoked"
    revoked = await store.sign_in("s1")
    assert revoked is not None and revoked.revoke_reason == "signed_out"
    assert not revoked.active(14.0)
    assert [s.id for s in await store.active_sign_ins("u1", 14.0)] == ["s2"]
    assert await store.revoke_sign_ins("u1", "signed_out_everywhere", 15.0) == ["s2"]
    assert await store.active_sign_ins("u1", 15.0) == []
    assert [s.id for s in await store.active_sign_ins("u2", 15.0)] == ["s3"]
    assert await store.sign_in("nul\x00id") is None


async def test_sign_ins_beyond_the_cap_end_least_recently_used_first(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_sign_in(_sign_in("s1", "u1", 10.0), max_active=2)
    await store.create_sign_in(_sign_in("s2", "u1", 11.0), max_active=2)
    await store.touch_sign_in("s1", 12.0)  # s1 was used more recently than s2
    assert await store.create_sign_in(_sign_in("s3", "u1", 13.0), max_active=2) == ["s2"]
    assert {s.id for s in await store.active_sign_ins("u1", 14.0)} == {"s1", "s3"}
    # Long-dead rows go when the account signs in again.
    await store.create_sign_in(_sign_in("s4", "u1", 13.0 + 8 * 86400), max_active=10)
    assert await store.sign_in("s2") is None


async def test_password_change_and_account_deletion(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h1", 1.0)
    await store.create_user("u2", "b@example.com", "h", 1.0)
    await store.create_sign_in(_sign_in("s1", "u1", 10.0), max_active=5)
    await store.create_sign_in(_sign_in("s2", "u2", 10.0), max_active=5)
    assert await store.change_password("u1", "h2", 11.0, "password_changed")
    user = await store.user_by_id("u1")
    assert user is not None and user.password_hash == "h2"
    assert await store.active_sign_ins("u1", 12.0) == []
    assert not await store.change_password("ghost", "h", 11.0, "password_changed")

    for device, owner in (("d1", "u1"), ("d2", "u1"), ("d3", "u2")):
        await store.create_device(device, "cam", "pi", "tok", 1.0)
        await store.replace_pairing_code(device, f"c-{device}", f"k-{device}", 100.0, 1.0)
        await store.claim(code_hash=f"c-{device}", claim_hash=None, user_id=owner, now=2.0)
    await store.start_session("w1", "d1", "u1", 3.0)
    deleted = await store.delete_user("u1")
    assert deleted is not None and sorted(deleted.owned) == ["d1", "d2"] and deleted.viewed == []
    assert await store.user_by_id("u1") is None and await store.sign_in("s1") is None
    assert await store.session("w1") is None
    d1 = await store.device("d1")
    assert d1 is not None and d1.owner_id is None
    assert [d.id for d in await store.devices_of("u2")] == ["d3"]
    assert await store.sign_in("s2") is not None
    assert await store.delete_user("u1") is None


async def test_a_retired_device_loses_owner_codes_and_token(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_device("d1", "Porch", "pi4", "tokhash", 1.0)
    await store.replace_pairing_code("d1", "c", "k", 100.0, 1.0)
    await store.claim(code_hash="c", claim_hash=None, user_id="u1", now=2.0)
    await store.replace_pairing_code("d1", "c2", "k2", 100.0, 3.0)
    assert not (await store.retire_device("d1", "wrong", 4.0)).retired
    done = await store.retire_device("d1", "tokhash", 4.0)
    assert done.retired and done.newly and done.previous_owner == "u1"
    device = await store.device("d1")
    assert device is not None and device.owner_id is None and device.retired_at == 4.0
    assert device.token_hash != "tokhash", "the old token no longer matches"
    assert await store.pairing_target(code_hash="c2", claim_hash=None) is None
    again = await store.retire_device("d1", "tokhash", 5.0)
    assert again.retired and not again.newly and again.previous_owner is None, "idempotent"
    device = await store.device("d1")
    assert device is not None and device.retired_at == 4.0
    assert not (await store.retire_device("ghost", "tokhash", 5.0)).retired


async def test_a_factory_reset_forgets_the_former_owner_and_name(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_device("d1", "Porch", "pi4", "tokhash", 1.0)
    await store.replace_pairing_code("d1", "c", "k", 100.0, 1.0)
    await store.claim(code_hash="c", claim_hash=None, user_id="u1", now=2.0)
    await store.rename_device("d1", "u1", "Anna's bedroom")
    assert await store.unpair("d1", "u1")
    former = select(devices.c.name, devices.c.former_owner_id, devices.c.former_name)
    async with store.engine.connect() as conn:
        row = (await conn.execute(former.where(devices.c.id == "d1"))).one()
    assert tuple(row) == ("Camera d1", "u1", "Anna's bedroom"), "kept for its owner only"
    assert (await store.retire_device("d1", "tokhash", 4.0)).retired
    async with store.engine.connect() as conn:
        row = (await conn.execute(former.where(devices.c.id == "d1"))).one()
    assert tuple(row) == ("Camera d1", None, None)


async def test_pairing_target_reads_without_claiming(store: SqlStore) -> None:
    await store.create_device("d1", "Garage", "pi5", "tok", 1.0)
    await store.replace_pairing_code("d1", "c", "k", 100.0, 1.0)
    target = await store.pairing_target(code_hash=None, claim_hash="k")
    assert target is not None and target.device.name == "Garage" and target.expires_at == 100.0
    assert (await store.pairing_target(code_hash="c", claim_hash=None)) is not None
    assert await store.pairing_target(code_hash="nope", claim_hash=None) is None
    device = await store.device("d1")
    assert device is not None and device.owner_id is None


async def test_session_history_can_start_at_the_current_pairing(store: SqlStore) -> None:
    await store.create_user("u1", "a@example.com", "h", 1.0)
    await store.create_device("d1", "Porch", "pi4", "tok", 1.0)
    await store.start_session("old", "d1", "u1", 10.0)
    await store.start_session("new", "d1", "u1", 30.0)
    assert [s.id for s in await store.sessions_of_device("d1", since=20.0)] == ["new"]
    assert len(await store.sessions_of_device("d1")) == 2


async def test_text_with_nul_is_never_sent_to_the_database(store: SqlStore) -> None:
    # PostgreSQL cannot hold NUL: lookups by such text are "not found", not a driver error.
    assert await store.user_by_email("a\x00@example.com") is None
    assert await store.user_by_id("u\x00") is None
    assert await store.device("d\x00") is None
    assert await store.session("s\x00") is None
    assert await store.rename_device("d\x00", "u1", "x") is None
    assert not await store.unpair("d\x00", "u1")
    await store.ping()


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
        await conn.execute(
            insert(devices).values(
                id="d2", name="Spare", model="pi3", token_hash="t2", created_at=1.0
            )
        )
        await conn.execute(
            text(
                "INSERT INTO pairing_codes (device_id, code_hash, claim_hash, expires_at, "
                "created_at) VALUES ('d2', 'code', 'claim', 1000.0, 3.0)"
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
        # the code the spare camera showed still pairs it (0006 keyed codes by code)
        target = await old.pairing_target(code_hash="code", claim_hash=None)
        assert target is not None and target.device.id == "d2" and target.expires_at == 1000.0
        won = await old.claim(code_hash="code", claim_hash=None, user_id="u1", now=4.0)
        assert won.outcome is ClaimOutcome.PAIRED
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


# --- sharing -------------------------------------------------------------------------------------


async def _paired(store: SqlStore, device: str, owner: str, now: float) -> None:
    await store.replace_pairing_code(device, f"c-{device}-{now}", f"k-{device}-{now}", 1e12, now)
    result = await store.claim(
        code_hash=f"c-{device}-{now}", claim_hash=None, user_id=owner, now=now
    )
    assert result.outcome is ClaimOutcome.PAIRED


async def test_an_accept_racing_an_unpair_never_leaves_a_viewer(store: SqlStore) -> None:
    """Accepting takes the device row before the share rows, as unpairing does: whichever
    commits second sees the other, and no viewer of an unowned camera is left (PostgreSQL runs
    the two truly at once)."""
    from cloud.sharing_store import AcceptOutcome, Invite, InviteOutcome, SharingStore

    sharing = SharingStore(store)
    await store.create_user("owner", "o@example.com", "h", 1.0)
    await store.create_user("viewer", "v@example.com", "h", 1.0)
    await store.create_device("d1", "cam", "pi", "tok", 1.0)
    outcomes: set[AcceptOutcome] = set()
    for i in range(60):
        now = 10.0 + i
        await _paired(store, "d1", "owner", now)
        invite = Invite(f"i{i}", "d1", "owner", None, f"t{i}", now, now + 100)
        assert await sharing.create_invite(invite, 10, 10) is InviteOutcome.CREATED
        accepted, unpaired = await asyncio.gather(
            sharing.accept(
                token_hash=f"t{i}", user_id="viewer", email="v@example.com", now=now, max_viewers=10
            ),
            store.unpair("d1", "owner"),
        )
        assert unpaired
        outcomes.add(accepted.outcome)
        assert await store.viewers_of(["d1"]) == {}
        assert await sharing.shared_with("viewer") == []
        assert await sharing.invites_of_device("d1", now) == []
        access = await store.access("d1", "viewer")
        assert access is not None and access.role is None
    assert outcomes <= {AcceptOutcome.ACCEPTED, AcceptOutcome.INVALID}


async def test_shares_are_dropped_with_every_change_of_owner(store: SqlStore) -> None:
    from cloud.sharing_store import Invite, InviteOutcome, SharingStore

    sharing = SharingStore(store)
    for user in ("owner", "viewer", "other"):
        await store.create_user(user, f"{user}@example.com", "h", 1.0)
    await store.create_device("d1", "cam", "pi", "tok", 1.0)

    async def shared(now: float) -> None:
        await _paired(store, "d1", "owner", now)
        link = Invite(f"l{now}", "d1", "owner", None, f"t{now}", now, now + 100)
        assert await sharing.create_invite(link, 10, 10) is InviteOutcome.CREATED
        result = await sharing.accept(
            token_hash=f"t{now}",
            user_id="viewer",
            email="viewer@example.com",
            now=now,
            max_viewers=10,
        )
        assert result.device is not None
        mail = Invite(f"m{now}", "d1", "owner", "other@example.com", None, now, now + 100)
        assert await sharing.create_invite(mail, 10, 10) is InviteOutcome.CREATED
        access = await store.access("d1", "viewer")
        assert access is not None and access.role == "viewer"
        assert await store.viewers_of(["d1"]) == {"d1": ["viewer"]}

    async def gone(now: float) -> None:
        assert await store.viewers_of(["d1"]) == {}
        assert await sharing.invites_for("other@example.com", now) == []
        assert await sharing.invites_of_device("d1", now) == []

    await shared(10.0)
    assert await store.unpair("d1", "owner")
    await gone(10.0)

    await shared(20.0)
    result = await store.retire_device("d1", "tok", 21.0)
    assert result.retired
    await gone(21.0)

    await store.create_device("d2", "cam", "pi", "tok2", 1.0)
    await _paired(store, "d2", "owner", 30.0)
    link = Invite("l30", "d2", "owner", None, "t30", 30.0, 130.0)
    assert await sharing.create_invite(link, 10, 10) is InviteOutcome.CREATED
    await sharing.accept(
        token_hash="t30", user_id="viewer", email="viewer@example.com", now=30.0, max_viewers=10
    )
    # the viewer's account goes: it views nothing; then the owner's: the camera has no shares
    deleted = await store.delete_user("viewer")
    assert deleted is not None and deleted.viewed == ["d2"] and deleted.owned == []
    mail = Invite("m31", "d2", "owner", "other@example.com", None, 31.0, 131.0)
    assert await sharing.create_invite(mail, 10, 10) is InviteOutcome.CREATED
    deleted = await store.delete_user("owner")
    assert deleted is not None and deleted.owned == ["d2"]
    assert await sharing.invites_for("other@example.com", 32.0) == []
