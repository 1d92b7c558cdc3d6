"""The updater's state machine in-process: a real signed repository on a real HTTP server, an
injectable clock and root directory, and a service manager playing systemd for the agent."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from device.update import install as installer
from device.update.files import Status, read_struct
from device.update.machine import Outcome, State, in_window
from device.update.services import UnitStatus
from tests.update_fixtures import Bench, Clock, PowerCut, make_bench, stage_release, tiny_bundle


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    yield from make_bench(tmp_path)


@pytest.fixture
def memory_bench() -> Iterator[Bench]:
    """A bench in memory (tmpfs), for the tests that run an update a few hundred times: the
    order of fsyncs is what they check (through the seam), not how long the disk takes."""
    tmp = Path(tempfile.mkdtemp(prefix="mumu-update-", dir="/dev/shm"))
    try:
        yield from make_bench(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def states(bench: Bench) -> list[str]:
    updater = bench.updater()
    return [s.state for s in updater.load().history]


def test_an_offer_is_verified_downloaded_switched_and_committed(bench: Bench) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0", rollout_id=7)
    outcome = bench.updater().run()
    assert outcome.kind == "committed", outcome
    assert bench.links() == ("1.1.0", "1.1.0")
    assert states(bench) == ["downloading"] * (len(states(bench)) - 3) + [
        "installed",
        "healthy",
        "committed",
    ]
    status = bench.status()
    assert status["state"] == "committed" and status["rollout_id"] == 7
    assert status["current"] == "1.1.0"
    # current and previous are kept, the agent was restarted once into the new version
    assert installer.installed_versions(bench.root) == ["1.0.0", "1.1.0"]
    assert bench.unit.restarts_log[-1] == "1.1.0"
    assert not list((bench.root / "downloads").glob("*.part"))
    # the same offer again is nothing to do
    assert bench.updater().run().kind == "current"


def test_releases_kept_are_current_previous_and_pending(bench: Bench) -> None:
    bench.publish("1.1.0", "1.2.0")
    bench.offer("1.1.0")
    assert bench.updater().run().kind == "committed"
    bench.offer("1.2.0")
    assert bench.updater().run().kind == "committed"
    assert installer.installed_versions(bench.root) == ["1.1.0", "1.2.0"]


def test_the_switch_waits_until_nobody_watches_and_says_so(bench: Bench) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    bench.viewers(2)
    seen: list[Status] = []

    state_file = Path(bench.settings.state_dir) / "state.json"

    def viewer_leaves(clock: Clock) -> None:
        state = read_struct(state_file, State)
        assert state is not None
        status = state.history[-1]
        seen.append(status)
        if len(seen) == 3:
            bench.viewers(0)
            clock.sleep_hooks.clear()

    bench.clock.sleep_hooks.append(viewer_leaves)
    assert bench.updater().run().kind == "committed"
    assert seen[0].state == "waiting" and seen[0].reason is not None
    assert "2 viewers" in seen[0].reason
    # nobody was switched while they watched
    assert bench.unit.restarts_log[-1] == "1.1.0" and len(bench.unit.restarts_log) == 2


def test_the_owner_window_holds_the_switch_until_it_opens(bench: Bench) -> None:
    import time

    bench.publish("1.1.0")
    now = time.localtime(bench.clock.wall())
    opens = (now.tm_hour * 60 + now.tm_min + 30) % 1440
    closes = (opens + 60) % 1440
    window = f"{opens // 60:02d}:{opens % 60:02d}-{closes // 60:02d}:{closes % 60:02d}"
    bench.offer("1.1.0", window=window)
    waited: list[float] = []
    bench.clock.sleep_hooks.append(lambda c: waited.append(c.wall()))
    assert bench.updater().run().kind == "committed"
    switched_wall = bench.updater().load().history[-1].at
    assert in_window(window, switched_wall - bench.updater().settings.probation)
    assert waited[0] - bench.clock.wall_start < 31 * 60  # it waited about half an hour


def test_a_version_that_crashes_at_start_is_rolled_back_with_its_reason(bench: Bench) -> None:
    bench.publish("1.1.0")
    bench.unit.behaviour["1.1.0"] = "crash"
    bench.offer("1.1.0")
    outcome = bench.updater().run()
    assert outcome.kind == "rolled_back"
    assert bench.links() == ("1.0.0", "1.0.0")
    status = bench.status()
    assert status["state"] == "rolled_back"
    assert "crashed 3 times" in str(status["reason"]) and "RuntimeError: boom" in str(
        status["reason"]
    )
    assert bench.unit.restarts_log[-1] == "1.0.0"
    assert installer.installed_versions(bench.root) == ["1.0.0"]
    # offered again, it is not retried, and the rollback stays what the cloud hears
    assert bench.updater().run().kind == "bad"
    assert bench.status()["state"] == "rolled_back"


def test_a_version_that_never_connects_is_rolled_back_when_the_cloud_answers(
    bench: Bench,
) -> None:
    bench.publish("1.1.0")
    bench.unit.behaviour["1.1.0"] = "silent"
    bench.offer("1.1.0")
    switched = bench.clock.monotonic()
    outcome = bench.updater().run()
    assert outcome.kind == "rolled_back"
    assert "did not connect to the cloud within 60 s" in str(outcome.reason)
    assert 60 <= bench.clock.monotonic() - switched <= 62
    assert bench.links() == ("1.0.0", "1.0.0")


def test_a_network_outage_is_not_the_new_versions_fault(bench: Bench) -> None:
    bench.publish("1.1.0")
    bench.unit.behaviour["1.1.0"] = "silent"
    bench.cloud_up = False
    bench.offer("1.1.0")
    start = bench.clock.monotonic()

    def network_returns(clock: Clock) -> None:
        if clock.monotonic() - start > 200:  # three health timeouts later
            bench.cloud_up = True
            bench.unit.behaviour["1.1.0"] = "good"
            bench.unit.started_at = clock.monotonic()  # it connects with backoff
            clock.sleep_hooks.clear()

    bench.clock.sleep_hooks.append(network_returns)
    assert bench.updater().run().kind == "committed"
    history = bench.updater().load().history
    assert any(s.state == "waiting" and "unreachable" in (s.reason or "") for s in history)


def test_a_restart_during_probation_starts_it_over(bench: Bench) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    healthy_at: list[float] = []

    state_file = Path(bench.settings.state_dir) / "state.json"

    def crash_once_when_healthy(clock: Clock) -> None:
        state = read_struct(state_file, State)
        assert state is not None
        last = state.history[-1]
        if last.state == "healthy" and not healthy_at:
            healthy_at.append(clock.monotonic())
        if healthy_at and clock.monotonic() - healthy_at[0] > 100:
            bench.unit.crash_once()
            clock.sleep_hooks.clear()

    bench.clock.sleep_hooks.append(crash_once_when_healthy)
    assert bench.updater().run().kind == "committed"
    # committed a full probation after it came back, not 300 s after the first READY
    assert bench.clock.monotonic() - healthy_at[0] >= 100 + 300


def test_power_loss_during_probation_rolls_back_at_the_next_boot(bench: Bench) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    updater = bench.updater()

    def cut(clock: Clock) -> None:
        if updater.state.probation is not None:
            raise PowerCut

    bench.clock.sleep_hooks.append(cut)
    with pytest.raises(PowerCut):
        updater.run()
    bench.clock.sleep_hooks.clear()
    assert bench.links() == ("1.1.0", "1.0.0")  # on probation when the power went
    bench.boot = "boot-2"
    outcome = bench.updater().boot()
    assert outcome.kind == "rolled_back"
    assert bench.links() == ("1.0.0", "1.0.0")
    assert bench.status()["state"] == "rolled_back"
    assert "restarted while the new version was on probation" in str(bench.status()["reason"])
    # retried later (not marked bad), and not before retry_after
    assert bench.updater().run().kind == "later"
    bench.clock.advance(3601)
    assert bench.updater().run().kind == "committed"


def test_power_cuts_under_a_committed_version_never_count(bench: Bench) -> None:
    for boot in range(10):
        bench.boot = f"boot-{boot + 2}"
        assert bench.updater().boot().kind == "idle"
    assert bench.links() == ("1.0.0", "1.0.0")
    assert bench.updater().load().bad == {}


def test_a_power_cut_between_the_record_and_the_rename_rolls_back_cleanly(
    bench: Bench,
) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    updater = bench.updater()
    real_point = installer.point

    def point_then_cut(root: Path, link: str, version: str) -> None:
        raise PowerCut

    installer.point = point_then_cut  # type: ignore[assignment]
    try:
        with pytest.raises(PowerCut):
            updater.run()
    finally:
        installer.point = real_point
    bench.boot = "boot-2"
    assert bench.updater().boot().kind == "rolled_back"
    assert bench.links() == ("1.0.0", "1.0.0")


def test_an_older_version_offered_again_is_refused(bench: Bench) -> None:
    bench.publish("1.1.0", "0.9.0")
    bench.offer("1.1.0")
    assert bench.updater().run().kind == "committed"
    bench.offer("1.0.0")
    outcome = bench.updater().run()
    assert outcome.kind == "failed" and "older than the running 1.1.0" in str(outcome.reason)
    assert bench.links() == ("1.1.0", "1.1.0")


def test_a_release_needing_a_newer_updater_is_refused_before_download(bench: Bench) -> None:
    from release import keys

    bundle = bench.publish("1.1.0")[0]
    targets = bench.repo.targets()
    name = bundle.name
    targets.signed.targets[name].unrecognized_fields["custom"]["min_updater"] = 99
    bench.repo._sign_targets(
        targets,
        keys.load(bench.keys_dir / "targets.key"),
        keys.load(bench.keys_dir / "online.key"),
    )
    bench.offer("1.1.0")
    outcome = bench.updater().run()
    assert outcome.kind == "failed" and "needs updater 99" in str(outcome.reason)
    assert not any(path.startswith("targets/") for path, _ in bench.server.requests)


def test_an_interrupted_download_resumes_where_it_stopped(bench: Bench) -> None:
    bench.publish("1.1.0", size=1_000_000)
    target = bench.target_path("1.1.0")
    bench.server.cut_after[target] = 400_000
    bench.offer("1.1.0")
    outcome = bench.updater().run()
    assert outcome.kind == "retry" and "resumes" in str(outcome.reason)
    part = bench.root / "downloads" / f"{Path(target).name.split('.', 1)[1]}.part"
    kept = part.stat().st_size
    assert 0 < kept <= 400_000
    assert bench.updater().run().kind == "committed"
    ranges = [rng for path, rng in bench.server.requests if path == target]
    assert ranges == [None, f"bytes={kept}-"]


def test_a_server_that_ignores_ranges_restarts_the_file(bench: Bench) -> None:
    bench.publish("1.1.0", size=500_000)
    target = bench.target_path("1.1.0")
    bench.server.cut_after[target] = 100_000
    bench.offer("1.1.0")
    assert bench.updater().run().kind == "retry"
    bench.server.ignore_range = True
    assert bench.updater().run().kind == "committed"


def test_free_space_is_checked_first_and_old_releases_make_room(bench: Bench) -> None:
    bench.publish("1.1.0", "1.2.0", size=1_000_000)
    bench.offer("1.1.0")
    assert bench.updater().run().kind == "committed"
    free = [2_000_000]
    bench.offer("1.2.0")
    outcome = bench.updater(disk_free=lambda p: free[0]).run()
    assert outcome.kind == "failed"
    assert "not enough free space: 3 MB needed" in str(outcome.reason)
    assert not any("1.2.0" in path for path, _ in bench.server.requests if "targets/" in path)
    assert bench.links() == ("1.1.0", "1.1.0")
    # the failure is final for this offer; a new offer of a newer version with room works
    free[0] = 10_000_000
    bench.publish("1.3.0", size=1_000_000)
    bench.offer("1.3.0")
    assert bench.updater(disk_free=lambda p: free[0]).run().kind == "committed"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 600 KiB filesystem (tmpfs) for the device's /opt/mumu."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_the_disk_filling_mid_download_leaves_the_current_version_running(
    tmp_path: Path, small_disk: Path
) -> None:
    from device.update import install

    gen = make_bench(tmp_path / "b", root=str(small_disk / "opt"))
    bench = next(gen)
    try:
        bench.publish("1.1.0", size=2_000_000)  # the disk has room for a third of it
        bench.offer("1.1.0")
        # the space check is passed (something else fills the disk while we download)
        outcome = bench.updater(disk_free=lambda p: 10**9).run()
        assert outcome.kind == "failed" and "disk filled up" in str(outcome.reason)
        assert bench.links() == ("1.0.0", "1.0.0")
        assert install.installed_versions(bench.root) == ["1.0.0"]
        assert not list((bench.root / "downloads").glob("*.part"))
        assert bench.unit.restarts_log == ["1.0.0"]  # the agent was never touched
    finally:
        gen.close()


def test_in_window() -> None:
    import time

    base = time.mktime((2026, 1, 1, 12, 0, 0, 0, 0, -1))
    assert in_window(None, base)
    assert in_window("11:00-13:00", base) and not in_window("13:00-14:00", base)
    assert in_window("23:00-13:00", base) and not in_window("23:00-02:00", base)


# --- power cuts at every change to the disk ---------------------------------------------------


@dataclass
class Seam:
    """Sees every change the updater makes to the disk (``installer.observer``): counts the
    points before and after each, cuts the power at point ``cut_at`` (every later change then
    fails too: the machine is off), and records what was done, in order."""

    cut_at: int | None = None
    points: int = 0
    off: bool = False
    done: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def __call__(self, phase: str, op: str, paths: tuple[str, ...]) -> None:
        if self.off:
            raise PowerCut
        self.points += 1
        if self.points == self.cut_at:
            self.off = True
            raise PowerCut
        if phase == "after":
            self.done.append((op, paths))


@contextlib.contextmanager
def watching(seam: Seam) -> Iterator[Seam]:
    installer.observer = seam
    try:
        yield seam
    finally:
        installer.observer = None


class Device:
    """The bench's device directory saved once and put back before each cut."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.dir = bench.root.parent
        self.saved = bench.tmp / "saved-device"
        shutil.rmtree(self.saved, ignore_errors=True)
        shutil.copytree(self.dir, self.saved, symlinks=True)
        self.clock = (bench.clock.mono, bench.unit.running, bench.unit.started_at, bench.boot)

    def restore(self) -> None:
        shutil.rmtree(self.dir)
        shutil.copytree(self.saved, self.dir, symlinks=True)
        mono, running, started, boot = self.clock
        self.bench.clock.mono = mono
        self.bench.clock.sleep_hooks.clear()
        self.bench.unit.running, self.bench.unit.started_at = running, started
        self.bench.unit.restarts_before = 0
        self.bench.boot = boot


