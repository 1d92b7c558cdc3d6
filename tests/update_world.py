"""The camera of the update end-to-end tests and benchmark: a container booted under real
systemd by the image's harness (:class:`image.nspawn.Container`, through
:class:`tests.image_fixtures.Camera`) -- either the built SD image (aarch64, qemu-user) or, for
speed, a small Debian x86_64 rootfs with the agent installed the way the image's stage installs
it -- a cloud with a signed repository, an owner and an operator, and the few things the
scenarios do (start a rollout, wait for a state)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from release.build import copy_source, project_root
from release.repo import UpdateRepository
from tests.cloud_process import CloudProcess
from tests.image_fixtures import Camera
from tests.operators import make_operator

ROOT = Path(__file__).resolve().parents[1]
#: The x86_64 camera's base rootfs and the release wheels the update tests download.
OTA_CACHE = Path(os.environ.get("MUMU_OTA_CACHE", Path.home() / ".cache" / "mumu-ota"))
OTA_PACKAGES = ("systemd", "systemd-sysv", "python3", "python3-venv", "libpython3.11")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"


def tools_missing() -> list[str]:
    return [t for t in ("mmdebstrap", "systemd-nspawn", "nsenter") if shutil.which(t) is None]


def base_rootfs(arch: str = "amd64") -> Path:
    """A minimal Debian bookworm with systemd and python3 for ``arch`` (Debian's name), made by
    mmdebstrap once (~2 min) and cached in ``$MUMU_OTA_CACHE`` (``~/.cache/mumu-ota``).  The
    containers never write it (the harness puts an overlay on top).  Several test runs may
    share the cache: one builds while the others wait (a lock)."""
    key = hashlib.sha256(f"{SUITE} {arch} {' '.join(OTA_PACKAGES)}".encode()).hexdigest()[:12]
    path = OTA_CACHE / f"rootfs-{SUITE}-{arch}-{key}"
    OTA_CACHE.mkdir(parents=True, exist_ok=True)
    with open(OTA_CACHE / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / ".complete").exists():
            return path
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        done = subprocess.run(
            [
                "mmdebstrap",
                "--variant=apt",
                f"--architectures={arch}",
                f"--include={','.join(OTA_PACKAGES)}",
                "--format=directory",
                SUITE,
                str(partial),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed: {done.stderr[-2000:]}")
        (partial / ".complete").touch()
        shutil.rmtree(path, ignore_errors=True)
        partial.rename(path)
        return path


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.25) -> None:
    """Poll ``check()`` until true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # keep polling; report the last one
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what} within {timeout:g} s" + (f" (last error: {last})" if last else ""))


def unit_journal(container: Camera, unit: str, lines: int = 50) -> str:
    with contextlib.suppress(Exception):
        return container.journal("-u", unit, "-n", str(lines))
    return "(no journal: the container is not running)"


DEVICE_DIR = ROOT / "device"
OPERATOR = "operator@example.com"
PASSWORD = "operator password"

UPDATE_SETTINGS = """\
health_timeout: 20
probation: 6
poll: 0.5
retry_after: 3600
"""


def broken_source(tmp: Path, version: str, how: str) -> Path:
    """This tree with one deliberate fault, for a release that must be rolled back."""
    source = copy_source(project_root(), tmp / f"src-{version}", version)
    if how == "crash":
        cli = source / "device" / "cli.py"
        cli.write_text(
            cli.read_text().replace(
                "def run(args: argparse.Namespace) -> None:\n",
                "def run(args: argparse.Namespace) -> None:\n"
                "    raise RuntimeError('this release crashes at start (a test fault)')\n",
            )
        )
    elif how == "never-connects":
        signaling = source / "device" / "signaling.py"
        signaling.write_text(
            signaling.read_text().replace(
                'PATH: Final = "/ws/device"', 'PATH: Final = "/ws/nowhere"'
            )
        )
    return source


