"""Over-the-air updates end to end: the real agent and the real updater under real systemd in a
container (x86_64, natively, for speed; the built SD image is updated the same way on aarch64 in
tests/test_image_update.py), real bundles from ``mumu-release``, a real signed repository
served by a real cloud, rollouts started through the operator API.  The container is booted by
the image's harness (:mod:`image.nspawn`).

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
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from release import keys
from release.build import build
from release.repo import UpdateRepository
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import CloudProcess
from tests.image_fixtures import Camera
from tests.update_world import (
    OPERATOR,
    OTA_CACHE,
    ROOT,
    UPDATE_SETTINGS,
    World,
    account,
    base_rootfs,
    broken_source,
    operator_account,
    pair,
    prepare_container,
    tools_missing,
    unit_journal,
)

ARTIFACTS = ROOT / "artifacts"

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    missing = tools_missing()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: scripts/bootstrap test installs them")
    if os.geteuid() != 0:
        pytest.fail("the update end-to-end tests boot containers: run them as root")
    tmp = tmp_path_factory.mktemp("ota-e2e")
    base = base_rootfs("amd64")
    cache = OTA_CACHE / "wheels"
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
        "MUMU_ROLLOUT_POLL": "1",
    }
    with CloudProcess(tmp / "cloud", env=env) as cloud:
        container = Camera(base, tmp / "camera", name=f"mumu-ota-{os.getpid()}")
        prepare_container(container, bundles["1.0.0"], cloud.url, repo.metadata_dir / "1.root.json")
        http = httpx.Client(base_url=cloud.url, timeout=30.0)
        world = World(tmp, cloud, repo, keys_dir, container, http)
        try:
            container.power_on()
            world.operator = operator_account(cloud, http, OPERATOR)
            world.owner = account(http, "owner@example.com")
            world.device_id = pair(world)
            yield world
        finally:
            container.power_off()
            http.close()
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "update-times.json").write_text(json.dumps(world.times, indent=2) + "\n")
            print(f"\nupdate times (s): {json.dumps(world.times)}", file=sys.stderr)
            container.destroy()


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
    user = world.container.run(["systemctl", "show", "-p", "User", "--value", "mumu-agent.service"])
    assert user.stdout.strip() == "mumu"


def test_a_release_that_crashes_at_start_is_rolled_back_with_its_reason(world: World) -> None:
    started = world.release_and_rollout("3.0.0")
    camera = world.wait_state("3.0.0", {"rolled_back", "failed"}, 240)
    world.times["rollback of 3.0.0 crashing at start (offer to rolled back)"] = round(
        time.monotonic() - started, 1
    )
    assert camera["state"] == "rolled_back", camera
    journal = unit_journal(world.container, "mumu-agent.service", 60)
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
    world.container.run(["mkdir", "-p", downloads])
    # a small filesystem where the bundle lands (this sandbox has no loop devices: a tmpfs)
    world.container.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", downloads])
    try:
        world.release_and_rollout("5.0.0")
        camera = world.wait_state("5.0.0", {"failed", "rolled_back"}, 240)
        assert camera["state"] == "failed" and "disk filled up" in camera["reason"], camera
        assert world.container.run(["ls", "-A", downloads]).stdout.strip() == ""
    finally:
        world.container.run(["umount", downloads], check=False)
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
    container.kill()  # power loss: every process at once
    container.write("/etc/mumu/update.yaml", UPDATE_SETTINGS)
    started = time.monotonic()
    container.power_on()
    # the boot check ran before the agent: it never started 5.0.0 again
    assert container.links() == ("2.0.0", "2.0.0")
    camera = world.wait_state("5.0.0", {"rolled_back"}, 120)
    world.times["rollback after power loss during probation (boot to reported)"] = round(
        time.monotonic() - started, 1
    )
    assert "restarted while the new version was on probation" in camera["reason"]
    world.agent_active_on("2.0.0")
