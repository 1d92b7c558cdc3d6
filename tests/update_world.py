"""The camera of the update end-to-end test and benchmark: a booted container with the agent
installed as the SD image installs it, a cloud with a signed repository, an owner and an
operator, and the few things the scenarios do (start a rollout, wait for a state)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from release.build import copy_source, project_root
from release.repo import UpdateRepository
from tests.cloud_process import CloudProcess
from tests.nspawn import Container, wait_until

ROOT = Path(__file__).resolve().parents[1]
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

    def agent_active_on(self, version: str, timeout: float = 60) -> None:
        def active() -> bool:
            state = self.container.run("systemctl", "is-active", "mumu-agent.service", check=False)
            return state.strip() == "active" and self.camera()["version"] == version

        wait_until(f"the agent to run {version} and reach the cloud", active, timeout)


def prepare_container(
    container: Container,
    bundle: Path,
    cloud_url: str,
    trust_root: Path,
    settings: str = UPDATE_SETTINGS,
) -> None:
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
    world.agent_active_on("1.0.0", timeout)
    return str(creds["device_id"])