@dataclass
class World:
    tmp: Path
    cloud: CloudProcess
    repo: UpdateRepository
    keys_dir: Path
    container: Camera
    http: httpx.Client
    operator: dict[str, str] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    device_id: str = ""
    times: dict[str, float] = field(default_factory=dict)

    def camera(self) -> dict[str, Any]:
        r = self.http.get("/api/devices/updates", headers=self.owner)
        r.raise_for_status()
        (camera,) = r.json()["cameras"]
        return dict(camera)

    def release_and_rollout(self, version: str) -> float:
        r = self.http.post(
            "/api/operator/releases", json={"version": version}, headers=self.operator
        )
        assert r.status_code in (201, 409), r.text
        started = time.monotonic()
        r = self.http.post(
            "/api/operator/rollouts",
            json={"version": version, "percentage": 100, "min_sample": 100},
            headers=self.operator,
        )
        assert r.status_code == 201, r.text
        return started

    def wait_state(self, version: str, states: set[str], timeout: float) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.camera())
            return seen["target"] == version and seen["state"] in states

        try:
            wait_until(f"{version} to reach {states}", reached, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{version}: last seen {seen}\n--- updater:\n"
                f"{unit_journal(self.container, 'mumu-update.service', 40)}\n--- agent:\n"
                f"{unit_journal(self.container, 'mumu-agent.service', 20)}"
            ) from None
        return seen

    def agent_active_on(self, version: str, timeout: float = 60) -> None:
        def active() -> bool:
            state = self.container.unit_state("mumu-agent.service")
            return state == "active" and self.camera()["version"] == version

        wait_until(f"the agent to run {version} and reach the cloud", active, timeout)


def prepare_container(
    container: Camera,
    bundle: Path,
    cloud_url: str,
    trust_root: Path,
    settings: str = UPDATE_SETTINGS,
) -> None:
    """What the SD image's stage does (image/pi-gen-stage/stage-mumu/03-agent): the first release
    from its bundle by the updater's installer run out of the agent's own wheel, the units, the
    user; then what first boot would write (the agent's config) and the baked trust root."""
    staging = container.path("/var/cache/mumu-release")
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, staging / "bundle.tar")
    subprocess.run(
        ["tar", "-x", "-C", str(staging), "-f", str(bundle), "--wildcards", "wheels/mumu_camera-*"],
        check=True,
    )
    (wheel,) = (staging / "wheels").glob("mumu_camera-*.whl")
    container.chroot(
        "/usr/bin/env",
        f"PYTHONPATH=/var/cache/mumu-release/wheels/{wheel.name}",
        "/usr/bin/python3",
        "-m",
        "device.update.install",
        "/var/cache/mumu-release/bundle.tar",
        "--root",
        "/opt/mumu",
        "--activate",
    )
    shutil.rmtree(staging)
    container.chroot("useradd", "--system", "--no-create-home", "--user-group", "mumu")
    for group in ("gpio", "i2c"):  # as on Raspberry Pi OS (the agent's unit asks for them)
        container.chroot("groupadd", "--system", group)
    container.write(
        "/etc/mumu/agent.yaml",
        f"cloud: {cloud_url}\ncamera:\n  backend: synthetic\ndisplays:\n  - backend: console\n",
    )
    container.write("/etc/mumu/update.yaml", settings)
    container.write("/etc/mumu/update-root.json", trust_root.read_text())
    units = DEVICE_DIR / "systemd"
    for unit in units.iterdir():
        container.write(f"/etc/systemd/system/{unit.name}", unit.read_text())
    container.enable("mumu-agent.service", "multi-user.target")
    container.enable("mumu-update-boot.service", "multi-user.target")
    container.enable("mumu-update.path", "paths.target")
    container.enable("mumu-update.timer", "timers.target")


def account(http: httpx.Client, email: str) -> dict[str, str]:
    http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    r = http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    r.raise_for_status()
    return {"authorization": f"Bearer {r.json()['access_token']}"}


def operator_account(cloud: CloudProcess, http: httpx.Client, email: str) -> dict[str, str]:
    """An account granted operator rights as on a server (``mumu-cloud operator add``)."""
    auth = account(http, email)
    make_operator(cloud, email)
    return auth


def pair(world: World, timeout: float = 90) -> str:
    """The camera registers itself; its owner pairs it (with a code asked for with the
    camera's own credentials, as its display would show it)."""
    creds_file = world.container.path("/var/lib/mumu/credentials.json")
    wait_until("the camera to register", creds_file.exists, timeout)
    creds = json.loads(creds_file.read_text())
    r = world.http.post(
        "/api/pairing/generate",
        params={"device_id": creds["device_id"]},
        headers={"authorization": f"Bearer {creds['device_token']}"},
    )
    r.raise_for_status()
    r = world.http.post("/api/devices/pair", json={"code": r.json()["code"]}, headers=world.owner)
    r.raise_for_status()
    current, _ = world.container.links()
    assert current is not None
    world.agent_active_on(current, timeout)
    return str(creds["device_id"])
