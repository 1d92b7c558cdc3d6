"""Where a rendered mail goes: an SMTP server (``MUMU_SMTP_URL``) or, without one, the log.

A ``Transport`` has one method; the outbox calls it from its own task, never from a request."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
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


def email_message(mail: Mail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    message["X-MuMu-Kind"] = mail.kind
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


def _domain(sender: str) -> str:
    address = sender.rsplit("<", 1)[-1].rstrip(">")
    return address.rsplit("@", 1)[-1] or "localhost"


@dataclass(frozen=True)
class SmtpSettings:
    """``smtp://[user:password@]host[:port]`` (STARTTLS when the server offers it; required with
    ``?starttls=require``), ``smtps://`` (TLS from the first byte, port 465)."""

    host: str
    port: int
    use_tls: bool
    starttls: bool | None  # None: when offered
    username: str | None
    password: str | None
    timeout_s: float = 30.0

    @classmethod
    def parse(cls, url: str) -> SmtpSettings:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError(
                f"expected smtp://[user:password@]host[:port] or smtps://…, got {url!r}"
            )
        use_tls = parts.scheme == "smtps"
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        starttls_word = query.get("starttls", "auto")
        if starttls_word not in {"auto", "require", "off"}:
            raise ValueError(f"starttls= must be auto, require or off, got {starttls_word!r}")
        starttls = {"auto": None, "require": True, "off": False}[starttls_word]
        try:
            port = parts.port or (465 if use_tls else 587)
        except ValueError:
            raise ValueError(f"not a port number in {url!r}") from None
        return cls(
            host=parts.hostname,
            port=port,
            use_tls=use_tls,
            starttls=False if use_tls else starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class SmtpTransport:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def deliver(self, mail: Mail, sender: str) -> None:
        import aiosmtplib

        s = self.settings
        try:
            await aiosmtplib.send(
                email_message(mail, sender),
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                use_tls=s.use_tls,
                start_tls=s.starttls,
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
    """No SMTP server configured: each mail goes to the log (one line, with its link), so the
    embedded default and the demo work without one.  Links in the log are secrets for whoever
    reads it: production sets ``MUMU_SMTP_URL``."""

    async def deliver(self, mail: Mail, sender: str) -> None:
        log.warning(
            "a mail to %s: %s: %s (no MUMU_SMTP_URL: written here instead of sent)",
            mail.to,
            mail.subject,
            mail.link or "",
        )
