"""The attacks The Update Framework exists for, each against the real updater and a real signed
repository on HTTP: every one is refused (nothing unpacked, the running version untouched) or
handled as docs/updates.md says."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import Signer

from device.update import install as installer
from device.update.verify import SignedRepository
from release import keys
from release.repo import Expiry, RepoError, UpdateRepository
from tests.update_fixtures import Bench, make_bench, tiny_bundle


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    yield from make_bench(tmp_path)


def untouched(bench: Bench) -> None:
    assert bench.links() == ("1.0.0", "1.0.0")
    assert installer.installed_versions(bench.root) == ["1.0.0"]
    assert not list((bench.root / "downloads").glob("*.part"))
    assert bench.unit.restarts_log == ["1.0.0"]


def refused(bench: Bench, *words: str) -> str:
    outcome = bench.updater().run()
    assert outcome.kind == "failed", outcome
    reason = str(outcome.reason)
    for word in words:
        assert word in reason, reason
    assert bench.status()["state"] == "failed"
    untouched(bench)
    return reason


def online(bench: Bench) -> Signer:
    return keys.load(bench.keys_dir / "online.key")


def test_a_tampered_bundle_is_refused_before_it_is_unpacked(bench: Bench) -> None:
    bundle = bench.publish("1.1.0")[0]
    data = bytearray(bundle.read_bytes())
    data[-100] ^= 0xFF  # same length, one byte changed
    bench.server.overrides[bench.target_path("1.1.0")] = bytes(data)
    bench.offer("1.1.0")
    refused(bench, "does not match its signed length and hash", "nothing was unpacked")


def test_a_bundle_longer_than_signed_is_cut_off(bench: Bench) -> None:
    bundle = bench.publish("1.1.0")[0]
    bench.server.overrides[bench.target_path("1.1.0")] = bundle.read_bytes() + b"\0" * 10_000_000
    bench.offer("1.1.0")
    refused(bench, "more than the signed")
    # it stopped reading at the signed length, it did not take the 10 MB
    assert not list((bench.root / "downloads").iterdir())


def test_a_bundle_signed_by_no_one_is_not_offered(bench: Bench) -> None:
    # the file is on the server, but the signed targets do not list it
    stray = bench.tmp / "dist" / "mumu-agent-6.6.6-x86_64.tar"
    shutil.copyfile(bench.publish("1.1.0")[0], stray)
    bench.offer("6.6.6")
    refused(bench, "6.6.6", "not in the signed repository")


def test_targets_signed_with_a_key_root_does_not_trust_are_refused(bench: Bench) -> None:
    bench.publish("1.1.0")
    intruder = keys.generate(bench.tmp / "intruder", "targets")
    targets = bench.repo.targets()
    targets.signatures.clear()
    targets.sign(intruder)
    path = bench.repo.metadata_dir / f"{targets.signed.version}.targets.json"
    bench.server.overrides[f"metadata/{path.name}"] = targets.to_bytes()
    bench.offer("1.1.0")
    refused(bench, "not signed by the trusted keys")


def test_mix_and_match_targets_from_another_snapshot_are_refused(bench: Bench) -> None:
    bench.publish("1.1.0")
    # the server answers for targets vN with an older, genuinely signed targets file
    current = bench.repo.targets().signed.version
    older = (bench.repo.metadata_dir / f"{current - 1}.targets.json").read_bytes()
    bench.server.overrides[f"metadata/{current}.targets.json"] = older
    bench.offer("1.1.0")
    refused(bench, "mix-and-match", "Expected targets")


def test_expired_metadata_is_refused(tmp_path: Path) -> None:
    gen = make_bench(tmp_path, expiry=Expiry(timestamp=timedelta(hours=1)))
    bench = next(gen)
    try:
        bench.publish("1.1.0")
        bench.offer("1.1.0")
        bench.tuf_offset = timedelta(hours=2)  # nobody renewed it for two hours
        refused(bench, "expired", "mumu-release renew", "clock")
    finally:
        gen.close()


def seen_then_replayed(bench: Bench) -> bytes:
    """The device reads timestamp N; the repository moves on to N+1 (renewed)."""
    old = (bench.repo.metadata_dir / "timestamp.json").read_bytes()
    repo = SignedRepository(
        bench.server.url,
        Path(bench.settings.state_dir) / "tuf",
        Path(bench.settings.trust_root),
    )
    repo.target("mumu-agent-1.0.0-x86_64.tar")
    bench.repo.renew(online(bench))
    bench.publish("1.1.0")
    repo.target("mumu-agent-1.1.0-x86_64.tar")  # the device has seen the newer timestamp
    return old


def test_a_rolled_back_timestamp_is_refused(bench: Bench) -> None:
    old = seen_then_replayed(bench)
    assert json.loads(old)["signed"]["version"] < bench.repo.timestamp().signed.version
    bench.server.overrides["metadata/timestamp.json"] = old  # valid signature, older version
    bench.offer("1.1.0")
    refused(bench, "older than this device has seen", "timestamp")


def test_a_frozen_repository_is_noticed_when_its_timestamp_expires(bench: Bench) -> None:
    bench.publish("1.1.0")
    frozen = (bench.repo.metadata_dir / "timestamp.json").read_bytes()
    bench.server.overrides["metadata/timestamp.json"] = frozen  # the mirror stops updating
    bench.offer("1.1.0")
    bench.tuf_offset = Expiry().timestamp + timedelta(minutes=1)
    refused(bench, "expired")


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(hours=-6), True),  # no RTC, clock restored from the last shutdown
        (timedelta(hours=6), True),  # hours ahead: inside the timestamp's 3 days
        (timedelta(days=4), False),  # days ahead: everything looks expired
    ],
    ids=["6h-behind", "6h-ahead", "4d-ahead"],
)
def test_the_device_clock_hours_behind_or_ahead(
    bench: Bench, offset: timedelta, accepted: bool
) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    bench.tuf_offset = offset
    if accepted:
        assert bench.updater().run().kind == "committed"
    else:
        refused(bench, "expired", "clock is wrong")


def test_root_rotation_is_followed_by_a_device_with_the_baked_root(bench: Bench) -> None:
    holders = [keys.load(bench.keys_dir / f"root-{i}.key") for i in (1, 2)]
    new_holder = keys.generate(bench.keys_dir, "root-4")
    new_online = keys.generate(bench.keys_dir, "online-2")
    # root-3 leaves, root-4 joins, the online key is replaced; old and new thresholds sign
    version = bench.repo.rotate_root(
        [*holders, new_holder],
        add=[new_holder.public_key],
        remove=[keys.load(bench.keys_dir / "root-3.key").public_key.keyid],
        online=new_online.public_key,
    )
    assert version == 2
    bench.repo.add_bundles(
        [tiny_bundle(bench.tmp / "dist", "1.1.0")],
        keys.load(bench.keys_dir / "targets.key"),
        new_online,
    )
    bench.offer("1.1.0")
    assert bench.updater().run().kind == "committed"
    # the old online key no longer counts
    with pytest.raises(RepoError, match="not a timestamp key"):
        bench.repo.renew(online(bench))


def test_a_root_rotation_without_the_old_threshold_is_refused(bench: Bench) -> None:
    lone = keys.load(bench.keys_dir / "root-1.key")
    newcomers = [keys.generate(bench.keys_dir, f"new-{i}") for i in range(2)]
    with pytest.raises(RepoError, match="not enough root signatures"):
        bench.repo.rotate_root(
            [lone, *newcomers],
            add=[k.public_key for k in newcomers],
            remove=[
                keys.load(bench.keys_dir / f"root-{i}.key").public_key.keyid for i in (1, 2, 3)
            ],
        )


def test_expiry_defaults_leave_room_for_a_clock_without_rtc() -> None:
    e = Expiry()
    assert e.timestamp >= timedelta(days=2) and e.snapshot >= e.timestamp
    assert e.targets > e.snapshot and e.root >= e.targets
    now = datetime(2026, 1, 1, tzinfo=UTC)
    repo = UpdateRepository(Path("/nonexistent"), clock=lambda: now)
    assert repo._expires(e.timestamp) == now + e.timestamp