def consistent(bench: Bench) -> State:
    """What must hold after any cut and the next boot: both links lead to complete releases
    (``committed`` has the updater both units run), the state agrees with the links, nothing
    half-built or half-deleted is left, and the last status is the one published."""
    current, committed = bench.links()
    assert current is not None and committed is not None
    assert (bench.root / "committed" / "bin" / "mumu-update").exists()
    assert (bench.root / "current" / "bin" / "mumu-agent").exists()
    assert installer.complete(bench.root, current) and installer.complete(bench.root, committed)
    state = bench.updater().load()
    if state.probation is None:
        assert current == committed
    else:
        assert (current, committed) == (state.probation.version, state.probation.previous)
    for entry in (bench.root / installer.RELEASES).iterdir():
        assert installer.complete(bench.root, entry.name), entry
    if state.history:
        status = bench.status()
        assert status["seq"] == state.history[-1].seq
        assert status["state"] == state.history[-1].state
    return state


def cut_everywhere(bench: Bench, scenario: Callable[[], object]) -> list[str]:
    """Run ``scenario`` once to count the points before and after each change to the disk, then
    once per point with the power cut there; after each cut the next boot must leave the
    device consistent and reported, and the updater must carry on to a lasting outcome.
    Returns the outcomes of the boots after the cuts."""
    device = Device(bench)
    with watching(Seam()) as clean:
        scenario()
    assert clean.points > 10, clean.done  # the seam sees the run
    booted: list[str] = []
    for point in range(1, clean.points + 1):
        device.restore()
        with watching(Seam(cut_at=point)) as seam, pytest.raises(PowerCut):
            scenario()
        bench.boot = f"after-cut-{point}"
        after = bench.updater().boot()
        booted.append(after.kind)
        state = consistent(bench)
        assert state.probation is None, (point, seam.done[-3:])
        if after.kind in ("rolled_back", "committed"):
            assert bench.status()["state"] == after.kind
        for _ in range(3):  # then it carries on: retried after a cut, or already done
            outcome = bench.updater().run()
            consistent(bench)
            if outcome.kind != "later":
                break
            bench.clock.advance(bench.settings.retry_after + 1)
        assert outcome.kind in ("committed", "current", "rolled_back", "bad"), (point, outcome)
    return booted


