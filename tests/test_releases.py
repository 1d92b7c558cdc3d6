"""The release layout the image installs and the updates switch, by the one installer both use
(:mod:`device.update.install`): links replaced in one rename, half-built releases never pointed
at, versions that are names and never paths.  (tests/test_release.py installs a real bundle;
tests/test_image.py boots the image the stage installed with it; tests/test_image_update.py
updates that image over the air.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from device.update import install as installer
from tests.update_fixtures import stage_release, tiny_bundle


def test_links_are_replaced_in_one_rename(tmp_path: Path) -> None:
    for version in ("1.0.0", "1.1.0"):
        stage_release(tiny_bundle(tmp_path / "dist", version), tmp_path)
    assert installer.link_target(tmp_path, installer.CURRENT) is None
    installer.point(tmp_path, installer.CURRENT, "1.0.0")
    assert os.readlink(tmp_path / "current") == "releases/1.0.0"  # relative: works in a chroot
    inode_before = (tmp_path / "current").lstat().st_ino
    installer.point(tmp_path, installer.CURRENT, "1.1.0")
    assert installer.link_target(tmp_path, installer.CURRENT) == "1.1.0"
    assert (tmp_path / "current").lstat().st_ino != inode_before
    assert (tmp_path / "current" / "bin" / "mumu-agent").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "dist", "releases"]


def test_a_partial_or_missing_release_is_never_pointed_at(tmp_path: Path) -> None:
    stage_release(tiny_bundle(tmp_path / "dist", "1.0.0"), tmp_path)
    installer.point(tmp_path, installer.CURRENT, "1.0.0")
    (tmp_path / "releases" / "2.0.0").mkdir()  # an install cut short: no agent, no manifest
    for version in ("2.0.0", "3.0.0"):
        with pytest.raises(installer.InstallError):
            installer.point(tmp_path, installer.CURRENT, version)
    assert installer.link_target(tmp_path, installer.CURRENT) == "1.0.0"
    assert installer.installed_versions(tmp_path) == ["1.0.0"]


def test_the_installed_metadata_is_the_bundles_manifest(tmp_path: Path) -> None:
    """One format: what a bundle carries is what the release directory keeps (version,
    architecture, Python ABI, minimum updater, the wheels and their hashes)."""
    bundle = tiny_bundle(tmp_path / "dist", "1.0.0", arch="aarch64")
    stage_release(bundle, tmp_path)
    kept = json.loads((tmp_path / "releases" / "1.0.0" / installer.MANIFEST).read_text())
    assert kept == json.loads(installer.read_manifest(bundle).to_json())
    assert {"version", "arch", "python_abi", "min_updater", "wheels"} <= kept.keys()


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "-rf", "1" * 65])
def test_versions_are_names_not_paths(bad: str) -> None:
    manifest = installer.Manifest(
        version=bad, arch="x86_64", python_abi="cp311", min_updater=1, requirement="x"
    )
    with pytest.raises(installer.InstallError):
        installer.Manifest.from_json(manifest.to_json())


def test_the_image_takes_its_release_and_trust_root_from_the_repository(tmp_path: Path) -> None:
    """``image/build --update-repo DIR --release V``: the bundle as published (checked against
    its signed length and hash) and the repository's newest root; a tampered file is refused."""
    from image.build import published_release, repository_root
    from release import keys
    from release.repo import UpdateRepository

    repo = UpdateRepository.create(tmp_path / "repo", tmp_path / "keys")
    bundle = tiny_bundle(tmp_path / "dist", "1.4.0", arch="aarch64")
    repo.add_bundles(
        [bundle], keys.load(tmp_path / "keys/targets.key"), keys.load(tmp_path / "keys/online.key")
    )
    assert repository_root(repo.path) == repo.metadata_dir / "1.root.json"
    taken = published_release(repo.path, "1.4.0", tmp_path / "out")
    assert taken.name == "mumu-agent-1.4.0-aarch64.tar"
    assert taken.read_bytes() == bundle.read_bytes()
    with pytest.raises(SystemExit, match="publishes no"):
        published_release(repo.path, "9.9.9", tmp_path / "out")
    (published,) = repo.targets_dir.glob("*.mumu-agent-1.4.0-aarch64.tar")
    data = bytearray(published.read_bytes())
    data[-1] ^= 1
    published.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="signed length and hash"):
        published_release(repo.path, "1.4.0", tmp_path / "out")
