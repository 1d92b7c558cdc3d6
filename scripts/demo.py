"""The one-command demo: the cloud (SQLite, in-process state) serving the web app, and a camera
agent with the synthetic camera, both on this machine.

Enter stops the camera (to see "camera offline" in the app) and starts it again; Ctrl-C stops
everything.  The cloud's and the camera's logs go to files in the demo's data directory, not to
this terminal: the terminal shows only what a person needs (the address, the pairing code, and
each mail the cloud would send: the demo has no mail server, so the cloud writes its mails to
``mail.jsonl`` (``MUMU_MAIL_LOG``) and the demo shows each one here, with its link).

Run through ``scripts/demo`` (which installs what it needs first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_PORT = 8080


def port_is_free(host: str, port: int) -> bool:
    """Whether the cloud can listen on ``port``.  With SO_REUSEADDR, as the cloud's own socket
    has it: the previous run's connections in TIME_WAIT do not keep a port busy."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, asked: int | None) -> int:
    """The port asked for, or else the first free one from 8080.  An explicit ``--port`` that is
    taken is an error: moving elsewhere would strand the tab open on it."""
    if asked is not None:
        if not port_is_free(host, asked):
            raise SystemExit(
                f"demo: port {asked} is in use by another program. Stop it, or choose another "
                "port with --port."
            )
        return asked
    port = DEFAULT_PORT
    while not port_is_free(host, port):
        port += 1
    return port


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def camera_is_paired(state: Path) -> bool:
    """Whether the demo camera already belongs to an account (a restart of an earlier demo)."""
    try:
        device_id = json.loads((state / "agent" / "credentials.json").read_text())["device_id"]
        db = sqlite3.connect(f"file:{state / 'cloud' / 'mumu.db'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT owner_id FROM devices WHERE id = ?", (device_id,)).fetchone()
        finally:
            db.close()
    except (OSError, KeyError, ValueError, sqlite3.Error):
        return False
    return bool(row and row[0])


class Mails:
    """The mails the cloud wrote to its ``MUMU_MAIL_LOG`` (one JSON object a line), read as they
    come; those of earlier runs are not shown again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size
        except OSError:
            self.offset = 0

    def new(self) -> list[str]:
        """What to show for each mail written since the last look."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next look
        self.offset += len(complete)
        shown = []
        for line in complete.splitlines():
            try:
                mail = json.loads(line)
                to, subject, link = mail["to"], mail["subject"], mail.get("link")
            except (ValueError, KeyError, TypeError):
                continue
            words = str(subject).removeprefix("MuMu Camera: ")
            shown.append(f"  a mail to {to} : {words}" + (f": {link}" if link else ""))
        return shown


