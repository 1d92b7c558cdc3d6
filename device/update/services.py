"""The service manager the updater drives: systemd through ``systemctl``/``journalctl``.

:class:`ServiceManager` is the seam: the updater's tests use a fake of this interface, the
end-to-end tests run the real thing under systemd in a container.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class UnitStatus:
    #: ``active`` (for ``Type=notify``: after READY=1), ``activating``, ``failed``, ...
    active_state: str
    #: Automatic restarts since the unit was last started by hand (``NRestarts``).
    restarts: int
    main_pid: int
    #: The last exit of the main process: ``exited``/``killed``/``dumped`` and its status.
    exit_code: str = ""
    exit_status: int = 0


class ServiceManager(Protocol):
    def restart(self, unit: str) -> None:
        """Restart ``unit`` without waiting for it to become ready."""
        ...

    def status(self, unit: str) -> UnitStatus: ...

    def last_errors(self, unit: str, since_wall: float, lines: int = 3) -> list[str]:
        """The unit's last log lines since ``since_wall`` (for a rollback's reason)."""
        ...


class Systemd:
    """The real one (the updater runs as root beside systemd)."""

    def restart(self, unit: str) -> None:
        subprocess.run(["systemctl", "restart", "--no-block", unit], check=True, timeout=30)

    def status(self, unit: str) -> UnitStatus:
        props = "ActiveState,NRestarts,MainPID,ExecMainCode,ExecMainStatus"
        done = subprocess.run(
            ["systemctl", "show", unit, f"--property={props}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        codes = {"1": "exited", "2": "killed", "3": "dumped"}
        return UnitStatus(
            active_state=values.get("ActiveState", ""),
            restarts=int(values.get("NRestarts", "0") or 0),
            main_pid=int(values.get("MainPID", "0") or 0),
            exit_code=codes.get(values.get("ExecMainCode", ""), values.get("ExecMainCode", "")),
            exit_status=int(values.get("ExecMainStatus", "0") or 0),
        )

    def last_errors(self, unit: str, since_wall: float, lines: int = 3) -> list[str]:
        """The program's own last lines (a traceback ends with the exception), not systemd's
        words about the unit, and how it last exited (systemd's structured fields)."""
        done = subprocess.run(
            [
                "journalctl",
                "--unit",
                unit,
                "--since",
                f"@{int(since_wall)}",
                "--output",
                "json",
                "--no-pager",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        own: list[str] = []
        exit_words = ""
        for line in done.stdout.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = entry.get("MESSAGE")
            if entry.get("_PID") == "1" or entry.get("SYSLOG_IDENTIFIER") == "systemd":
                if entry.get("EXIT_CODE"):
                    exit_words = f"exit: {entry['EXIT_CODE']} {entry.get('EXIT_STATUS', '')}"
                continue
            if isinstance(message, str) and message.strip():
                own.append(message.strip())
        return own[-lines:] + ([exit_words.strip()] if exit_words else [])
