"""systemd integration: ``sd_notify`` over ``$NOTIFY_SOCKET``, the watchdog, and logging to the
journal with structured fields.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket path, or an
abstract one starting with ``@``) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``).  Outside systemd every call here does nothing.

Where systemd-python is installed (``python3-systemd`` on the SD image, seen through the release
venv's system site-packages) notifications go through ``systemd.daemon.notify`` and log records
through ``systemd.journal`` with the fields ``DEVICE_ID``, ``SESSION_ID`` and ``PHASE`` (plus
``CODE_FILE``/``CODE_LINE``/``LOGGER``), so ``journalctl -u mumu-agent SESSION_ID=...`` finds one
session's story.  Elsewhere our own small implementation below does the same without them: the
datagram by hand, and ``<priority>`` prefixed lines on stdout.

Fields come from :func:`log_context` (a context variable: tasks created inside inherit it), from
``extra={"session_id": ...}`` on a log call, and from process-wide values set with
:func:`set_log_field` (the device id once known, the phase the display shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType, ModuleType
from typing import Any, Final

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``sd_notify`` datagrams; a no-op when ``NOTIFY_SOCKET`` is unset."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._socket_env = path
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
        daemon = _systemd_module("daemon")
        if daemon is not None and os.environ.get("NOTIFY_SOCKET") == self._socket_env:
            # systemd-python reads $NOTIFY_SOCKET itself: only when it is the one we were given.
            sent = bool(daemon.notify("\n".join(fields)))
            if sent:
                return True
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


#: The structured fields a log record may carry, by the attribute name used in ``extra=``.
FIELDS: Final = {"device_id": "DEVICE_ID", "session_id": "SESSION_ID", "phase": "PHASE"}
_NO_FIELDS: Final[Mapping[str, str]] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "mumu_log_fields", default=_NO_FIELDS
)
_process_fields: dict[str, str] = {}
_process_sources: dict[str, Callable[[], str | None]] = {}


@contextlib.contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Log records made inside (and in tasks created inside) carry these fields."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log fields: {sorted(unknown)}")
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def set_log_field(name: str, value: str | None) -> None:
    """A field every record of this process carries from now on (``None`` removes it)."""
    if name not in FIELDS:
        raise ValueError(f"unknown log field {name!r}")
    if value is None:
        _process_fields.pop(name, None)
    else:
        _process_fields[name] = value


def set_log_field_source(name: str, source: Callable[[], str | None]) -> None:
    """Where a process-wide field comes from until it is known (asked again on each record
    until it answers; then kept): e.g. the device id, once the credentials file exists."""
    if name not in FIELDS:
        raise ValueError(f"unknown log field {name!r}")
    _process_sources[name] = source


def log_fields(record: logging.LogRecord) -> dict[str, str]:
    """The journal fields of ``record``: ``extra=`` first, then the context, then the process."""
    for name, source in list(_process_sources.items()):
        if name not in _process_fields:
            try:
                value = source()
            except Exception:
                value = None
            if value:
                _process_fields[name] = value
                del _process_sources[name]
    merged = {**_process_fields, **_context.get()}
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            merged[name] = str(value)
    return {FIELDS[name]: value for name, value in merged.items()}


@functools.cache
def _systemd_module(name: str) -> ModuleType | None:
    """``systemd.<name>`` from systemd-python, or None where it is not installed (looked for
    once)."""
    import importlib

    try:
        return importlib.import_module(f"systemd.{name}")
    except ImportError:
        return None


class JournalHandler(logging.Handler):
    """Records straight to the journal (``sd_journal_send`` through systemd-python), with
    :data:`FIELDS`, the syslog priority and where in the code they were made."""

    def __init__(self, journal: ModuleType, identifier: str) -> None:
        super().__init__()
        self.journal = journal
        self.identifier = identifier
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {
                "PRIORITY": str(JournalFormatter.PRIORITY.get(record.levelno, 6)),
                "SYSLOG_IDENTIFIER": self.identifier,
                "LOGGER": record.name,
                "THREAD_NAME": record.threadName or "",
                **log_fields(record),
            }
            if record.exc_info:
                fields["EXCEPTION_INFO"] = str(record.exc_info[1])
            self.journal.send(
                self.format(record),
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **fields,
            )
        except Exception:
            self.handleError(record)


def journal_handler(env: Mapping[str, str], identifier: str) -> logging.Handler | None:
    """A :class:`JournalHandler` when running under systemd with systemd-python installed."""
    if not env.get("JOURNAL_STREAM") and not env.get("INVOCATION_ID"):
        return None
    journal = _systemd_module("journal")
    if journal is None:
        return None
    return JournalHandler(journal, identifier)


def configure_logging(
    level: str, env: Mapping[str, str] | None = None, identifier: str = "mumu-agent"
) -> None:
    """Log to the journal with structured fields (systemd-python, under systemd), else to
    stdout: journal-style under systemd (``JOURNAL_STREAM`` set), timestamped otherwise."""
    env = os.environ if env is None else env
    handler = journal_handler(env, identifier)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        if env.get("JOURNAL_STREAM"):
            handler.setFormatter(JournalFormatter())
        else:
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if level.lower() != "debug":
        for noisy in ("aioice", "aiortc", "websockets", "httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
