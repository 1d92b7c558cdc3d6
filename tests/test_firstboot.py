"""mumu-firstboot in-process, on a directory standing in for the camera's root: how mumu.txt is
read, what is applied where, the Wi-Fi password's removal, and every bad value reported.
(The image test boots the real thing under systemd.)"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from device.config import load
from device.firstboot import (
    AGENT_CONFIG,
    RECORD,
    WIFI_CONNECTION,
    System,
    apply,
    parse,
    show_problems,
)


@pytest.fixture
def system(tmp_path: Path) -> System:
    root = tmp_path / "root"
    zoneinfo = root / "usr/share/zoneinfo"
    (zoneinfo / "Europe").mkdir(parents=True)
    tzif = b"TZif2" + b"\0" * 40
    (zoneinfo / "Europe/London").write_bytes(tzif)
    (zoneinfo / "UTC").write_bytes(tzif)
    (zoneinfo / "iso3166.tab").write_text("# comment\nGB\tBritain (UK)\nUS\tUnited States\n")
    (root / "etc").mkdir()
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "cmdline.txt").write_text("console=tty1 root=PARTUUID=abcd-02 rootwait\n")
    return System(root=root, boot=boot, live=False)


def write(system: System, text: str | bytes) -> Path:
    assert system.boot is not None
    path = system.boot / "mumu.txt"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_parse_tolerates_what_editors_write() -> None:
    text = "\ufeff# comment\r\n\r\nCLOUD_URL = https://cam.example.org \r\nwifi_ssid='My net'\r\n"
    parsed = parse(text)
    assert parsed.values == {"cloud_url": "https://cam.example.org", "wifi_ssid": "My net"}
    assert parsed.problems == []


def test_parse_reports_unknown_keys_duplicates_and_junk() -> None:
    parsed = parse("colour=blue\njust words\ncamera=v4l2\ncamera=synthetic\n")
    keys = [p.key for p in parsed.problems]
    assert keys == ["colour", "just words", "camera"]
    assert parsed.problems[0].line == 1
    assert parsed.values["camera"] == "synthetic"


def test_settings_are_applied_and_the_password_removed(system: System) -> None:
    source = write(
        system,
        "\ufeffcloud_url=https://cam.example.org/\r\ncamera=picamera2\r\ndisplay=oled,console\r\n"
        "hostname=Porch-Cam\r\ntimezone=Europe/London\r\nwifi_ssid=Home; net\r\n"
        "wifi_password=s3cret-password\r\nwifi_country=gb\r\n",
    )
    outcome = apply(system)
    assert outcome.problems == []
    config = load(str(system.path(AGENT_CONFIG)), env={})
    assert config.cloud == "https://cam.example.org"
    assert config.camera.backend == "picamera2"
    assert [d["backend"] for d in config.displays] == ["oled", "console"]
    assert system.path("etc/hostname").read_text() == "porch-cam\n"
    assert "127.0.1.1\tporch-cam" in system.path("etc/hosts").read_text()
    assert str(system.path("etc/localtime").readlink()) == "/usr/share/zoneinfo/Europe/London"
    assert system.boot is not None
    assert "cfg80211.ieee80211_regdom=GB" in (system.boot / "cmdline.txt").read_text()
    keyfile = system.path(WIFI_CONNECTION)
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    text = keyfile.read_text()
    assert "ssid=Home\\; net" in text and "psk=s3cret-password" in text

    after = source.read_bytes()
    assert b"s3cret-password" not in after
    assert after.startswith("\ufeff".encode()) and after.count(b"\r\n") == 8
    assert b"# wifi_password: removed" in after
    record = json.loads(system.path(RECORD).read_text())
    assert record["applied"]["wifi_password"] == "(set)"
    assert "s3cret" not in system.path(RECORD).read_text()
    assert "s3cret" not in (system.boot / "mumu-applied.txt").read_text()

    # The next boot: the same file (now without the password) keeps the Wi-Fi as it is.
    again = apply(system)
    assert again.problems == [] and not again.changed
    assert keyfile.read_text() == text


def test_other_agent_settings_are_kept(system: System) -> None:
    path = system.path(AGENT_CONFIG)
    path.parent.mkdir(parents=True)
    path.write_text(
        yaml.safe_dump(
            {
                "cloud": "https://old.example.org",
                "keep_warm": True,
                "displays": [{"backend": "oled", "driver": "sh1106"}],
            }
        )
    )
    write(system, "display=oled,led\n")
    assert apply(system).problems == []
    config = load(str(path), env={})
    assert config.cloud == "https://old.example.org" and config.keep_warm
    assert config.displays == [{"backend": "oled", "driver": "sh1106"}, {"backend": "led"}]


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("cloud_url=ftp://cam.example.org", "cloud_url"),
        ("camera=webcam", "camera"),
        ("display=tv", "display"),
        ("hostname=-bad-", "hostname"),
        ("timezone=Mars/Olympus", "timezone"),
        ("timezone=../../etc/passwd", "timezone"),
        ("wifi_country=XX", "wifi_country"),
        ("wifi_password=short", "wifi_password"),
    ],
)
def test_a_bad_value_is_reported_and_not_applied(system: System, line: str, key: str) -> None:
    wifi = "wifi_ssid=Net\n" if key == "wifi_password" else ""
    cloud = "" if key == "cloud_url" else "cloud_url=https://cam.example.org\n"
    write(system, f"{cloud}{wifi}{line}\n")
    outcome = apply(system)
    assert [p.key for p in outcome.problems] == [key]
    assert outcome.problems[0].line is not None
    assert key not in outcome.applied
    record = json.loads(system.path(RECORD).read_text())
    assert len(record["problems"]) == 1
    assert system.boot is not None
    assert key in (system.boot / "mumu-applied.txt").read_text()
    if key != "cloud_url":
        config = load(str(system.path(AGENT_CONFIG)), env={})
        assert config.cloud == "https://cam.example.org"
        assert config.camera.backend == "auto"


def test_without_a_cloud_the_camera_says_so(system: System) -> None:
    write(system, "camera=synthetic\n")
    outcome = apply(system)
    assert [p.key for p in outcome.problems] == ["cloud_url"]


def test_a_new_network_without_its_password_is_a_problem(system: System) -> None:
    write(system, "cloud_url=https://c.example.org\nwifi_ssid=Elsewhere\n")
    assert [p.key for p in apply(system).problems] == ["wifi_password"]
    assert not system.path(WIFI_CONNECTION).exists()


def test_an_open_network(system: System) -> None:
    write(system, "cloud_url=https://c.example.org\nwifi_ssid=Cafe\nwifi_password=\n")
    outcome = apply(system)
    assert outcome.problems == [] and outcome.applied["wifi_password"] == "(open network)"
    assert "wifi-security" not in system.path(WIFI_CONNECTION).read_text()


def test_no_settings_file_changes_nothing(system: System) -> None:
    assert system.boot is not None
    shutil.rmtree(system.boot)
    system.boot = None
    outcome = apply(system)
    assert not outcome.changed and outcome.problems == []
    assert not system.path(AGENT_CONFIG).exists()


def test_problems_are_shown_on_the_display(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    write(system, "cloud_url=https://c.example.org\ncamera=webcam\n")
    outcome = apply(system)
    show_problems(outcome.problems, system, hold_s=0)
    shown = capsys.readouterr().out
    assert "Error" in shown and "camera" in shown