def test_a_power_cut_at_any_change_of_an_update_leaves_a_device_that_boots_and_updates(
    memory_bench: Bench,
) -> None:
    bench = memory_bench
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    booted = cut_everywhere(bench, lambda: bench.updater().run())
    # every cut ends in the new version committed or the old one running (and 1.1.0 retried)
    assert bench.links() == ("1.1.0", "1.1.0")
    assert "committed" in booted and "rolled_back" in booted  # both halves of the commit


def test_a_power_cut_at_any_change_of_a_rollback_leaves_the_previous_version(
    memory_bench: Bench,
) -> None:
    bench = memory_bench
    bench.publish("1.1.0")
    bench.unit.behaviour["1.1.0"] = "crash"
    bench.offer("1.1.0")
    cut_everywhere(bench, lambda: bench.updater().run())
    assert bench.links() == ("1.0.0", "1.0.0")
    assert "1.1.0" in bench.updater().load().bad


def test_a_power_cut_at_any_change_of_the_boot_check_is_finished_by_the_next_boot(
    memory_bench: Bench,
) -> None:
    bench = memory_bench
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    updater = bench.updater()

    def cut(clock: Clock) -> None:
        if updater.state.probation is not None:
            raise PowerCut

    bench.clock.sleep_hooks.append(cut)
    with pytest.raises(PowerCut):
        updater.run()
    bench.clock.sleep_hooks.clear()
    bench.boot = "boot-2"
    cut_everywhere(bench, lambda: bench.updater().boot())
    assert bench.links() == ("1.1.0", "1.1.0")  # rolled back, retried an hour later


