"""A real SMTP server (aiosmtpd) the tests point a cloud at, and read its mail from.

``MailServer.url`` is the cloud's ``MUMU_SMTP_URL``.  ``await server.next_mail(to)`` waits for
the next mail to an address (in arrival order, each returned once); ``fail_next(n, code)``
makes the server refuse the next ``n`` mails with an SMTP code (451: try again later, 550:
no such mailbox), to show the outbox's retries and give-ups."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.services import free_port

LINK = re.compile(r"https?://[^\s<>\"]+")


@dataclass(frozen=True)
class ReceivedMail:
    to: str
    sender: str
    kind: str
    subject: str
    text: str
    html: str

    @property
    def link(self) -> str:
        """The mail's one link (the text part's first URL)."""
        found = LINK.search(self.text)
        assert found, f"no link in the mail: {self.text!r}"
        return found.group(0)

    @property
    def token(self) -> str:
        """The last path segment of the link (``/#/verify/<token>`` and the like)."""
        return self.link.rstrip("/").rsplit("/", 1)[-1]


#: The servers running in this process, by port: a test finds its cloud's from MUMU_SMTP_URL.
_RUNNING: dict[int, MailServer] = {}


def server_for(smtp_url: str) -> MailServer:
    """The running ``MailServer`` a cloud's ``MUMU_SMTP_URL`` names."""
    port = urlsplit(smtp_url).port
    assert port in _RUNNING, f"no test mail server at {smtp_url}"
    return _RUNNING[port]


def running_url() -> str | None:
    """The ``MUMU_SMTP_URL`` of the suite's mail server when one runs in this process."""
    return next(iter(_RUNNING.values())).url if _RUNNING else None


class _Handler:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        return self.server._receive(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)


class MailServer:
    """``tls``: offer STARTTLS with that context and refuse mail without it."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self._cond = threading.Condition()
        self._mail: list[ReceivedMail] = []
        self._taken: set[int] = set()
        self._fail: list[str] = []
        self.refused = 0
        self.tls = tls
        # aiosmtpd logs every command at INFO from its own thread, which outlives a test's
        # captured output (a "--- Logging error ---" in the run's log): only its warnings.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller = Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            tls_context=tls,
            require_starttls=tls is not None,
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls={'off' if self.tls is None else 'require'}"

    def start(self) -> None:
        self._controller.start()
        _RUNNING[self.port] = self

    def stop(self) -> None:
        _RUNNING.pop(self.port, None)
        self._controller.stop()

    def fail_next(self, count: int, code: str = "451 4.3.0 try again later") -> None:
        with self._cond:
            self._fail.extend([code] * count)

    def _receive(self, sender: str, recipients: list[str], content: bytes) -> str:
        with self._cond:
            if self._fail:
                self.refused += 1
                return self._fail.pop(0)
            parsed = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            text = parsed.get_body(("plain",))
            html = parsed.get_body(("html",))
            for to in recipients:
                self._mail.append(
                    ReceivedMail(
                        to=to.lower(),
                        sender=sender,
                        kind=str(parsed.get("X-MuMu-Kind", "")),
                        subject=str(parsed.get("Subject", "")),
                        text=text.get_content() if text is not None else "",  # type: ignore[attr-defined]
                        html=html.get_content() if html is not None else "",  # type: ignore[attr-defined]
                    )
                )
            self._cond.notify_all()
        return "250 OK"

    def received(self, to: str | None = None) -> list[ReceivedMail]:
        """Every mail received so far (to ``to``), taken or not."""
        with self._cond:
            return [m for m in self._mail if to is None or m.to == to.lower()]

    def _take(self, to: str, kind: str | None, deadline: float) -> ReceivedMail:
        with self._cond:
            while True:
                for i, m in enumerate(self._mail):
                    if i not in self._taken and m.to == to.lower() and kind in (None, m.kind):
                        self._taken.add(i)
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kind or ''} mail to {to} arrived")
                self._cond.wait(left)

    def take(self, to: str, kind: str | None = None, timeout: float = 30.0) -> ReceivedMail:
        """``next_mail`` for code without an event loop."""
        return self._take(to, kind, time.monotonic() + timeout)

    async def next_mail(
        self, to: str, kind: str | None = None, timeout: float = 30.0
    ) -> ReceivedMail:
        """The next mail to ``to`` (of ``kind``, the ``X-MuMu-Kind`` header) not taken yet."""
        return await asyncio.to_thread(self._take, to, kind, time.monotonic() + timeout)


@pytest.fixture(scope="session", autouse=True)
def mail_server() -> Iterator[MailServer]:
    server = MailServer()
    server.start()
    yield server
    server.stop()
