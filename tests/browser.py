"""Browser-test plumbing: nginx and coturn from the repository's configs, and Debian's Chromium.

Everything runs for real, unprivileged, in the foreground, on free ports, in a temp dir:

* ``nginx_server(upstream_ports)`` renders ``nginx/mumu.conf.template`` (the production config,
  TLS included, with a throwaway self-signed certificate) in front of the given cloud ports.
* ``coturn_server(secret)`` renders ``coturn/turnserver.conf`` (the production config) and
  replaces the few lines a one-machine test cannot use: it listens and relays on 127.0.0.1 and
  allows loopback peers (production denies them).
* ``launch_chromium()`` starts ``/usr/bin/chromium`` through Playwright (never a downloaded
  browser: ``playwright install`` is not used).

A missing binary is a skip on a developer's machine and a failure in CI
(``tests.services.require``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from tests.services import free_port, require, stop, wait_for_port

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Error, Page

ROOT = Path(__file__).resolve().parent.parent
WEB_ROOT = ROOT / "web"
NGINX_DIR = ROOT / "nginx"
COTURN_CONF = ROOT / "coturn" / "turnserver.conf"
ARTIFACTS = ROOT / "artifacts"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Host candidates as plain addresses instead of random `<uuid>.local` mDNS names: the test
    # machine has no mDNS responder the camera agent could ask.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

#: A browser without H.264 (Debian's Firefox without its decoder offers VP8, VP9 and AV1 only).
NO_H264 = """
const capabilities = RTCRtpReceiver.getCapabilities.bind(RTCRtpReceiver);
RTCRtpReceiver.getCapabilities = (kind) => {
  const found = capabilities(kind);
  if (kind !== "video" || !found) return found;
  const codecs = found.codecs.filter((c) => c.mimeType.toLowerCase() !== "video/h264");
  return { ...found, codecs };
};
const prefer = RTCRtpTransceiver.prototype.setCodecPreferences;
RTCRtpTransceiver.prototype.setCodecPreferences = function (codecs) {
  return prefer.call(this, codecs.filter((c) => c.mimeType.toLowerCase() !== "video/h264"));
};
"""

#: What Firefox says it is, on each desktop platform (with NO_H264: Firefox as shipped there).
FIREFOX_USER_AGENTS = {
    "linux": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "mac": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:128.0) Gecko/20100101 Firefox/128.0",
}

PHONE_VIEWPORT = {"width": 390, "height": 844}
DESKTOP_VIEWPORT = {"width": 1280, "height": 800}


# --- TLS ------------------------------------------------------------------------------------------


def self_signed_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A throwaway certificate and key for ``name`` (and 127.0.0.1), made with openssl."""
    openssl = shutil.which("openssl")
    require(openssl is not None, "openssl")
    assert openssl is not None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name},IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# --- nginx ----------------------------------------------------------------------------------------

#: The placeholders of ``nginx/mumu.conf.template`` (also the list to give ``envsubst``).
NGINX_PLACEHOLDERS = (
    "MUMU_NGINX_DIR",
    "MUMU_WEB_ROOT",
    "MUMU_UPSTREAM_SERVERS",
    "MUMU_SERVER_NAME",
    "MUMU_HTTP_LISTEN",
    "MUMU_HTTP_SITE",
    "MUMU_HTTPS_LISTEN",
    "MUMU_TLS_CERT",
    "MUMU_TLS_KEY",
)


def render_template(text: str, values: dict[str, str]) -> str:
    """``envsubst`` with an explicit variable list: only ``${NAME}`` for the given names.

    nginx's own ``$variables`` pass through untouched; a placeholder left unfilled is an error.
    """
    rendered = text
    for name, value in values.items():
        rendered = rendered.replace("${" + name + "}", value)
    leftover = [t for t in Template(rendered).get_identifiers() if t.startswith("MUMU_")]
    if leftover:
        raise ValueError(f"unfilled placeholders: {leftover}")
    return rendered


#: How long nginx leaves an upstream alone after it failed (the README recommends the same):
#: a rolling deploy waits this long after a process is back before restarting the next one.
NGINX_FAIL_TIMEOUT_S = 2


