"""The release layout the image installs and the updates switch: ``current`` replaced in one
rename, half-built releases never pointed at.  (The image build installs a real release with
:func:`device.releases.install_release`; tests/test_image.py boots it.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from device.releases import (
    ReleaseError,
    check_version,
    current_version,
    list_releases,
    main,
    switch_current,
    wheel_version,
)


def fake_release(root: Path, version: str, partial: bool = False) -> Path:
    path = root / "releases" / version
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "mumu-agent").write_text("#!/bin/sh\n")
    if partial:
        (root / "releases" / f".{version}.partial").touch()
    return path


def test_switch_replaces_the_link_in_one_rename(tmp_path: Path) -> None:
    fake_release(tmp_path, "1.0.0")
    fake_release(tmp_path, "1.1.0")
    assert current_version(tmp_path) is None
    switch_current("1.0.0", tmp_path)
    assert os.readlink(tmp_path / "current") == "releases/1.0.0"
    inode_before = (tmp_path / "current").lstat().st_ino
    switch_current("1.1.0", tmp_path)
    assert current_version(tmp_path) == "1.1.0"
    assert (tmp_path / "current").lstat().st_ino != inode_before
    assert (tmp_path / "current" / "bin" / "mumu-agent").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "releases"]  # no leftovers


def test_a_partial_or_missing_release_is_never_current(tmp_path: Path) -> None:
    fake_release(tmp_path, "1.0.0")
    fake_release(tmp_path, "2.0.0", partial=True)
    switch_current("1.0.0", tmp_path)
    with pytest.raises(ReleaseError):
        switch_current("2.0.0", tmp_path)
    with pytest.raises(ReleaseError):
        switch_current("3.0.0", tmp_path)
    assert current_version(tmp_path) == "1.0.0"
    assert list_releases(tmp_path) == ["1.0.0"]


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "-rf", "x" * 65])
def test_versions_are_names_not_paths(bad: str) -> None:
    with pytest.raises(ReleaseError):
        check_version(bad)


def test_the_wheelhouse_names_the_version(tmp_path: Path) -> None:
    (tmp_path / "mumu_camera-0.2.0-py3-none-any.whl").touch()
    (tmp_path / "aiortc-1.16.0-py3-none-any.whl").touch()
    assert wheel_version(tmp_path) == "0.2.0"


def test_the_command_line_lists_and_switches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_release(tmp_path, "1.0.0")
    fake_release(tmp_path, "1.1.0")
    assert main(["--root", str(tmp_path), "switch", "1.1.0"]) == 0
    assert main(["--root", str(tmp_path), "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["  1.0.0", "* 1.1.0"]
    assert main(["--root", str(tmp_path), "switch", "9"]) == 1


def test_the_current_release_is_never_rebuilt_in_place(tmp_path: Path) -> None:
    from device.releases import install_release

    fake_release(tmp_path, "1.0.0")
    switch_current("1.0.0", tmp_path)
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    (wheelhouse / "mumu_camera-1.0.0-py3-none-any.whl").touch()
    with pytest.raises(ReleaseError, match="current"):
        install_release(wheelhouse, root=tmp_path, replace=True)
    assert (tmp_path / "releases" / "1.0.0" / "bin" / "mumu-agent").exists()