class Demo:
    def __init__(self, host: str, port: int, state: Path) -> None:
        self.host = host
        self.port = port
        self.state = state
        self.url = f"http://localhost:{port}"
        self.local = f"http://127.0.0.1:{port}"
        self.cloud: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.logs: list[IO[bytes]] = []
        state.mkdir(parents=True, exist_ok=True)
        self.mails = Mails(state / "mail.jsonl")

    def log(self, name: str) -> IO[bytes]:
        f = open(self.state / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop())
        self.logs.append(f)
        return f

    def start_cloud(self) -> None:
        env = {
            **os.environ,
            "MUMU_DATA_DIR": str(self.state / "cloud"),
            "MUMU_WEB_DIR": str(ROOT / "web"),
            "MUMU_PUBLIC_URL": self.url,
            # No mail server here: the cloud writes each mail to this file, shown on the terminal.
            "MUMU_MAIL_LOG": str(self.mails.path),
        }
        argv = [str(BIN / "mumu-cloud"), "serve", "--host", self.host, "--port", str(self.port)]
        # Its own session: Ctrl-C reaches the demo only, which stops the children in order.
        log = self.log("cloud")
        with interrupts_held():
            self.cloud = subprocess.Popen(
                [*argv, "--log-level", "warning"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not ready(self.local):
            if self.cloud.poll() is not None:
                raise SystemExit(
                    f"demo: the cloud did not start. Its log ({self.state / 'cloud.log'}):\n"
                    + tail(self.state / "cloud.log")
                )
            if time.monotonic() > deadline:
                raise SystemExit("demo: the cloud did not become ready within a minute")
            time.sleep(0.2)

    def start_agent(self) -> None:
        # The agent logs to its stdout, which goes to agent.log; the console display (state,
        # code, QR) writes to its stderr, which is this terminal.
        config = self.state / "agent.yaml"
        config.write_text("displays:\n  - backend: console\n    stream: stderr\n")
        argv = [
            str(BIN / "mumu-agent"),
            "run",
            "--config",
            str(config),
            "--cloud",
            self.local,
            "--camera",
            "synthetic",
            "--state-dir",
            str(self.state / "agent"),
            "--name",
            "Demo camera",
            "--log-level",
            "warning",
        ]
        log = self.log("agent")
        with interrupts_held():
            self.agent = subprocess.Popen(argv, stdout=log, start_new_session=True)

    def stop_agent(self) -> None:
        stop(self.agent)
        self.agent = None

    def stop(self) -> None:
        stop(self.agent)
        stop(self.cloud)
        for f in self.logs:
            f.close()

    def run(self) -> int:
        """Until Ctrl-C (0) or the cloud exits (1)."""
        interactive = sys.stdin.isatty()
        while True:
            for mail in self.mails.new():
                say(mail)
            if self.cloud is not None and self.cloud.poll() is not None:
                say(
                    f"demo: the cloud stopped (exit status {self.cloud.returncode}). Its log "
                    f"({self.state / 'cloud.log'}):\n{tail(self.state / 'cloud.log')}"
                )
                return 1
            if self.agent is not None and self.agent.poll() is not None:
                say(
                    f"demo: the camera stopped (exit status {self.agent.returncode}); the cloud "
                    f"keeps running. Its log: {self.state / 'agent.log'}. Press Enter to start "
                    "it again."
                )
                self.agent = None
            if wait_for_enter(0.3, interactive):
                if self.agent is None:
                    say("demo: starting the camera…")
                    self.start_agent()
                else:
                    self.stop_agent()
                    say(
                        "demo: the camera is stopped; the app shows it offline within seconds. "
                        "Press Enter to start it again."
                    )


def wait_for_enter(timeout: float, interactive: bool) -> bool:
    """Whether a line was typed within ``timeout`` seconds (stdin: a terminal or a pipe)."""
    try:
        readable, _, _ = select.select([sys.stdin], [], [], timeout)
    except (OSError, ValueError):  # no usable stdin
        time.sleep(timeout)
        return False
    if not readable:
        return False
    line = sys.stdin.readline()
    if line == "" and not interactive:  # a closed pipe: no more commands
        sys.stdin = open(os.devnull)  # noqa: SIM115 (lives as long as the demo)
        return False
    return True


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C (or SIGTERM) arriving while a child starts takes effect once the child is
    recorded: interrupted inside ``Popen`` the child would run on, unknown to ``stop()``."""
    held: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, _frame: held.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            raise KeyboardInterrupt


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def say(text: str) -> None:
    print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="MuMu Camera demo on this machine: the cloud, the web app and a simulated "
        "camera. Enter stops or starts the camera; Ctrl-C stops everything."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"where the web app is served (default: {DEFAULT_PORT}, or the next free port; "
        "a port given here is used or the demo stops)",
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="the address the cloud listens on (default: 0.0.0.0)"
    )
    parser.add_argument(
        "--state",
        default=str(ROOT / ".mumu-demo"),
        help="the demo's data directory: accounts, the camera's identity, logs "
        "(default: .mumu-demo in the repository)",
    )
    args = parser.parse_args()

    state = Path(args.state)
    demo = Demo(args.host, choose_port(args.host, args.port), state)
    code = 0
    try:
        demo.start_cloud()
        paired = camera_is_paired(state)
        next_step = (
            "sign in, and watch 'Demo camera' (it is already on your account)."
            if paired
            else "sign up, choose 'Add camera' and type the pairing code the camera\n"
            "  shows below (or scan its QR code)."
        )
        say(
            "\n"
            "  MuMu Camera demo is running.\n"
            f"  Open {demo.url} , {next_step}\n"
            "  Enter stops the camera (and starts it again). Ctrl-C stops everything.\n"
            "  The mails the cloud sends (sign-up, invitations) are shown here, with their links.\n"
            f"  Logs: {state / 'cloud.log'}, {state / 'agent.log'}\n"
        )
        say(
            "  The rollouts page is for operators: after confirming your address, grant your\n"
            f"  account with  MUMU_DATA_DIR={state / 'cloud'} {BIN / 'mumu-cloud'} operator add "
            "<your e-mail>\n"
        )
        demo.start_agent()
        code = demo.run()
    except KeyboardInterrupt:
        say("\ndemo: stopping…")
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            demo.stop()
    if code == 0:
        say("demo: stopped.")
    raise SystemExit(code)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    main()