def render_nginx_conf(
    *,
    upstream_ports: Iterable[int],
    http_listen: str,
    https_listen: str,
    cert: Path,
    key: Path,
    http_site: str = "site",
    server_name: str = "_",
    web_root: Path = WEB_ROOT,
) -> str:
    # All on one line: the template's header comment names ${MUMU_UPSTREAM_SERVERS} too, and a
    # second line substituted there would fall outside the comment.
    servers = " ".join(
        f"server 127.0.0.1:{port} max_fails=1 fail_timeout={NGINX_FAIL_TIMEOUT_S}s;"
        for port in upstream_ports
    )
    if not servers:
        raise ValueError("nginx needs at least one upstream")
    template = (NGINX_DIR / "mumu.conf.template").read_text()
    return render_template(
        template,
        {
            "MUMU_NGINX_DIR": str(NGINX_DIR),
            "MUMU_WEB_ROOT": str(web_root),
            "MUMU_UPSTREAM_SERVERS": servers,
            "MUMU_SERVER_NAME": server_name,
            "MUMU_HTTP_LISTEN": http_listen,
            "MUMU_HTTP_SITE": http_site,
            "MUMU_HTTPS_LISTEN": https_listen,
            "MUMU_TLS_CERT": str(cert),
            "MUMU_TLS_KEY": str(key),
        },
    )


@dataclass(frozen=True)
class Nginx:
    http_port: int
    https_port: int
    prefix: Path
    #: What the plain-HTTP port does: ``"site"`` (serves the app) or ``"redirect"`` (to HTTPS).
    http_site: str

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def url(self) -> str:
        """Where the app is: plain HTTP when that port serves the site, else HTTPS."""
        return self.http_url if self.http_site == "site" else self.https_url

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1)

    def error_log(self) -> str:
        log = self.prefix / "logs" / "error.log"
        return log.read_text() if log.exists() else ""


def nginx_binary() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    require(found is not None, "nginx")
    assert found is not None
    return found


@contextlib.contextmanager
def nginx_server(upstream_ports: Iterable[int], *, http_site: str = "site") -> Iterator[Nginx]:
    """nginx with the repository's config in front of cloud processes on ``upstream_ports``.

    Both listeners run: HTTPS (self-signed) and plain HTTP, which serves the app
    (``http_site="site"``, the default: simplest for browsers and agents on localhost) or only
    redirects to HTTPS like in production (``http_site="redirect"``).
    """
    binary = nginx_binary()
    prefix = Path(tempfile.mkdtemp(prefix="mumu-nginx-"))
    try:
        for sub in ("logs", "tmp"):
            (prefix / sub).mkdir()
        cert, key = self_signed_cert(prefix)
        http_port, https_port = free_port(), free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            render_nginx_conf(
                upstream_ports=list(upstream_ports),
                http_listen=f"127.0.0.1:{http_port}",
                https_listen=f"127.0.0.1:{https_port}",
                cert=cert,
                key=key,
                http_site=http_site,
            )
        )
        command = [binary, "-c", str(conf), "-p", f"{prefix}/", "-g", "daemon off;"]
        # `-t` first: a config error is reported as such, not as "nothing listened".
        checked = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx rejected the config:\n{checked.stderr}")
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(http_port, proc=proc)
            wait_for_port(https_port, proc=proc)
            yield Nginx(http_port, https_port, prefix, http_site)
        finally:
            stop(proc)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


# --- coturn ---------------------------------------------------------------------------------------


def turn_credentials(secret: str, user: str, ttl_s: int = 3600) -> tuple[str, str]:
    """coturn's REST scheme (what the cloud hands out): ``"<expiry>:<id>"`` and its HMAC."""
    username = f"{int(time.time()) + ttl_s}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


#: Lines of the production config a one-machine test replaces (keys of ``turnserver.conf``).
_COTURN_TEST_REPLACES = frozenset(
    {
        "listening-port",
        "tls-listening-port",
        "listening-ip",
        "relay-ip",
        "min-port",
        "max-port",
        "cert",
        "pkey",
        "syslog",
        "simple-log",
    }
)


def render_coturn_conf(
    *,
    secret: str,
    realm: str,
    port: int,
    min_port: int,
    prefix: Path,
    cert: Path,
    key: Path,
    as_shipped: bool = False,
) -> str:
    """The production config with the loopback overrides a test needs.

    Production denies loopback peers; a test's browser and camera agent both live on 127.0.0.1,
    so this adds ``allow-loopback-peers`` and ``allowed-peer-ip=127.0.0.1`` (an explicit allow
    beats the denied ranges).  Every other rule (private ranges, metadata, multicast, quotas)
    stays as in production.  ``as_shipped``: no such overrides — every peer rule exactly as
    shipped — with listeners and relays on 127.0.0.1 and ::1 (only where to listen, which
    ports and files change).
    """
    text = render_template(
        COTURN_CONF.read_text(),
        {
            "MUMU_TURN_SECRET": secret,
            "MUMU_TURN_REALM": realm,
            "MUMU_TLS_CERT": str(cert),
            "MUMU_TLS_KEY": str(key),
        },
    )
    kept = [
        line
        for line in text.splitlines()
        if line.split("=", 1)[0].strip() not in _COTURN_TEST_REPLACES
    ]
    where = ["listening-ip=127.0.0.1", "relay-ip=127.0.0.1"]
    if as_shipped:
        where += ["listening-ip=::1", "relay-ip=::1"]
    loopback = [] if as_shipped else ["allow-loopback-peers", "allowed-peer-ip=127.0.0.1"]
    overrides = [
        "# --- tests/browser.py: one machine, loopback only, foreground ---",
        *where,
        f"listening-port={port}",
        "no-tls",
        f"min-port={min_port}",
        f"max-port={min_port + 99}",
        *loopback,
        f"userdb={prefix / 'turndb'}",
        f"pidfile={prefix / 'turnserver.pid'}",
        f"log-file={prefix / 'turn.log'}",
        "simple-log",
        "no-stdout-log",
    ]
    return "\n".join([*kept, *overrides, ""])


