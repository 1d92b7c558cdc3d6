"""The updater's systemd units: what they promise, checked by ``systemd-analyze verify``."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

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
