"""The agent's small parts on their own: config, credentials file, backoff, URLs, ICE candidate
parsing, sd_notify over a real datagram socket, the systemd unit."""

from __future__ import annotations

import os
import random
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from device import credentials as creds
from device.config import ConfigError, load
from device.credentials import Credentials
from device.sessions import ice_configuration, parse_candidate
from device.signaling import Backoff, ws_url
from device.systemd import JournalFormatter, Notifier
from protocol.messages import IceCandidate, IceServer
from tests.services import require

UNIT = Path(__file__).resolve().parent.parent / "device" / "systemd" / "mumu-agent.service"


# --- config -----------------------------------------------------------------------------------


def test_flags_override_the_file_and_defaults_fill_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "cloud: https://cam.example.com\ncamera:\n  backend: v4l2\n  fps: 25\nkeep_warm: true\n"
    )
    config = load(str(path), {"camera.backend": "synthetic", "state_dir": str(tmp_path)}, env={})
    assert config.cloud == "https://cam.example.com"
    assert config.camera.backend == "synthetic"
    assert config.camera.fps == 25
    assert config.camera.width == 1280
    assert config.keep_warm is True
    assert config.state_path == tmp_path
    assert config.displays == [{"backend": "console"}]
    assert (config.max_sessions, config.frame_timeout) == (4, 10.0)


def test_the_default_file_may_be_missing_but_a_named_one_may_not(tmp_path: Path) -> None:
    config = load(None, {"cloud": "http://127.0.0.1:8000"}, env={})
    assert config.cloud_url == "http://127.0.0.1:8000"
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load(None, {"cloud": "http://x"}, env={"MUMU_AGENT_CONFIG": str(tmp_path / "nope.yaml")})


