"""systemd integration without libsystemd: ``sd_notify`` over ``$NOTIFY_SOCKET``, the watchdog,
and log lines the journal understands.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket path, or an
abstract one starting with ``@``) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``).  Outside systemd every call here does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``sd_notify`` datagrams; a no-op when ``NOTIFY_SOCKET`` is unset."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        self.watchdog_interval_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; False on failure."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(data)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    async def watchdog(self) -> None:
        """Ping the watchdog every half period, from the event loop (a stuck loop stops the
        pings and systemd restarts the agent).  Returns at once when there is no watchdog."""
        if self.watchdog_interval_s is None or not self.enabled:
            return
        log.info("systemd watchdog: pinging every %.1f s", self.watchdog_interval_s)
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval_s)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, if the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2 / 1_000_000


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``: journald reads the syslog priority prefix on stdout
    (``SyslogLevelPrefix=`` is on by default) and timestamps the line itself."""

    PRIORITY = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def configure_logging(level: str, env: Mapping[str, str] | None = None) -> None:
    """Log to stdout: journal-style under systemd (``JOURNAL_STREAM`` set), timestamped
    otherwise."""
    env = os.environ if env is None else env
    handler = logging.StreamHandler(sys.stdout)
    if env.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if level.lower() != "debug":
        for noisy in ("aioice", "aiortc", "websockets", "httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
