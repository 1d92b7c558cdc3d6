"""The updater's state machine (root, in ``mumu-update``; the agent never runs this).

::

    idle --offer--> verify (TUF) --> download (resumable) --> install beside current
         --no viewer, in window--> switch (probation) --healthy + quiet--> commit --> idle
                                          |
                                          +--crash loop / never connects / reboots--> roll back

* **Offer.**  From the cloud, through the agent (``update-offer.json``).  Refused: a version
  older than the running one (rollback attack or a stale rollout), one rolled back here before.
* **Verify.**  The repository's metadata through ``tuf.ngclient`` (signatures, thresholds,
  versions, expiry, consistency), then the bundle's length and sha256 against the signed ones
  before it is unpacked.  Free space is checked first (download + unpacked + installed, as
  signed, + a reserve); the offer, the signed target and the manifest must agree.
* **Install.**  ``releases/<version>`` is built from the bundle's wheels beside the running one;
  the agent does not notice.
* **Switch.**  Only while no viewer watches (and inside the owner's window, if set).  The
  probation record is saved *before* ``current`` is renamed, so a power cut at any point is
  seen by :meth:`Updater.boot` on the next start.
* **Probation.**  Healthy = systemd says the agent is ``active``, i.e. it sent READY=1 after the
  cloud's ``hello_ack``.  Rolled back when it restarts ``crash_limit`` times, or is not healthy
  within ``health_timeout`` *while the cloud answers this device* (a network outage only
  extends the wait), or the device boots ``max_probation_boots`` times in probation (the boot
  counter exists only during probation: power cuts under a committed version never count).
  Committed after ``probation`` seconds healthy without a restart.
* **Commit / roll back.**  Each is one decision saved in the probation record before the first
  link moves; :meth:`Updater.boot` and :meth:`Updater.run` finish a saved decision after a
  power cut.  The release ``current`` or ``committed`` points at is never deleted.
* **Keep.**  current, previous and (while waiting to switch) pending; older releases go.
* **Bounded.**  Transfers keep a minimum rate and one deadline per run; waiting for quiet ends
  after ``quiet_wait``, waiting for network time before the metadata's expiry is checked after
  ``clock_wait``; any exception ends the run as a status with its reason.

Every transition is persisted (``state.json``) and reported (``status.json`` -> agent -> cloud).
Time comes from injectable clocks: ``clock`` (monotonic, within one boot), ``wall`` (the
window, retry times) and the TUF reference time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
from packaging.version import InvalidVersion, Version

from device.update import fetch, files, timesync
from device.update import install as installer
from device.update.files import Offer, Status
from device.update.services import ServiceManager
from device.update.settings import UpdaterSettings
from device.update.verify import RepositoryUnreachable, SignedRepository, VerifyError
from protocol.messages import UpdateState

log = logging.getLogger(__name__)

HISTORY = 30


class Probation(msgspec.Struct):
    version: str
    previous: str
    rollout_id: int
    boot_id: str
    #: Monotonic seconds (valid within ``boot_id``) and the wall clock, at the switch.
    switched_at: float
    switched_wall: float
    deadline: float
    restarts_base: int = 0
    healthy_at: float | None = None
    restarts_at_healthy: int = 0
    boots: int = 0
    #: The decision, saved before its first change to the disk: ``commit`` or ``roll_back``
    #: (with why, and whether the power was cut); whoever runs next (boot, run) finishes it.
    decided: str | None = None
    why: str = ""
    interrupted: bool = False


class State(msgspec.Struct):
    seq: int = 0
    probation: Probation | None = None
    #: Interrupted attempts (power loss during probation) per version.
    attempts: dict[str, int] = msgspec.field(default_factory=dict)
    #: When an interrupted version may be tried again (wall clock).
    retry_at: dict[str, float] = msgspec.field(default_factory=dict)
    #: Versions that failed here, with why: never tried again automatically.
    bad: dict[str, str] = msgspec.field(default_factory=dict)
    history: list[Status] = msgspec.field(default_factory=list)


def read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def newer(a: str, b: str | None) -> bool:
    """Whether version ``a`` is newer than ``b`` (PEP 440; anything beats nothing)."""
    if b is None:
        return True
    try:
        return Version(a) > Version(b)
    except InvalidVersion:
        return False


def in_window(window: str | None, wall: float) -> bool:
    """``HH:MM-HH:MM`` in local time (may cross midnight); ``None`` is always."""
    if window is None:
        return True
    start, end = (int(t[:2]) * 60 + int(t[3:]) for t in window.split("-"))
    tm = time.localtime(wall)
    now = tm.tm_hour * 60 + tm.tm_min
    if start <= end:
        return start <= now < end
    return now >= start or now < end


@dataclass
class Outcome:
    """What one :meth:`Updater.run` ended with (for the CLI and the tests)."""

    kind: str
    version: str | None = None
    reason: str | None = None


class Updater:
    def __init__(
        self,
        settings: UpdaterSettings,
        *,
        services: ServiceManager,
        repo_url: str | None,
        cloud_url: str | None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        boot_id: Callable[[], str] = read_boot_id,
        cloud_reachable: Callable[[], bool] | None = None,
        http: httpx.Client | None = None,
        install: Callable[[Path, Path], installer.Manifest] | None = None,
        tuf_now: Callable[[], Any] | None = None,
        arch: str | None = None,
        disk_free: Callable[[Path], int] | None = None,
        clock_synchronized: Callable[[], bool] = timesync.synchronized,
    ) -> None:
        self.settings = settings
        self.services = services
        self.repo_url = repo_url
        self.cloud_url = cloud_url
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.boot_id = boot_id
        self.cloud_reachable = cloud_reachable or self._probe_cloud
        self.http = http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
        self.install = install or self._install
        self.tuf_now = tuf_now
        self.arch = arch or installer.machine_arch()
        self.disk_free = disk_free or (lambda p: shutil.disk_usage(p).free)
        self.clock_synchronized = clock_synchronized
        self.root = Path(settings.root)
        self.state_dir = Path(settings.state_dir)
        self.downloads = self.root / "downloads"
        self.state = State()

    # --- files ---------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def status_path(self) -> Path:
        return self.state_dir / files.STATUS_FILE

    @property
    def offer_path(self) -> Path:
        return Path(self.settings.agent_state_dir) / files.OFFER_FILE

    @property
    def viewers_path(self) -> Path:
        return Path(self.settings.agent_runtime_dir) / files.VIEWERS_FILE

    def load(self) -> State:
        self.state = files.read_struct(self.state_path, State) or State()
        return self.state

    def save(self) -> None:
        files.write_atomic(self.state_path, msgspec.json.encode(self.state), mode=0o644)

    @contextlib.contextmanager
    def locked(self) -> Iterator[bool]:
        """One updater at a time (the boot guard, the service, a person at the console)."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        with open(self.state_dir / "lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    def current(self) -> str | None:
        return installer.link_target(self.root, installer.CURRENT)

    def committed(self) -> str | None:
        return installer.link_target(self.root, installer.COMMITTED) or self.current()

    def say(
        self,
        state: UpdateState,
        version: str,
        *,
        rollout_id: int | None = None,
        reason: str | None = None,
        progress: float | None = None,
        force: bool = False,
    ) -> None:
        """Report a status (once: the same words twice are not news, unless ``force``: the
        save that goes with it carries a decision).  The state is saved with it, then the
        status is published."""
        last = self.state.history[-1] if self.state.history else None
        said = (state, version, reason, progress)
        if (
            not force
            and last is not None
            and (last.state, last.version, last.reason, last.progress) == said
        ):
            return
        self.state.seq += 1
        status = Status(
            seq=self.state.seq,
            state=state,
            version=version,
            rollout_id=rollout_id,
            reason=reason[:1000] if reason else None,
            progress=progress,
            current=self.current(),
            at=self.wall(),
        )
        self.state.history = [*self.state.history, status][-HISTORY:]
        self.save()
        files.write_atomic(self.status_path, msgspec.json.encode(status), mode=0o644)
        log.info(
            "update %s %s%s%s",
            version,
            state,
            f" {progress:.0%}" if progress is not None else "",
            f": {reason}" if reason else "",
        )

    # --- the boot guard ------------------------------------------------------------------------

    def boot(self) -> Outcome:
        """Before the agent starts: finish a decision a power cut interrupted; count a boot
        during probation and roll back when it is one too many; remove interrupted installs;
        repair ``current`` if it is not what the state says; report the last status again if
        the cut came before it was published."""
        self.load()
        self._republish()
        installer.remove_incomplete(self.root)
        probation = self.state.probation
        if probation is None:
            committed = installer.link_target(self.root, installer.COMMITTED)
            if committed is not None and self.current() != committed:
                installer.point(self.root, installer.CURRENT, committed)
                return Outcome("repaired", committed)
            return Outcome("idle", self.current())
        if probation.decided is None and self._committed_link() == probation.version:
            probation.decided = "commit"  # the link moved: the commit was decided
        if probation.decided is not None:
            return self._finish(restart=False)
        if probation.boot_id == self.boot_id():
            return Outcome("probation", probation.version)
        probation.boots += 1
        if probation.boots >= self.settings.max_probation_boots:
            reason = (
                "the device restarted while the new version was on probation (power loss or a "
                "system crash); the previous version runs again and the update is retried later"
            )
            return self._roll_back(reason, interrupted=True, restart=False)
        now = self.clock()
        probation.boot_id = self.boot_id()
        probation.switched_at = now
        probation.deadline = now + self.settings.health_timeout
        probation.restarts_base = 0
        probation.healthy_at = None
        self.save()
        return Outcome("probation", probation.version)

    def _committed_link(self) -> str | None:
        return installer.link_target(self.root, installer.COMMITTED)

    def _republish(self) -> None:
        """``status.json`` says the last status of the history (a cut may have come between
        saving the state and publishing the status)."""
        if not self.state.history:
            return
        last = self.state.history[-1]
        published = files.read_struct(self.status_path, Status)
        if published is None or published.seq != last.seq:
            files.write_atomic(self.status_path, msgspec.json.encode(last), mode=0o644)

    # --- one run: an offer to its end ----------------------------------------------------------

    def run(self) -> Outcome:
        """One run; whatever goes wrong ends as a status with its reason, not a traceback."""
        self.load()
        self._offer: Offer | None = None
        try:
            return self._run()
        except Exception as exc:
            return self._crashed(exc)

    def _crashed(self, exc: Exception) -> Outcome:
        log.exception("the updater failed")
        reason = f"the updater failed: {type(exc).__name__}: {exc}"
        probation = self.state.probation
        version = probation.version if probation is not None else None
        rollout_id = probation.rollout_id if probation is not None else None
        if version is None and self._offer is not None:
            version, rollout_id = self._offer.version, self._offer.rollout_id
        try:
            if probation is not None and probation.decided is None:
                return self._roll_back(reason, interrupted=True)
            installer.remove_incomplete(self.root)
            if version is not None:
                self.say("failed", version, rollout_id=rollout_id, reason=reason)
        except Exception:
            log.exception("and reporting it failed too")
        return Outcome("failed", version, reason)

    def _run(self) -> Outcome:
        if self.state.probation is not None:
            if self.state.probation.decided is not None:
                return self._finish()
            return self._watch_probation()
        offer = files.read_struct(self.offer_path, Offer)
        if offer is None:
            return Outcome("idle", self.current())
        self._offer = offer
        refusal = self._refusal(offer)
        if refusal is not None:
            return refusal
        try:
            self._prepare(offer)
        except RepositoryUnreachable as exc:
            reason = f"{exc}; retrying later"
            self.say("waiting", offer.version, rollout_id=offer.rollout_id, reason=reason)
            return Outcome("retry", offer.version, reason)
        except fetch.TransientError as exc:
            reason = f"download interrupted ({exc}); it resumes where it stopped"
            self.say("waiting", offer.version, rollout_id=offer.rollout_id, reason=reason)
            return Outcome("retry", offer.version, reason)
        except (
            VerifyError,
            fetch.RefusedError,
            fetch.DiskFullError,
            installer.InstallError,
            NoSpace,
        ) as exc:
            installer.remove_incomplete(self.root)
            self.say("failed", offer.version, rollout_id=offer.rollout_id, reason=str(exc))
            return Outcome("failed", offer.version, str(exc))
        except OSError as exc:  # a disk or permission problem of this device, in words
            log.exception("preparing %s failed", offer.version)
            installer.remove_incomplete(self.root)
            reason = f"this device could not store the update: {exc.strerror or exc}"
            self.say("failed", offer.version, rollout_id=offer.rollout_id, reason=reason)
            return Outcome("failed", offer.version, reason)
        quiet = self._wait_for_quiet(offer)
        if quiet != "quiet":
            return Outcome(quiet, offer.version)
        self._switch(offer)
        return self._watch_probation()

    def _wait_for_clock(self, offer: Offer) -> bool:
        """Wait (bounded by ``clock_wait``) for the clock to be set from the network: TUF
        checks expiry against it, and a clock restored from the last shutdown may be days
        behind (a frozen repository would look fresh that much longer)."""
        if self.clock_synchronized():
            return True
        limit = self.settings.clock_wait
        if limit <= 0:
            return False
        reason = (
            f"waiting up to {limit:.0f} s for the clock to be set from the network (NTP) before "
            "checking the signed metadata's expiry"
        )
        self.say("waiting", offer.version, rollout_id=offer.rollout_id, reason=reason)
        synced = timesync.wait_until_synchronized(
            self.clock_synchronized, clock=self.clock, sleep=self.sleep, limit=limit
        )
        if not synced:
            log.warning(
                "the clock is still not set from the network after %.0f s: checking the "
                "metadata's expiry against the clock as it is",
                limit,
            )
        return synced

    def _refusal(self, offer: Offer) -> Outcome | None:
        current = self.current()
        if offer.version == current:
            return Outcome("current", current)
        if not newer(offer.version, current):
            reason = (
                f"refused: {offer.version} is older than the running {current} (a downgrade is "
                "done by publishing a newer release)"
            )
            self.say("failed", offer.version, rollout_id=offer.rollout_id, reason=reason)
            return Outcome("failed", offer.version, reason)
        if offer.version in self.state.bad:
            last = self.state.history[-1] if self.state.history else None
            if (
                last is not None
                and last.version == offer.version
                and last.state
                in (
                    "rolled_back",
                    "failed",
                )
            ):
                return Outcome("bad", offer.version, self.state.bad[offer.version])
            why = self.state.bad[offer.version]
            reason = f"not retried: it was rolled back here before ({why})"
            self.say("failed", offer.version, rollout_id=offer.rollout_id, reason=reason)
            return Outcome("failed", offer.version, reason)
        retry_at = self.state.retry_at.get(offer.version, 0.0)
        if retry_at > self.wall():
            return Outcome("later", offer.version)
        return None

    def _prepare(self, offer: Offer) -> None:
        """Verify, download and install ``offer.version`` beside the running release.  The
        offer, the signed target and the bundle's manifest must agree (version, architecture,
        sizes) before the download and again before the install."""
        version = offer.version
        if installer.complete(self.root, version):
            return
        if self.repo_url is None:
            raise RepositoryUnreachable("no update repository is configured")
        pace = fetch.Pace(
            self.clock,
            min_rate=self.settings.min_rate,
            window=self.settings.rate_window,
            deadline=self.clock() + self.settings.fetch_deadline,
        )
        self._wait_for_clock(offer)
        repo = SignedRepository(
            self.repo_url,
            self.state_dir / "tuf",
            Path(self.settings.trust_root),
            now=self.tuf_now,
            fetcher=fetch.PacedFetcher(self.http, pace),
        )
        name = installer.bundle_name(version, self.arch)
        info, url = repo.target(name)
        signed = Signed.of(name, info.custom or {}, info.length)
        signed.agrees_with(version, self.arch)
        if signed.min_updater > installer.UPDATER_VERSION:
            raise VerifyError(
                f"{version} needs updater {signed.min_updater}, this is "
                f"{installer.UPDATER_VERSION}: install an intermediate release first"
            )
        self.downloads.mkdir(parents=True, exist_ok=True)
        part = self.downloads / f"{name}.part"
        self._make_room(signed, part, keep={version})
        step = max(1, info.length // 20)
        reported = [0]

        def progress(done: int) -> None:
            if done - reported[0] >= step or done == info.length:
                reported[0] = done
                self.say(
                    "downloading",
                    version,
                    rollout_id=offer.rollout_id,
                    progress=round(done / info.length, 2),
                )

        self.say("downloading", version, rollout_id=offer.rollout_id, progress=0.0)
        fetch.download(self.http, url, part, info.length, progress, pace)
        try:
            SignedRepository.check_file(info, part)
            manifest = installer.read_manifest(part)
            signed.agrees_with(manifest.version, manifest.arch, manifest)
            installed = self.install(part, self.root)
        except (VerifyError, installer.InstallError):
            installer.unlink(part)
            raise
        installer.unlink(part)
        if installed.version != version or not installer.complete(self.root, version):
            raise installer.InstallError(f"the install of {version} did not complete")
        self.say("installed", version, rollout_id=offer.rollout_id)

    def _install(self, bundle: Path, root: Path) -> installer.Manifest:
        return installer.install(bundle, root, python=self.settings.python, arch=self.arch)

    def _make_room(self, signed: Signed, part: Path, keep: set[str]) -> None:
        """Free space for the rest of the download, the unpacked wheels, the installed venv
        and a reserve, from the signed sizes (``space_factor`` x the bundle for a release
        signed without them); interrupted installs go first, then releases other than current
        and committed."""
        installer.remove_incomplete(self.root)
        have = part.stat().st_size if part.exists() else 0
        need, how = signed.space_needed(have, self.settings)
        if self.disk_free(self.root) >= need:
            return
        protected = {self.current(), self.committed(), *keep}
        for version in installer.installed_versions(self.root):
            if version not in protected:
                installer.delete_release(self.root, version)
        for stale in self.downloads.glob("*.part"):
            if stale != part:
                installer.unlink(stale)
        free = self.disk_free(self.root)
        if free < need:
            raise NoSpace(
                f"not enough free space: {need / 1e6:.0f} MB needed ({how}), "
                f"{free / 1e6:.0f} MB free"
            )

    def _wait_for_quiet(self, offer: Offer) -> str:
        """Wait until nobody watches and the window is open (``quiet``); ``superseded`` if the
        offer changed; ``later`` after ``quiet_wait`` (this run ends, the next one waits on:
        a run never lasts for ever)."""
        until = self.clock() + self.settings.quiet_wait
        while True:
            viewers = files.read_viewers(self.viewers_path)
            open_now = in_window(offer.window, self.wall())
            if viewers == 0 and open_now:
                return "quiet"
            if self.clock() >= until:
                return "later"
            if viewers:
                reason = (
                    f"installed; waiting until nobody is watching ({viewers} viewer"
                    f"{'s' if viewers != 1 else ''} now)"
                )
            else:
                reason = f"installed; waiting for the owner's update window {offer.window}"
            self.say("waiting", offer.version, rollout_id=offer.rollout_id, reason=reason)
            self.sleep(self.settings.poll * 5)
            latest = files.read_struct(self.offer_path, Offer)
            if latest is None or latest.version != offer.version:
                return "superseded"
            offer = latest

    def _switch(self, offer: Offer) -> None:
        previous = self.current()
        if previous is None:
            raise installer.InstallError("no current release to update from")
        if not installer.complete(self.root, offer.version):
            raise installer.InstallError(
                f"release {offer.version} is not installed completely: not switched to"
            )
        now = self.clock()
        self.state.probation = Probation(
            version=offer.version,
            previous=previous,
            rollout_id=offer.rollout_id,
            boot_id=self.boot_id(),
            switched_at=now,
            switched_wall=self.wall(),
            deadline=now + self.settings.health_timeout,
        )
        self.save()  # before the rename: a power cut from here on is seen by boot()
        installer.point(self.root, installer.CURRENT, offer.version)
        self.services.restart(self.settings.agent_unit)
        self.state.probation.restarts_base = self.services.status(self.settings.agent_unit).restarts
        self.save()
        log.info("switched to %s (previous %s); probation starts", offer.version, previous)

    def _watch_probation(self) -> Outcome:
        unit = self.settings.agent_unit
        last_exit = ""
        while True:
            probation = self.state.probation
            assert probation is not None
            status = self.services.status(unit)
            if status.exit_code and (status.exit_code != "exited" or status.exit_status != 0):
                last_exit = f"{status.exit_code} {status.exit_status}"
            restarts = status.restarts - probation.restarts_base
            if restarts >= self.settings.crash_limit or status.active_state == "failed":
                last = self.services.last_errors(unit, probation.switched_wall)
                reason = (
                    f"{probation.version} crashed {restarts} time{'s' if restarts != 1 else ''} "
                    f"after the switch (last exit: {last_exit or 'unknown'})"
                    + (f"; last log: {' | '.join(last)}" if last else "")
                )
                return self._roll_back(reason)
            now = self.clock()
            if probation.healthy_at is None:
                if status.active_state == "active":
                    probation.healthy_at = now
                    probation.restarts_at_healthy = restarts
                    self.save()
                    self.say("healthy", probation.version, rollout_id=probation.rollout_id)
                elif now >= probation.deadline:
                    if self.cloud_reachable():
                        reason = (
                            f"{probation.version} did not connect to the cloud within "
                            f"{self.settings.health_timeout:g} s of starting, while the cloud "
                            "answered this device"
                        )
                        return self._roll_back(reason)
                    probation.deadline = now + self.settings.health_timeout
                    self.save()
                    self.say(
                        "waiting",
                        probation.version,
                        rollout_id=probation.rollout_id,
                        reason="the cloud is unreachable from this device: the new version's "
                        "health check waits for the network (an outage is not its fault)",
                    )
            elif restarts > probation.restarts_at_healthy or status.active_state != "active":
                probation.healthy_at = None
                probation.deadline = now + self.settings.health_timeout
                self.save()
                log.warning("%s restarted on probation; probation starts over", probation.version)
            elif now - probation.healthy_at >= self.settings.probation:
                return self._commit()
            self.sleep(self.settings.poll)

    def _commit(self) -> Outcome:
        probation = self.state.probation
        assert probation is not None
        probation.decided = "commit"
        self.save()  # the decision, before the link moves: boot() finishes it after a cut
        return self._finish()

    def _roll_back(
        self, reason: str, *, interrupted: bool = False, restart: bool = True
    ) -> Outcome:
        probation = self.state.probation
        assert probation is not None
        probation.decided = "roll_back"
        probation.why = reason
        probation.interrupted = interrupted
        self.save()  # the decision, before the link moves: boot() finishes it after a cut
        return self._finish(restart=restart)

    def _finish(self, *, restart: bool = True) -> Outcome:
        """Carry out the decision saved in the probation record (again, if a cut interrupted
        it: every step can be repeated).  The record goes in the same save as the status that
        reports the outcome; only then are releases deleted."""
        probation = self.state.probation
        assert probation is not None and probation.decided is not None
        version = probation.version
        if probation.decided == "commit":
            installer.point(self.root, installer.CURRENT, version)
            installer.point(self.root, installer.COMMITTED, version)
            self.state.probation = None
            self.state.attempts.pop(version, None)
            self.state.retry_at.pop(version, None)
            self.say("committed", version, rollout_id=probation.rollout_id, force=True)
            for old in installer.installed_versions(self.root):
                if old not in (version, probation.previous):
                    installer.delete_release(self.root, old)
            return Outcome("committed", version)
        reason = probation.why
        installer.point(self.root, installer.CURRENT, probation.previous)
        installer.point(self.root, installer.COMMITTED, probation.previous)
        self.state.probation = None
        if probation.interrupted:
            attempts = self.state.attempts.get(version, 0) + 1
            self.state.attempts[version] = attempts
            if attempts >= self.settings.max_attempts:
                self.state.bad[version] = f"{reason} ({attempts} times)"
            else:
                self.state.retry_at[version] = self.wall() + self.settings.retry_after
        else:
            self.state.bad[version] = reason
        self.say("rolled_back", version, rollout_id=probation.rollout_id, reason=reason, force=True)
        if restart:
            self.services.restart(self.settings.agent_unit)
        installer.delete_release(self.root, version)
        log.warning("rolled back from %s to %s: %s", version, probation.previous, reason)
        return Outcome("rolled_back", version, reason)

    def _probe_cloud(self) -> bool:
        if self.cloud_url is None:
            return False
        try:
            response = self.http.get(f"{self.cloud_url.rstrip('/')}/healthz", timeout=10.0)
        except httpx.HTTPError:
            return False
        return response.status_code < 500


class NoSpace(Exception):
    """Not enough free disk for the bundle (one sentence, with the numbers)."""


@dataclass(frozen=True)
class Signed:
    """What the signed target says of a bundle (its ``custom`` fields and length)."""

    name: str
    version: str | None
    arch: str | None
    length: int
    min_updater: int
    unpacked_size: int | None
    installed_size: int | None

    @classmethod
    def of(cls, name: str, custom: dict[str, Any], length: int) -> Signed:
        def size(key: str) -> int | None:
            value = custom.get(key)
            return value if isinstance(value, int) and value >= 0 else None

        version, arch, min_updater = (
            custom.get("version"),
            custom.get("arch"),
            custom.get("min_updater", 1),
        )
        return cls(
            name=name,
            version=version if isinstance(version, str) else None,
            arch=arch if isinstance(arch, str) else None,
            length=length,
            min_updater=min_updater if isinstance(min_updater, int) else 1,
            unpacked_size=size("unpacked_size"),
            installed_size=size("installed_size"),
        )

    def agrees_with(
        self, version: str, arch: str, manifest: installer.Manifest | None = None
    ) -> None:
        """Raise :class:`VerifyError` unless the signed target describes ``version`` for
        ``arch`` (and, given the bundle's manifest, the sizes it was signed with)."""
        what = "the bundle's manifest" if manifest is not None else "the offer"
        if (self.version, self.arch) != (version, arch):
            raise VerifyError(
                f"refused: the signed target {self.name!r} describes version {self.version!r} "
                f"for {self.arch!r}, {what} says {version!r} for {arch!r}"
            )
        if manifest is not None and (manifest.unpacked_size, manifest.installed_size) != (
            self.unpacked_size,
            self.installed_size,
        ):
            raise VerifyError(
                f"refused: the bundle's manifest gives other sizes than its signed target "
                f"({manifest.unpacked_size}/{manifest.installed_size} bytes unpacked/installed, "
                f"signed {self.unpacked_size}/{self.installed_size})"
            )

    def space_needed(self, have: int, settings: UpdaterSettings) -> tuple[int, str]:
        """Bytes of free disk this bundle needs with ``have`` bytes of it downloaded, and how
        that was reckoned (for the refusal's words)."""
        if self.unpacked_size is None or self.installed_size is None:
            need = int(settings.space_factor * self.length) - have
            return need, f"{settings.space_factor:g} x the {self.length / 1e6:.0f} MB bundle"
        reserve = int(settings.space_reserve)
        need = self.length - have + self.unpacked_size + self.installed_size + reserve
        return need, (
            f"the {self.length / 1e6:.0f} MB download, {self.unpacked_size / 1e6:.0f} MB "
            f"unpacked, {self.installed_size / 1e6:.0f} MB installed and a "
            f"{reserve / 1e6:.0f} MB reserve, as signed"
        )