def test_what_a_rename_publishes_is_on_the_disk_before_it_and_the_rename_after_it(
    bench: Bench,
) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    with watching(Seam()) as seam:
        assert bench.updater().run().kind == "committed"
    done = seam.done
    renames = [i for i, (op, _) in enumerate(done) if op == "rename"]
    assert len(renames) > 10
    for i in renames:
        source, dest = (Path(p) for p in done[i][1])
        # the directory that holds the new name is synced right after the rename
        assert done[i + 1] == ("fsync_dir", (str(dest.parent),)), done[i : i + 2]
        before = done[:i]
        if source.is_dir() or dest.name.startswith(".gone-"):
            continue  # a release moved out of the way: a directory entry, nothing to write
        made = [op for op, paths in before if paths == (str(source),)]
        assert made and made[-1] in ("write", "symlink"), (dest, made)
        if dest.name == installer.MANIFEST:
            # a release is complete once its manifest is there: its files are synced first
            assert ("sync_tree", (str(dest.parent),)) in before


def test_free_space_is_checked_against_the_signed_sizes_before_downloading(bench: Bench) -> None:
    bench.publish("1.1.0", size=1_000_000, installed_size=20_000_000)
    target = bench.repo.targets().signed.targets[installer.bundle_name("1.1.0", "x86_64")]
    assert target.custom is not None
    assert (target.custom["unpacked_size"], target.custom["installed_size"]) == (
        1_000_000,
        20_000_000,
    )
    # the download, its unpacked wheels, the installed venv and the reserve: far above 3 x
    need = target.length + 1_000_000 + 20_000_000 + bench.settings.space_reserve
    bench.offer("1.1.0")
    outcome = bench.updater(disk_free=lambda p: need - 1).run()
    assert outcome.kind == "failed" and "as signed" in str(outcome.reason), outcome
    assert not any(path.startswith("targets/") for path, _ in bench.server.requests)
    outcome = bench.updater(disk_free=lambda p: need).run()
    assert outcome.kind == "committed", outcome


