"""Sharing in the web app, in Debian's headless Chromium against a real cloud behind nginx: the
owner makes a one-time invitation link, another person opens it signed out, signs in, sees whose
camera it is, accepts, watches live video; the owner revokes them and their video ends at once.
Invitations by e-mail are accepted from the camera list."""

from __future__ import annotations

import asyncio
import re

from tests.browser import PHONE_VIEWPORT, screenshot
from tests.test_web_app import (  # the same real cloud, nginx, coturn and camera
    TestCamera,
    api,
    browser,
    cloud,
    coturn,
    nginx,
    open_app,
    text,
    unexpected,
    watch_until_live,
)
from tests.verification import verify_addresses

__all__ = ["api", "browser", "cloud", "coturn", "nginx"]

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Browser

    from tests.browser import Nginx
    from tests.cloud_process import ApiClient, CloudProcess


async def test_invite_accept_watch_revoke_ended(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    owner, family = await api.account(), await api.account()
    camera = await api.owned_camera(owner, "Nursery")
    cam = await TestCamera.connect(nginx.ws_url, camera)
    try:
        # the owner opens the camera's Share panel and makes a one-time link
        owner_ctx, owner_page, owner_problems = await open_app(browser, nginx, owner)
        card = owner_page.locator(f"[data-device-id='{camera.device_id}']")
        await card.locator("[data-testid=share]").click()
        panel = card.locator("[data-testid=share-panel]")
        await panel.locator("[data-testid=viewers]").filter(has_text="Nobody else").wait_for()
        await panel.locator("[data-testid=invite-link]").click()
        url = await panel.locator("[data-testid=invite-link-url]").input_value()
        assert re.fullmatch(re.escape(nginx.url) + r"/#/share/[A-Za-z0-9_-]{43}", url), url
        await panel.locator("[data-testid=invite]").filter(has_text="One-time link").wait_for()
        await screenshot(owner_page, "app-share-panel")

        # the other person opens it signed out: sign in first, then whose camera it is
        family_ctx, page, problems = await open_app(browser, nginx, viewport=PHONE_VIEWPORT)
        await page.goto(url)
        await page.wait_for_selector("[data-testid=auth-form]")
        assert "accept this invitation" in await text(page, "banner")
        await page.fill("[data-testid=email]", family.email)
        await page.fill("[data-testid=password]", family.password)
        await page.click("[data-testid=submit]")
        await page.wait_for_selector("[data-testid=share-confirmation]")
        assert await text(page, "share-owner") == owner.email
        assert await text(page, "share-name") == "Nursery"
        await screenshot(page, "app-share-accept-phone")
        await page.click("[data-testid=share-accept]")

        # accepted: straight to the live view
        stats = await watch_until_live(page)
        assert stats["fps"] > 0
        assert len(cam.peers) == 1
        (session_id,) = list(cam.peers)

        # the camera list shows it as shared, watch only
        list_page = await family_ctx.new_page()
        await list_page.goto(nginx.url + "/#/devices")
        shared = list_page.locator(f"[data-device-id='{camera.device_id}']")
        await shared.locator("[data-testid=shared-by]").filter(has_text=owner.email).wait_for()
        for owner_only in ("rename", "unpair", "updates", "share"):
            assert await shared.locator(f"[data-testid={owner_only}]").count() == 0
        assert await shared.locator("[data-testid=leave]").count() == 1

        # the owner sees them in the panel still open (told by the cloud: no reload), and
        # revokes them
        await (
            card.locator("[data-testid=viewer-count]")
            .filter(has_text="1 person")
            .wait_for(timeout=10_000)
        )
        viewer = panel.locator("[data-testid=viewer]").filter(has_text=family.email)
        await viewer.wait_for(timeout=10_000)
        # and the used link has left it, with the box that showed it
        await panel.locator("[data-testid=invite]").wait_for(state="detached", timeout=10_000)
        assert await panel.locator("[data-testid=invite-link-box]").is_hidden()
        await viewer.locator("[data-testid=viewer-remove]").click()
        await panel.locator("[data-testid=viewers]").filter(has_text="Nobody else").wait_for()

        # their video ends at once, in words, and the camera closes its peer
        # "not yours" (the one state for a camera this account may not watch), in its words
        await page.wait_for_selector(
            "[data-testid=watch-state][data-state=not_yours]", timeout=10_000
        )
        assert "stopped sharing" in await text(page, "watch-message")
        for _ in range(100):
            if session_id not in cam.peers:
                break
            await asyncio.sleep(0.05)
        assert session_id not in cam.peers
        assert (session_id, "device_unpaired") in cam.ended
        await screenshot(page, "app-share-revoked-phone")
        # and their camera list drops it at once (told by the cloud, not its 30 s refresh)
        await shared.wait_for(state="detached", timeout=10_000)
        await list_page.close()

        # the owner's history names who watched by e-mail
        await owner_page.goto(f"{nginx.url}/#/history/{camera.device_id}")
        who = owner_page.locator("[data-testid=history-who]")
        await who.first.wait_for()
        assert await who.all_text_contents() == [family.email]
        await family_ctx.close()
        await owner_ctx.close()
        assert unexpected(owner_problems) == [], owner_problems.errors
        assert unexpected(problems) == [], problems.errors
    finally:
        await cam.close()


async def test_an_invitation_by_e_mail_is_accepted_from_the_camera_list(
    cloud: CloudProcess, nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    owner, family = await api.account(), await api.account()
    await verify_addresses(cloud, owner, family)  # e-mail invitations: verified addresses
    camera = await api.owned_camera(owner, "Garage")
    owner_ctx, owner_page, _ = await open_app(browser, nginx, owner)
    card = owner_page.locator(f"[data-device-id='{camera.device_id}']")
    await card.locator("[data-testid=share]").click()
    await card.locator("[data-testid=invite-email]").fill(family.email)
    await card.locator("[data-testid=invite-send]").click()
    await card.locator("[data-testid=invite]").filter(has_text=family.email).wait_for()

    family_ctx, page, problems = await open_app(browser, nginx, family)
    invite = page.locator("[data-testid=received-invite]")
    await invite.filter(has_text=owner.email).filter(has_text="Garage").wait_for()
    await screenshot(page, "app-share-invitation")
    await invite.locator("[data-testid=received-accept]").click()
    shared = page.locator(f"[data-device-id='{camera.device_id}']")
    await shared.locator("[data-testid=shared-by]").wait_for()
    # the invitation goes as the camera arrives (the cloud's devices_changed may bring the
    # camera a moment before the answer to the accept does)
    await page.locator("[data-testid=received-invite]").wait_for(state="detached")
    assert await page.locator("[data-testid=received-invites]").is_hidden()
    assert await text(page, "page-title") == "Your cameras"
    # the owner's panel, still open, shows them as a viewer and no longer as invited
    await card.locator("[data-testid=viewer]").filter(has_text=family.email).wait_for()
    await card.locator("[data-testid=invite]").wait_for(state="detached")
    await family_ctx.close()
    await owner_ctx.close()
    assert unexpected(problems) == [], problems.errors
