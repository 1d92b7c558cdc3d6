"""The SD image on the target: the release layout, the agent's user, systemd-python, and the
choices that only a real Raspberry Pi OS can prove (picamera2 from apt beside the venv's own
``av``, I2C on).  Run by hardware-tests/run with the release's Python; each test skips where
what it checks does not exist (the nspawn self-test has no Pi archive packages, no I2C bus)."""

from __future__ import annotations

import grp
import importlib
import os
import sys
from pathlib import Path

import pytest

CURRENT = Path("/opt/mumu/current")


def on_a_pi() -> bool:
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False


def test_the_release_layout() -> None:
    if not CURRENT.is_symlink():
        pytest.skip("not a MuMu image (no /opt/mumu/current)")
    target = os.readlink(CURRENT)
    assert target.startswith("releases/")
    assert (CURRENT / "bin" / "mumu-agent").exists()
    assert (CURRENT / "mumu-release.json").exists()


def test_the_agent_user_may_use_camera_gpio_and_i2c() -> None:
    try:
        members = {g.gr_name for g in grp.getgrall() if "mumu" in g.gr_mem}
    except KeyError:
        pytest.skip("no mumu user")
    assert {"video", "gpio", "i2c"} <= members


def test_systemd_python_is_seen_by_the_release() -> None:
    if not CURRENT.is_symlink():
        pytest.skip("not a MuMu image")
    journal = importlib.import_module("systemd.journal")
    daemon = importlib.import_module("systemd.daemon")
    assert callable(journal.send) and callable(daemon.notify)


def test_picamera2_from_apt_runs_with_the_venvs_av() -> None:
    """The known risk: python3-picamera2 (apt) imports ``av``; the release venv installs its own
    ``av`` from PyPI (aiortc needs a newer one than the OS has), and the venv's wins on
    ``sys.path``.  picamera2's encoders and outputs must import and work with it."""
    try:
        picamera2 = importlib.import_module("picamera2")
    except ImportError:
        pytest.skip("no python3-picamera2 (not Raspberry Pi OS)")
    import av

    assert Path(av.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), av.__file__
    importlib.import_module("picamera2.encoders")
    importlib.import_module("picamera2.outputs")
    assert picamera2.Picamera2 is not None


def test_i2c_is_on() -> None:
    if not on_a_pi():
        pytest.skip("not a Raspberry Pi")
    assert Path("/dev/i2c-1").exists(), "dtparam=i2c_arm=on and i2c-dev should give /dev/i2c-1"