# --- offer, signed target and manifest agree; every failure is a status ----------------------


def sign_as(bench: Bench, bundle: Path, name: str, **custom: object) -> None:
    """Publish ``bundle`` under target ``name`` with ``custom``, signed with the real keys (what
    a stolen targets key or a broken build machine could do)."""
    from tuf.api.metadata import TargetFile

    from release import keys

    target = TargetFile.from_file(name, str(bundle), ["sha256"])
    target.unrecognized_fields["custom"] = {"arch": "x86_64", "min_updater": 1, **custom}
    shutil.copyfile(bundle, bench.repo.targets_dir / f"{target.hashes['sha256']}.{name}")
    targets = bench.repo.targets()
    targets.signed.targets[name] = target
    bench.repo._sign_targets(
        targets,
        keys.load(bench.keys_dir / "targets.key"),
        keys.load(bench.keys_dir / "online.key"),
    )


def refused_cleanly(bench: Bench, *words: str) -> str:
    outcome = bench.updater().run()
    assert outcome.kind == "failed", outcome
    reason = str(outcome.reason)
    for word in words:
        assert word in reason, reason
    status = bench.status()
    assert status["state"] == "failed" and status["reason"] == reason
    assert bench.links() == ("1.0.0", "1.0.0")
    assert installer.installed_versions(bench.root) == ["1.0.0"]
    assert bench.updater().load().probation is None
    assert not list((bench.root / "downloads").glob("*.part"))
    assert bench.unit.restarts_log == ["1.0.0"]
    return reason


