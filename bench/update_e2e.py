"""Update and rollback times of a camera under real systemd, per architecture.

The same camera as ``tests/test_update_e2e.py`` (a Debian bookworm rootfs booted in
``systemd-nspawn``, the agent installed from a ``mumu-release`` bundle as the SD image installs
it, the updater's units, a cloud serving a signed repository), measured step by step:

* ``install``: the first release from its bundle (chroot, the image build's step);
* ``boot to connected``: power on to the agent's READY (hello_ack);
* ``update``: rollout created -> the new release committed (download, TUF, install, switch,
  probation);
* ``crash rollback``: rollout of a release that crashes at start -> rolled back and reported.

``--arch aarch64`` is the Raspberry Pi's architecture, run here under qemu-user (several times
slower than a Pi 4); ``x86_64`` runs natively.  Prints a table; ``--json`` prints JSON.

    .venv/bin/python bench/update_e2e.py [--arch aarch64|x86_64] [--probation 6] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from release import keys
from release.build import build
from release.repo import UpdateRepository
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import CloudProcess
from tests.image_fixtures import Camera
from tests.update_world import (
    OPERATOR,
    OTA_CACHE,
    World,
    account,
    base_rootfs,
    broken_source,
    operator_account,
    pair,
    prepare_container,
)

DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def measure(arch: str, probation: float, health_timeout: float) -> dict[str, float]:
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mumu-update-bench-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.monotonic()
        base = base_rootfs(DEBIAN_ARCH[arch])
        times["base rootfs (cached after the first run)"] = time.monotonic() - started
        cache = OTA_CACHE / "wheels"
        dist = tmp / "dist"
        started = time.monotonic()
        bundles = {
            "1.0.0": build("1.0.0", arch, dist, cache=cache),
            "2.0.0": build("2.0.0", arch, dist, cache=cache),
            "3.0.0": build(
                "3.0.0", arch, dist, cache=cache, source=broken_source(tmp, "3.0.0", "crash")
            ),
        }
        times["build 3 bundles (mumu-release, cached wheels)"] = time.monotonic() - started
        times["bundle size (MB)"] = bundles["2.0.0"].stat().st_size / 1e6
        keys_dir = tmp / "keys"
        repo = UpdateRepository.create(tmp / "repo", keys_dir)
        repo.add_bundles(
            [bundles["2.0.0"], bundles["3.0.0"]],
            keys.load(keys_dir / "targets.key"),
            keys.load(keys_dir / "online.key"),
        )
        env = {
            **RELAXED,
            "MUMU_UPDATE_REPO_DIR": str(repo.path),
            "MUMU_ROLLOUT_POLL": "1",
        }
        settings = f"health_timeout: {health_timeout}\nprobation: {probation}\npoll: 0.5\n"
        with CloudProcess(tmp / "cloud", env=env) as cloud:
            container = Camera(base, tmp / "camera", name="mumu-update-bench")
            started = time.monotonic()
            prepare_container(
                container, bundles["1.0.0"], cloud.url, repo.metadata_dir / "1.root.json", settings
            )
            times["install the first release (chroot)"] = time.monotonic() - started
            http = httpx.Client(base_url=cloud.url, timeout=30.0)
            world = World(tmp, cloud, repo, keys_dir, container, http)
            try:
                started = time.monotonic()
                container.power_on(timeout=300)
                world.operator = operator_account(cloud, http, OPERATOR)
                world.owner = account(http, "owner@example.com")
                world.device_id = pair(world, timeout=600)
                times["boot to connected (registered, paired, READY)"] = time.monotonic() - started
                started = world.release_and_rollout("2.0.0")
                world.wait_state("2.0.0", {"committed"}, 1800)
                times[f"update 1.0.0 -> 2.0.0 (offer to committed, {probation:g} s probation)"] = (
                    time.monotonic() - started
                )
                started = world.release_and_rollout("3.0.0")
                world.wait_state("3.0.0", {"rolled_back"}, 1800)
                times["crash at start: offer to rolled back and reported"] = (
                    time.monotonic() - started
                )
            finally:
                container.power_off()
                http.close()
                container.destroy()
    return {k: round(v, 1) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(DEBIAN_ARCH), default="aarch64")
    parser.add_argument("--probation", type=float, default=6.0)
    parser.add_argument(
        "--health-timeout", type=float, default=None, help="default: 20 s, 300 s under qemu"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    health = args.health_timeout or (20.0 if args.arch == "x86_64" else 300.0)
    result = measure(args.arch, args.probation, health)
    if args.json:
        print(json.dumps({"arch": args.arch, "seconds": result}, indent=2))
        return
    print(f"{'step':70} {args.arch:>10}")
    for step, value in result.items():
        print(f"{step:70} {value:>10.1f}")


if __name__ == "__main__":
    main()
