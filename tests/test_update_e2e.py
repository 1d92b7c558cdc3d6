"""Over-the-air updates end to end: the real agent and the real updater under real systemd in a
container (x86_64, natively), real bundles from ``mumu-release``, a real signed repository served
by a real cloud, rollouts started through the operator API.

One container is booted for the whole module and the scenarios run on it in order, each
starting from the release the previous one left committed (that is what a camera lives through):

1. 1.0.0 (installed as the image does) -> 2.0.0: verified, installed, switched, committed.
2. 3.0.0 crashes at start: rolled back to 2.0.0, the crash reported with its reason.
3. 4.0.0 never connects to the cloud: rolled back after the health timeout.
4. 5.0.0 tampered on the server: refused before unpacking; 2.0.0 runs on.
5. The disk fills up while 5.0.0 downloads: failed, 2.0.0 runs on, nothing left behind.
6. Power lost while 5.0.0 is on probation: the next boot rolls back before the agent starts.

Times (offer to committed, offer to rolled back) go to ``artifacts/update-times.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from release import keys
from release.build import build, copy_source, project_root
from release.repo import UpdateRepository
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import CloudProcess
from tests.nspawn import CACHE, Container, base_rootfs, tools_missing, wait_until

ROOT = Path(__file__).resolve().parents[1]
DEVICE_DIR = ROOT / "device"
OPERATOR = "operator@example.com"
PASSWORD = "operator password"
ARTIFACTS = ROOT / "artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

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
    container: Container
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
                f"{self.container.journal('mumu-update.service', 40)}\n--- agent:\n"
                f"{self.container.journal('mumu-agent.service', 20)}"
            ) from None
        return seen

    def agent_active_on(self, version: str) -> None:
        def active() -> bool:
            state = self.container.run("systemctl", "is-active", "mumu-agent.service", check=False)
            return state.strip() == "active" and self.camera()["version"] == version

        wait_until(f"the agent to run {version} and reach the cloud", active, 60)


def prepare_container(container: Container, bundle: Path, cloud_url: str, trust_root: Path) -> None:
    """What the SD image does: the first release from its wheelhouse, the units, the user."""
    container.write("/tmp/install.py", (DEVICE_DIR / "update" / "install.py").read_text())
    shutil.copyfile(bundle, container.path("/tmp/bundle.tar"))
    container.chroot(
        "/usr/bin/python3",
        "/tmp/install.py",
        "/tmp/bundle.tar",
        "--root",
        "/opt/mumu",
        "--activate",
    )
    container.path("/tmp/bundle.tar").unlink()
    container.chroot("useradd", "--system", "--no-create-home", "--user-group", "mumu")
    for group in ("gpio", "i2c"):  # as on Raspberry Pi OS (the agent's unit asks for them)
        container.chroot("groupadd", "--system", group)
    container.write(
        "/etc/mumu/agent.yaml",
        f"cloud: {cloud_url}\ncamera:\n  backend: synthetic\ndisplays:\n  - backend: console\n",
    )
    container.write("/etc/mumu/update.yaml", UPDATE_SETTINGS)
    container.write("/etc/mumu/update-root.json", trust_root.read_text())
    units = DEVICE_DIR / "systemd"
    for unit in units.iterdir():
        container.write(f"/etc/systemd/system/{unit.name}", unit.read_text())
    container.enable("mumu-agent.service", "multi-user.target")
    container.enable("mumu-update-boot.service", "multi-user.target")
    container.enable("mumu-update.path", "paths.target")
    container.enable("mumu-update.timer", "timers.target")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    missing = tools_missing()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: scripts/bootstrap test installs them")
    if os.geteuid() != 0:
        pytest.fail("the update end-to-end tests boot containers: run them as root")
    tmp = tmp_path_factory.mktemp("ota-e2e")
    base = base_rootfs("amd64")
    cache = CACHE / "wheels"
    dist = tmp / "dist"
    bundles = {
        "1.0.0": build("1.0.0", "x86_64", dist, cache=cache),
        "2.0.0": build("2.0.0", "x86_64", dist, cache=cache),
        "3.0.0": build(
            "3.0.0", "x86_64", dist, cache=cache, source=broken_source(tmp, "3.0.0", "crash")
        ),
        "4.0.0": build(
            "4.0.0",
            "x86_64",
            dist,
            cache=cache,
            source=broken_source(tmp, "4.0.0", "never-connects"),
        ),
        "5.0.0": build("5.0.0", "x86_64", dist, cache=cache),
    }
    keys_dir = tmp / "keys"
    repo = UpdateRepository.create(tmp / "repo", keys_dir)
    repo.add_bundles(
        [bundles[v] for v in ("2.0.0", "3.0.0", "4.0.0", "5.0.0")],
        keys.load(keys_dir / "targets.key"),
        keys.load(keys_dir / "online.key"),
    )
    env = {
        **RELAXED,
        "MUMU_UPDATE_REPO_DIR": str(repo.path),
        "MUMU_OPERATORS": OPERATOR,
        "MUMU_ROLLOUT_POLL": "1",
    }
    with CloudProcess(tmp / "cloud", env=env) as cloud:
        container = Container(base, tmp / "camera")
        prepare_container(container, bundles["1.0.0"], cloud.url, repo.metadata_dir / "1.root.json")
        http = httpx.Client(base_url=cloud.url, timeout=30.0)
        world = World(tmp, cloud, repo, keys_dir, container, http)
        try:
            container.boot()
            world.operator = account(http, OPERATOR)
            world.owner = account(http, "owner@example.com")
            world.device_id = pair(world)
            yield world
        finally:
            container.power_off()
            http.close()
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "update-times.json").write_text(json.dumps(world.times, indent=2) + "\n")
            print(f"\nupdate times (s): {json.dumps(world.times)}", file=sys.stderr)
            shutil.rmtree(container.root, ignore_errors=True)


def account(http: httpx.Client, email: str) -> dict[str, str]:
    http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    r = http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    r.raise_for_status()
    return {"authorization": f"Bearer {r.json()['access_token']}"}


def pair(world: World) -> str:
    """The camera registers itself; its owner pairs it (with a code asked for with the
    camera's own credentials, as its display would show it)."""
    creds_file = world.container.path("/var/lib/mumu/credentials.json")
    wait_until("the camera to register", creds_file.exists, 90)
    creds = json.loads(creds_file.read_text())
    r = world.http.post(
        "/api/pairing/generate",
        params={"device_id": creds["device_id"]},
        headers={"authorization": f"Bearer {creds['device_token']}"},
    )
    r.raise_for_status()
    r = world.http.post("/api/devices/pair", json={"code": r.json()["code"]}, headers=world.owner)
    r.raise_for_status()
    world.agent_active_on("1.0.0")
    return str(creds["device_id"])


def test_v1_to_v2_is_installed_switched_and_committed(world: World) -> None:
    assert world.container.links() == ("1.0.0", "1.0.0")
    started = world.release_and_rollout("2.0.0")
    world.wait_state("2.0.0", {"committed"}, 240)
    world.times["update 1.0.0 -> 2.0.0 committed (offer to commit, probation 6 s)"] = round(
        time.monotonic() - started, 1
    )
    assert world.container.links() == ("2.0.0", "2.0.0")
    world.agent_active_on("2.0.0")
    releases = sorted(p.name for p in world.container.path("/opt/mumu/releases").iterdir())
    assert releases == ["1.0.0", "2.0.0"]  # current and previous
    # the agent stayed unprivileged; the updater ran as root from the committed release
    user = world.container.run("systemctl", "show", "-p", "User", "--value", "mumu-agent.service")
    assert user.strip() == "mumu"


def test_a_release_that_crashes_at_start_is_rolled_back_with_its_reason(world: World) -> None:
    started = world.release_and_rollout("3.0.0")
    camera = world.wait_state("3.0.0", {"rolled_back", "failed"}, 240)
    world.times["rollback of 3.0.0 crashing at start (offer to rolled back)"] = round(
        time.monotonic() - started, 1
    )
    assert camera["state"] == "rolled_back", camera
    journal = world.container.journal("mumu-agent.service", 60)
    assert "crashed 3 times" in camera["reason"], (camera, journal)
    assert "this release crashes at start" in camera["reason"], (camera, journal)
    assert world.container.links() == ("2.0.0", "2.0.0")
    world.agent_active_on("2.0.0")
    fleet = world.http.get("/api/operator/updates", headers=world.operator).json()
    rollout = next(r for r in fleet["rollouts"] if r["version"] == "3.0.0")
    assert rollout["failed"] == 1 and camera["reason"][:200] in rollout["reasons"]


def test_a_release_that_never_connects_is_rolled_back(world: World) -> None:
    started = world.release_and_rollout("4.0.0")
    camera = world.wait_state("4.0.0", {"rolled_back", "failed"}, 240)
    world.times[
        "rollback of 4.0.0 never connecting (offer to rolled back, health timeout 20 s)"
    ] = round(time.monotonic() - started, 1)
    assert camera["state"] == "rolled_back", camera
    assert "did not connect to the cloud within 20 s" in camera["reason"]
    assert world.container.links() == ("2.0.0", "2.0.0")
    world.agent_active_on("2.0.0")


def test_a_tampered_bundle_is_refused(world: World) -> None:
    target = next(world.repo.targets_dir.glob("*.mumu-agent-5.0.0-x86_64.tar"))
    original = target.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    target.write_bytes(bytes(tampered))
    try:
        world.release_and_rollout("5.0.0")
        camera = world.wait_state("5.0.0", {"failed", "rolled_back"}, 240)
    finally:
        target.write_bytes(original)
    assert (
        camera["state"] == "failed"
        and "does not match its signed length and hash" in camera["reason"]
    )
    assert world.container.links() == ("2.0.0", "2.0.0")
    assert not world.container.path("/opt/mumu/releases/5.0.0").exists()
    world.agent_active_on("2.0.0")


def test_the_disk_filling_mid_download_leaves_the_current_version_running(world: World) -> None:
    downloads = "/opt/mumu/downloads"
    world.container.run("mkdir", "-p", downloads)
    # a small filesystem where the bundle lands (this sandbox has no loop devices: a tmpfs)
    world.container.run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", downloads)
    try:
        world.release_and_rollout("5.0.0")
        camera = world.wait_state("5.0.0", {"failed", "rolled_back"}, 240)
        assert camera["state"] == "failed" and "disk filled up" in camera["reason"], camera
        assert world.container.run("ls", "-A", downloads).strip() == ""
    finally:
        world.container.run("umount", downloads, check=False)
    assert world.container.links() == ("2.0.0", "2.0.0")
    world.agent_active_on("2.0.0")


def test_power_loss_during_probation_rolls_back_at_the_next_boot(world: World) -> None:
    container = world.container
    container.write(
        "/etc/mumu/update.yaml", UPDATE_SETTINGS.replace("probation: 6", "probation: 600")
    )
    world.release_and_rollout("5.0.0")
    world.wait_state("5.0.0", {"healthy"}, 240)
    assert container.links() == ("5.0.0", "2.0.0")
    container.cut_power()
    container.write("/etc/mumu/update.yaml", UPDATE_SETTINGS)
    started = time.monotonic()
    container.boot()
    # the boot check ran before the agent: it never started 5.0.0 again
    assert container.links() == ("2.0.0", "2.0.0")
    camera = world.wait_state("5.0.0", {"rolled_back"}, 120)
    world.times["rollback after power loss during probation (boot to reported)"] = round(
        time.monotonic() - started, 1
    )
    assert "restarted while the new version was on probation" in camera["reason"]
    world.agent_active_on("2.0.0")
