"""The one-command demo: the cloud (SQLite, in-process state) serving the web app, and a camera
agent with the synthetic camera, both on this machine.  Ctrl-C stops everything.

Run through ``scripts/demo`` (which installs what it needs first).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the cloud exited ({proc.returncode}); see the lines above")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("demo: the cloud did not become ready within a minute")


def main() -> None:
    parser = argparse.ArgumentParser(description="MuMu Camera demo on this machine")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0", help="where the cloud listens")
    parser.add_argument("--state", default=str(ROOT / ".mumu-demo"), help="demo data directory")
    args = parser.parse_args()

    port = args.port
    while not port_is_free(port):
        port += 1
    state = Path(args.state)
    url = f"http://localhost:{port}"
    cloud_env = {
        **os.environ,
        "MUMU_DATA_DIR": str(state / "cloud"),
        "MUMU_WEB_DIR": str(ROOT / "web"),
        "MUMU_PUBLIC_URL": url,
    }
    cloud = subprocess.Popen(
        [
            str(BIN / "mumu-cloud"),
            "serve",
            "--host",
            args.host,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=cloud_env,
    )
    agent: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(f"http://127.0.0.1:{port}", cloud)
        print(
            "\n"
            "  MuMu Camera demo is running.\n"
            f"  Open {url} , sign up, choose 'Add camera' and type the pairing code\n"
            "  the camera shows below (or scan its QR code). Ctrl-C stops everything.\n",
            flush=True,
        )
        agent = subprocess.Popen(
            [
                str(BIN / "mumu-agent"),
                "run",
                "--cloud",
                f"http://127.0.0.1:{port}",
                "--camera",
                "synthetic",
                "--display",
                "console",
                "--state-dir",
                str(state / "agent"),
                "--name",
                "Demo camera",
                "--log-level",
                "warning",
            ],
        )
        while cloud.poll() is None and agent.poll() is None:
            time.sleep(0.3)
        print("demo: a process exited; stopping", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ndemo: stopping…", flush=True)
    finally:
        for proc in (agent, cloud):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (agent, cloud):
            if proc is None:
                continue
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    main()
