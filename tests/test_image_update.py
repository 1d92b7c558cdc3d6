"""The SD image and the over-the-air updater are one system: the built arm64 image, booted under
real systemd (systemd-nspawn, qemu-user), takes a newer signed aarch64 release from the cloud
that serves the repository it was built against (``MUMU_UPDATE_REPO_DIR``), verifies, installs
and switches to it with the units, the installer, the layout and the trust root the image
shipped, commits it after probation, and its agent says the new version in ``hello``.

Slow (an install of ~35 wheels under qemu-user, agents started under emulation): it runs once
per suite, on the image the suite builds anyway (tests/image_fixtures.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from packaging.version import Version

from device.update.install import bundle_name
from image.build import build_release, cache_dir
from release import keys
from release.repo import UpdateRepository
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import CloudProcess
from tests.image_fixtures import TIMINGS, BuiltImage, Camera, built_image, camera_factory, mumu_txt
from tests.update_world import OPERATOR, World, account, operator_account, pair

__all__ = ["built_image", "camera_factory"]  # fixtures

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]

#: Under qemu-user an agent takes tens of seconds to reach the cloud after a restart; the
#: probation is short so that the test commits in reasonable time.
SETTINGS = "health_timeout: 300\nprobation: 10\npoll: 0.5\n"


def next_version(version: str) -> str:
    major, minor, micro = [*Version(version).release, 0, 0][:3]
    return f"{major}.{minor}.{micro + 1}"


@pytest.fixture(scope="module")
def newer(built_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A newer aarch64 release of this checkout, built as ``mumu-release build`` builds one
    (the image's own step, so the dependency download is shared), published in the repository
    the image trusts."""
    version = next_version(built_image.agent_version)
    repo = UpdateRepository(built_image.update_repo)
    if bundle_name(version, "aarch64") in repo.targets().signed.targets:
        return version  # a build reused with MUMU_TEST_IMAGE_DIR: published by an earlier run
    bundle = build_release(tmp_path_factory.mktemp("dist"), cache_dir(), version)
    repo.add_bundles(
        [bundle],
        keys.load(built_image.update_keys / "targets.key"),
        keys.load(built_image.update_keys / "online.key"),
    )
    return version


@pytest.fixture
def cloud(built_image: BuiltImage, newer: str, tmp_path: Path) -> Iterator[CloudProcess]:
    env = {
        **RELAXED,
        "MUMU_UPDATE_REPO_DIR": str(built_image.update_repo),
        "MUMU_ROLLOUT_POLL": "1",
    }
    with CloudProcess(tmp_path / "cloud", env=env) as process:
        yield process


def test_the_built_image_updates_itself_over_the_air(
    built_image: BuiltImage,
    newer: str,
    cloud: CloudProcess,
    camera_factory: object,
    tmp_path: Path,
) -> None:
    make = camera_factory
    assert callable(make)
    cam: Camera = make(mumu_txt=mumu_txt(cloud.url), name=f"mumu-ota-arm64-{os.getpid()}")
    # What the image shipped, before its first boot: the first release current and committed.
    first = built_image.agent_version
    assert cam.links() == (first, first)
    cam.write("/etc/mumu/update.yaml", SETTINGS)
    cam.start()
    http = httpx.Client(base_url=cloud.url, timeout=30.0)
    repo = UpdateRepository(built_image.update_repo)
    world = World(tmp_path, cloud, repo, built_image.update_keys, cam, http)
    try:
        cam.wait_booted(timeout=300)
        # The updater's boot check ran before the agent (a oneshot: it exits), and the units
        # that start the updater wait for an offer and for the timer.
        shown = cam.run(
            [
                "systemctl",
                "show",
                "-p",
                "Result",
                "-p",
                "ExecMainStatus",
                "-p",
                "ExecMainExitTimestampMonotonic",
                "mumu-update-boot.service",
            ]
        ).stdout
        boot_check = dict(line.split("=", 1) for line in shown.split())
        assert boot_check["Result"] == "success" and boot_check["ExecMainStatus"] == "0", shown
        assert int(boot_check["ExecMainExitTimestampMonotonic"]) > 0, shown
        for unit in ("mumu-update.path", "mumu-update.timer"):
            assert cam.unit_state(unit) == "active", unit
        world.operator = operator_account(cloud, http, OPERATOR)
        world.owner = account(http, "owner@example.com")
        world.device_id = pair(world, timeout=300)
        assert world.camera()["version"] == first

        started = world.release_and_rollout(newer)
        world.wait_state(newer, {"committed"}, 1200)
        TIMINGS["aarch64 update through the image, offer to committed (s)"] = round(
            time.monotonic() - started, 1
        )
        assert cam.links() == (newer, newer)
        world.agent_active_on(newer, timeout=300)  # hello says the new version
        releases = sorted(p.name for p in cam.path("/opt/mumu/releases").iterdir())
        assert releases == sorted([first, newer])  # current and previous
        user = cam.run(["systemctl", "show", "-P", "User", "mumu-agent.service"])
        assert user.stdout.strip() == "mumu"
    finally:
        http.close()
