"""What the updater's in-process tests share: a signed repository on a real HTTP server (with
byte ranges, and ways to misbehave), small bundles, a clock, and a service manager that plays
systemd for the agent unit."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from device.update import install as installer
from device.update.files import Offer, write_offer, write_viewers
from device.update.machine import Updater
from device.update.services import UnitStatus
from device.update.settings import UpdaterSettings
from release import keys
from release.repo import Expiry, UpdateRepository

ARCH = "x86_64"


def tiny_bundle(
    out: Path,
    version: str,
    *,
    arch: str = ARCH,
    size: int = 64 * 1024,
    installed_size: int | None = None,
) -> Path:
    """A bundle with a manifest and one wheel of ``size`` bytes (not installable by pip: the
    state-machine tests install with :func:`stage_release`); with ``installed_size``, the
    manifest gives its sizes (as ``mumu-release build`` does) and the signed target too."""
    payload = (version.encode() * (size // len(version) + 1))[:size]
    import hashlib

    manifest = installer.Manifest(
        version=version,
        arch=arch,
        python_abi="cp311",
        min_updater=1,
        requirement=f"mumu-camera[device]=={version}",
        wheels=[
            installer.Wheel(
                "pip-0-py3-none-any.whl",
                hashlib.sha256(payload).hexdigest(),
                length=size if installed_size is not None else None,
            )
        ],
        unpacked_size=size if installed_size is not None else None,
        installed_size=installed_size,
    )
    out.mkdir(parents=True, exist_ok=True)
    bundle = out / installer.bundle_name(version, arch)
    with tarfile.open(bundle, "w") as tar:
        for name, data in (
            (installer.MANIFEST, manifest.to_json().encode()),
            ("wheels/pip-0-py3-none-any.whl", payload),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return bundle


def unread_body_size(hops: int) -> int:
    """Bytes of a response that a client which does not read cannot have taken in full over
    ``hops`` TCP connections on loopback: a receive buffer grows only as its application reads,
    so each hop holds at most about its initial receive buffer and the largest send buffer
    (``net.ipv4.tcp_rmem``/``tcp_wmem``); twice that per hop, and 8 MiB more, at least 32 MiB."""

    def sysctl(name: str, field: int) -> int:
        try:
            return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[field])
        except (OSError, ValueError, IndexError):
            return 32 * 1024 * 1024

    per_hop = sysctl("tcp_rmem", 1) + sysctl("tcp_wmem", 2)
    return max(32 * 1024 * 1024, 2 * hops * per_hop + 8 * 1024 * 1024)


def stage_release(bundle: Path, root: Path) -> installer.Manifest:
    """Stands in for the pip install (tested on its own with a real bundle): a complete-looking
    release directory with the bundle's manifest."""
    manifest = installer.read_manifest(bundle)
    target = installer.release_dir(root, manifest.version)
    (target / "bin").mkdir(parents=True, exist_ok=True)
    for program in ("mumu-agent", "mumu-update"):
        (target / "bin" / program).write_text("#!/bin/sh\n")
    installer.publish_release(target, manifest)
    return manifest


class PowerCut(BaseException):
    """The power goes: not an error the updater may catch (it is a ``BaseException``)."""