@dataclass(frozen=True)
class Coturn:
    port: int
    secret: str
    realm: str
    prefix: Path

    @property
    def urls(self) -> list[str]:
        return [
            f"turn:127.0.0.1:{self.port}?transport=udp",
            f"turn:127.0.0.1:{self.port}?transport=tcp",
        ]

    def ice_servers(self, user: str = "test", ttl_s: int = 3600) -> list[dict[str, Any]]:
        """An ``RTCConfiguration.iceServers`` list with fresh REST credentials."""
        username, credential = turn_credentials(self.secret, user, ttl_s)
        return [{"urls": self.urls, "username": username, "credential": credential}]

    def log(self) -> str:
        log = self.prefix / "turn.log"
        return log.read_text(errors="replace") if log.exists() else ""


def _free_udp_range(size: int = 100) -> int:
    """A start port whose following ``size`` ports look free (best effort)."""
    # A random block in the upper ephemeral range; collisions with another test are unlikely
    # and coturn just skips a port it cannot bind.
    return 40000 + (os.getpid() * 7919 + int(time.monotonic() * 1000)) % 200 * size


def wait_for_stun(
    host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0
) -> None:
    """Until a STUN Binding request to ``host``:``port`` over UDP is answered."""
    import socket

    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"coturn exited with {proc.returncode} before listening")
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
            try:
                sock.sendto(request, (host, port))
                if sock.recv(2048)[8:20] == request[8:20]:
                    return
            except OSError:  # refused (nothing listens yet) or no answer in time
                time.sleep(0.05)
    raise TimeoutError(f"coturn did not answer STUN on {host}:{port} within {timeout} s")


@contextlib.contextmanager
def coturn_server(
    secret: str, realm: str = "mumu.test", as_shipped: bool = False
) -> Iterator[Coturn]:
    """coturn with the repository's config (plus the loopback test overrides, unless
    ``as_shipped``), foreground."""
    binary = shutil.which("turnserver")
    require(binary is not None, "coturn (turnserver)")
    assert binary is not None
    prefix = Path(tempfile.mkdtemp(prefix="mumu-coturn-"))
    try:
        cert, key = self_signed_cert(prefix)
        port = free_port()
        conf = prefix / "turnserver.conf"
        conf.write_text(
            render_coturn_conf(
                secret=secret,
                realm=realm,
                port=port,
                min_port=_free_udp_range(),
                prefix=prefix,
                cert=cert,
                key=key,
                as_shipped=as_shipped,
            )
        )
        proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=prefix,
        )
        try:
            wait_for_port(port, proc=proc)  # its TCP listener on the same port
            # and each UDP listener: coturn opens them one by one, ::1's can come a moment later
            for host in ("127.0.0.1", "::1") if as_shipped else ("127.0.0.1",):
                wait_for_stun(host, port, proc)
            yield Coturn(port, secret, realm, prefix)
        finally:
            stop(proc)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


# --- Chromium -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, through Playwright."""
    require(shutil.which(CHROMIUM) is not None, f"Chromium ({CHROMIUM})")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageProblems:
    """Console errors, uncaught exceptions and failed requests of one page."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        page.on("console", self._on_console)
        page.on("pageerror", self._on_pageerror)
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        return page

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _on_pageerror(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error}")


async def screenshot(page: Page, name: str) -> Path:
    """Saves a full-page screenshot to ``artifacts/<name>.png`` (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


# --- accessibility (axe-core) -----------------------------------------------------------------

AXE = ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"


async def accessibility_problems(page: Page) -> list[str]:
    """The serious and critical axe-core violations on the page as it is now (axe-core from
    npm, ``scripts/bootstrap test``; evaluated through the DevTools protocol, so the app's CSP
    stays as it is).  Each as "rule: what (where)"."""
    require(AXE.exists(), f"axe-core ({AXE}; scripts/bootstrap test installs it)")
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(AXE.read_text())
    problems: list[str] = await page.evaluate(
        """async () => {
          const result = await axe.run(document, { resultTypes: ["violations"] });
          return result.violations
            .filter((v) => v.impact === "serious" || v.impact === "critical")
            .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" "))})`);
        }"""
    )
    return problems
