"""hardware-tests/run proven before a Pi is attached: against the SD image booted in
systemd-nspawn, with a real cloud serving the web app, Chromium watching from the host."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, WEB_ROOT
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import CloudProcess
from tests.image_fixtures import TIMINGS, BuiltImage, built_image
from tests.services import require

__all__ = ["built_image"]  # fixture

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]
REPO = Path(__file__).resolve().parent.parent


def test_the_runner_against_the_nspawn_booted_image(
    built_image: BuiltImage, tmp_path: Path
) -> None:
    require(shutil.which(CHROMIUM) is not None, f"Chromium ({CHROMIUM})")
    report = tmp_path / "report"
    env = {**RELAXED, "MUMU_WEB_DIR": str(WEB_ROOT)}
    with CloudProcess(tmp_path / "cloud", env=env) as cloud:
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "hardware-tests" / "runner.py"),
                "--nspawn",
                str(built_image.image),
                "--cloud",
                cloud.url,
                "--camera",
                "synthetic",
                "--report",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=1500,
        )
    print(done.stdout[-8000:], done.stderr[-4000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    host = ET.parse(report / "host.xml").getroot()
    outcomes = {c.get("name"): _outcome(c) for c in host.iter("testcase")}
    assert outcomes == {
        "reach the target": "passed",
        "install the current build": "skipped",  # a flashed image
        "hardware tests on the target": "passed",
        "agent running under systemd": "passed",
        "end-to-end watch in headless Chromium": "passed",
    }
    target = ET.parse(report / "target.xml").getroot()
    on_target = {c.get("name"): _outcome(c) for c in target.iter("testcase")}
    # Hardware checks skip in a container; the image's own checks run.
    assert on_target["test_the_release_layout"] == "passed"
    assert on_target["test_the_agent_user_may_use_camera_gpio_and_i2c"] == "passed"
    assert on_target["test_systemd_python_is_seen_by_the_release"] == "passed"
    assert on_target["test_i2c_is_on"] == "skipped"
    assert on_target["test_webrtc_session_from_the_picked_camera"] == "skipped"
    assert "failed" not in on_target.values()
    watch = json.loads((report / "watch.json").read_text())
    assert watch["video"]["width"] > 0 and watch["frames"][-1] > watch["frames"][0]
    summary = (report / "summary.md").read_text()
    assert "| host | end-to-end watch in headless Chromium | passed |" in summary
    TIMINGS["hardware-tests/run self-test (s)"] = round(
        sum(float(c.get("time") or 0) for c in host.iter("testcase")), 1
    )


def _outcome(case: ET.Element) -> str:
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    return "skipped" if case.find("skipped") is not None else "passed"