class Clock:
    """Monotonic and wall time that move only when the updater sleeps (or a test says)."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall_start = datetime.now(UTC).timestamp()
        self.sleep_hooks: list[Callable[[Clock], None]] = []

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_start + self.mono - 1000.0

    def sleep(self, seconds: float) -> None:
        self.mono += seconds
        for hook in list(self.sleep_hooks):
            hook(self)

    def advance(self, seconds: float) -> None:
        self.mono += seconds


@dataclass
class FakeAgentUnit:
    """systemd's view of ``mumu-agent.service``, driven by the version ``current`` points at.

    ``behaviour[version]``: ``"good"`` (READY ``ready_after`` s after a start), ``"crash"``
    (exits at start; systemd restarts it every ``restart_sec``), ``"silent"`` (starts, never
    READY).  Versions not named are good."""

    root: Path
    clock: Clock
    behaviour: dict[str, str] = field(default_factory=dict)
    ready_after: float = 3.0
    restart_sec: float = 2.0
    started_at: float = 0.0
    running: str | None = None
    restarts_before: int = 0
    restarts_log: list[str] = field(default_factory=list)

    def restart(self, unit: str) -> None:
        self.running = installer.link_target(self.root, installer.CURRENT)
        self.started_at = self.clock.monotonic()
        self.restarts_before = 0  # a restart by hand resets NRestarts
        self.restarts_log.append(str(self.running))

    def crash_once(self) -> None:
        """The running agent exits once (systemd restarts it)."""
        self.restarts_before += 1
        self.started_at = self.clock.monotonic() + self.restart_sec

    def status(self, unit: str) -> UnitStatus:
        kind = self.behaviour.get(self.running or "", "good")
        elapsed = self.clock.monotonic() - self.started_at
        if kind == "crash":
            restarts = self.restarts_before + max(0, int(elapsed // self.restart_sec))
            return UnitStatus("activating", restarts, 0, "exited", 1)
        if kind == "silent" or elapsed < self.ready_after:
            return UnitStatus("activating", self.restarts_before, 4242)
        return UnitStatus("active", self.restarts_before, 4242)

    def last_errors(self, unit: str, since_wall: float, lines: int = 3) -> list[str]:
        return ["RuntimeError: boom"] if self.behaviour.get(self.running or "") == "crash" else []


class RepoHandler(BaseHTTPRequestHandler):
    server: RepoServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        path = self.path.split("?", 1)[0].lstrip("/")
        srv.requests.append((path, self.headers.get("Range")))
        data = srv.overrides.get(path)
        if data is None:
            file = srv.directory / path
            if not file.is_file():
                self.send_error(404)
                return
            data = file.read_bytes()
        start = 0
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not srv.ignore_range:
            start = int(rng[6:].split("-", 1)[0])
            if start >= len(data):
                self.send_error(416)
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut_after.pop(path, None) if path.startswith("targets/") else None
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        trickle = srv.trickle.get(path)
        # A client may hang up mid-body (the updater stops reading a target longer than its
        # signed length, or one too slow): that is the client's right, not a fault of this server.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            if trickle is None:
                self.wfile.write(body)
                return
            piece, every = trickle
            for start in range(0, len(body), piece):
                self.wfile.write(body[start : start + piece])
                self.wfile.flush()
                time.sleep(every)


class RepoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), RepoHandler)
        self.directory = directory
        self.requests: list[tuple[str, str | None]] = []
        #: path -> bytes served instead of the file (tampering, replays)
        self.overrides: dict[str, bytes] = {}
        #: path -> bytes after which the next transfer of it breaks off
        self.cut_after: dict[str, int] = {}
        self.ignore_range = False
        #: path -> (bytes, seconds): the body is sent that many bytes at a time, that far apart
        self.trickle: dict[str, tuple[int, float]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


def serve(directory: Path) -> Iterator[RepoServer]:
    server = RepoServer(directory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Bench:
    """A device (root dir, state dir, agent files) beside a signed repository on HTTP."""

    tmp: Path
    repo: UpdateRepository
    server: RepoServer
    clock: Clock
    unit: FakeAgentUnit
    settings: UpdaterSettings
    keys_dir: Path
    cloud_up: bool = True
    tuf_offset: timedelta = timedelta(0)

    @property
    def root(self) -> Path:
        return Path(self.settings.root)

    def publish(
        self, *versions: str, size: int = 64 * 1024, installed_size: int | None = None
    ) -> list[Path]:
        bundles = [
            tiny_bundle(self.tmp / "dist", v, size=size, installed_size=installed_size)
            for v in versions
        ]
        self.repo.add_bundles(
            bundles,
            keys.load(self.keys_dir / "targets.key"),
            keys.load(self.keys_dir / "online.key"),
        )
        return bundles

    def target_path(self, version: str) -> str:
        name = installer.bundle_name(version, ARCH)
        digest = self.repo.targets().signed.targets[name].hashes["sha256"]
        return f"targets/{digest}.{name}"

    def offer(self, version: str, *, rollout_id: int = 1, window: str | None = None) -> None:
        path = Path(self.settings.agent_state_dir) / "update-offer.json"
        write_offer(path, Offer(version=version, rollout_id=rollout_id, window=window))

    def viewers(self, count: int) -> None:
        write_viewers(Path(self.settings.agent_runtime_dir) / "viewers", count)

    def updater(self, **kwargs: object) -> Updater:
        args: dict[str, object] = {
            "services": self.unit,
            "repo_url": self.server.url,
            "cloud_url": "http://cloud.invalid",
            "clock": self.clock.monotonic,
            "wall": self.clock.wall,
            "sleep": self.clock.sleep,
            "boot_id": lambda: self.boot,
            "cloud_reachable": lambda: self.cloud_up,
            "http": self.http,
            "install": stage_release,
            "tuf_now": lambda: datetime.fromtimestamp(self.clock.wall(), UTC) + self.tuf_offset,
            "arch": ARCH,
            "clock_synchronized": lambda: self.clock_synced,
        }
        args.update(kwargs)
        return Updater(self.settings, **args)  # type: ignore[arg-type]

    boot: str = "boot-1"
    #: whether the device clock is set from the network (NTP) yet
    clock_synced: bool = True
    _http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        """One client for every updater of this bench (making one costs ~50 ms of TLS setup)."""
        if self._http is None:
            self._http = httpx.Client(timeout=10.0)
        return self._http

    def status(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            (Path(self.settings.state_dir) / "status.json").read_text()
        )
        return data

    def links(self) -> tuple[str | None, str | None]:
        return (
            installer.link_target(self.root, installer.CURRENT),
            installer.link_target(self.root, installer.COMMITTED),
        )


def make_bench(tmp: Path, *, expiry: Expiry | None = None, **settings: object) -> Iterator[Bench]:
    repo_dir = tmp / "repo"
    keys_dir = tmp / "keys"
    clock = Clock()
    repo = UpdateRepository.create(repo_dir, keys_dir, root_keys=3, threshold=2, expiry=expiry)
    device = tmp / "device"
    trust_root = device / "etc" / "update-root.json"
    trust_root.parent.mkdir(parents=True)
    shutil.copyfile(repo.metadata_dir / "1.root.json", trust_root)
    values: dict[str, object] = {
        "root": str(device / "opt"),
        "state_dir": str(device / "var-lib-mumu-update"),
        "trust_root": str(trust_root),
        "agent_state_dir": str(device / "var-lib-mumu"),
        "agent_runtime_dir": str(device / "run-mumu"),
        "health_timeout": 60.0,
        "probation": 300.0,
        **settings,
    }
    config = UpdaterSettings(**values)  # type: ignore[arg-type]
    unit = FakeAgentUnit(Path(config.root), clock)
    for server in serve(repo_dir):
        bench = Bench(tmp, repo, server, clock, unit, config, keys_dir)
        first = bench.publish("1.0.0")[0]
        stage_release(first, bench.root)
        installer.point(bench.root, installer.CURRENT, "1.0.0")
        installer.point(bench.root, installer.COMMITTED, "1.0.0")
        unit.restart("mumu-agent.service")
        try:
            yield bench
        finally:
            if bench._http is not None:
                bench._http.close()
