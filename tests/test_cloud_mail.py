"""The cloud's outbox and its SMTP transport, in this process, against a real SMTP server
(aiosmtpd, ``tests/mail_server.py``): retries with backoff (the sleep is injected, so nothing
waits), permanent refusals, an unreachable server, a full outbox, a graceful stop, a server that
hangs, STARTTLS with a verified certificate, and header injection."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from cloud.mail import templates
from cloud.mail.message import Mail
from cloud.mail.outbox import Outbox, OutboxLimits
from cloud.mail.transport import (
    HeaderInjection,
    LogTransport,
    SmtpSettings,
    SmtpTransport,
    Transport,
    email_message,
)
from tests.agent_inprocess import until
from tests.mail_server import MailServer
from tests.services import free_port

SENDER = "MuMu Camera <noreply@example.com>"


class Counted:
    """An outbox's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.mail = Counter("mumu_mail", "mails", ["kind", "outcome"], registry=self.registry)
        self.queued = Gauge("mumu_mail_queued", "waiting", registry=self.registry)

    def __call__(self, outcome: str, kind: str = "invitation") -> float:
        value = self.registry.get_sample_value(
            "mumu_mail_total", {"kind": kind, "outcome": outcome}
        )
        return value or 0.0


class Sleeps:
    """The outbox's backoff, recorded instead of waited for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def mail(to: str, camera: str = "Porch") -> Mail:
    return templates.invitation(to, "owner@example.com", camera, "http://x.test/#/devices", True)


def address(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}@example.com"


@pytest.fixture
def counted() -> Counted:
    return Counted()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def outbox(
    transport: Transport,
    counted: Counted,
    sleeps: Callable[[float], Awaitable[None]],
    **limits: float,
) -> Outbox:
    box = Outbox(
        transport,
        SENDER,
        OutboxLimits(**limits),  # type: ignore[arg-type]
        counted.mail,
        counted.queued,
        sleep=sleeps,
    )
    box.start()
    return box


def smtp(url: str, **kwargs: str | None) -> SmtpTransport:
    return SmtpTransport(SmtpSettings.parse(url, **kwargs))


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word (a hung mail server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()


# --- delivery, retries, give-ups ----------------------------------------------------------------


async def test_a_server_that_asks_to_try_later_gets_the_mail_once(
    mail_server: MailServer, counted: Counted, sleeps: Sleeps
) -> None:
    to = address("later")
    box = outbox(smtp(mail_server.url), counted, sleeps)
    try:
        mail_server.fail_next(1, "451 4.3.0 try again later")
        assert box.send(mail(to))
        got = await mail_server.next_mail(to, "invitation")
        assert got.subject == mail(to).subject
        assert got.sender == "noreply@example.com"
        await until(lambda: counted("sent") == 1, what="counted sent")
        assert counted("retried") == 1 and counted("failed") == 0
        assert len(sleeps.delays) == 1 and sleeps.delays[0] > 0
        assert len(mail_server.received(to)) == 1
    finally:
        await box.stop()


async def test_words_arrive_as_written(
    mail_server: MailServer, counted: Counted, sleeps: Sleeps
) -> None:
    """A long subject with non-ASCII words (a camera's name, the product's quotes) arrives
    unchanged in every part: no space lost between encoded words."""
    to = address("words")
    sent = templates.invitation(
        to, "grandmother.of.the.family@example.com", "Küche und Garten oben", "http://x/#/", True
    )
    box = outbox(smtp(mail_server.url), counted, sleeps)
    try:
        assert box.send(sent)
        got = await mail_server.next_mail(to, "invitation")
    finally:
        await box.stop()
    assert got.subject == sent.subject
    assert got.text.replace("\r\n", "\n") == sent.text
    assert "Küche und Garten oben" in got.html


async def test_a_permanent_refusal_is_given_up_at_once(
    mail_server: MailServer, counted: Counted, sleeps: Sleeps
) -> None:
    to = address("refused")
    box = outbox(smtp(mail_server.url), counted, sleeps)
    try:
        refused = mail_server.refused
        mail_server.fail_next(1, "550 5.1.1 no such mailbox")
        assert box.send(mail(to))
        await until(lambda: counted("failed") == 1, what="counted failed")
        assert mail_server.refused == refused + 1
        assert counted("retried") == 0 and counted("sent") == 0 and sleeps.delays == []
        assert mail_server.received(to) == []
    finally:
        await box.stop()


async def test_an_unreachable_server_is_tried_up_to_the_attempts_with_backoff(
    counted: Counted, sleeps: Sleeps
) -> None:
    box = outbox(smtp(f"smtp://127.0.0.1:{free_port()}?starttls=off"), counted, sleeps, attempts=4)
    try:
        assert box.send(mail(address("nobody")))
        await until(lambda: counted("failed") == 1, what="counted failed")
        assert counted("retried") == 3 and counted("sent") == 0
        # doubling (with jitter of ±20 %)
        assert len(sleeps.delays) == 3
        assert sleeps.delays[0] < sleeps.delays[1] < sleeps.delays[2]
        assert box.waiting == 0
    finally:
        await box.stop()


# --- bounds: a full outbox, a hung server, stopping ---------------------------------------------


async def test_a_full_outbox_refuses_and_a_hung_server_blocks_no_request(
    silent_server: int, counted: Counted, sleeps: Sleeps
) -> None:
    box = outbox(
        smtp(f"smtp://127.0.0.1:{silent_server}?starttls=off"), counted, sleeps, capacity=3
    )
    stopped = False
    try:
        started = time.monotonic()
        accepted = [box.send(mail(address("hung"))) for _ in range(5)]
        assert time.monotonic() - started < 0.5  # send waits for nothing
        assert accepted == [True, True, True, False, False]
        assert counted("dropped") == 2
        assert counted.registry.get_sample_value("mumu_mail_queued") == 3
        # a stop waits for the hung server a bounded time and says what was left
        started = time.monotonic()
        left = await box.stop(drain_s=0.5)
        stopped = True
        assert left == 3
        assert time.monotonic() - started < 3
        assert not box.send(mail(address("late")))  # stopped: refused, counted
        assert counted("dropped") == 3
    finally:
        if not stopped:
            await box.stop(drain_s=0)


async def test_a_graceful_stop_hands_over_what_waits(
    mail_server: MailServer, counted: Counted, sleeps: Sleeps
) -> None:
    to = address("drained")

    async def long_backoff(delay: float) -> None:
        await asyncio.Event().wait()  # a backoff the stop must not wait for

    box = outbox(smtp(mail_server.url), counted, long_backoff)
    # one mail in a retry's backoff (a server that asked for later), three queued
    mail_server.fail_next(1, "451 4.3.0 try again later")
    assert box.send(mail(to, "first"))
    await until(lambda: counted("retried") == 1, what="a retry")
    for name in ("second", "third", "fourth"):
        assert box.send(mail(to, name))
    assert await box.stop(drain_s=10) == 0
    assert counted("sent") == 4
    assert len(mail_server.received(to)) == 4


# --- STARTTLS: verified, always -----------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_mail_server(self_signed: tuple[Path, Path]) -> Iterator[MailServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    server = MailServer(tls=context)
    server.start()
    yield server
    server.stop()


async def test_starttls_is_required_and_the_certificate_verified(
    tls_mail_server: MailServer, self_signed: tuple[Path, Path], counted: Counted, sleeps: Sleeps
) -> None:
    assert "starttls=require" in tls_mail_server.url
    # the server's own authority given (MUMU_SMTP_CA_FILE): delivered over TLS
    trusted = address("tls")
    box = outbox(smtp(tls_mail_server.url, ca_file=str(self_signed[0])), counted, sleeps)
    try:
        assert box.send(mail(trusted))
        await tls_mail_server.next_mail(trusted, "invitation")
    finally:
        await box.stop()
    # the system's trust does not know it: never sent in the clear nor to an unverified server
    doubted = address("untrusted")
    box = outbox(smtp(tls_mail_server.url), counted, sleeps, attempts=1)
    try:
        assert box.send(mail(doubted))
        await until(lambda: counted("failed") == 1, what="counted failed")
        assert tls_mail_server.received(doubted) == []
    finally:
        await box.stop()
    # and a plain connection to a server that requires STARTTLS is refused by the server
    plain = address("plain")
    url = tls_mail_server.url.replace("require", "off")
    box = outbox(smtp(url), counted, sleeps, attempts=1)
    try:
        assert box.send(mail(plain))
        await until(lambda: counted("failed") == 2, what="counted failed")
        assert tls_mail_server.received(plain) == []
    finally:
        await box.stop()


def test_smtp_settings_keep_the_password_out_of_errors() -> None:
    parsed = SmtpSettings.parse("smtps://me%40x.org:s3cret@mail.example.org")
    assert (parsed.host, parsed.port, parsed.use_tls, parsed.starttls) == (
        "mail.example.org",
        465,
        True,
        False,
    )
    assert (parsed.username, parsed.password) == ("me@x.org", "s3cret")
    assert SmtpSettings.parse("smtp://mail.example.org").port == 587
    for bad in (
        "http://me:s3cret@mail.example.org",
        "smtp://me:s3cret@mail.example.org:99999",
        "smtp://me:s3cret@mail.example.org?starttls=maybe",
        "smtp://me:s3cret@mail.example.org?tls_verify=no",
    ):
        with pytest.raises(ValueError) as raised:
            SmtpSettings.parse(bad)
        assert "s3cret" not in str(raised.value)


# --- header injection ---------------------------------------------------------------------------


def test_a_header_cannot_be_injected() -> None:
    for to in (
        "a@example.com\r\nBcc: victim@example.org",
        "a@example.com\nBcc: victim@example.org",
        "a@example.com, victim@example.org",
        "Someone <a@example.com>",
        "a@exa\x00mple.com",
        "not-an-address",
    ):
        with pytest.raises(HeaderInjection):
            email_message(mail(to), SENDER)
    injected = Mail(
        to="a@example.com",
        kind="invitation",
        subject="Hi\r\nBcc: victim@example.org",
        text="t",
        html="<p>t</p>",
    )
    with pytest.raises(HeaderInjection):
        email_message(injected, SENDER)
    with pytest.raises(HeaderInjection):
        email_message(mail("a@example.com"), "Evil <x@example.com>\r\nBcc: victim@example.org")
    # words a person chose (a camera's name) are made one line before they reach a subject
    named = mail("a@example.com", camera="Porch\r\nBcc: victim@example.org")
    message = email_message(named, SENDER)
    assert "\r" not in named.subject and "\n" not in named.subject
    assert message["Bcc"] is None and message["To"] == "a@example.com"


async def test_an_injected_header_is_given_up_never_sent(
    mail_server: MailServer, counted: Counted, sleeps: Sleeps
) -> None:
    to = address("inject")
    box = outbox(smtp(mail_server.url), counted, sleeps)
    try:
        assert box.send(mail(f"{to}\r\nBcc: victim@example.org"))
        await until(lambda: counted("failed") == 1, what="counted failed")
        assert counted("retried") == 0
        assert mail_server.received(to) == [] and mail_server.received("victim@example.org") == []
    finally:
        await box.stop()


# --- without SMTP: the log, and the demo's file -------------------------------------------------


async def test_without_smtp_each_mail_is_a_json_line_only_its_owner_reads(
    tmp_path: Path, counted: Counted, sleeps: Sleeps
) -> None:
    path = tmp_path / "mail.jsonl"
    box = outbox(LogTransport(path), counted, sleeps)
    try:
        assert box.send(mail("alice@example.com"))
        assert box.send(mail("bob@example.com", "Garden"))
        await until(lambda: counted("sent") == 2, what="counted sent")
    finally:
        await box.stop()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(m["to"], m["kind"], m["link"]) for m in lines] == [
        ("alice@example.com", "invitation", "http://x.test/#/devices"),
        ("bob@example.com", "invitation", "http://x.test/#/devices"),
    ]
    assert "Garden" in lines[1]["subject"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