def test_a_bundle_signed_under_a_newer_name_holding_an_older_manifest_is_refused(
    bench: Bench,
) -> None:
    older = tiny_bundle(bench.tmp / "old", "1.1.0")
    sign_as(bench, older, installer.bundle_name("1.2.0", "x86_64"), version="1.2.0")
    bench.offer("1.2.0")
    refused_cleanly(bench, "manifest", "'1.1.0'")
    assert any(path.startswith("targets/") for path, _ in bench.server.requests)  # after download


def test_a_signed_target_describing_another_version_is_refused_before_download(
    bench: Bench,
) -> None:
    older = tiny_bundle(bench.tmp / "old", "1.1.0")
    sign_as(bench, older, installer.bundle_name("1.2.0", "x86_64"), version="1.1.0")
    bench.offer("1.2.0")
    refused_cleanly(bench, "the signed target", "'1.1.0'")
    assert not any(path.startswith("targets/") for path, _ in bench.server.requests)


@pytest.mark.parametrize("where", ["target", "manifest"])
def test_a_signed_version_with_a_trailing_newline_is_a_clean_failure(
    bench: Bench, where: str
) -> None:
    name = installer.bundle_name("1.2.0", "x86_64")
    if where == "target":
        sign_as(bench, tiny_bundle(bench.tmp / "b", "1.2.0"), name, version="1.2.0\n")
        refused = ("'1.2.0\\n'",)
    else:
        good = tiny_bundle(bench.tmp / "b", "1.2.0")
        bundle = bench.tmp / "newline.tar"
        with tarfile.open(good) as src, tarfile.open(bundle, "w") as dst:
            for member in src:
                data = src.extractfile(member)
                assert data is not None
                content = data.read()
                if member.name == installer.MANIFEST:
                    content = content.replace(b'"version": "1.2.0"', b'"version": "1.2.0\\n"')
                    member.size = len(content)
                dst.addfile(member, io.BytesIO(content))
        sign_as(bench, bundle, name, version="1.2.0")
        refused = ("bad version", "'1.2.0\\n'")
    bench.offer("1.2.0")
    refused_cleanly(bench, *refused)


def test_an_install_that_raises_anything_ends_as_a_failed_status(bench: Bench) -> None:
    bench.publish("1.1.0")

    def broken_install(bundle: Path, root: Path) -> installer.Manifest:
        raise RuntimeError("the installer broke")

    bench.offer("1.1.0")
    outcome = bench.updater(install=broken_install).run()
    assert outcome.kind == "failed"
    assert "RuntimeError: the installer broke" in str(outcome.reason)
    assert bench.status()["state"] == "failed"
    assert bench.links() == ("1.0.0", "1.0.0")


def test_an_incomplete_release_is_never_put_on_probation(bench: Bench) -> None:
    bench.publish("1.1.0")

    def without_updater(bundle: Path, root: Path) -> installer.Manifest:
        manifest = stage_release(bundle, root)
        (installer.release_dir(root, manifest.version) / "bin" / "mumu-update").unlink()
        return manifest

    bench.offer("1.1.0")
    outcome = bench.updater(install=without_updater).run()
    assert outcome.kind == "failed" and "did not complete" in str(outcome.reason), outcome
    assert bench.updater().load().probation is None
    assert bench.links() == ("1.0.0", "1.0.0")
    assert bench.unit.restarts_log == ["1.0.0"]


