"""Where a rendered mail goes: an SMTP server (``MUMU_SMTP_URL``) or, without one, the log.

A ``Transport`` has one method; the outbox calls it from its own task, never from a request."""

from __future__ import annotations

import asyncio
import email.generator
import email.policy
import io
import json
import logging
import os
import re
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from cloud.mail.message import Mail

log = logging.getLogger("mumu.mail")


class DeliveryError(Exception):
    """The server refused the mail or could not be reached."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        #: A permanent refusal (5xx: no such mailbox) is not retried.
        self.permanent = permanent


class Transport(Protocol):
    async def deliver(self, mail: Mail, sender: str) -> None:
        """Send ``mail`` or raise ``DeliveryError``."""


#: One bare address (what the API stores): no display name, no list, nothing that could end a
#: header or start another one.
_ATOM = r"[^\s\x00-\x1f\x7f@<>,;:\"()\[\]\\]+"
_ADDRESS = re.compile(f"{_ATOM}@{_ATOM}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class HeaderInjection(ValueError):
    """A header value that would end its line (CR/LF) or name more than one recipient."""


def email_message(mail: Mail, sender: str) -> EmailMessage:
    """The MIME message of ``mail``; ``HeaderInjection`` when its recipient is not one bare
    address or a header value holds a control character (CR/LF would start a new header)."""
    if not _ADDRESS.fullmatch(mail.to):
        raise HeaderInjection(f"not one plain address: {mail.to!r}")
    for name, value in (("Subject", mail.subject), ("From", sender), ("X-MuMu-Kind", mail.kind)):
        if _CONTROL.search(value):
            raise HeaderInjection(f"a control character in {name}: {value!r}")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    message["X-MuMu-Kind"] = mail.kind
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


#: Header lines up to RFC 5322's 998 characters: Python 3.11 drops the space between encoded
#: words when it folds a long subject with non-ASCII words ("“Test camera”" arrived as
#: "“Testcamera”"); our headers are bounded well below that, so they are never folded.
_WIRE = email.policy.SMTP.clone(max_line_length=998)


def wire_bytes(message: EmailMessage) -> bytes:
    """The message as sent (CRLF line ends, headers unfolded)."""
    out = io.BytesIO()
    email.generator.BytesGenerator(out, policy=_WIRE).flatten(message)
    return out.getvalue()


def _domain(sender: str) -> str:
    address = sender.rsplit("<", 1)[-1].rstrip(">")
    return address.rsplit("@", 1)[-1] or "localhost"


@dataclass(frozen=True)
class SmtpSettings:
    """``smtp://[user:password@]host[:port]`` (STARTTLS when the server offers it; required with
    ``?starttls=require``), ``smtps://`` (TLS from the first byte, port 465).  The server's
    certificate is always verified: against the system's trust, or ``ca_file``
    (``MUMU_SMTP_CA_FILE``) for a private authority."""

    host: str
    port: int
    use_tls: bool
    starttls: bool | None  # None: when offered
    username: str | None
    password: str | None
    timeout_s: float = 30.0
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str, ca_file: str | None = None) -> SmtpSettings:
        parts = urlsplit(url)
        shown = _redacted(url)  # error messages end up in logs: never the password
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError(
                f"expected smtp://[user:password@]host[:port] or smtps://…, got {shown!r}"
            )
        use_tls = parts.scheme == "smtps"
        query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
        if set(query) - {"starttls"}:
            raise ValueError(f"the only option is ?starttls=auto|require|off, got {shown!r}")
        starttls_word = query.get("starttls", "auto")
        if starttls_word not in {"auto", "require", "off"}:
            raise ValueError(f"starttls= must be auto, require or off, got {starttls_word!r}")
        starttls = {"auto": None, "require": True, "off": False}[starttls_word]
        try:
            port = parts.port or (465 if use_tls else 587)
        except ValueError:
            raise ValueError(f"not a port number in {shown!r}") from None
        return cls(
            host=parts.hostname,
            port=port,
            use_tls=use_tls,
            starttls=False if use_tls else starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=ca_file,
        )


def _redacted(url: str) -> str:
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


class SmtpTransport:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        # Verified, always (hostname and chain): a mail server an attacker can stand in for
        # reads every link we send.
        self.tls = ssl.create_default_context(cafile=settings.ca_file)

    async def deliver(self, mail: Mail, sender: str) -> None:
        import aiosmtplib

        s = self.settings
        try:
            message = email_message(mail, sender)
        except HeaderInjection as exc:
            raise DeliveryError(str(exc), permanent=True) from None
        try:
            # The envelope is given, not read back from the headers: one recipient, always.
            await aiosmtplib.send(
                wire_bytes(message),
                sender=parseaddr(sender)[1],
                recipients=[mail.to],
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                use_tls=s.use_tls,
                start_tls=s.starttls,
                tls_context=self.tls,
                timeout=s.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipient refused: {exc}", permanent=True) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"the server answered {exc.code}: {exc.message}", permanent=500 <= exc.code < 600
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False) from None


class LogTransport:
    """No SMTP server configured: each mail goes to the log (one line, with its link) and, with
    ``MUMU_MAIL_LOG``, as one JSON line ``{"at", "to", "kind", "subject", "link"}`` to that file
    (``scripts/demo`` shows them on its terminal), so the embedded default and the demo work
    without one.  Links there are secrets for whoever reads them: production sets
    ``MUMU_SMTP_URL``; the file is made readable by its owner only."""

    def __init__(self, mail_log: Path | None = None) -> None:
        self.mail_log = mail_log

    async def deliver(self, mail: Mail, sender: str) -> None:
        log.warning(
            "a mail to %s: %s: %s (no MUMU_SMTP_URL: written here instead of sent)",
            mail.to,
            mail.subject,
            mail.link or "",
        )
        if self.mail_log is not None:
            line = {
                "at": time.time(),
                "to": mail.to,
                "kind": mail.kind,
                "subject": mail.subject,
                "link": mail.link,
            }
            try:
                await asyncio.to_thread(_append, self.mail_log, json.dumps(line) + "\n")
            except OSError as exc:
                raise DeliveryError(f"MUMU_MAIL_LOG: {exc}", permanent=False) from None


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
