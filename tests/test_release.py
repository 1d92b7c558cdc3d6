"""``mumu-release`` end to end on this machine: a real bundle (the agent and every dependency as
wheels for x86_64), installed offline by the device-side installer with the system's Python,
and the signed repository kept by the command line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from device.update import install as installer
from tests.update_fixtures import tiny_bundle
from tests.update_world import OTA_CACHE

pytestmark = pytest.mark.image  # shares the OTA wheel cache with the image and OTA tests

BIN = Path(sys.executable).parent
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [
            BIN / "mumu-release",
            "build",
            "--version",
            "2.0.0",
            "--arch",
            "x86_64",
            "--out",
            out,
            "--cache",
            OTA_CACHE / "wheels",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    bundle = Path(done.stdout.strip().splitlines()[-1])
    assert bundle == out / "mumu-agent-2.0.0-x86_64.tar"
    return bundle


def test_a_bundle_holds_the_agent_and_its_dependencies_with_metadata(real_bundle: Path) -> None:
    manifest = installer.read_manifest(real_bundle)
    assert (manifest.version, manifest.arch, manifest.python_abi) == ("2.0.0", "x86_64", "cp311")
    assert manifest.min_updater == installer.UPDATER_VERSION
    names = {w.file.split("-")[0].lower() for w in manifest.wheels}
    assert {"mumu_camera", "aiortc", "av", "tuf", "pip", "websockets"} <= names
    with tarfile.open(real_bundle) as tar:
        members = tar.getnames()
    assert members[0] == installer.MANIFEST
    assert all(m == installer.MANIFEST or m.startswith("wheels/") for m in members)
    # the sizes the device checks its disk and the unpacking against, as signed
    assert all(w.length is not None and w.content is not None for w in manifest.wheels)
    assert manifest.unpacked_size == sum(w.length or 0 for w in manifest.wheels)
    assert manifest.installed_size is not None
    assert manifest.installed_size > sum(w.content or 0 for w in manifest.wheels)


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="needs the system's python3")
def test_the_installer_builds_the_venv_at_its_final_path_offline(
    real_bundle: Path, tmp_path: Path
) -> None:
    root = tmp_path / "opt-mumu"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_NO_INDEX"] = "1"  # offline: the bundle must be enough
    done = subprocess.run(
        [SYSTEM_PYTHON, installer.__file__, real_bundle, "--root", root, "--activate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert installer.link_target(root, installer.CURRENT) == "2.0.0"
    assert installer.link_target(root, installer.COMMITTED) == "2.0.0"
    assert os.readlink(root / "current") == "releases/2.0.0"  # relative: works in a chroot
    # the build's reckoning of the installed size holds for the venv pip really made
    on_disk = sum(p.lstat().st_blocks * 512 for p in (root / "releases" / "2.0.0").rglob("*"))
    assert on_disk <= installer.read_manifest(real_bundle).installed_size  # type: ignore[operator]
    agent = root / "current" / "bin" / "mumu-agent"
    # (from elsewhere than this checkout, so that nothing is imported from it)
    shown = subprocess.run(
        [agent, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert shown.returncode == 0 and "run" in shown.stdout
    version = subprocess.run(
        [
            root / "current" / "bin" / "python",
            "-c",
            "import importlib.metadata as m, device;"
            "print(m.version('mumu-camera'), device.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    release_version, module = version.stdout.split()
    assert release_version == "2.0.0"
    assert Path(module).resolve().is_relative_to(root / "releases" / "2.0.0")
    # installing it again is a no-op; an interrupted install is cleaned up
    again = subprocess.run(
        [SYSTEM_PYTHON, installer.__file__, real_bundle, "--root", root],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0
    (root / "releases" / "9.9.9" / "bin").mkdir(parents=True)
    assert installer.remove_incomplete(root) == ["9.9.9"]
    assert installer.installed_versions(root) == ["2.0.0"]
    # a release the links point at is never removed, even one this code cannot read
    (root / "releases" / "2.0.0" / installer.MANIFEST).write_text("{}")
    assert installer.remove_incomplete(root) == []
    assert (root / "releases" / "2.0.0" / "bin" / "mumu-agent").exists()


def test_bundles_for_another_machine_or_updater_are_refused(tmp_path: Path) -> None:
    arm = tiny_bundle(tmp_path, "1.0.0", arch="aarch64")
    with pytest.raises(installer.InstallError, match="is for aarch64, not x86_64"):
        installer.install(arm, tmp_path / "root", python=sys.executable, arch="x86_64")
    manifest = installer.read_manifest(arm)
    future = installer.Manifest(**{**manifest.__dict__, "arch": "x86_64", "min_updater": 99})
    with pytest.raises(installer.InstallError, match="needs updater 99"):
        installer.check_compatible(future, arch="x86_64")


def test_a_bundle_with_unlisted_or_escaping_members_is_refused(tmp_path: Path) -> None:
    good = tiny_bundle(tmp_path, "1.0.0")
    evil = tmp_path / "evil.tar"
    with tarfile.open(good) as src, tarfile.open(evil, "w") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo("wheels/../../../etc/passwd.whl")
        info.size = 4
        dst.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(installer.InstallError, match="unexpected bundle member"):
        installer.install(evil, tmp_path / "root", python=sys.executable, arch="x86_64")
    assert not (tmp_path / "root" / "releases" / "1.0.0").exists()


def test_the_repository_commands(tmp_path: Path) -> None:
    repo, keys_dir = tmp_path / "repo", tmp_path / "keys"

    def release(*args: object) -> str:
        done = subprocess.run(
            [BIN / "mumu-release", *map(str, args)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "trust root for the image" in release("init", "--repo", repo, "--keys", keys_dir)
    assert sorted(p.name for p in keys_dir.glob("*.key")) == [
        "online.key",
        "root-1.key",
        "root-2.key",
        "root-3.key",
        "targets.key",
    ]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in keys_dir.glob("*.key"))
    root = json.loads((repo / "metadata" / "1.root.json").read_text())["signed"]
    assert root["roles"]["root"]["threshold"] == 2 and len(root["roles"]["root"]["keyids"]) == 3
    assert root["roles"]["timestamp"]["keyids"] == root["roles"]["snapshot"]["keyids"]
    bundle = tiny_bundle(tmp_path / "dist", "1.2.3")
    release(
        "publish",
        "--repo",
        repo,
        "--targets-key",
        keys_dir / "targets.key",
        "--online-key",
        keys_dir / "online.key",
        bundle,
    )
    before = json.loads((repo / "metadata" / "timestamp.json").read_text())["signed"]["version"]
    release("renew", "--repo", repo, "--online-key", keys_dir / "online.key")
    after = json.loads((repo / "metadata" / "timestamp.json").read_text())["signed"]["version"]
    assert after == before + 1
    listing = release("list", "--repo", repo)
    assert '"version": "1.2.3"' in listing and "timestamp" in listing
    # a version is never published twice with different content
    other = tiny_bundle(tmp_path / "dist2", "1.2.3", size=1000)
    done = subprocess.run(
        [
            BIN / "mumu-release",
            "publish",
            "--repo",
            repo,
            "--targets-key",
            keys_dir / "targets.key",
            "--online-key",
            keys_dir / "online.key",
            other,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "never reused" in done.stderr
    # the online key cannot sign releases
    done = subprocess.run(
        [
            BIN / "mumu-release",
            "publish",
            "--repo",
            repo,
            "--targets-key",
            keys_dir / "online.key",
            "--online-key",
            keys_dir / "online.key",
            bundle,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "not a targets key" in done.stderr


def test_encrypted_keys_need_their_password(tmp_path: Path) -> None:
    env = {**os.environ, "MUMU_KEY_PASSWORD": "correct horse"}
    args = [BIN / "mumu-release", "keygen", "--keys", tmp_path, "--name", "targets"]
    assert subprocess.run(args, env=env, capture_output=True, timeout=60).returncode == 0
    assert b"ENCRYPTED" in (tmp_path / "targets.key").read_bytes()
    from release import keys

    os.environ.pop("MUMU_KEY_PASSWORD", None)
    with pytest.raises(keys.KeyError_, match="MUMU_KEY_PASSWORD"):
        keys.load(tmp_path / "targets.key")
