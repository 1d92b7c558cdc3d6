"""The updater's parts on their own: its systemd units (what they promise, checked by
``systemd-analyze verify``) and the installer's bounds on what a bundle may unpack to."""

from __future__ import annotations

import configparser
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from device.update import install as installer
from tests.update_fixtures import tiny_bundle

UNITS = Path(__file__).resolve().parent.parent / "device" / "systemd"
NAMES = ("mumu-update.service", "mumu-update.path", "mumu-update.timer", "mumu-update-boot.service")


def parse(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_the_updater_runs_from_the_committed_release_and_the_agent_from_current() -> None:
    assert parse("mumu-update.service")["Service"]["ExecStart"].startswith(
        "/opt/mumu/committed/bin/mumu-update run"
    )
    assert parse("mumu-update-boot.service")["Service"]["ExecStart"].startswith(
        "/opt/mumu/committed/bin/mumu-update boot"
    )
    assert parse("mumu-agent.service")["Service"]["ExecStart"].startswith(
        "/opt/mumu/current/bin/mumu-agent run"
    )
    agent = parse("mumu-agent.service")["Service"]
    assert agent["User"] == "mumu" and agent["CapabilityBoundingSet"] == ""


def test_the_boot_check_comes_before_the_agent() -> None:
    unit = parse("mumu-update-boot.service")["Unit"]
    assert "mumu-agent.service" in unit["Before"].split()
    assert parse("mumu-update.path")["Path"]["PathChanged"] == "/var/lib/mumu/update-offer.json"


@pytest.mark.parametrize("name", NAMES)
def test_units_verify(tmp_path: Path, name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (scripts/bootstrap installs systemd)")
    fake = tmp_path / "mumu-update"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    for other in NAMES:
        text = (UNITS / other).read_text().replace("/opt/mumu/committed/bin/mumu-update", str(fake))
        (tmp_path / other).write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "mumu-update" not in output.replace(str(tmp_path), ""), output


# --- unpacking is bounded by what was signed -------------------------------------------------


def bundle_of(tmp: Path, wheel: Path, **sizes: int | None) -> Path:
    """A bundle of ``wheel`` (as pip's) with a manifest giving ``sizes`` (``content``: the
    wheel's; ``installed_size``), written by GNU tar as the build would be by tarfile."""
    import hashlib

    manifest = installer.Manifest(
        version="1.0.0",
        arch="x86_64",
        python_abi="cp311",
        min_updater=1,
        requirement="mumu-camera[device]==1.0.0",
        wheels=[
            installer.Wheel(
                "pip-0-py3-none-any.whl",
                hashlib.sha256(wheel.read_bytes()).hexdigest(),
                content=sizes.get("content"),
            )
        ],
        installed_size=sizes.get("installed_size"),
    )
    bundle = tmp / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        data = manifest.to_json().encode()
        info = tarfile.TarInfo(installer.MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(wheel, arcname="wheels/pip-0-py3-none-any.whl")
    return bundle


def written(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_a_sparse_member_is_refused_without_writing_it(tmp_path: Path, tar_format: str) -> None:
    tar = shutil.which("tar")
    if tar is None:
        pytest.fail("GNU tar is missing (it makes the sparse member)")
    src = tmp_path / "src"
    (src / "wheels").mkdir(parents=True)
    manifest = installer.Manifest(
        version="1.0.0",
        arch="x86_64",
        python_abi="cp311",
        min_updater=1,
        requirement="mumu-camera[device]==1.0.0",
        wheels=[installer.Wheel("pip-0-py3-none-any.whl", "0" * 64)],
    )
    (src / installer.MANIFEST).write_text(manifest.to_json())
    with open(src / "wheels" / "pip-0-py3-none-any.whl", "wb") as f:
        f.truncate(10 * 1024**3)  # 10 GiB of hole
    bundle = tmp_path / "sparse.tar"
    members = [installer.MANIFEST, "wheels/pip-0-py3-none-any.whl"]
    argv = [tar, "--sparse", f"--format={tar_format}", "-cf", str(bundle), "-C", str(src)]
    subprocess.run([*argv, "--", *members], check=True)
    assert bundle.stat().st_size <= 20 * 1024  # ~10 KB
    root = tmp_path / "root"
    with pytest.raises(installer.InstallError, match="sparse"):
        installer.install(bundle, root, python=sys.executable, arch="x86_64")
    assert written(root) < 1024 * 1024
    assert installer.installed_versions(root) == []


def test_a_member_larger_than_the_bundle_stores_is_refused(tmp_path: Path) -> None:
    good = tiny_bundle(tmp_path, "1.0.0")
    liar = tmp_path / "liar.tar"
    with tarfile.open(good) as src:
        manifest = src.extractfile(installer.MANIFEST)
        assert manifest is not None
        data = manifest.read()
    with tarfile.open(liar, "w") as tar:
        info = tarfile.TarInfo(installer.MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("wheels/pip-0-py3-none-any.whl")
        info.size = 10 * 1024**3  # claims 10 GiB; the bundle ends after its header
        tar.addfile(info)
    root = tmp_path / "root"
    with pytest.raises(installer.InstallError, match="more than the bundle stores"):
        installer.install(liar, root, python=sys.executable, arch="x86_64")
    assert written(root) < 1024 * 1024


@pytest.fixture(scope="module")
def deflate_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of ~0.3 MB holding 256 MiB of zeros (a ratio of ~1000)."""
    path = tmp_path_factory.mktemp("bomb") / "pip-0-py3-none-any.whl"
    zeros = bytes(1024 * 1024)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("pip/__init__.py", "w", force_zip64=True) as member,
    ):
        for _ in range(256):
            member.write(zeros)
    return path


@pytest.mark.parametrize(
    "sizes",
    [
        {"content": 1_000_000, "installed_size": 2_000_000},  # a manifest that lies
        {},  # a bundle from before the sizes: bounded by MAX_RATIO x the wheel
        {"installed_size": 2_000_000},  # the wheel's size left out, the release's signed
    ],
    ids=["lying-sizes", "no-sizes", "installed-size-only"],
)
def test_a_wheel_deflate_bomb_is_refused_before_pip_runs(
    tmp_path: Path, deflate_bomb: Path, sizes: dict[str, int]
) -> None:
    bundle = bundle_of(tmp_path, deflate_bomb, **sizes)
    root = tmp_path / "root"
    with pytest.raises(installer.InstallError, match="refused before pip ran"):
        installer.install(bundle, root, python=sys.executable, arch="x86_64")
    # no venv was made (pip never ran), nothing unpacked
    assert not installer.release_dir(root, "1.0.0").exists()
    assert written(root) < 2 * deflate_bomb.stat().st_size


def test_the_build_records_what_each_wheel_unpacks_to(tmp_path: Path) -> None:
    from release.build import wheel_list

    wheel = tmp_path / "demo-1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo/__init__.py", "x = 1\n" * 1000)
        zf.writestr("demo/data.bin", bytes(10_000))
    (listed,), installed = wheel_list([wheel])
    assert listed.length == wheel.stat().st_size
    assert listed.content == 6000 + 10_000
    # blocks rounded up, bytecode beside the source, the venv's own files
    assert installed >= installer.VENV_BASE + 16_000 + 6000


def seconds(value: str) -> float:
    """A systemd time span of one unit (``2h``, ``5min``, ``90s``, ``90``)."""
    for suffix, factor in (("min", 60), ("h", 3600), ("s", 1)):
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


def test_every_updater_run_is_bounded_by_its_unit_too() -> None:
    from device.update.settings import UpdaterSettings

    defaults = UpdaterSettings()
    runs_for = (
        defaults.clock_wait
        + defaults.fetch_deadline
        + defaults.quiet_wait
        + defaults.health_timeout
        + defaults.probation
    )
    backstop = seconds(parse("mumu-update.service")["Service"]["RuntimeMaxSec"])
    assert runs_for < backstop <= 3 * 3600
    assert seconds(parse("mumu-update-boot.service")["Service"]["TimeoutStartSec"]) <= 600