def test_an_empty_file_is_an_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("# nothing yet\n")
    assert load(str(path), {"cloud": "http://x"}, env={}).camera.backend == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cloud: http://x\ncamera: {fps: 500}\n", "camera.fps: expected `int` <= 120"),
        ("cloud: http://x\ncamera: {width: 641}\n", "camera.width: expected `int` that's a"),
        ("cloud: http://x\ncamera: 3\n", "camera: expected `object`, got `int`"),
        ("cloud: http://x\nreconnect: {base: 5, cap: 1}\n", "reconnect.cap: must be at least"),
        ("cloud: http://x\nbutton: {pin: 27, hold_seconds: 0}\n", "button: hold_seconds"),
        ("cloud: http://x\ndisplays: [{pin: 3}]\n", "displays[0].backend: required"),
        ("cloud: http://x:99999\n", "cloud: bad port"),
        ("cloud: http://x\nlog_level: loud\n", "log_level: invalid enum value"),
        ("cloud: http://x\nmax_sessions: 0\n", "max_sessions: expected `int` >= 1"),
        ("cloud: http://x\nframe_timeout: 0\n", "frame_timeout: expected `float` > 0"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load(str(path), env={})
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


# --- credentials ------------------------------------------------------------------------------


def test_credentials_round_trip_private_and_atomic(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert creds.load(state) is None
    saved = Credentials(device_id="dev1", device_token="secret-token", cloud="http://x")
    path = creds.save(state, saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert creds.load(state) == saved
    assert "secret-token" not in repr(saved)
    creds.save(state, Credentials(device_id="dev2", device_token="t2"))
    assert sorted(p.name for p in state.iterdir()) == ["credentials.json"]  # no temp files
    assert creds.load(state) == Credentials(device_id="dev2", device_token="t2")
    creds.forget(state)
    creds.forget(state)
    assert creds.load(state) is None


def test_damaged_credentials_mean_register_anew(tmp_path: Path) -> None:
    (tmp_path / "credentials.json").write_text('{"device_id": ')
    assert creds.load(tmp_path) is None


def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(creds.CredentialsError, match="cannot write"):
        creds.save(blocker / "state", Credentials(device_id="d", device_token="t"))


# --- backoff and URLs -------------------------------------------------------------------------


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(7))
    bounds = [min(30.0, 0.5 * 2**n) for n in range(12)]
    delays = [backoff.next_delay() for _ in bounds]
    assert all(0 <= d <= b for d, b in zip(delays, bounds, strict=True))
    assert max(delays) > 5, "the bound grows"
    samples = [backoff.next_delay() for _ in range(2000)]
    assert max(samples) <= 30.0
    assert min(samples) < 3.0, "full jitter: anywhere from zero to the cap"
    backoff.reset()
    assert backoff.next_delay() <= 0.5


@pytest.mark.parametrize(
    ("cloud", "expected"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws/device"),
        ("https://cam.example.com/", "wss://cam.example.com/ws/device"),
        ("https://example.com/mumu", "wss://example.com/mumu/ws/device"),
    ],
)
def test_ws_url(cloud: str, expected: str) -> None:
    assert ws_url(cloud) == expected


# --- ICE --------------------------------------------------------------------------------------


def test_browser_candidates_parse_and_keep_their_mid() -> None:
    text = "candidate:842163049 1 udp 1677729535 192.0.2.7 50506 typ srflx raddr 0.0.0.0 rport 0"
    parsed = parse_candidate(IceCandidate(candidate=text, sdpMid="0", sdpMLineIndex=0))
    assert (parsed.ip, parsed.port, parsed.type, parsed.protocol) == (
        "192.0.2.7",
        50506,
        "srflx",
        "udp",
    )
    assert parsed.sdpMid == "0" and parsed.sdpMLineIndex == 0
    assert parse_candidate(IceCandidate(candidate="", sdpMid="0")) is None
    with pytest.raises(ValueError, match="unreadable"):
        parse_candidate(IceCandidate(candidate="candidate:garbage", sdpMid="0"))


def test_ice_configuration_passes_turn_credentials_and_never_adds_a_default() -> None:
    assert ice_configuration([]).iceServers == []
    config = ice_configuration(
        [IceServer(urls=["turn:t.example:3478"], username="123:dev", credential="c2VjcmV0")]
    )
    (server,) = config.iceServers
    assert (server.urls, server.username, server.credential) == (
        ["turn:t.example:3478"],
        "123:dev",
        "c2VjcmV0",
    )


# --- systemd ----------------------------------------------------------------------------------


def test_sd_notify_datagrams_path_and_abstract(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert notifier.watchdog_interval_s == 1.0
        notifier.ready("connected")
        assert sock.recv(4096) == b"READY=1\nSTATUS=connected"
    name = f"mumu-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": f"@{name}"}).notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_no_systemd_no_notifications() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.notify("READY=1")
    assert notifier.watchdog_interval_s is None
    other_pid = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other_pid.watchdog_interval_s is None


def test_journal_lines_carry_the_syslog_priority() -> None:
    import logging

    record = logging.LogRecord("device.agent", logging.WARNING, __file__, 1, "a\nb", (), None)
    assert JournalFormatter().format(record) == "<4>device.agent: a\n<4>b"


def test_unit_file_has_what_the_agent_relies_on() -> None:
    text = UNIT.read_text()
    settings = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert settings["Type"] == "notify"
    assert settings["WatchdogSec"] == "60"
    assert settings["Restart"] == "always"
    assert settings["User"] == "mumu"
    assert settings["ProtectSystem"] == "strict"
    assert settings["StateDirectory"] == "mumu"
    assert settings["NoNewPrivileges"] == "yes"
    assert "mumu-agent run" in settings["ExecStart"]


def test_unit_file_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze (systemd)")
    assert analyze is not None
    unit = tmp_path / "mumu-agent.service"
    fake = tmp_path / "mumu-agent"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit.write_text(UNIT.read_text().replace("/opt/mumu/current/bin/mumu-agent", str(fake)))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mumu-agent" not in done.stdout + done.stderr, done.stdout + done.stderr
