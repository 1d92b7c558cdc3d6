"""Every screen of the web app at desktop and phone size, light and dark: no serious or
critical axe-core violation, a screenshot of each (``artifacts/screen-*.png``), and the habits
people have: the keyboard reaches and works every control, the live view's status is above the
fold at 1280x800, full screen has its own controls and a way out, a phone held sideways fills
the screen, "Tap to play" only when autoplay was refused.  A real cloud behind nginx, a real
camera peer (aiortc, the synthetic camera), Debian's Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser import (
    DESKTOP_VIEWPORT,
    PHONE_VIEWPORT,
    Nginx,
    accessibility_problems,
    launch_chromium,
    nginx_server,
    screenshot,
)
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import ApiClient, CloudProcess
from tests.mail_server import MailServer
from tests.test_web_app import TestCamera, open_app, unexpected, watch_until_live

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


@pytest.fixture(scope="module")
def cloud(
    tmp_path_factory: pytest.TempPathFactory, mail_server: MailServer
) -> Iterator[CloudProcess]:
    env = {**RELAXED, "MUMU_TRUSTED_PROXIES": "127.0.0.1", "MUMU_SMTP_URL": mail_server.url}
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


async def check(page: Page, name: str, problems: dict[str, list[str]]) -> None:
    """axe-core on the screen as it is, and its screenshot."""
    found = await accessibility_problems(page)
    if found:
        problems[name] = found
    await screenshot(page, name)


SIZES = {"desktop": DESKTOP_VIEWPORT, "phone": PHONE_VIEWPORT}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_every_screen_is_accessible_and_photographed(
    nginx: Nginx,
    browser: Browser,
    api: ApiClient,
    mail_server: MailServer,
    size: str,
    scheme: str,
) -> None:
    suffix = f"{size}{'-dark' if scheme == 'dark' else ''}"
    options: dict[str, Any] = {"viewport": SIZES[size], "color_scheme": scheme}
    problems: dict[str, list[str]] = {}

    # Signed out.
    context, page, page_problems = await open_app(browser, nginx, **options)
    await page.wait_for_selector("[data-testid=auth-form]")
    await check(page, f"screen-signin-{suffix}", problems)
    await page.click("[data-testid=to-signup]")
    await page.wait_for_selector("[data-testid=page-title]:has-text('Create your account')")
    await check(page, f"screen-signup-{suffix}", problems)
    await page.goto(nginx.url + "/#/signin")
    await page.click("[data-testid=to-forgot]")
    await page.wait_for_selector("[data-testid=forgot-form]")
    await check(page, f"screen-forgot-{suffix}", problems)
    await page.fill("[data-testid=forgot-email]", "somebody@example.com")
    await page.click("[data-testid=forgot-submit]")
    await page.wait_for_selector("[data-testid=forgot-sent]")
    await check(page, f"screen-forgot-sent-{suffix}", problems)
    await page.goto(f"{nginx.url}/#/reset/{'A' * 43}")
    await page.wait_for_selector("[data-testid=reset-form]")
    await check(page, f"screen-reset-{suffix}", problems)
    await page.goto(f"{nginx.url}/#/verify/{'A' * 43}")  # no such link
    await page.wait_for_selector("[data-testid=link-error]")
    await check(page, f"screen-verify-refused-{suffix}", problems)
    await context.close()

    # Signed in: no camera, then cameras online and offline.
    account = await api.account()
    context, page, page_problems = await open_app(browser, nginx, account, **options)
    await page.wait_for_selector("[data-testid=devices-empty]")
    await page.wait_for_selector("[data-testid=verify-banner]:visible")  # not confirmed yet
    await check(page, f"screen-devices-empty-{suffix}", problems)
    await page.click("[data-testid=nav-pair]")
    await page.wait_for_selector("[data-testid=pair-form]")
    await check(page, f"screen-pair-{suffix}", problems)
    await page.fill("[data-testid=pair-code]", "000 000")
    await page.click("[data-testid=pair-submit]")
    await page.wait_for_selector("[data-testid=pair-error]:visible")
    await check(page, f"screen-pair-error-{suffix}", problems)

    fresh = await api.camera("Front door")
    claim_url: str = (await api.code(fresh))["claim_url"]
    await page.goto(nginx.url + "/" + claim_url[claim_url.index("#/claim/") :])
    await page.wait_for_selector("[data-testid=claim-confirmation]")
    await check(page, f"screen-claim-{suffix}", problems)
    await page.click("[data-testid=claim-confirm]")
    await page.wait_for_selector("[data-testid=pair-success]")
    await check(page, f"screen-paired-{suffix}", problems)
    await page.click("[data-testid=to-devices]")  # the link again: a new hash, not a reload
    await page.wait_for_selector("[data-testid=device-card]")
    await page.goto(nginx.url + "/" + claim_url[claim_url.index("#/claim/") :])
    await page.wait_for_selector("[data-testid=already-yours]")
    await check(page, f"screen-already-yours-{suffix}", problems)

    camera = await api.owned_camera(account, "Hallway")
    cam = await TestCamera.connect(nginx.ws_url, camera)
    try:
        await page.goto(nginx.url + "/#/devices")
        card = page.locator(f"[data-device-id='{camera.device_id}']")
        await card.locator("[data-testid=device-status]").filter(has_text="Online").wait_for()
        offline = page.locator(f"[data-device-id='{fresh.device_id}'] [data-testid=watch]")
        assert await offline.get_attribute("href") is None, "an offline camera's Watch is no link"
        assert await offline.get_attribute("aria-disabled") == "true"
        await check(page, f"screen-devices-{suffix}", problems)

        await card.locator("[data-testid=watch]").click()
        await watch_until_live(page)
        await page.wait_for_selector("[data-testid=quality][data-quality]:not([data-quality=''])")
        assert await page.is_hidden("[data-testid=tap-to-play]"), "autoplay was not refused"
        assert await page.is_hidden("[data-testid=watch-overlay]")
        await check(page, f"screen-watch-live-{suffix}", problems)
        if size == "desktop":
            # The status and the controls beside the video, above the fold.
            for testid in ("quality", "path-note", "end-watch", "fullscreen"):
                box = await page.locator(f"[data-testid={testid}]").bounding_box()
                assert box and box["y"] + box["height"] <= DESKTOP_VIEWPORT["height"], testid
        await page.click("[data-testid=raw-stats] summary")
        await page.wait_for_selector("[data-testid=stat-fps]:visible")
        await check(page, f"screen-watch-details-{suffix}", problems)

        await page.click("[data-testid=end-watch]")
        await page.wait_for_selector("[data-testid=watch-state][data-state=ended]")
        assert await page.is_hidden("[data-testid=fullscreen]"), "no full screen without video"
        await check(page, f"screen-watch-stopped-{suffix}", problems)
    finally:
        await cam.close()

    await page.reload()  # the same watch page again, now the camera is gone
    await page.wait_for_selector("[data-testid=watch-state][data-view=offline]", timeout=15_000)
    assert await page.is_visible("[data-testid=watch-back]")
    assert await page.is_hidden("[data-testid=retry]")
    await check(page, f"screen-watch-offline-{suffix}", problems)

    await page.goto(f"{nginx.url}/#/watch/{'0' * 32}")
    await page.wait_for_selector("[data-testid=watch-state][data-state=not_yours]")
    assert await page.is_hidden("[data-testid=retry]"), "no 'Watch again' on a camera not yours"
    assert await page.is_visible("[data-testid=watch-back]")
    await check(page, f"screen-watch-not-yours-{suffix}", problems)

    await page.click("[data-testid=nav-history]")
    await page.wait_for_selector("[data-testid=history-row]")
    assert await page.locator("[data-testid=history-row]").count() >= 1
    # the browser told the cloud how the video travelled (here: straight from the camera)
    await page.wait_for_selector("[data-testid=history-path][data-path=direct]")
    await check(page, f"screen-history-{suffix}", problems)

    await page.click("[data-testid=nav-account]")
    await page.wait_for_selector("[data-testid=sign-in]")
    await check(page, f"screen-account-{suffix}", problems)
    await page.fill("[data-testid=new-email]", f"new-{account.email}")
    await page.fill("[data-testid=email-password]", account.password)
    await page.click("[data-testid=email-submit]")
    await page.wait_for_selector("[data-testid=email-pending]:visible")
    await check(page, f"screen-account-email-pending-{suffix}", problems)

    # The address confirmed from the link the cloud mailed.
    mail = await mail_server.next_mail(account.email, "verify")
    await page.goto(f"{nginx.url}/#/verify/{mail.token}")
    await page.wait_for_selector("[data-testid=link-result]")
    assert await page.is_hidden("[data-testid=verify-banner]")
    await check(page, f"screen-verify-confirmed-{suffix}", problems)
    await context.close()
    assert problems == {}, problems
    assert [e for e in unexpected(page_problems)] == [], page_problems.errors


@pytest.mark.slow
async def test_keyboard_full_screen_and_a_phone_held_sideways(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    camera = await api.owned_camera(account, "Garden")
    cam = await TestCamera.connect(nginx.ws_url, camera)
    try:
        # The keyboard alone: from the list to the live view.
        context, page, problems = await open_app(browser, nginx, account)
        card = page.locator(f"[data-device-id='{camera.device_id}']")
        await card.locator("[data-testid=device-status]").filter(has_text="Online").wait_for()
        for _ in range(30):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.dataset.testid") == "watch":
                break
        else:
            raise AssertionError("Tab never reached Watch")
        await page.keyboard.press("Enter")
        await watch_until_live(page)

        # Full screen: controls inside the picture and a way out.
        await page.click("[data-testid=fullscreen]")
        await page.wait_for_function("() => document.fullscreenElement !== null")
        # (shown by the page's fullscreenchange handler, which runs just after)
        await page.wait_for_selector("[data-testid=exit-fullscreen]", state="visible")
        assert await page.is_visible("[data-testid=stage-end]")
        await screenshot(page, "screen-watch-fullscreen-desktop")
        await page.click("[data-testid=exit-fullscreen]")
        await page.wait_for_function("() => document.fullscreenElement === null")
        await page.wait_for_selector("[data-testid=exit-fullscreen]", state="hidden")
        assert await page.get_attribute("[data-testid=fullscreen]", "aria-pressed") == "false"

        # The dark-mode toggle says what it does and is kept.
        before = await page.get_attribute("[data-testid=theme-toggle]", "aria-pressed")
        await page.click("[data-testid=theme-toggle]")
        after = await page.get_attribute("[data-testid=theme-toggle]", "aria-pressed")
        assert {before, after} == {"true", "false"}
        await page.reload()
        await page.wait_for_selector("[data-testid=theme-toggle]")
        assert await page.get_attribute("[data-testid=theme-toggle]", "aria-pressed") == after
        await context.close()
        assert unexpected(problems) == [], problems.errors

        # A phone held sideways: the picture fills the screen, its controls over it.
        sideways = {"width": PHONE_VIEWPORT["height"], "height": PHONE_VIEWPORT["width"]}
        context, page, problems = await open_app(
            browser, nginx, account, viewport=sideways, is_mobile=True, has_touch=True
        )
        await page.goto(f"{nginx.url}/#/watch/{camera.device_id}")
        await watch_until_live(page)
        box = await page.locator(".stage").bounding_box()
        assert box is not None
        assert (box["x"], box["y"]) == (0, 0), box
        assert (round(box["width"]), round(box["height"])) == (
            sideways["width"],
            sideways["height"],
        )
        assert await page.is_visible("[data-testid=stage-end]")
        assert await page.is_visible("[data-testid=stage-back]")
        await screenshot(page, "screen-watch-live-phone-landscape")
        await context.close()
        assert unexpected(problems) == [], problems.errors
    finally:
        await cam.close()


def test_the_web_app_is_installable() -> None:
    import json

    from tests.browser import WEB_ROOT

    manifest = json.loads((WEB_ROOT / "manifest.webmanifest").read_text())
    assert manifest["display"] == "standalone" and manifest["start_url"]
    sizes = {icon["sizes"] for icon in manifest["icons"] if icon["type"] == "image/png"}
    assert {"192x192", "512x512"} <= sizes
    assert any(icon.get("purpose") == "maskable" for icon in manifest["icons"])
    for icon in manifest["icons"]:
        assert (WEB_ROOT / icon["src"]).is_file(), icon
    html = (WEB_ROOT / "index.html").read_text()
    assert 'rel="manifest"' in html and 'name="color-scheme" content="light dark"' in html


async def tiles_watching(page: Page) -> list[bool]:
    watching: list[bool] = await page.evaluate("window.__mumu_grid.map((t) => t.watching)")
    return watching


@pytest.mark.slow
async def test_the_live_grid_watches_what_is_seen(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    account = await api.account()
    cameras = [await api.owned_camera(account, f"Cam {n}") for n in range(3)]
    cams = [await TestCamera.connect(nginx.ws_url, camera) for camera in cameras]
    try:
        context, page, problems = await open_app(browser, nginx, account)
        for camera in cameras:
            card = page.locator(f"[data-device-id='{camera.device_id}']")
            await card.locator("[data-testid=device-status]").filter(has_text="Online").wait_for()
        await page.click("[data-testid=to-grid]")
        states = page.locator("[data-testid=tile-state][data-state=connected]")
        await page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=tile-state][data-state=connected]')"
            ".length === 3",
            timeout=30_000,
        )
        assert await states.count() == 3
        assert [len(cam.peers) for cam in cams] == [1, 1, 1], "a session per tile"
        assert await accessibility_problems(page) == []
        await screenshot(page, "screen-grid-desktop")

        # A hidden tab watches nothing; shown again, every tile comes back.
        await page.evaluate(
            """() => { Object.defineProperty(document, "visibilityState",
                         { configurable: true, get: () => "hidden" });
                       document.dispatchEvent(new Event("visibilitychange")); }"""
        )
        assert await tiles_watching(page) == [False, False, False]
        await wait_until(lambda: all(not cam.peers for cam in cams), "sessions ended")
        assert all(reason == "viewer_ended" for cam in cams for _, reason in cam.ended)
        await page.evaluate(
            """() => { delete document.visibilityState;
                       document.dispatchEvent(new Event("visibilitychange")); }"""
        )
        await page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=tile-state][data-state=connected]')"
            ".length === 3",
            timeout=30_000,
        )

        # Tap to enlarge: the camera's own watch page.
        await page.locator("[data-testid=tile]").first.click()
        await page.wait_for_selector("[data-testid=watch-title]:has-text('Cam 0')")
        await watch_until_live(page)
        await context.close()
        assert unexpected(problems) == [], problems.errors

        # A phone: stacked; a tile scrolled out of view has no session.
        context, page, problems = await open_app(
            browser, nginx, account, viewport={"width": 390, "height": 520}
        )
        await page.goto(f"{nginx.url}/#/grid")
        await page.wait_for_selector("[data-testid=tile-state][data-state=connected]")
        assert (await tiles_watching(page))[-1] is False, "the last tile is out of view"
        await page.locator("[data-testid=tile]").last.scroll_into_view_if_needed()
        await page.wait_for_function("() => window.__mumu_grid.at(-1).watching")
        await page.wait_for_function("() => !window.__mumu_grid[0].watching")
        await screenshot(page, "screen-grid-phone")
        await context.close()
        assert unexpected(problems) == [], problems.errors
    finally:
        for cam in cams:
            await cam.close()


async def wait_until(condition: Any, what: str, timeout: float = 15.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)
