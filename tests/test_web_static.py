"""The web app as nginx serves it, in Debian's headless Chromium; no cloud needed.

nginx runs with the repository's config (``nginx/``), its upstream pointing at a closed port:
the sign-in page must still render, every module must load, the CSP must not block anything,
and every response carries the security headers.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser import (
    PHONE_VIEWPORT,
    WEB_ROOT,
    Nginx,
    PageProblems,
    launch_chromium,
    nginx_server,
    screenshot,
)
from tests.services import free_port

if TYPE_CHECKING:
    from playwright.async_api import Browser

SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "permissions-policy",
)


@pytest.fixture(scope="module")
def nginx() -> Iterator[Nginx]:
    with nginx_server([free_port()]) as server:  # no cloud behind it
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects; TLS unverified (the test certificate is self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=10) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def all_modules() -> list[str]:
    return sorted(str(p.relative_to(WEB_ROOT)) for p in (WEB_ROOT / "js").rglob("*.js"))


async def test_sign_in_page_renders_without_errors(nginx: Nginx, browser: Browser) -> None:
    for name, viewport in (("desktop", None), ("phone", PHONE_VIEWPORT)):
        context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        page = await context.new_page()
        problems = PageProblems()
        problems.watch(page)
        await page.goto(nginx.url + "/")
        await page.wait_for_selector("[data-testid=auth-form]")
        assert await page.evaluate("location.hash") == "#/signin"
        assert await page.text_content("[data-testid=page-title]") == "Sign in"
        assert await page.is_visible("[data-testid=email]")
        assert await page.is_visible("[data-testid=password]")
        assert await page.is_hidden("[data-testid=nav]")  # signed out: no navigation
        await page.click("[data-testid=to-signup]")
        await page.wait_for_selector("text=Create your account")
        await screenshot(page, f"static-signup-{name}")
        await context.close()
        assert problems.errors == [], problems.errors


async def test_every_module_loads_under_the_csp(nginx: Nginx, browser: Browser) -> None:
    page = await browser.new_page()
    problems = PageProblems()
    problems.watch(page)
    await page.goto(nginx.url + "/#/signin")
    await page.wait_for_selector("[data-testid=auth-form]")
    modules = all_modules()
    assert "js/protocol.js" in modules and "js/app.js" in modules
    loaded = await page.evaluate(
        """async (paths) => {
          const out = {};
          for (const p of paths) {
            try { out[p] = Object.keys(await import("/" + p)).length; }
            catch (e) { out[p] = String(e); }
          }
          return out;
        }""",
        # app.js runs on import (already running); theme.js is a classic script in <head>
        # (no exports: a CSP refusal of it would be among the page's problems below).
        [m for m in modules if m not in ("js/app.js", "js/theme.js")],
    )
    failed = {m: v for m, v in loaded.items() if not isinstance(v, int) or v == 0}
    assert failed == {}, failed
    # The generated protocol constants are what the app imports.
    msg = await page.evaluate('import("/js/protocol.js").then(m => m.MSG.WATCH_REQUEST)')
    assert msg == "watch_request"
    assert problems.errors == [], problems.errors


def test_security_headers_on_every_kind_of_response(nginx: Nginx) -> None:
    for path in ("/", "/js/app.js", "/css/app.css", "/missing.html", "/api/devices"):
        status, headers, _ = fetch(nginx.url + path)
        assert status in (200, 404, 502), (path, status)
        missing = [h for h in SECURITY_HEADERS if h not in headers]
        assert missing == [], (path, missing)
    _, headers, _ = fetch(nginx.url + "/")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert f"connect-src 'self' ws://127.0.0.1:{nginx.http_port}" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"].startswith("text/html")
    assert "strict-transport-security" not in headers  # plain HTTP: no HSTS
    _, headers, _ = fetch(nginx.url + "/js/app.js")
    assert headers["content-type"].startswith("text/javascript")
    assert headers["cache-control"] == "no-cache"  # no hashed names: always revalidate


def test_https_headers_and_dotfiles(nginx: Nginx) -> None:
    status, headers, body = fetch(nginx.https_url + "/")
    assert status == 200 and b'<main id="main"' in body
    assert headers["strict-transport-security"].startswith("max-age=")
    assert f"wss://127.0.0.1:{nginx.https_port}" in headers["content-security-policy"]
    assert fetch(nginx.url + "/.git/config")[0] in (403, 404)
    assert fetch(nginx.url + "/metrics")[0] == 502  # allowed from this host, no cloud behind


def test_production_http_redirects_to_https() -> None:
    with nginx_server([free_port()], http_site="redirect") as server:
        status, headers, _ = fetch(server.http_url + "/#/devices")
        assert status == 301
        assert headers["location"].startswith("https://127.0.0.1/")
        status, _, _ = fetch(server.http_url + "/.well-known/acme-challenge/nothing")
        assert status == 404  # ACME challenges are served over plain HTTP, not redirected
        assert fetch(server.https_url + "/")[0] == 200


async def test_expired_token_returns_to_sign_in_with_a_message(
    nginx: Nginx, browser: Browser
) -> None:
    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    expired = f"{b64({'alg': 'HS256'})}.{b64({'sub': 'u', 'exp': int(time.time()) - 60})}.sig"
    page = await browser.new_page()
    problems = PageProblems()
    problems.watch(page)
    await page.goto(nginx.url + "/")
    await page.evaluate("t => localStorage.setItem('mumu.token', t)", expired)
    await page.goto(nginx.url + "/#/devices")
    await page.wait_for_selector("[data-testid=auth-form]")
    assert await page.evaluate("location.hash") == "#/signin"
    banner = await page.text_content("[data-testid=banner]")
    assert banner is not None and "expired" in banner
    assert await page.evaluate("localStorage.getItem('mumu.token')") is None
    assert problems.errors == [], problems.errors


async def test_chromium_can_receive_h264(browser: Browser) -> None:
    """Debian's Chromium decodes H.264 (the camera's codec), constrained baseline included."""
    page = await browser.new_page()
    codecs = await page.evaluate(
        """() => RTCRtpReceiver.getCapabilities("video").codecs
                 .map(c => c.mimeType + ";" + (c.sdpFmtpLine || ""))"""
    )
    h264 = [c for c in codecs if c.lower().startswith("video/h264")]
    assert h264, codecs
    assert any("profile-level-id=42e01f" in c for c in h264), h264


async def test_client_logic_in_the_browser(nginx: Nginx, browser: Browser) -> None:
    """The pure parts of the client, run where they run: backoff, stats summary, error words."""
    page = await browser.new_page()
    await page.goto(nginx.url + "/#/signin")
    await page.wait_for_selector("[data-testid=auth-form]")
    result = await page.evaluate(
        """async () => {
          const { backoffDelay } = await import("/js/signaling.js");
          const { summarize } = await import("/js/stats.js");
          const { describeError, describeEnd } = await import("/js/errors.js");
          const delays = [];
          for (let a = 0; a < 12; a++) delays.push([
            backoffDelay(a, { random: () => 0 }), backoffDelay(a, { random: () => 0.999 })]);
          const report = (bytes, frames, t, localType) => new Map([
            ["T", { type: "transport", selectedCandidatePairId: "P" }],
            ["P", { type: "candidate-pair", localCandidateId: "L", remoteCandidateId: "R",
                    currentRoundTripTime: 0.0123 }],
            ["L", { type: "local-candidate", candidateType: localType, protocol: "udp" }],
            ["R", { type: "remote-candidate", candidateType: "host" }],
            ["V", { type: "inbound-rtp", kind: "video", bytesReceived: bytes, framesDecoded: frames,
                    timestamp: t, frameWidth: 640, frameHeight: 480, codecId: "C" }],
            ["C", { type: "codec", mimeType: "video/H264" }],
          ]);
          const first = summarize(report(1000, 10, 1000, "host"));
          const second = summarize(report(126000, 40, 2000, "host"), first);
          const relayed = summarize(report(0, 0, 0, "relay"));
          return { delays, first, second, relayed,
                   offline: describeError({ code: "device_offline", message: "x" }),
                   unknown: describeError({ code: "something_new", message: "the cloud said no" }),
                   crowded: ["account", "address", "everyone", undefined].map((cause) =>
                     describeError({ code: "too_many_connections", message: "x", cause })),
                   unpaired: describeEnd("device_unpaired") };
        }"""
    )
    delays = result["delays"]
    assert delays[0] == [250, 500]
    assert all(low <= high for low, high in delays)
    assert all(high <= 30_000 for _, high in delays) and delays[-1][0] == 15_000
    assert [low for low, _ in delays[:7]] == sorted(low for low, _ in delays[:7])
    first, second = result["first"], result["second"]
    assert first["path"] == "direct" and first["rttMs"] == 12 and first["bitrateKbps"] is None
    assert second["bitrateKbps"] == 1000 and second["fps"] == 30 and second["codec"] == "H264"
    assert result["relayed"]["path"] == "relay"
    assert result["offline"] == "This camera is offline right now."
    assert "something_new" in result["unknown"] and "said no" not in result["unknown"]
    assert "unpaired" in result["unpaired"]
    # too_many_connections in words of the bound that refused the socket
    account, address, everyone, unsaid = result["crowded"]
    assert "This account has too many windows open" in account
    assert "your network" in address and "windows" not in address
    assert "very busy" in everyone and "windows" not in everyone
    assert "windows" not in unsaid, "no cause: no guess that it is the account's windows"
