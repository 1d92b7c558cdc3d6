"""The updater and a device clock that has not been set from the network yet (issue 19: a clock
30 days behind was accepted, widening the freeze window): the real updater, a real signed
repository on HTTP, the clock and the NTP probe injected (device/update/timesync.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from device.update import timesync
from release.repo import Expiry
from tests.update_fixtures import Bench, Clock, make_bench

BEHIND = timedelta(days=30)  # a camera unplugged for a month: fake-hwclock's time
STALE = Expiry().timestamp + timedelta(days=1)  # the frozen timestamp expired a day ago


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    yield from make_bench(tmp_path, clock_wait=300)


def frozen_and_offered(bench: Bench) -> None:
    bench.publish("1.1.0")
    frozen = (bench.repo.metadata_dir / "timestamp.json").read_bytes()
    bench.server.overrides["metadata/timestamp.json"] = frozen  # the mirror stops updating
    bench.offer("1.1.0")


def test_expiry_is_checked_once_the_clock_is_set_from_the_network(bench: Bench) -> None:
    frozen_and_offered(bench)
    # the device boots a month behind; NTP answers 40 s later and sets the clock right
    bench.tuf_offset = STALE - BEHIND
    bench.clock_synced = False
    booted = bench.clock.mono
    said: list[object] = []

    def ntp(clock: Clock) -> None:
        if not said:
            said.append(bench.status()["reason"])
        if clock.mono - booted >= 40:
            bench.tuf_offset = STALE
            bench.clock_synced = True

    bench.clock.sleep_hooks.append(ntp)
    outcome = bench.updater().run()
    assert outcome.kind == "failed" and "expired" in str(outcome.reason), outcome
    assert "clock to be set from the network" in str(said[0])
    assert bench.links() == ("1.0.0", "1.0.0")
    assert 40 <= bench.clock.mono - booted < 300


def test_without_network_time_the_wait_is_bounded_and_the_clock_as_it_is_decides(
    bench: Bench,
) -> None:
    # what docs/updates.md says: after clock_wait the metadata's expiry is checked against the
    # clock the device has, so a clock a month behind still lets a frozen repository through
    frozen_and_offered(bench)
    bench.tuf_offset = STALE - BEHIND
    bench.clock_synced = False
    asked: list[float] = []

    def probe() -> bool:
        asked.append(bench.clock.mono)
        return False

    outcome = bench.updater(clock_synchronized=probe).run()
    assert outcome.kind == "committed", outcome
    assert asked[-1] - asked[0] == 300  # the wait: clock_wait, no more


def test_a_synchronised_clock_is_not_waited_for(bench: Bench) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    asked: list[float] = []

    def probe() -> bool:
        asked.append(bench.clock.mono)
        return True

    assert bench.updater(clock_synchronized=probe).run().kind == "committed"
    assert len(asked) == 1
    assert all(h.state != "waiting" for h in bench.updater().load().history)


def test_synchronised_means_timesyncd_set_the_clock_or_a_container_host_keeps_it(
    tmp_path: Path,
) -> None:
    assert not timesync.synchronized(tmp_path)
    (tmp_path / "systemd/timesync").mkdir(parents=True)
    (tmp_path / "systemd/timesync/synchronized").touch()
    assert timesync.synchronized(tmp_path)
    container = tmp_path / "container-run"
    (container / "systemd").mkdir(parents=True)
    (container / "systemd/container").write_text("systemd-nspawn\n")
    assert timesync.synchronized(container)
