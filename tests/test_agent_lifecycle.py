"""``mumu-agent`` as a process: its credentials across restarts, systemd's notify socket and
watchdog, SIGTERM, configuration errors, ``probe``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from device import credentials as creds
from device.agent import Agent
from device.cli import main
from device.config import load
from device.provisioning import DisplayGroup
from tests.agent_process import BIN, AgentProcess, CloudViewer
from tests.cloud_process import ApiClient, CloudProcess
from tests.test_agent_watch import CLOUD_ENV

CONFIG = {"camera": {"width": 640, "height": 360, "fps": 15}, "reconnect": {"cap": 1.0}}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    with CloudProcess(tmp_path_factory.mktemp("cloud"), env=CLOUD_ENV) as cloud:
        yield cloud


async def test_credentials_are_kept_private_and_reused(cloud: CloudProcess, tmp_path: Path) -> None:
    state = tmp_path / "state"
    agent = AgentProcess(cloud.url, state, config=CONFIG).start()
    try:
        found = await agent.wait_for(r"registered as device (\w+)")
        await agent.wait_for(r"signaling: connected")
    finally:
        assert agent.terminate() == 0
    device_id = found[1]
    path = state / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = json.loads(path.read_text())
    assert first["device_id"] == device_id

    again = AgentProcess(cloud.url, state, config=CONFIG).start()
    try:
        await again.wait_for(rf"signaling: connected to \S+ as device {device_id}")
    finally:
        assert again.terminate() == 0
    assert json.loads(path.read_text()) == first


async def test_systemd_notify_ready_watchdog_and_clean_sigterm(
    cloud: CloudProcess, tmp_path: Path
) -> None:
    """A real NOTIFY_SOCKET: READY=1 after hello_ack, WATCHDOG=1 every WATCHDOG_USEC/2, then
    SIGTERM -> STOPPING=1 and exit 0 within a few seconds."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    agent = AgentProcess(
        cloud.url,
        tmp_path / "state",
        config=CONFIG,
        env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"},
    ).start()
    received: list[str] = []
    loop = asyncio.get_running_loop()

    async def until(field: str, count: int = 1, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while sum(field in m.split("\n") for m in received) < count:
                received.append((await loop.sock_recv(sock, 4096)).decode())

    try:
        await until("READY=1")
        ready = next(m for m in received if "READY=1" in m.split("\n"))
        # READY=1 comes after hello_ack: its STATUS is made from the ack (the device id in it).
        # (Not the log line: the process's stdout may be read after the datagram arrives.)
        assert "STATUS=connected as" in ready
        await until("WATCHDOG=1", count=4)
        assert agent.proc is not None
        started = time.monotonic()
        code = await asyncio.to_thread(agent.terminate, 10.0)
        assert code == 0
        assert time.monotonic() - started < 5.0, "SIGTERM takes more than a few seconds"
        await until("STOPPING=1", timeout=2)
    finally:
        agent.stop()
        sock.close()


async def test_sigterm_with_a_viewer_ends_the_session(cloud: CloudProcess, tmp_path: Path) -> None:
    agent = AgentProcess(cloud.url, tmp_path / "state", config=CONFIG).start()
    api = ApiClient(cloud.url)
    viewer = None
    try:
        code = await agent.pairing_code()
        account = await api.account()
        device = await api.pair_code(account, code)
        await agent.wait_for(r"the cloud says: paired")
        viewer = CloudViewer(cloud.ws_url, account.token)
        await viewer.watch(device["device_id"])
        assert viewer.peer is not None
        await viewer.peer.wait_frames(5, timeout=30)
        assert await asyncio.to_thread(agent.terminate, 10.0) == 0
        # The agent said watch_end before closing its socket: the viewer hears why.
        assert (await viewer.wait_ended())["reason"] == "device_ended"
    finally:
        if viewer is not None:
            await viewer.close()
        await api.aclose()
        agent.stop()


# --- configuration errors (in-process: the same main() the console script runs) -------------


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    return int(exited.value.code or 0), capsys.readouterr().err


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("yaml_text", "names"),
    [
        ("cloud: http://127.0.0.1:1\ncolour: blue\n", "colour: unknown key"),
        ("cloud: http://127.0.0.1:1\ncamera:\n  fps: 30\n  zoom: 2\n", "camera.zoom: unknown key"),
        ("cloud: http://127.0.0.1:1\ncamera:\n  fps: 0\n", "camera.fps"),
        ("cloud: http://127.0.0.1:1\ncamera:\n  width: wide\n", "camera.width"),
        ("cloud: http://127.0.0.1:1\ncamera:\n  backend: webcam9000\n", "camera.backend"),
        ("cloud: ftp://example.com\n", "cloud"),
        ("cloud: http://127.0.0.1:1\nkeep_warm: maybe\n", "keep_warm"),
        ("cloud: http://127.0.0.1:1\nreconnect:\n  cap: -1\n", "reconnect.cap"),
        ("cloud: http://127.0.0.1:1\ndisplays:\n  - backend: hologram\n", "displays[0]"),
        (
            "cloud: http://127.0.0.1:1\ndisplays:\n  - backend: console\n    colour: red\n",
            "displays[0]",
        ),
        ("- just\n- a list\n", "top level"),
    ],
)
def test_config_errors_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, names: str
) -> None:
    config = _write(tmp_path, yaml_text)
    code, err = _run_main(["run", "--config", config, "--state-dir", str(tmp_path)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mumu-agent: invalid configuration: ")
    assert names in lines[0], lines[0]


def test_missing_named_config_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "nope.yaml")
    code, err = _run_main(["run", "--config", missing, "--cloud", "http://x"], capsys)
    assert code == 2 and "nope.yaml: cannot read" in err
    monkeypatch.setenv("MUMU_AGENT_CONFIG", missing)
    code, err = _run_main(["run", "--cloud", "http://x", "--state-dir", str(tmp_path)], capsys)
    assert code == 2 and "nope.yaml: cannot read" in err


def test_flags_without_any_config_and_flags_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MUMU_AGENT_CONFIG", raising=False)
    code, err = _run_main(["run", "--camera", "synthetic", "--state-dir", str(tmp_path)], capsys)
    assert code == 2 and "cloud: required" in err
    code, err = _run_main(
        ["run", "--cloud", "http://127.0.0.1:1", "--camera", "nope", "--state-dir", str(tmp_path)],
        capsys,
    )
    assert code == 2 and "camera.backend" in err
    state_file = tmp_path / "a-file"
    state_file.write_text("")
    code, err = _run_main(
        ["run", "--cloud", "http://127.0.0.1:1", "--state-dir", str(state_file / "sub")], capsys
    )
    assert code == 2 and "state_dir" in err


def test_config_error_from_the_console_script(tmp_path: Path) -> None:
    """The installed ``mumu-agent``: exit status 2 and one line on stderr."""
    config = _write(tmp_path, "cloud: http://127.0.0.1:1\nheartbeat_intervall: 5\n")
    env = {k: v for k, v in os.environ.items() if k != "MUMU_AGENT_CONFIG"}
    done = subprocess.run(
        [str(BIN / "mumu-agent"), "run", "--config", config, "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"mumu-agent: invalid configuration: {config}: heartbeat_intervall: unknown key"
    ]


def test_probe_prints_the_hal_report() -> None:
    done = subprocess.run(
        [str(BIN / "mumu-agent"), "probe"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "synthetic" in done.stdout
    assert "Would use:" in done.stdout


@contextlib.contextmanager
def button_held() -> Iterator[None]:
    """gpiozero's mock pins as the GPIO, with the reset button (pin 27) held down."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from tests.test_provisioning_gpio import ButtonPin

    factory = MockFactory(pin_class=ButtonPin)
    previous = Device.pin_factory
    Device.pin_factory = factory
    try:
        pin = factory.pin(27)
        assert isinstance(pin, ButtonPin)
        pin.press()
        yield
    finally:
        Device.pin_factory = previous
        factory.close()


def reset_config(cloud: CloudProcess, state: Path) -> Any:
    return load(
        None,
        {
            "cloud": cloud.url,
            "state_dir": str(state),
            "camera.backend": "synthetic",
            "button": {"pin": 27, "hold_seconds": 0.2},
            "reconnect": {"base": 0.1, "cap": 1.0},
        },
        env={},
    )


async def paired_camera(cloud: CloudProcess) -> tuple[creds.Credentials, dict[str, str]]:
    """A camera's credentials, paired to a new account; that account's auth header."""
    api = ApiClient(cloud.url)
    try:
        owner = await api.account()
        camera = await api.owned_camera(owner)  # valid: without a reset they would be reused
    finally:
        await api.aclose()
    return creds.Credentials(camera.device_id, camera.device_token), owner.auth


async def assert_retired(
    cloud: CloudProcess, old: creds.Credentials, owner: dict[str, str]
) -> None:
    """The previous owner has lost the camera, and its old token works nowhere."""
    async with httpx.AsyncClient(base_url=cloud.url) as h:
        assert (await h.get("/api/devices", headers=owner)).json()["devices"] == []
        r = await h.post(
            "/api/pairing/generate",
            params={"device_id": old.device_id},
            headers={"authorization": f"Bearer {old.device_token}"},
        )
        assert r.status_code == 403


async def test_button_held_at_boot_is_a_factory_reset(cloud: CloudProcess, tmp_path: Path) -> None:
    """In-process agent, gpiozero's mock pins as the GPIO: the held button retires the saved
    credentials with the cloud (the previous owner loses the camera) and the agent registers as
    a new device (nobody's camera any more)."""
    state = tmp_path / "state"
    old, owner = await paired_camera(cloud)
    creds.save(state, old)
    with button_held():
        agent = Agent(reset_config(cloud, state), display=DisplayGroup([]))
        running = asyncio.create_task(agent.run())
        async with asyncio.timeout(20):
            while agent.client is None or not agent.client.is_connected:
                await asyncio.sleep(0.05)
            while creds.pending_retirements(state):
                await asyncio.sleep(0.05)
        assert agent.client.failures == 0, "registered anew at start, not after a refusal"
        agent.stop()
        await asyncio.wait_for(running, 10)
    new = creds.load(state)
    assert new is not None and new.device_id != old.device_id
    assert not (state / creds.PENDING_FILE_NAME).exists()
    await assert_retired(cloud, old, owner)


async def test_a_factory_reset_while_the_cloud_is_away_retires_the_camera_later(
    tmp_path: Path,
) -> None:
    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV).start()
    try:
        state = tmp_path / "state"
        old, owner = await paired_camera(cloud)
        creds.save(state, old)
        cloud.stop()
        with button_held():
            agent = Agent(reset_config(cloud, state), display=DisplayGroup([]))
            running = asyncio.create_task(agent.run())
            async with asyncio.timeout(20):
                while creds.load(state) is not None or not creds.pending_retirements(state):
                    await asyncio.sleep(0.05)
            # Forgotten for the agent, remembered for the cloud (and kept private).
            pending = state / creds.PENDING_FILE_NAME
            assert stat.S_IMODE(pending.stat().st_mode) == 0o600
            assert creds.pending_retirements(state) == [old]
            await asyncio.to_thread(cloud.start)
            async with asyncio.timeout(30):
                while creds.pending_retirements(state) or creds.load(state) is None:
                    await asyncio.sleep(0.05)
            agent.stop()
            await asyncio.wait_for(running, 10)
        await assert_retired(cloud, old, owner)
    finally:
        cloud.stop()
