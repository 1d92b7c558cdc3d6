"""The SD image in the suite: built once per run, booted in systemd-nspawn as "cameras".

For any test that needs a real MuMu camera under real systemd (this suite's image test, the
hardware-tests runner's self-test, the over-the-air update tests)::

    from tests.image_fixtures import built_image, camera   # fixtures (import them into a module)

    def test_x(camera_factory):
        cam = camera_factory(mumu_txt="cloud_url=http://127.0.0.1:8000\\ncamera=synthetic\\n")
        cam.start()
        code = cam.pairing_code()

``built_image`` runs ``image/build`` once per test session into a temporary directory, with a
signed update repository of its own (``update-repo/``, keys in ``update-keys/``; the image
carries its trust root, so the over-the-air test can publish a newer release to it) and the
cached base rootfs (``$MUMU_IMAGE_CACHE`` or ``~/.cache/mumu-image``; built the first time, which
is the cold path CI may take).  Building needs root, qemu-user (binfmt), mmdebstrap,
systemd-nspawn: ``scripts/bootstrap test`` installs them; with ``CI=true`` nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from image.nspawn import Container, ContainerError
from tests.services import require

REPO = Path(__file__).resolve().parent.parent
#: The code as the console display prints it ("        123 456"), on the console through
#: journald (``StandardOutput=journal+console``: "[  12.345678] mumu-agent[91]:         123 456").
CODE = re.compile(r"^(?:\[[ 0-9.]+\] mumu-agent\[\d+\]: )?\s+(\d{3}) (\d{3})\s*$", re.MULTILINE)
#: Figures the image tests measured, printed at the end of the run (see conftest.py).
TIMINGS: dict[str, float] = {}


@dataclass(frozen=True)
class BuiltImage:
    image: Path
    rootfs: Path
    bootfs: Path
    meta: dict[str, object]
    #: The signed update repository whose trust root the image carries, and its keys.
    update_repo: Path
    update_keys: Path

    @property
    def agent_version(self) -> str:
        return str(self.meta["agent_version"])


def image_tools_missing() -> list[str]:
    needed = ["mmdebstrap", "systemd-nspawn", "nsenter", "mkfs.vfat", "mcopy", "sfdisk", "capsh"]
    missing = [t for t in needed if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if os.uname().machine != "aarch64" and not Path("/usr/libexec/qemu-binfmt").exists():
        missing.append("qemu-user-static")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


#: A cold build here takes ~10 min (the base rootfs is debootstrapped for arm64 under qemu); a
#: build that hangs fails the run with its output rather than stalling it.
BUILD_TIMEOUT_S = 2400


def build_image(out: Path) -> BuiltImage:
    """A signed update repository (``mumu-release init``'s work), then ``image/build --out out
    --update-repo it`` (its progress goes to our stdout); what it made."""
    from release.repo import UpdateRepository

    UpdateRepository.create(out / "update-repo", out / "update-keys")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "image.build",
                "--out",
                str(out),
                "--update-repo",
                str(out / "update-repo"),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        out_text = exc.stdout
        if isinstance(out_text, bytes):
            out_text = out_text.decode(errors="replace")
        raise AssertionError(
            f"image/build did not finish in {BUILD_TIMEOUT_S} s:\n{(out_text or '')[-6000:]}"
        ) from None
    print(done.stdout)
    if done.returncode != 0:
        raise AssertionError(f"image/build failed ({done.returncode}):\n{done.stdout[-6000:]}")
    image = Path(done.stdout.strip().splitlines()[-1])
    assert image.is_file(), done.stdout
    meta = json.loads((out / "build.json").read_text())
    TIMINGS["image build (s)"] = round(time.monotonic() - started, 1)
    for step, seconds in meta["seconds"].items():
        TIMINGS[f"  {step} (s)"] = seconds
    return BuiltImage(
        image, out / "rootfs", out / "bootfs", meta, out / "update-repo", out / "update-keys"
    )


def existing_build(out: Path) -> BuiltImage:
    """An ``image/build --out`` directory made earlier (``MUMU_TEST_IMAGE_DIR``)."""
    meta = json.loads((out / "build.json").read_text())
    return BuiltImage(
        out / meta["image"],
        out / "rootfs",
        out / "bootfs",
        meta,
        out / "update-repo",
        out / "update-keys",
    )


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """The image, built for this run; ``MUMU_TEST_IMAGE_DIR=artifacts/image`` reuses a build
    while working on the tests (never set in CI)."""
    missing = image_tools_missing()
    require(not missing, f"the SD-image tools ({', '.join(missing)})")
    if os.environ.get("MUMU_TEST_IMAGE_DIR"):
        return existing_build(Path(os.environ["MUMU_TEST_IMAGE_DIR"]).resolve())
    return build_image(tmp_path_factory.mktemp("image"))


class Camera(Container):
    """A container booted from the built image, with the helpers the tests repeat."""

    def pairing_code(self, timeout: float = 240.0, since: int = 0) -> str:
        found = self.console.wait_for(CODE, timeout, since=since)
        return found[1] + found[2]

    def unit_state(self, unit: str) -> str:
        return self.run(
            ["systemctl", "show", "-P", "ActiveState", unit], check=False
        ).stdout.strip()

    def wait_active(self, unit: str, timeout: float = 180.0) -> None:
        self.wait_until(["systemctl", "is-active", "--quiet", unit], timeout)

    def links(self) -> tuple[str | None, str | None]:
        """The releases ``current`` and ``committed`` point at (read from outside)."""
        found = []
        for link in ("current", "committed"):
            try:
                found.append(Path(os.readlink(self.path(f"/opt/mumu/{link}"))).name)
            except OSError:
                found.append(None)
        return found[0], found[1]

    def power_on(self, timeout: float = 300.0) -> None:
        """Power on and wait for the end of the boot."""
        self.start()
        self.wait_booted(timeout)

    def power_off(self) -> None:
        """A clean shutdown if it can, else a power cut."""
        if not self.running:
            return
        try:
            self.poweroff(60)
        except ContainerError:
            self.kill()


def mumu_txt(cloud_url: str, **settings: str) -> str:
    lines = [f"cloud_url={cloud_url}", "camera=synthetic", "display=console"]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def camera_factory(built_image: BuiltImage, tmp_path: Path) -> Iterator[Callable[..., Camera]]:
    """Make cameras (containers) from the built image: ``camera_factory(mumu_txt=TEXT)``; each
    is powered off (killed) at the end of the test."""
    made: list[Camera] = []

    def make(mumu_txt: str | bytes | None = None, name: str | None = None) -> Camera:
        n = len(made) + 1
        boot = tmp_path / f"bootfs-{n}"
        shutil.copytree(built_image.bootfs, boot)
        if mumu_txt is not None:
            data = mumu_txt.encode() if isinstance(mumu_txt, str) else mumu_txt
            (boot / "mumu.txt").write_bytes(data)
        camera = Camera(
            built_image.rootfs,
            tmp_path / f"card-{n}",
            boot_files=boot,
            name=name or f"mumu-test-{os.getpid()}-{n}",
        )
        made.append(camera)
        return camera

    yield make
    for camera in made:
        camera.destroy()
