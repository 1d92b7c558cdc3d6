"""The web app against a real cloud, in Debian's headless Chromium.

One ``mumu-cloud serve`` (SQLite, in-process presence) behind nginx with the repository's
config, one coturn with the repository's config (loopback test overrides).  A person's paths:
sign up, sign in, sign out, pair (code and claim link), rename, unpair, the live online state,
refusals shown in words, an expired session, signaling loss and recovery, and watching live
video from a camera (a real aiortc sender with the synthetic camera, speaking the device
protocol over a real WebSocket), directly and through the TURN relay.  The cloud mails the
suite's real SMTP server (tests/mail_server.py): confirming an address and resetting a password
follow the links the mails carry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

from tests.browser import (
    FIREFOX_USER_AGENTS,
    NO_H264,
    PHONE_VIEWPORT,
    Coturn,
    Nginx,
    PageProblems,
    accessibility_problems,
    coturn_server,
    launch_chromium,
    nginx_server,
    screenshot,
)
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import Account, ApiClient, Camera, CloudProcess
from tests.mail_server import MailServer
from tests.signaling_client import Client, device

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

TURN_SECRET = "web-test-turn-secret"
#: Refusals the browser logs on its own (a 4xx the app then explains on the page).
EXPECTED_HTTP_ERRORS = "the server responded with a status of 4"


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    with coturn_server(TURN_SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def cloud(
    tmp_path_factory: pytest.TempPathFactory, coturn: Coturn, mail_server: MailServer
) -> Iterator[CloudProcess]:
    env = {
        **RELAXED,
        "MUMU_SMTP_URL": mail_server.url,
        "MUMU_TURN_SECRET": TURN_SECRET,
        "MUMU_TURN_URLS": ",".join(coturn.urls),
        "MUMU_STUN_URLS": f"stun:127.0.0.1:{coturn.port}",
        "MUMU_TRUSTED_PROXIES": "127.0.0.1",
    }
    with CloudProcess(tmp_path_factory.mktemp("cloud"), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def nginx(cloud: CloudProcess) -> Iterator[Nginx]:
    with nginx_server([cloud.port]) as server:
        yield server


@pytest.fixture
async def api(nginx: Nginx) -> AsyncIterator[ApiClient]:
    client = ApiClient(nginx.url)
    yield client
    await client.aclose()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


def unexpected(problems: PageProblems) -> list[str]:
    return [e for e in problems.errors if EXPECTED_HTTP_ERRORS not in e]


async def open_app(
    browser: Browser, nginx: Nginx, account: Account | None = None, **options: Any
) -> tuple[BrowserContext, Page, PageProblems]:
    """A fresh browser context on the app; signed in as ``account`` if given."""
    context = await browser.new_context(**options)
    page = await context.new_page()
    problems = PageProblems()
    problems.watch(page)
    await page.goto(nginx.url + "/")
    if account is not None:
        await page.evaluate(
            "([t, e]) => { localStorage.setItem('mumu.token', t);"
            " localStorage.setItem('mumu.email', e); }",
            [account.token, account.email],
        )
        await page.goto(nginx.url + "/#/devices")
        await page.wait_for_selector("[data-testid=page-title]:has-text('Your cameras')")
        # The list's requests done: a test's next page.goto would abort them ("failed").
        await page.wait_for_load_state("networkidle")
    return context, page, problems


async def text(page: Page, testid: str) -> str:
    return (await page.text_content(f"[data-testid={testid}]")) or ""


# --- accounts ---------------------------------------------------------------------------------


#: What the app keeps of an account in this browser: every key of ours but the theme, in
#: localStorage and sessionStorage, and the pictures in IndexedDB (read without creating it).
KEPT_DATA = """async () => {
  const ours = (storage) =>
    Object.keys(storage).filter((k) => k.startsWith("mumu.") && k !== "mumu.theme");
  const names = (await indexedDB.databases()).map((d) => d.name);
  let pictures = [];
  if (names.includes("mumu-pictures")) {
    const db = await new Promise((ok, fail) => {
      const r = indexedDB.open("mumu-pictures");
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    if (db.objectStoreNames.contains("thumbnails")) {
      pictures = await new Promise((ok, fail) => {
        const r = db.transaction("thumbnails").objectStore("thumbnails").getAllKeys();
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
    }
    db.close();
  }
  return { local: ours(localStorage), session: ours(sessionStorage), pictures };
}"""
NOTHING_KEPT: dict[str, list[str]] = {"local": [], "session": [], "pictures": []}


async def kept(page: Page) -> dict[str, list[str]]:
    found: dict[str, list[str]] = await page.evaluate(KEPT_DATA)
    return found


async def keep_picture(page: Page, device_id: str) -> None:
    """A camera's latest picture, kept the way a watch keeps it (the app's own module)."""
    await page.evaluate(
        """async (id) => {
          const { storeThumbnail } = await import("/js/snapshots.js");
          const canvas = new OffscreenCanvas(32, 18);
          canvas.getContext("2d").fillRect(0, 0, 32, 18);
          await storeThumbnail(id, await canvas.convertToBlob({ type: "image/jpeg" }));
        }""",
        device_id,
    )


async def sign_up_in_page(page: Page, email: str, password: str) -> None:
    await page.click("[data-testid=to-signup]")
    await page.fill("[data-testid=email]", email)
    await page.fill("[data-testid=password]", password)
    await page.click("[data-testid=submit]")


async def test_sign_up_confirm_the_address_sign_out_sign_in(
    nginx: Nginx, browser: Browser, mail_server: MailServer
) -> None:
    email = f"person-{time.monotonic_ns()}@example.com"
    password = "a good long password"
    context, page, problems = await open_app(browser, nginx)

    # Signed up and in at once; the banner says where the link went, with one action.  (An
    # invitation mailed to an address without an account links to the sign-up with it.)
    await page.goto(f"{nginx.url}/#/signup?email={quote(email)}")
    await page.wait_for_selector("[data-testid=page-title]:has-text('Create your account')")
    assert await page.input_value("[data-testid=email]") == email
    await page.fill("[data-testid=password]", password)
    await page.click("[data-testid=submit]")
    await page.wait_for_selector("[data-testid=devices-empty]")
    assert await page.evaluate("location.hash") == "#/devices"
    assert await text(page, "who") == email
    await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")
    await page.wait_for_selector("[data-testid=verify-banner]:visible")
    assert await text(page, "verify-banner-text") == f"Check your mail: we sent a link to {email}."
    assert await page.locator("[data-testid=verify-banner] button").count() == 1
    await screenshot(page, "app-devices-empty")
    # Read again (a reload): the standing sentence.
    await page.reload()
    await page.wait_for_selector("[data-testid=verify-banner]:visible")
    assert await text(page, "verify-banner-text") == (
        f"Confirm your address — we sent a link to {email}."
    )

    # "Send again": a new mail with a link.
    await mail_server.next_mail(email, "verify")
    await page.click("[data-testid=verify-send-again]")
    await page.wait_for_selector(
        f"[data-testid=verify-banner-text]:text-is('We sent a new link to {email}.')"
    )
    mail = await mail_server.next_mail(email, "verify")
    assert "#/verify/" in mail.link, mail.link

    # The link from the mail the cloud really sent, opened in this page: the banner goes.
    await page.goto(f"{nginx.url}/#/verify/{mail.token}")
    await page.wait_for_selector("[data-testid=link-result]")
    assert await text(page, "link-result") == f"Your address {email} is confirmed."
    assert await page.is_hidden("[data-testid=verify-banner]")
    await page.click("[data-testid=link-action]")
    await page.wait_for_selector("[data-testid=devices-empty]")
    assert await page.is_hidden("[data-testid=verify-banner]")
    # A link works once.
    await page.goto(f"{nginx.url}/#/verify/{mail.token}")
    await page.wait_for_selector("[data-testid=link-error]")
    assert await text(page, "link-error") == "This link was already used."

    token = await page.evaluate("localStorage.getItem('mumu.token')")
    await page.click("[data-testid=signout]")
    await page.wait_for_selector("[data-testid=auth-form]")
    assert "signed out" in await text(page, "banner")
    assert await kept(page) == NOTHING_KEPT  # the address, the token: nothing stays
    async with httpx.AsyncClient(base_url=nginx.url) as h:  # revoked on the server too
        r = await h.get("/api/devices", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401
    assert await page.is_hidden("[data-testid=signaling-state]")

    # The same address again, with another password: the very words a new address gets (the
    # owner is mailed instead), never "there is an account".
    await sign_up_in_page(page, email, "somebody else's password")
    await page.wait_for_selector("[data-testid=check-mail]")
    assert await text(page, "check-mail") == f"Check your mail: we sent a link to {email}."
    assert (await mail_server.next_mail(email, "already_registered")).to == email
    await page.click("[data-testid=to-signin]")
    await page.wait_for_selector("[data-testid=page-title]:has-text('Sign in')")
    assert await page.input_value("[data-testid=email]") == email

    # A wrong password, then the right one (on the sign-in page "Sign in" opened; the test
    # waited for it above: filling a form just before it is replaced loses the input).
    await page.fill("[data-testid=email]", email)
    await page.fill("[data-testid=password]", "not the password")
    await page.click("[data-testid=submit]")
    await page.wait_for_selector("[data-testid=form-error]:visible")
    assert "do not match" in await text(page, "form-error")
    await page.fill("[data-testid=password]", password)
    await page.click("[data-testid=submit]")
    await page.wait_for_selector("[data-testid=devices-empty]")
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_forgot_password_the_reset_link_signs_in_with_the_new_one(
    nginx: Nginx, browser: Browser, api: ApiClient, mail_server: MailServer
) -> None:
    account = await api.account()
    # Signed in elsewhere: a reset ends that sign-in, and that browser forgets the account.
    there, elsewhere, _ = await sign_in_in_page(browser, nginx, account)
    # The link is opened in a browser signed in (with a live socket) as that very account.
    here, opener, opener_problems = await sign_in_in_page(browser, nginx, account)
    context, page, problems = await open_app(browser, nginx)

    # The same words for an address without an account as for one with.
    nobody = f"nobody-{time.monotonic_ns()}@example.com"
    for address in (nobody, account.email):
        await page.goto(nginx.url + "/#/signin")
        await page.fill("[data-testid=email]", address)
        await page.click("[data-testid=to-forgot]")
        await page.wait_for_selector("[data-testid=forgot-form]")
        assert await page.input_value("[data-testid=forgot-email]") == address
        await page.click("[data-testid=forgot-submit]")
        await page.wait_for_selector("[data-testid=forgot-sent]")
        said = await text(page, "forgot-sent")
        assert said == f"If an account uses {address}, we sent it a link.", said
    assert mail_server.received(nobody) == []

    mail = await mail_server.next_mail(account.email, "reset")
    assert "#/reset/" in mail.link, mail.link
    await opener.goto(f"{nginx.url}/#/reset/{mail.token}")
    await opener.fill("[data-testid=reset-password]", "a brand new password")
    await opener.fill("[data-testid=reset-password-again]", "a brand new password")
    await opener.click("[data-testid=reset-submit]")
    await opener.wait_for_selector("[data-testid=devices-empty]")
    assert "password was changed" in await text(opener, "banner")
    assert await text(opener, "who") == account.email
    await elsewhere.wait_for_selector("[data-testid=auth-form]", timeout=15_000)
    # The opener's old sign-in ended (its socket closed with 4403) and a new one began: it is
    # signed in with the new password, its socket open again.
    await opener.wait_for_selector("[data-testid=signaling-state][data-state=open]")
    new_token = await opener.evaluate("localStorage.getItem('mumu.token')")
    r = await api.http.get("/api/devices", headers={"authorization": f"Bearer {new_token}"})
    assert r.status_code == 200, r.text
    assert opener.url.endswith("#/devices")
    assert await kept(elsewhere) == NOTHING_KEPT
    r = await api.http.post(
        "/api/auth/login", json={"email": account.email, "password": account.password}
    )
    assert r.status_code == 401
    r = await api.http.post(
        "/api/auth/login", json={"email": account.email, "password": "a brand new password"}
    )
    assert r.status_code == 200

    # The link again: used, said so, with the way to a new one.
    await page.goto(f"{nginx.url}/#/reset/{mail.token}")
    await page.fill("[data-testid=reset-password]", "another new password")
    await page.fill("[data-testid=reset-password-again]", "another new password")
    await page.click("[data-testid=reset-submit]")
    await page.wait_for_selector("[data-testid=form-error]:visible")
    assert (await text(page, "form-error")).startswith("This link was already used.")
    await page.click("[data-testid=link-action]")
    await page.wait_for_selector("[data-testid=forgot-form]")
    for c in (context, there, here):
        await c.close()
    assert unexpected(problems) == [], problems.errors
    assert unexpected(opener_problems) == [], opener_problems.errors


async def test_refused_links_and_send_again_each_say_so_with_one_action(
    nginx: Nginx, browser: Browser, api: ApiClient, mail_server: MailServer
) -> None:
    """The screens of a refusal: "Send again" answered 429, a verify link and a reset link
    that expired (each with its one action, signed in and out), a new address that another
    account took before its link was opened."""
    account = await api.account()
    first = (await mail_server.next_mail(account.email, "verify")).token
    # Four more links (the account's mail bucket: five an hour, the sign-up's the first):
    # the sign-up's link is no longer among the newest three kept open.
    for _ in range(4):
        r = await api.http.post("/api/account/verification", headers=account.auth)
        assert r.status_code == 202, r.text
        await mail_server.next_mail(account.email, "verify")

    # "Send again" once more: 429, said with the wait, the button idle until then.
    context, page, first_problems = await open_app(browser, nginx, account)
    await page.wait_for_selector("[data-testid=verify-banner]:visible")
    await page.click("[data-testid=verify-send-again]")
    wait = re.compile(r"You can ask for another link in \d+ (seconds?|minutes)\.")
    said = page.locator("[data-testid=verify-banner-text]")
    await said.filter(has_text=wait).wait_for()
    assert wait.fullmatch(await said.inner_text()), await said.inner_text()
    assert await page.is_disabled("[data-testid=verify-send-again]")
    # (nothing more was mailed: the sign-up's and the four, no sixth)
    assert [m.kind for m in mail_server.received(account.email)] == ["verify"] * 5

    # The expired verify link, signed in: said so, and one action, a new link (429 too: said).
    await page.goto(f"{nginx.url}/#/verify/{first}")
    await page.wait_for_selector("[data-testid=link-error]")
    assert await text(page, "link-error") == "This link has expired."
    assert await page.locator("[data-testid=link-action]").count() == 1
    assert await text(page, "link-action") == "Send a new link"
    await page.click("[data-testid=link-action]")
    await page.locator("[data-testid=link-resend-result]").filter(has_text=wait).wait_for()
    await screenshot(page, "app-link-expired")
    # ...and signed out (opened on another device): one action, to sign in.
    away, elsewhere, away_problems = await open_app(browser, nginx)
    await elsewhere.goto(f"{nginx.url}/#/verify/{first}")
    await elsewhere.wait_for_selector("[data-testid=link-error]")
    assert await text(elsewhere, "link-error") == "This link has expired."
    assert await elsewhere.locator("[data-testid=link-action]").count() == 1
    await elsewhere.click("[data-testid=link-action]")
    await elsewhere.wait_for_selector("[data-testid=auth-form]")

    # A reset link mailed before the password was changed: expired, one way to a new one.
    r = await api.http.post("/api/auth/forgot", json={"email": account.email})
    assert r.status_code == 202, r.text
    reset = (await mail_server.next_mail(account.email, "reset")).token
    change = {"current_password": account.password, "new_password": "changed meanwhile 7"}
    r = await api.http.post("/api/account/password", json=change, headers=account.auth)
    assert r.status_code == 200, r.text
    await elsewhere.goto(f"{nginx.url}/#/reset/{reset}")
    await elsewhere.fill("[data-testid=reset-password]", "would undo it 8")
    await elsewhere.fill("[data-testid=reset-password-again]", "would undo it 8")
    await elsewhere.click("[data-testid=reset-submit]")
    await elsewhere.wait_for_selector("[data-testid=form-error]:visible")
    assert (await text(elsewhere, "form-error")).startswith("This link has expired.")
    assert await elsewhere.locator("[data-testid=link-action]").count() == 1
    await elsewhere.click("[data-testid=link-action]")
    await elsewhere.wait_for_selector("[data-testid=forgot-form]")
    await context.close()  # (its sign-in ended with the password change)
    assert unexpected(first_problems) == [], first_problems.errors

    # A new address that an account took before the link was opened.
    mover = await api.account()
    taken = f"taken-{time.monotonic_ns()}@example.com"
    context, page, problems = await sign_in_in_page(browser, nginx, mover)
    await page.click("[data-testid=nav-account]")
    await page.fill("[data-testid=new-email]", taken)
    await page.fill("[data-testid=email-password]", mover.password)
    await page.click("[data-testid=email-submit]")
    await page.wait_for_selector("[data-testid=email-pending]:visible")
    link = (await mail_server.next_mail(taken, "confirm_new_address")).token
    await api.account(taken)  # somebody signs up with it meanwhile
    await page.goto(f"{nginx.url}/#/verify/{link}")
    await page.wait_for_selector("[data-testid=link-error]")
    assert await text(page, "link-error") == (
        "Another account uses that address now, so it cannot become the address of yours."
    )
    assert await page.locator("[data-testid=link-action]").count() == 1
    await screenshot(page, "app-link-email-taken")
    await page.click("[data-testid=link-action]")
    await page.wait_for_selector(f"[data-testid=account-email]:text-is('{mover.email}')")
    await context.close()
    await away.close()
    assert unexpected(problems) == [], problems.errors
    assert unexpected(away_problems) == [], away_problems.errors


async def test_changing_the_address_waits_for_the_new_one_to_be_confirmed(
    nginx: Nginx, browser: Browser, api: ApiClient, mail_server: MailServer
) -> None:
    account = await api.account()
    new = f"moved-{time.monotonic_ns()}@example.com"
    context, page, problems = await sign_in_in_page(browser, nginx, account)
    await page.click("[data-testid=nav-account]")
    await page.wait_for_selector("[data-testid=sign-in]")
    await page.fill("[data-testid=new-email]", new)
    await page.fill("[data-testid=email-password]", "not my password")
    await page.click("[data-testid=email-submit]")
    await page.wait_for_selector("[data-testid=email-error]:visible")
    assert await text(page, "email-error") == "Your current password is not right."
    await page.fill("[data-testid=email-password]", account.password)
    await page.click("[data-testid=email-submit]")
    pending = (
        f"Confirm the new address from the mail we sent to {new};"
        f" until then you sign in with {account.email}."
    )
    await page.wait_for_selector("[data-testid=email-pending]:visible")
    assert await text(page, "email-pending") == pending
    await page.reload()  # the cloud keeps it pending: the page shows it when read again
    await page.wait_for_selector("[data-testid=email-pending]:visible")
    assert await text(page, "email-pending") == pending
    assert await text(page, "account-email") == account.email

    mail = await mail_server.next_mail(new, "confirm_new_address")
    await page.goto(f"{nginx.url}/#/verify/{mail.token}")
    await page.wait_for_selector("[data-testid=link-result]")
    assert await text(page, "link-result") == f"Your address {new} is confirmed."
    await page.wait_for_selector(f"[data-testid=who]:has-text('{new}')")
    assert (await mail_server.next_mail(account.email, "address_changed")).to == account.email
    await page.click("[data-testid=nav-account]")
    await page.wait_for_selector(f"[data-testid=account-email]:has-text('{new}')")
    assert await page.is_hidden("[data-testid=email-pending]")
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_every_way_of_leaving_forgets_the_pictures_and_the_address(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    stays = await api.owned_camera(account, "Stays")
    goes = await api.owned_camera(account, "Goes")
    context, page, problems = await sign_in_in_page(browser, nginx, account)
    await page.wait_for_selector("[data-testid=device-card] >> nth=1")

    # A camera that leaves the list (unpaired elsewhere: devices_changed) loses its picture.
    for camera in (stays, goes):
        await keep_picture(page, camera.device_id)
    assert sorted((await kept(page))["pictures"]) == sorted([stays.device_id, goes.device_id])
    r = await api.http.delete(f"/api/devices/{goes.device_id}", headers=account.auth)
    assert r.status_code in (200, 204), r.text
    await page.wait_for_function(
        f"async () => JSON.stringify((await ({KEPT_DATA})()).pictures)"
        f" === JSON.stringify([{json.dumps(stays.device_id)}])"
    )
    assert "mumu.email" in (await kept(page))["local"]

    # Signing out here.
    await page.click("[data-testid=signout]")
    await page.wait_for_selector("[data-testid=auth-form]")
    assert await kept(page) == NOTHING_KEPT

    # Signed out from elsewhere (the socket closes with 4403, the refresh is refused).
    await context.close()
    context, page, problems = await sign_in_in_page(browser, nginx, account)
    await keep_picture(page, stays.device_id)
    r = await api.http.post("/api/auth/logout-all", headers=account.auth)
    assert r.status_code == 204, r.text
    await page.wait_for_selector("[data-testid=auth-form]", timeout=15_000)
    assert await kept(page) == NOTHING_KEPT
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_a_token_the_cloud_refuses_returns_to_sign_in(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    header, _, signature = account.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(account.token.split(".")[1] + "=="))
    # Not expired by its own claim, but not signed by the cloud's key: a revoked/stale session.
    claims["exp"] = int(time.time()) + 3600
    forged = Account(account.email, "", account.user_id, f"{header}.{b64(claims)}.{signature}")
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(nginx.url + "/")
    await page.evaluate("t => localStorage.setItem('mumu.token', t)", forged.token)
    await page.goto(nginx.url + "/#/devices")
    await page.wait_for_selector("[data-testid=auth-form]")
    assert "expired" in await text(page, "banner")
    assert await page.evaluate("localStorage.getItem('mumu.token')") is None
    await context.close()


async def sign_in_in_page(
    browser: Browser, nginx: Nginx, account: Account, **options: Any
) -> tuple[BrowserContext, Page, PageProblems]:
    """A fresh browser context signed in through the sign-in form (so it holds the cloud's
    refresh cookie, as a person's browser does)."""
    context, page, problems = await open_app(browser, nginx, **options)
    await sign_in_by_form(page, nginx.url, account)
    return context, page, problems


async def sign_in_by_form(page: Page, origin: str, account: Account) -> None:
    """Sign ``account`` in through the form at ``origin`` and wait for its camera list and its
    signaling socket."""
    await page.goto(origin + "/#/signin")
    await page.fill("[data-testid=email]", account.email)
    await page.fill("[data-testid=password]", account.password)
    await page.click("[data-testid=submit]")
    await page.wait_for_selector("[data-testid=page-title]:has-text('Your cameras')")
    await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")


async def test_account_page_password_change_and_sign_out_everywhere(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    here, page, problems = await sign_in_in_page(browser, nginx, account)
    there, other, _ = await sign_in_in_page(browser, nginx, account)

    third, gone, _ = await sign_in_in_page(browser, nginx, account)

    await page.click("[data-testid=nav-account]")
    await page.wait_for_selector("[data-testid=sign-in] >> nth=3")  # api.account()'s, and three
    assert await text(page, "account-email") == account.email
    assert await page.locator("[data-testid=this-browser]").count() == 1
    await screenshot(page, "app-account")
    # A browser that signs out leaves the list without a reload.
    await gone.click("[data-testid=signout]")
    await gone.wait_for_selector("[data-testid=auth-form]")
    await page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=sign-in]').length === 3", timeout=PUSHED_MS
    )

    # A wrong current password is said so; nothing changes.
    await page.fill("[data-testid=current-password]", "not my password")
    await page.fill("[data-testid=new-password]", "a new good password")
    await page.fill("[data-testid=new-password-again]", "a new good password")
    await page.click("[data-testid=password-submit]")
    await page.wait_for_selector("[data-testid=password-error]:visible")
    # The right one: this browser stays signed in (its socket comes back with the new sign-in),
    # the other one is sent to sign in again, with a sentence saying why.
    await page.fill("[data-testid=current-password]", account.password)
    await page.click("[data-testid=password-submit]")
    await page.wait_for_selector("[data-testid=banner]:has-text('password was changed')")
    # Every other sign-in ended: the list says so at once.
    await page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=sign-in]').length === 1", timeout=5_000
    )
    assert await page.locator("[data-testid=this-browser]").count() == 1
    await other.wait_for_selector("[data-testid=auth-form]", timeout=15_000)
    assert "password" in await text(other, "banner")
    assert await kept(other) == NOTHING_KEPT
    await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")
    await page.click("[data-testid=nav-devices]")
    await page.wait_for_selector("[data-testid=devices-empty]")
    r = await api.http.post(
        "/api/auth/login", json={"email": account.email, "password": "a new good password"}
    )
    assert r.status_code == 200

    # Sign out everywhere: this browser too, and the sign-in just made through the API.
    token = r.json()["access_token"]
    await page.click("[data-testid=nav-account]")
    await page.click("[data-testid=signout-everywhere]")
    await page.click("[data-testid=signout-everywhere-confirm]")
    await page.wait_for_selector("[data-testid=auth-form]")
    assert "every browser" in await text(page, "banner")
    assert await kept(page) == NOTHING_KEPT
    r = await api.http.get("/api/devices", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401
    for context in (here, there, third):
        await context.close()
    assert unexpected(problems) == [], problems.errors


SIGN_INS = "() => document.querySelectorAll('[data-testid=sign-in]').length"
#: Well under the page's fallback reading of its list (a minute): only the cloud's
#: sign_ins_changed, pushed over the signaling socket, gets a row out this soon.
PUSHED_MS = 10_000


async def own_sign_in(page: Page) -> str:
    """The id of this browser's sign-in, as its account page marks it."""
    await page.click("[data-testid=nav-account]")
    row = page.locator("[data-testid=sign-in]").filter(
        has=page.locator("[data-testid=this-browser]")
    )
    sign_in = await row.get_attribute("data-sign-in")
    assert sign_in, "the account page names each sign-in"
    return sign_in


async def signing_out_drops_rows(watcher: Page, leaving: Page, revoked: Page) -> None:
    """``watcher`` is on the account page, with ``leaving`` and ``revoked`` signed in to the
    same account (and listed): ``leaving`` signs itself out, then ``watcher`` signs ``revoked``
    out with the "Sign out" beside it; each time the row leaves ``watcher``'s list at once, and
    ``revoked`` is sent to sign in, told why."""
    revoked_id = await own_sign_in(revoked)
    await watcher.click("[data-testid=nav-account]")
    await watcher.wait_for_selector(f"[data-sign-in='{revoked_id}']")
    rows = await watcher.evaluate(SIGN_INS)
    mine = watcher.locator("[data-testid=sign-in]").filter(
        has=watcher.locator("[data-testid=this-browser]")
    )
    assert await mine.locator("[data-testid=sign-in-revoke]").count() == 0, "sign out is above"

    await leaving.click("[data-testid=signout]")
    await leaving.wait_for_selector("[data-testid=auth-form]")
    await watcher.wait_for_function(f"() => ({SIGN_INS})() === {rows - 1}", timeout=PUSHED_MS)

    await watcher.click(f"[data-sign-in='{revoked_id}'] [data-testid=sign-in-revoke]")
    await watcher.wait_for_selector(
        f"[data-sign-in='{revoked_id}']", state="detached", timeout=PUSHED_MS
    )
    assert await watcher.evaluate(SIGN_INS) == rows - 2
    await revoked.wait_for_selector("[data-testid=auth-form]", timeout=15_000)
    assert "signed out from another browser" in await text(revoked, "banner")
    assert await kept(revoked) == NOTHING_KEPT
    assert await watcher.locator("[data-testid=this-browser]").count() == 1
    assert await watcher.is_hidden("[data-testid=sign-in-error]")


async def test_signing_out_a_browser_drops_it_from_the_other_page_at_once(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    here, page, problems = await sign_in_in_page(browser, nginx, account)
    there, leaving, _ = await sign_in_in_page(browser, nginx, account)
    third, revoked, revoked_problems = await sign_in_in_page(browser, nginx, account)
    await signing_out_drops_rows(page, leaving, revoked)
    await screenshot(page, "app-account-sign-ins")
    for context in (here, there, third):
        await context.close()
    assert unexpected(problems) == [], problems.errors
    assert unexpected(revoked_problems) == [], revoked_problems.errors


async def test_deleting_the_account_from_the_account_page(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    camera = await api.owned_camera(account, "Attic")
    cam_ws = await device(nginx.ws_url, camera.hello())
    context, page, problems = await sign_in_in_page(browser, nginx, account)
    await page.wait_for_selector("[data-testid=device-card]")
    await keep_picture(page, camera.device_id)
    await page.click("[data-testid=nav-account]")
    await page.fill("[data-testid=delete-password]", "not it")
    await page.click("[data-testid=delete-account]")
    await page.click("[data-testid=delete-confirm]")
    await page.wait_for_selector("[data-testid=delete-error]:visible")
    await page.fill("[data-testid=delete-password]", account.password)
    await page.click("[data-testid=delete-account]")
    await page.click("[data-testid=delete-confirm]")
    await page.wait_for_selector("[data-testid=auth-form]")
    assert "deleted" in await text(page, "banner")
    assert await kept(page) == NOTHING_KEPT
    assert (await cam_ws.recv("pairing_status"))["payload"] == {"paired": False}
    r = await api.http.post(
        "/api/auth/login", json={"email": account.email, "password": account.password}
    )
    assert r.status_code == 401
    await cam_ws.close()
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_a_claim_link_can_be_declined(nginx: Nginx, browser: Browser, api: ApiClient) -> None:
    account = await api.account()
    camera = await api.camera("Somebody's camera")
    claim_url: str = (await api.code(camera))["claim_url"]
    context, page, problems = await open_app(browser, nginx, account)
    await page.goto(nginx.url + "/" + claim_url[claim_url.index("#/claim/") :])
    await page.wait_for_selector("[data-testid=claim-confirmation]")
    assert await text(page, "claim-name") == "Somebody's camera"
    await page.click("[data-testid=claim-cancel]")
    await page.wait_for_selector("[data-testid=devices-empty]")
    assert (await api.http.get("/api/devices", headers=account.auth)).json()["devices"] == []
    await context.close()
    assert unexpected(problems) == [], problems.errors


# --- pairing, the list --------------------------------------------------------------------------


async def test_a_wrong_pairing_code_is_explained(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    context, page, problems = await open_app(browser, nginx, await api.account())
    await page.click("[data-testid=add-camera]")
    await page.fill("[data-testid=pair-code]", "12")
    await page.click("[data-testid=pair-submit]")
    assert "6 digits" in await text(page, "pair-error")
    await page.fill("[data-testid=pair-code]", "000 000")
    await page.click("[data-testid=pair-submit]")
    await page.wait_for_selector("[data-testid=pair-error]:has-text('not right')")
    await screenshot(page, "app-pair-wrong-code")
    # Whatever surrounds the six digits (a paste from a message) is not held against them.
    assert await page.get_attribute("[data-testid=pair-code]", "inputmode") == "numeric"
    await page.fill("[data-testid=pair-code]", "  Code: 560 176  ")
    assert await page.input_value("[data-testid=pair-code]") == "  Code: 560 176  "
    await page.evaluate("document.querySelector('[data-testid=pair-error]').textContent = ''")
    await page.click("[data-testid=pair-submit]")
    await page.wait_for_selector("[data-testid=pair-error]:has-text('not right')")
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_pair_rename_live_status_unpair(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    camera = await api.camera("Porch")
    code = (await api.code(camera))["code"]
    context, page, problems = await open_app(browser, nginx, account)

    await page.click("[data-testid=add-camera]")
    await page.fill("[data-testid=pair-code]", code)
    await page.click("[data-testid=pair-submit]")
    await page.wait_for_selector("[data-testid=pair-success]")
    assert await text(page, "paired-name") == "Porch"
    await page.click("[data-testid=to-devices]")
    card = page.locator(f"[data-device-id='{camera.device_id}']")
    await card.wait_for()
    assert (await card.locator("[data-testid=device-status]").text_content() or "").startswith(
        "Offline"
    )

    # The camera comes online and goes away: the list follows without a reload.
    await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")
    cam_ws = await device(nginx.ws_url, camera.hello())
    status = card.locator("[data-testid=device-status]")
    await status.filter(has_text="Online").wait_for(timeout=10_000)
    await screenshot(page, "app-devices-online")
    await cam_ws.close()
    await status.filter(has_text="Offline").wait_for(timeout=10_000)

    await card.locator("[data-testid=rename]").click()
    await card.locator("[data-testid=rename-input]").fill("Back porch")
    await card.locator("[data-testid=rename-save]").click()
    await card.locator("[data-testid=device-name]").filter(has_text="Back porch").wait_for()
    listed = (await api.http.get("/api/devices", headers=account.auth)).json()["devices"]
    assert [d["name"] for d in listed] == ["Back porch"]

    # Shared with someone: the unpair dialog says that their access ends.
    family = await api.account()
    r = await api.http.post(
        f"/api/devices/{camera.device_id}/invites", json={"link": True}, headers=account.auth
    )
    token = r.json()["url"].rsplit("/", 1)[1]
    r = await api.http.post("/api/invite-links/accept", json={"token": token}, headers=family.auth)
    assert r.status_code == 200, r.text
    await card.locator("[data-testid=viewer-count]").filter(has_text="1 person").wait_for()
    await card.locator("[data-testid=unpair]").click()
    question = card.locator("[data-testid=unpair-question]")
    assert "Everyone you shared it with loses access" in (await question.text_content() or "")
    await card.locator("[data-testid=unpair-confirm]").click()
    await page.wait_for_selector("[data-testid=devices-empty]")
    assert (await api.http.get("/api/devices", headers=account.auth)).json()["devices"] == []
    assert (await api.http.get("/api/devices", headers=family.auth)).json()["devices"] == []

    # Paired again by the same person, it has the name they gave it.
    await page.click("[data-testid=add-camera]")
    await page.fill("[data-testid=pair-code]", (await api.code(camera))["code"])
    await page.click("[data-testid=pair-submit]")
    await page.wait_for_selector("[data-testid=pair-success]")
    assert await text(page, "paired-name") == "Back porch"
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_the_camera_list_warns_a_browser_without_h264_before_watch(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    """Firefox on Linux as shipped (no H.264 in its capabilities, simulated) is told above the
    list, before it presses Watch, how to turn H.264 on; a browser with H.264 is told nothing."""
    account = await api.account()
    await api.owned_camera(account, "Porch")
    context, page, problems = await open_app(browser, nginx, account)
    await page.locator("[data-testid=device-card]").first.wait_for()
    assert await page.locator("[data-testid=no-h264]").count() == 0
    await context.close()

    user_agent = FIREFOX_USER_AGENTS["linux"]
    context, page, problems = await open_app(browser, nginx, account, user_agent=user_agent)
    await context.add_init_script(NO_H264)
    await page.reload()
    warning = page.locator("[data-testid=no-h264]")
    await warning.wait_for()
    words = await warning.text_content() or ""
    assert "about:config" in words and "media.webrtc.hw.h264.enabled" in words, words
    await page.locator("[data-testid=device-card]").first.wait_for()
    assert await accessibility_problems(page) == []
    await screenshot(page, "app-devices-no-h264")
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_claim_link_signs_in_first_then_pairs(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    camera = await api.camera("Garage")
    claim_url: str = (await api.code(camera))["claim_url"]
    fragment = claim_url[claim_url.index("#/claim/") :]
    assert claim_url.startswith(nginx.url), claim_url  # nginx passes the Host with its port

    context, page, problems = await open_app(browser, nginx, viewport=PHONE_VIEWPORT)
    await page.goto(nginx.url + "/" + fragment)
    await page.wait_for_selector("[data-testid=auth-form]")
    assert "add this camera" in await text(page, "banner")
    await page.fill("[data-testid=email]", account.email)
    await page.fill("[data-testid=password]", account.password)
    await page.click("[data-testid=submit]")
    # Nothing is added until the person has seen which camera it is and said yes.
    await page.wait_for_selector("[data-testid=claim-confirmation]")
    assert await text(page, "claim-name") == "Garage"
    assert "test" in await text(page, "claim-model")
    assert (await api.http.get("/api/devices", headers=account.auth)).json()["devices"] == []
    await screenshot(page, "app-claim-confirm-phone")
    await page.click("[data-testid=claim-confirm]")
    await page.wait_for_selector("[data-testid=pair-success]")
    assert await text(page, "paired-name") == "Garage"
    await screenshot(page, "app-claim-paired-phone")

    # The same link again (used, by its owner): the camera is ours already, with Watch.
    await page.click("[data-testid=to-devices]")
    await page.wait_for_selector("[data-testid=device-card]")
    await page.goto(nginx.url + "/" + fragment)
    await page.wait_for_selector("[data-testid=already-yours]")
    assert await text(page, "paired-name") == "Garage"
    assert await page.get_attribute("[data-testid=watch-paired]", "href") == (
        f"#/watch/{camera.device_id}"
    )
    await screenshot(page, "app-claim-already-yours-phone")
    # Somebody else opening it learns nothing about the camera.
    other = await api.account()
    context2, page2, problems2 = await open_app(browser, nginx, other)
    await page2.goto(nginx.url + "/" + fragment)
    await page2.wait_for_selector("[data-testid=claim-failed]")
    assert "Garage" not in await text(page2, "pair-error")
    await context2.close()
    assert unexpected(problems2) == [], problems2.errors
    await context.close()
    assert unexpected(problems) == [], problems.errors


# --- watching -----------------------------------------------------------------------------------


class TestCamera:
    """The device side of watching, as the agent does it: a real signaling socket, a real aiortc
    peer connection per session, the synthetic camera's H.264 through the shared media hub."""

    __test__ = False

    def __init__(self, ws: Client, open_camera: Any = None) -> None:
        from device.hal.camera import CameraConfig
        from device.hal.synthetic import open_synthetic
        from device.media import MediaHub

        self.ws = ws
        config = CameraConfig(width=640, height=360, fps=15, bitrate=600_000)
        self.hub = MediaHub(open_camera or open_synthetic, config)
        self.ice: dict[str, list[dict[str, Any]]] = {}
        self.peers: dict[str, Any] = {}
        self.ended: list[tuple[str, str]] = []
        self.dropped: list[Any] = []
        self.task = asyncio.create_task(self.run())

    @classmethod
    async def connect(cls, ws_url: str, camera: Camera, open_camera: Any = None) -> TestCamera:
        return cls(await device(ws_url, camera.hello()), open_camera)

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await self.ws.recv(timeout=3600)
                await self.handle(message["type"], message["payload"])

    async def handle(self, kind: str, payload: dict[str, Any]) -> None:
        from aiortc import RTCSessionDescription
        from aiortc.sdp import candidate_from_sdp

        from device.media import answer

        if kind == "watch_request":
            self.ice[payload["session_id"]] = payload["ice_servers"]
        elif kind == "signal_offer":
            session_id = payload["session_id"]
            pc = self.peer_connection(self.ice.get(session_id, []))
            track = self.hub.subscribe()
            self.peers[session_id] = (pc, track)
            offer = RTCSessionDescription(payload["sdp"]["sdp"], payload["sdp"]["type"])
            local = await answer(pc, offer, track)
            await self.ws.send(
                "signal_answer",
                {"session_id": session_id, "sdp": {"type": local.type, "sdp": local.sdp}},
            )
        elif kind == "signal_ice" and payload["session_id"] in self.peers:
            init = payload.get("candidate")
            if init and init.get("candidate"):
                candidate = candidate_from_sdp(init["candidate"].split(":", 1)[1])
                candidate.sdpMid = init.get("sdpMid")
                candidate.sdpMLineIndex = init.get("sdpMLineIndex")
                await self.peers[payload["session_id"]][0].addIceCandidate(candidate)
        elif kind == "watch_ended":
            self.ended.append((payload["session_id"], payload["reason"]))
            await self.close_peer(payload["session_id"])

    @staticmethod
    def peer_connection(ice_servers: list[dict[str, Any]]) -> Any:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in ice_servers
        ]
        return RTCPeerConnection(RTCConfiguration(iceServers=servers))

    async def close_peer(self, session_id: str) -> None:
        pc, track = self.peers.pop(session_id, (None, None))
        if pc is not None:
            track.stop()
            await pc.close()

    async def drop_media(self, session_id: str) -> None:
        """The peer connection vanishes (network loss) while signaling stays up."""
        pc, track = self.peers[session_id]
        track.stop()
        # Stop answering ICE consent checks without a DTLS goodbye: like a cable pulled.
        for transceiver in pc.getTransceivers():
            await transceiver.sender.transport.transport.stop()
        self.peers.pop(session_id)
        self.dropped.append(pc)

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        for session_id in list(self.peers):
            await self.close_peer(session_id)
        for pc in self.dropped:
            await pc.close()
        await self.hub.close()


async def watch_until_live(page: Page) -> dict[str, Any]:
    """Waits until the page shows moving video; the page's stats summary."""
    await page.wait_for_selector("[data-testid=watch-state][data-state=connected]", timeout=30_000)
    await page.wait_for_function(
        """() => { const v = document.querySelector("[data-testid=video]");
                   return v.videoWidth > 0 && v.currentTime > 0.5 && !v.paused; }""",
        timeout=30_000,
    )
    await page.wait_for_function(
        "() => window.__mumu.stats && window.__mumu.stats.path && window.__mumu.stats.fps > 0",
        timeout=15_000,
    )
    stats: dict[str, Any] = await page.evaluate("window.__mumu.stats")
    return stats


async def read_timecode(page: Page) -> int | None:
    value: int | None = await page.evaluate(
        """async () => {
          const { readTimecode } = await import("/js/timecode.js");
          return readTimecode(document.querySelector("[data-testid=video]"));
        }"""
    )
    return value


@pytest.mark.slow
async def test_watch_live_video_then_end(nginx: Nginx, browser: Browser, api: ApiClient) -> None:
    account = await api.account()
    camera = await api.owned_camera(account, "Hallway")
    cam = await TestCamera.connect(nginx.ws_url, camera)
    try:
        context, page, problems = await open_app(browser, nginx, account)
        card = page.locator(f"[data-device-id='{camera.device_id}']")
        await card.locator("[data-testid=device-status]").filter(has_text="Online").wait_for()
        await card.locator("[data-testid=watch]").click()
        stats = await watch_until_live(page)
        assert stats["path"] == "direct", stats
        assert stats["codec"] == "H264" and stats["width"] == 640, stats
        await page.wait_for_function("() => window.__mumu.stats.bitrateKbps > 0")
        assert "Direct" in await text(page, "stat-path")
        assert await text(page, "stat-fps") != "—"
        assert await text(page, "watch-title") == "Hallway"
        stamp = await read_timecode(page)
        assert stamp is not None  # the synthetic camera's capture time, read from the picture
        assert await page.evaluate("document.querySelector('video').muted") is True
        await screenshot(page, "app-watch-live")

        # A second viewer (another tab or person) watches the same camera at the same time.
        second = await context.new_page()
        await second.goto(f"{nginx.url}/#/watch/{camera.device_id}")
        await watch_until_live(second)
        assert len(cam.peers) == 2

        await page.click("[data-testid=end-watch]")
        await page.wait_for_selector("[data-testid=watch-state][data-state=ended]")
        for _ in range(50):
            if cam.ended:
                break
            await asyncio.sleep(0.1)
        assert [reason for _, reason in cam.ended] == ["viewer_ended"]
        assert await page.is_visible("[data-testid=retry]")
        # The other viewer keeps watching.
        assert await second.get_attribute("[data-testid=watch-state]", "data-state") == "connected"
        frames = await second.evaluate("window.__mumu.stats.framesDecoded")
        await second.wait_for_function(f"() => window.__mumu.stats.framesDecoded > {frames}")

        # Its media path dies without a word on signaling (the camera's network drops the
        # peer): the page notices, starts a fresh watch by itself and is live again.
        (session_id,) = list(cam.peers)
        await cam.drop_media(session_id)
        await second.wait_for_selector(
            "[data-testid=watch-state]:not([data-state=connected])", timeout=30_000
        )
        await watch_until_live(second)
        assert session_id not in cam.peers and len(cam.peers) == 1
        await context.close()
        assert unexpected(problems) == [], problems.errors
    finally:
        await cam.close()


def open_undecodable(config: Any) -> Any:
    """The synthetic camera, each picture's bytes replaced by an IDR slice no decoder can read
    (no SPS/PPS, noise for slice data): what a browser without an H.264 decoder sees."""
    import dataclasses
    import random

    from device.hal.synthetic import SyntheticCamera

    noise = random.Random(7)

    class Undecodable(SyntheticCamera):
        def start(self, sink: Any) -> None:
            def garble(unit: Any) -> None:
                slice_data = noise.randbytes(max(1000, len(unit.data)))
                slice_data = slice_data.replace(b"\x00\x00", b"\x00\x01")  # no start codes
                sink(dataclasses.replace(unit, data=b"\x00\x00\x00\x01\x65" + slice_data))

            super().start(garble)

    return Undecodable(config)


@pytest.mark.slow
async def test_packets_no_browser_can_decode_are_said_so_not_shown_live(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    """H.264 negotiated and packets arriving in a real Chromium, not one frame decoded: within
    seconds the page says this browser cannot play the camera, not "Live" over black."""
    account = await api.account()
    camera = await api.owned_camera(account, "Garbled")
    cam = await TestCamera.connect(nginx.ws_url, camera, open_undecodable)
    try:
        context, page, _ = await open_app(browser, nginx, account)
        await page.goto(f"{nginx.url}/#/watch/{camera.device_id}")
        await page.evaluate(
            """() => {
              window.__views = [];
              new MutationObserver((records) => {
                for (const r of records) window.__views.push(r.target.dataset.view);
              }).observe(document.body, {
                subtree: true, attributes: true, attributeFilter: ["data-view"] });
            }"""
        )
        await page.wait_for_selector(
            "[data-testid=watch-state][data-state=unsupported]", timeout=30_000
        )
        assert "cannot play" in await text(page, "watch-message")
        views = await page.evaluate("window.__views")
        assert "live" not in views, f"connected without a picture was shown as Live: {views}"
        assert await page.is_hidden("[data-testid=retry]"), "no retrying what cannot work"
        await context.close()
    finally:
        await cam.close()


@pytest.mark.slow
async def test_watch_through_the_turn_relay_and_camera_going_offline(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    camera = await api.owned_camera(account, "Relay cam")
    cam = await TestCamera.connect(nginx.ws_url, camera)
    closed = False
    try:
        context, page, problems = await open_app(browser, nginx, account, viewport=PHONE_VIEWPORT)
        await page.goto(f"{nginx.url}/?relay=1#/watch/{camera.device_id}")
        stats = await watch_until_live(page)
        assert stats["path"] == "relay" and stats["localType"] == "relay", stats
        assert "Relayed" in await text(page, "stat-path")
        assert await text(page, "path-note") == "Relayed — may be slower."
        assert await page.get_attribute("[data-testid=quality]", "data-quality") in (
            "good",
            "fair",
            "poor",
        )
        assert await page.is_visible("[data-testid=relay-forced]")
        await screenshot(page, "app-watch-relay-phone")

        # The camera drops off: the page says so and waits, no reload needed.
        await cam.close()
        closed = True
        await page.wait_for_selector(
            "[data-testid=watch-state][data-state=waiting_device]", timeout=15_000
        )
        assert "offline" in await text(page, "watch-message")
        # It comes back: watching resumes by itself.
        cam = await TestCamera.connect(nginx.ws_url, camera)
        closed = False
        await watch_until_live(page)

        # The viewer's signaling socket drops (not the media): it reconnects with backoff, then
        # resumes the session (or, if the cloud ended it meanwhile, starts a fresh one; today's
        # cloud ends a viewer's sessions as soon as its socket closes).
        await page.evaluate("window.__mumu.signaling.ws.close()")
        await page.wait_for_selector("[data-testid=signaling-state][data-state=reconnecting]")
        await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")
        await watch_until_live(page)

        # The history says these sessions were relayed.
        await page.goto(f"{nginx.url}/?relay=1#/history/{camera.device_id}")
        relayed = page.locator("[data-testid=history-path][data-path=relay]")
        await relayed.first.wait_for()
        assert await relayed.first.inner_text() == "Relayed"
        assert await page.locator("[data-testid=history-path][data-path=direct]").count() == 0
        await context.close()
        assert unexpected(problems) == [], problems.errors
    finally:
        if not closed:
            await cam.close()


@pytest.mark.slow
async def test_a_live_view_outlives_its_access_tokens(
    tmp_path: Path, coturn: Coturn, browser: Browser
) -> None:
    """Access tokens last 12 s here: the page refreshes them in the background (the refresh
    cookie rotating each time) while the video plays on, untouched, and a signaling socket that
    drops long after the first token expired comes back and resumes the session."""
    env = {
        **RELAXED,
        "MUMU_TURN_SECRET": TURN_SECRET,
        "MUMU_TURN_URLS": ",".join(coturn.urls),
        "MUMU_STUN_URLS": f"stun:127.0.0.1:{coturn.port}",
        "MUMU_TRUSTED_PROXIES": "127.0.0.1",
        "MUMU_JWT_TTL": "12",
    }
    with (
        CloudProcess(tmp_path / "cloud", env=env) as short_lived,
        nginx_server([short_lived.port]) as front,
    ):
        api = ApiClient(front.url)
        account = await api.account()
        camera = await api.owned_camera(account, "Porch")
        cam = await TestCamera.connect(front.ws_url, camera)
        try:
            context, page, problems = await sign_in_in_page(browser, front, account)
            first_token = await page.evaluate("localStorage.getItem('mumu.token')")
            await page.click("[data-testid=watch]")
            await watch_until_live(page)
            await page.evaluate(
                """() => {
                  const seen = window.__seen = { states: [], tokens: new Set(), signaling: [] };
                  const state = document.querySelector("[data-testid=watch-state]");
                  new MutationObserver(() => seen.states.push(state.dataset.state))
                    .observe(state, { attributes: true, attributeFilter: ["data-state"] });
                  window.__mumu.signaling.addEventListener(
                    "state", (e) => seen.signaling.push(e.detail.state));
                  setInterval(() => seen.tokens.add(localStorage.getItem("mumu.token")), 200);
                }"""
            )
            played = await page.evaluate(
                "document.querySelector('[data-testid=video]').currentTime"
            )
            # Three new tokens: well past the first one's expiry, and past the second's.
            await page.wait_for_function("() => window.__seen.tokens.size >= 4", timeout=60_000)
            seen = await page.evaluate(
                "({states: window.__seen.states, signaling: window.__seen.signaling})"
            )
            assert seen == {"states": [], "signaling": []}, "nothing was interrupted"
            assert await page.evaluate("location.hash") == f"#/watch/{camera.device_id}"
            now_playing = await page.evaluate(
                "document.querySelector('[data-testid=video]').currentTime"
            )
            assert now_playing > played + 15, (played, now_playing)
            r = await api.http.get(
                "/api/devices", headers={"authorization": f"Bearer {first_token}"}
            )
            assert r.status_code == 401, "the first token has expired by now"

            # The signaling socket drops: it reconnects with a fresh token and resumes.
            await page.evaluate("window.__mumu.signaling.ws.close()")
            await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")
            await watch_until_live(page)
            assert await page.evaluate("location.hash") == f"#/watch/{camera.device_id}"
            await context.close()
            assert unexpected(problems) == [], problems.errors
        finally:
            await cam.close()
            await api.aclose()


@pytest.mark.slow
async def test_signaling_loss_is_shown_and_recovered(
    nginx: Nginx, browser: Browser, api: ApiClient, cloud: CloudProcess
) -> None:
    account = await api.account()
    context, page, problems = await open_app(browser, nginx, account)
    await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")
    cloud.kill()
    try:
        await page.wait_for_selector(
            "[data-testid=signaling-state][data-state=reconnecting]", timeout=10_000
        )
        assert "Reconnecting" in await text(page, "banner")
        await screenshot(page, "app-signaling-lost")
    finally:
        cloud.start()
    await page.wait_for_selector("[data-testid=signaling-state][data-state=open]", timeout=40_000)
    await page.wait_for_selector("[data-testid=banner]", state="hidden")
    await context.close()
    # While the cloud was down nginx answered 502 (a refused upstream): expected here.
    assert [e for e in unexpected(problems) if "502" not in e] == [], problems.errors


#: Records, from now on, when the page presents each video frame and each state its pill shows.
RECORD_PLAYBACK = """() => {
  const video = document.querySelector("[data-testid=video]");
  const pill = document.querySelector("[data-testid=watch-state]");
  window.__frames = [];
  window.__pill = [pill.dataset.state];
  const onFrame = (now, meta) => {
    window.__frames.push({ at: performance.now(), decoded: meta.presentedFrames });
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  new MutationObserver(() => window.__pill.push(pill.dataset.state))
    .observe(pill, { attributes: true, attributeFilter: ["data-state"] });
}"""


@pytest.mark.slow
async def test_a_cloud_restart_never_cuts_live_video(
    nginx: Nginx, browser: Browser, api: ApiClient, cloud: CloudProcess, tmp_path: Path
) -> None:
    """The embedded cloud (one process: SQLite and in-process live state) is killed and started
    again mid-watch.  The real agent keeps its peer; the page keeps the peer connection that
    carries video, says nothing alarming, resumes the session (or, if the cloud cannot take it
    back, sets up a fresh one beside it and switches over): no gap in the presented frames."""
    from tests.agent_inprocess import pair, running_agent, until

    account = await api.account()
    async with running_agent(nginx.url, tmp_path / "agent") as agent:
        assert agent.sessions is not None
        sessions = agent.sessions
        _, device_id = await pair(agent, nginx.url, account)
        context, page, problems = await open_app(browser, nginx, account)
        try:
            await page.goto(f"{nginx.url}/#/watch/{device_id}")
            await watch_until_live(page)
            await page.evaluate(RECORD_PLAYBACK)
            cloud.kill()
            try:
                await page.wait_for_selector(
                    "[data-testid=signaling-state][data-state=reconnecting]", timeout=15_000
                )
                await screenshot(page, "app-watch-cloud-restarting")
            finally:
                # In a thread: the agent shares this event loop and must keep streaming.
                await asyncio.to_thread(cloud.start)
            await page.wait_for_selector(
                "[data-testid=signaling-state][data-state=open]", timeout=40_000
            )
            # Settled: resumed, or a fresh session took over from the one that kept playing.
            await page.wait_for_function(
                """() => { const w = window.__mumu.watch;
                   return w.state === "connected" && !w.standby && w.awaiting === null; }""",
                timeout=60_000,
            )
            settled = await page.evaluate("window.__frames.length")
            await page.wait_for_function(f"() => window.__frames.length > {settled + 15}")
            frames = await page.evaluate("window.__frames")
            pill = await page.evaluate("window.__pill")
            counts = await page.evaluate("window.__mumu.watch.counts")
            gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(frames)]
            print(f"\nlongest gap {max(gaps):.0f} ms over {len(frames)} frames; {counts}")
            assert max(gaps) < 1000, f"the picture stopped for {max(gaps):.0f} ms ({counts})"
            assert set(pill) == {"connected"}, pill
            assert await page.is_hidden("[data-testid=banner]"), "nothing alarming to say"
            # The camera ends up serving this page once: no orphaned peer left behind.
            await until(lambda: len(sessions.sessions) == 1, 30, "one session on the camera")
        finally:
            await context.close()
    assert [e for e in unexpected(problems) if "502" not in e] == [], problems.errors


def test_screenshots_are_kept_out_of_git() -> None:
    ignored = (Path(__file__).resolve().parent.parent / ".gitignore").read_text().split()
    assert "artifacts/" in ignored
