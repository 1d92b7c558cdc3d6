"""``scripts/demo`` as a person uses it: the address with its port, the pairing code, each mail
the cloud sends shown on the terminal with its link (the demo has no mail server), Enter to
stop only the camera (the cloud stays up, the camera shows offline), Ctrl-C that stops cleanly,
and a restart on the same port that knows the camera is paired already.  Real processes: the
demo script starts the real cloud and the real agent with the synthetic camera."""

from __future__ import annotations

import importlib.util
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mumu_demo", ROOT / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


class Demo:
    """``scripts/demo.py`` in a subprocess, its output read line by line."""

    def __init__(self, port: int, state: Path) -> None:
        script = str(ROOT / "scripts" / "demo.py")
        self.proc = subprocess.Popen(
            [sys.executable, script, "--port", str(port), "--state", str(state)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.output.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.output)}")

    def press_enter(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def interrupt(self) -> str:
        """Ctrl-C; the rest of the output."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        time.sleep(0.2)  # the reader thread's last lines
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)


def test_an_explicit_port_in_use_is_refused_not_moved() -> None:
    demo = demo_module()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} is in use"):
            demo.choose_port("127.0.0.1", port)
    assert demo.choose_port("127.0.0.1", port) == port  # free again


@pytest.mark.slow
def test_demo_port_code_camera_offline_ctrl_c_and_restart(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = Demo(port, tmp_path / "state")
    try:
        demo.wait_for(rf"Open http://localhost:{port} , sign up")
        demo.wait_for(rf"enter the code at localhost:{port}")
        code = demo.wait_for(r"^\s+(\d{3} \d{3})\s*$").group(1).replace(" ", "")

        with httpx.Client(base_url=base, timeout=10) as http:
            email, password = f"demo-{time.monotonic_ns()}@example.com", "a demo password"
            http.post("/api/auth/register", json={"email": email, "password": password})
            token = http.post("/api/auth/login", json={"email": email, "password": password})
            auth = {"authorization": f"Bearer {token.json()['access_token']}"}
            paired = http.post("/api/devices/pair", json={"code": code}, headers=auth)
            assert paired.status_code == 200, paired.text
            device_id = paired.json()["device"]["device_id"]

            # No mail server in the demo: a mail the cloud sends is shown on its terminal, the
            # sign-up's link too, which proves the address (inviting by e-mail needs it).
            link = demo.wait_for(rf"a mail to {re.escape(email)} : .*: (http\S+/#/verify/\S+)$")
            token = link.group(1).rsplit("/", 1)[-1]
            assert http.post("/api/auth/verify", json={"token": token}).status_code == 200
            friend = f"friend-{time.monotonic_ns()}@example.com"
            r = http.post(f"/api/devices/{device_id}/invites", json={"email": friend}, headers=auth)
            assert r.status_code == 201, r.text
            shown = demo.wait_for(rf"a mail to {re.escape(friend)} : (.*): (http\S+)$")
            assert "Demo camera" in shown.group(1) and email in shown.group(1)
            assert shown.group(2) == f"http://localhost:{port}/#/signup?email={friend}"

            def online() -> bool:
                devices = http.get("/api/devices", headers=auth).json()["devices"]
                return bool(devices[0]["online"])

            deadline = time.monotonic() + 30
            while not online():
                assert time.monotonic() < deadline, "the camera never came online"
                time.sleep(0.3)

            # Enter stops only the camera: the cloud answers and shows it offline.
            demo.press_enter()
            demo.wait_for(r"the camera is stopped")
            assert http.get("/readyz").status_code == 200
            deadline = time.monotonic() + 30
            while online():
                assert time.monotonic() < deadline, "the camera never went offline"
                time.sleep(0.3)
            demo.press_enter()
            demo.wait_for(r"starting the camera")

        output = demo.interrupt()
        assert demo.proc.returncode == 0, output
        for noise in ("Traceback", "WARNING", "a process exited"):
            assert noise not in output, output
        assert "demo: stopped." in output
        # nothing it started runs on (Ctrl-C while it was starting the camera, here)
        assert not processes_mentioning(str(tmp_path / "state")), output

        # At once again, on the same port (its old connections in TIME_WAIT do not move it),
        # and the camera is known to be paired: nobody is told to type a code.
        again = Demo(port, tmp_path / "state")
        demo = again
        again.wait_for(rf"Open http://localhost:{port} , sign in, and watch 'Demo camera'")
        output = again.interrupt()
        assert again.proc.returncode == 0, output
        assert "type the pairing code" not in output
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()