def test_a_failure_of_the_service_manager_during_probation_rolls_back(bench: Bench) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    real_status = bench.unit.status
    calls = [0]

    def flaky(unit: str) -> UnitStatus:
        calls[0] += 1
        if calls[0] > 3:
            raise subprocess.CalledProcessError(1, ["systemctl", "show"])
        return real_status(unit)

    bench.unit.status = flaky  # type: ignore[method-assign]
    outcome = bench.updater().run()
    assert outcome.kind == "rolled_back" and "CalledProcessError" in str(outcome.reason)
    assert bench.status()["state"] == "rolled_back"
    assert bench.links() == ("1.0.0", "1.0.0")
    assert "1.1.0" not in bench.updater().load().bad  # not the release's fault: retried later


# --- every run ends in bounded time -----------------------------------------------------------


@pytest.fixture
def slow_bench(tmp_path: Path) -> Iterator[Bench]:
    """Transfers must keep 100 KB/s over each half second, and end within 3 s in all."""
    yield from make_bench(tmp_path, min_rate=100_000.0, rate_window=0.5, fetch_deadline=3.0)


def timed_run(bench: Bench) -> tuple[Outcome, float]:
    """A run on the real monotonic clock (the transfers' pace is real time)."""
    started = time.monotonic()
    outcome = bench.updater(clock=time.monotonic).run()
    return outcome, time.monotonic() - started


def test_a_trickling_bundle_is_given_up_and_resumed_at_the_next_run(slow_bench: Bench) -> None:
    bench = slow_bench
    bench.publish("1.1.0", size=1_000_000)
    target = bench.target_path("1.1.0")
    bench.server.trickle[target] = (2_000, 0.05)  # ~40 KB/s: 25 s for the bundle
    bench.offer("1.1.0")
    outcome, took = timed_run(bench)
    assert outcome.kind == "retry", outcome
    assert "below the minimum" in str(outcome.reason)
    assert took < 10
    status = bench.status()
    assert status["state"] == "waiting" and "resumes" in str(status["reason"])
    part = bench.root / "downloads" / f"{Path(target).name.split('.', 1)[1]}.part"
    kept = part.stat().st_size
    assert 0 < kept < 1_000_000
    del bench.server.trickle[target]
    assert bench.updater().run().kind == "committed"
    ranges = [rng for path, rng in bench.server.requests if path == target]
    assert ranges == [None, f"bytes={kept}-"]


def test_trickling_metadata_is_given_up_and_the_run_ends_waiting(slow_bench: Bench) -> None:
    bench = slow_bench
    bench.publish("1.1.0")
    bench.server.trickle["metadata/timestamp.json"] = (20, 0.05)  # 400 bytes/s
    bench.offer("1.1.0")
    outcome, took = timed_run(bench)
    assert outcome.kind == "retry" and "unreachable" in str(outcome.reason), outcome
    assert took < 10
    assert bench.status()["state"] == "waiting"
    assert bench.links() == ("1.0.0", "1.0.0")
    del bench.server.trickle["metadata/timestamp.json"]
    assert bench.updater().run().kind == "committed"


def test_a_run_s_transfers_end_by_its_deadline_however_fast_they_trickle(
    slow_bench: Bench,
) -> None:
    bench = slow_bench
    bench.publish("1.1.0", size=8_000_000)
    target = bench.target_path("1.1.0")
    bench.server.trickle[target] = (40_000, 0.02)  # ~2 MB/s: fast enough, but 4 s in all
    bench.offer("1.1.0")
    outcome, took = timed_run(bench)
    assert outcome.kind == "retry" and "used up" in str(outcome.reason), outcome
    assert took < 10
    part = bench.root / "downloads" / f"{Path(target).name.split('.', 1)[1]}.part"
    assert 0 < part.stat().st_size < 8_000_000
    del bench.server.trickle[target]
    assert bench.updater().run().kind == "committed"


def test_a_run_waiting_for_viewers_to_leave_ends_and_the_next_one_switches(
    bench: Bench,
) -> None:
    bench.publish("1.1.0")
    bench.offer("1.1.0")
    bench.viewers(1)
    started = bench.clock.monotonic()
    outcome = bench.updater().run()
    assert outcome.kind == "later"
    waited = bench.clock.monotonic() - started
    assert bench.settings.quiet_wait <= waited <= bench.settings.quiet_wait + 10
    assert bench.status()["state"] == "waiting"
    assert bench.links() == ("1.0.0", "1.0.0")
    bench.viewers(0)
    assert bench.updater().run().kind == "committed"
