"""The SD image, built here and booted under real systemd in systemd-nspawn (aarch64 under
qemu-user): first-boot settings from mumu.txt, the hardened agent unit reaching READY, a pairing
code on the console, pairing through the cloud's API, real H.264 frames decoded on the host, a
power cycle that keeps the pairing, and the image's export hygiene.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from image import diskimage
from tests.agent_process import CloudViewer
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import ApiClient, CloudProcess
from tests.image_fixtures import (
    CODE,
    TIMINGS,
    BuiltImage,
    Camera,
    built_image,
    camera_factory,
)

__all__ = ["built_image", "camera_factory"]  # fixtures

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

WIFI_PASSWORD = "correct-horse-battery"


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudProcess]:
    """The camera's cloud on the host; the container shares the host's network."""
    with CloudProcess(tmp_path / "cloud", env=RELAXED) as process:
        yield process


def settings_file(cloud_url: str) -> bytes:
    """A mumu.txt as Windows Notepad saves it: BOM, CRLF, comments, a quoted value."""
    lines = [
        "# my camera",
        f"cloud_url={cloud_url}",
        "camera=synthetic",
        "display=console",
        "hostname=porch-cam",
        "timezone=Europe/Paris",
        'wifi_ssid="Home network"',
        f"wifi_password={WIFI_PASSWORD}",
        "wifi_country=FR",
        "brightness=11",  # no such setting: reported, the rest still applied
    ]
    return ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()


async def watch_frames(cloud: CloudProcess, token: str, device_id: str, frames: int = 10) -> int:
    """Watch the device from the host with a real aiortc viewer; frames decoded."""
    viewer = await CloudViewer(cloud.ws_url, token).connect()
    try:
        await viewer.watch(device_id, timeout=60)
        assert viewer.peer is not None
        await viewer.peer.wait_frames(frames, timeout=120)
        return len(viewer.peer.frames)
    finally:
        await viewer.end()
        await viewer.close()


async def wait_online(api: ApiClient, token: str, device_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = await api.http.get("/api/devices", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        devices = {d["device_id"]: d for d in r.json()["devices"]}
        assert device_id in devices, "the camera lost its owner"
        if devices[device_id]["online"]:
            return
        assert time.monotonic() < deadline, f"the camera did not come back online in {timeout}s"
        await asyncio.sleep(0.5)


async def test_flashed_camera_pairs_streams_and_survives_a_power_cycle(
    cloud: CloudProcess, camera_factory: object
) -> None:
    make = camera_factory
    assert callable(make)
    cam: Camera = make(mumu_txt=settings_file(cloud.url))
    cam.start()
    code = await asyncio.to_thread(cam.pairing_code)
    boot_to_code = time.monotonic() - cam.started_at
    TIMINGS["boot to pairing code, nspawn + qemu-user (s)"] = round(boot_to_code, 1)

    # The agent runs under real systemd with its hardened unit and said READY (Type=notify).
    await asyncio.to_thread(cam.wait_active, "mumu-agent.service")
    show = cam.run(
        [
            "systemctl",
            "show",
            "-P",
            "User",
            "-P",
            "ExecStart",
            "-P",
            "NoNewPrivileges",
            "mumu-agent.service",
        ]
    ).stdout
    assert "mumu" in show and "/opt/mumu/current/bin/mumu-agent" in show
    agent_pid = cam.run(["systemctl", "show", "-P", "MainPID", "mumu-agent.service"]).stdout
    owner = cam.run(["stat", "-c", "%U", f"/proc/{agent_pid.strip()}"]).stdout.strip()
    assert owner == "mumu"

    # First boot applied mumu.txt before the agent: settings, Wi-Fi, and no password left.
    assert cam.unit_state("mumu-firstboot.service") == "active"
    assert cam.run(["cat", "/etc/hostname"]).stdout.strip() == "porch-cam"
    assert cam.run(["readlink", "/etc/localtime"]).stdout.strip().endswith("Europe/Paris")
    boot_txt = (cam.boot / "mumu.txt").read_bytes()
    assert WIFI_PASSWORD.encode() not in boot_txt
    assert boot_txt.startswith("\ufeff".encode()) and b"\r\n" in boot_txt
    assert b"cloud_url=" + cloud.url.encode() in boot_txt
    keyfile = "/etc/NetworkManager/system-connections/mumu-wifi.nmconnection"
    mode = cam.run(["stat", "-c", "%a %U", keyfile]).stdout.split()
    assert mode == ["600", "root"]
    assert f"psk={WIFI_PASSWORD}" in cam.run(["cat", keyfile]).stdout
    assert "ssid=Home network" in cam.run(["cat", keyfile]).stdout
    assert "cfg80211.ieee80211_regdom=FR" in (cam.boot / "cmdline.txt").read_text()
    record = json.loads(cam.run(["cat", "/var/lib/mumu-firstboot/applied.json"]).stdout)
    assert record["applied"]["wifi_password"] == "(set)"
    assert len(record["problems"]) == 1 and "brightness" in record["problems"][0]
    applied_txt = (cam.boot / "mumu-applied.txt").read_text()
    assert WIFI_PASSWORD not in applied_txt and "brightness" in applied_txt
    # The bad line is on the console (and so in the journal), and on the display (console).
    cam.console.wait_for(r"mumu-firstboot\[\d+\]: .*brightness", timeout=10)
    assert "brightness" in cam.journal("-u", "mumu-firstboot", "-p", "err")

    # Pair with the code from the console, then watch from the host: real frames from inside.
    api = ApiClient(cloud.url)
    try:
        account = await api.account()
        device = await api.pair_code(account, code)
        device_id = device["device_id"]
        frames = await watch_frames(cloud, account.token, device_id)
        assert frames >= 10

        # The journal has the agent's records with structured fields (systemd-python).
        fields = cam.run(
            [
                "journalctl",
                "-u",
                "mumu-agent",
                "-o",
                "json",
                "--output-fields",
                "DEVICE_ID,PHASE,MESSAGE",
            ],
            check=False,
        ).stdout
        entries = [json.loads(line) for line in fields.splitlines() if line.startswith("{")]
        assert any(e.get("DEVICE_ID") == device_id for e in entries), fields[-2000:]
        assert any(e.get("PHASE") for e in entries), fields[-2000:]

        # Power off cleanly, power on: same card, same identity, no new pairing needed.
        mark = cam.console.mark()
        assert await asyncio.to_thread(cam.poweroff) == 0
        cam.start()
        await asyncio.to_thread(cam.wait_active, "mumu-agent.service")
        await wait_online(api, account.token, device_id, timeout=120)
        assert cam.console.search(CODE, since=mark) is None
        assert await watch_frames(cloud, account.token, device_id, frames=5) >= 5

        # A power cut (every process killed at once), then power on again.
        cam.kill()
        cam.start()
        await asyncio.to_thread(cam.wait_active, "mumu-agent.service")
        await wait_online(api, account.token, device_id, timeout=120)
    finally:
        await api.aclose()


def test_image_export_hygiene(built_image: BuiltImage) -> None:
    """No build-time identity or secret leaves with the image."""
    root = diskimage.RootPartition(built_image.image)
    try:
        assert root.read("/etc/machine-id") == b"", "machine-id must be empty"
        assert not root.exists("/var/lib/dbus/machine-id")
        assert [n for n in root.listdir("/etc/ssh") if n.startswith("ssh_host_")] == []
        assert not root.exists("/var/lib/mumu/credentials.json")
        assert not root.exists("/etc/mumu/agent.yaml")
        assert not root.exists("/var/lib/mumu-firstboot")
        assert not root.exists("/var/lib/systemd/random-seed")
        assert not root.exists("/root/.cache")
        assert not root.exists("/var/cache/mumu-release")
        assert not root.exists("/var/lib/mumu-update")
        assert not root.exists("/etc/NetworkManager/system-connections/mumu-wifi.nmconnection")
        for log in _files_under(root, "/var/log"):
            assert root.size(log) == 0, f"{log} is not empty"
        shadow = dict(line.split(":", 2)[:2] for line in root.read("/etc/shadow").decode().split())
        assert shadow["root"] == "*", "root must have no password"
        assert all(password in {"*", "!", "!*"} for password in shadow.values()), shadow
        # The layout the updates switch, installed by the updater's own installer: current and
        # committed on the first release, with the bundle's manifest.
        version = built_image.agent_version
        for link in ("current", "committed"):
            assert root.debugfs(f"stat /opt/mumu/{link}").find("Type: symlink") >= 0
            assert f"releases/{version}" in root.debugfs(f"stat /opt/mumu/{link}")
        manifest = json.loads(root.read(f"/opt/mumu/releases/{version}/mumu-release.json"))
        assert (manifest["version"], manifest["arch"], manifest["python_abi"]) == (
            version,
            "aarch64",
            "cp311",
        )
        # The trust root of the repository the image was built against, where the updater
        # reads it; the hardened agent and the updater's units enabled.
        repo_root = max(
            built_image.update_repo.glob("metadata/*.root.json"),
            key=lambda p: int(p.name.split(".")[0]),
        )
        assert root.read("/etc/mumu/update-root.json") == repo_root.read_bytes()
        wants = "/etc/systemd/system/multi-user.target.wants"
        for unit in ("mumu-agent.service", "mumu-firstboot.service", "mumu-update-boot.service"):
            assert root.exists(f"{wants}/{unit}"), unit
        assert root.exists("/etc/systemd/system/paths.target.wants/mumu-update.path")
        assert root.exists("/etc/systemd/system/timers.target.wants/mumu-update.timer")
    finally:
        root.close()
    boot = diskimage.boot_files(built_image.image)
    template = boot["mumu.txt"].decode()
    active = [line for line in template.splitlines() if line.strip() and not line.startswith("#")]
    assert active == [], "the template sets nothing until a person does"
    assert "wifi_password" in template  # documented, commented out
    assert "dtparam=i2c_arm=on" in boot["config.txt"].decode().splitlines()
    disk = diskimage.disk_id(built_image.image)
    assert f"root=PARTUUID={disk}-02" in boot["cmdline.txt"].decode()


def _files_under(root: diskimage.RootPartition, path: str) -> list[str]:
    out = root.debugfs(f"ls -p {path}")
    files = []
    for line in out.splitlines():
        fields = line.strip().strip("/").split("/")
        if len(fields) < 5 or fields[4] in {".", ".."}:
            continue
        mode = int(fields[1], 8)
        child = f"{path}/{fields[4]}"
        if mode & 0o170000 == 0o040000:
            files += _files_under(root, child)
        elif mode & 0o170000 == 0o100000:
            files.append(child)
    return files
