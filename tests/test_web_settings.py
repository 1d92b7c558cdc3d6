"""Camera settings in the web app, in Debian's headless Chromium against a real cloud behind
nginx and the real agent (in this process, its state read directly): the owner opens a camera's
settings from the camera list, sees its values and software, changes the frame rate and a flip
(the agent applies and keeps them), is told in words when the camera refuses a value, restarts
the camera (confirmed first) and sees it come back with its settings.  A viewer of a shared
camera is not offered the panel; an offline camera says why; a camera that never answers is
said to have not answered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from device.settings import SETTINGS_FILE
from tests.agent_inprocess import pair, running_agent, until
from tests.browser import PHONE_VIEWPORT, accessibility_problems, screenshot
from tests.signaling_client import device as device_socket
from tests.test_web_app import (  # the same real cloud, nginx and coturn
    api,
    browser,
    cloud,
    coturn,
    nginx,
    open_app,
    unexpected,
    watch_until_live,
)
from tests.verification import verify_addresses

__all__ = ["api", "browser", "cloud", "coturn", "nginx"]

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

    from tests.browser import Nginx
    from tests.cloud_process import ApiClient, CloudProcess

#: The panel's own wait for an answer (web/js/camera-settings.js, ANSWER_TIMEOUT_MS).
ANSWER_TIMEOUT_MS = 20_000


def part(panel: Locator, name: str, extra: str = "") -> Locator:
    """The panel's ``settings-<name>`` element (``extra``: more of the selector)."""
    return panel.locator(f"[data-testid=settings-{name}]{extra}")


async def open_settings(page: Page, device_id: str) -> Locator:
    """Opens a camera's settings from its card with the keyboard; the panel."""
    button = page.locator(f"[data-device-id='{device_id}'] [data-testid=camera-settings]")
    await button.focus()
    await page.keyboard.press("Enter")
    panel = page.locator(f"dialog[data-testid=settings-panel][data-device-id='{device_id}']")
    await panel.wait_for()
    return panel


async def test_the_owner_changes_settings_is_refused_in_words_and_restarts_the_camera(
    cloud: CloudProcess, nginx: Nginx, browser: Browser, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    async with running_agent(cloud.url, state) as agent:
        account, device_id = await pair(agent, cloud.url)
        context, page, problems = await open_app(browser, nginx, account)
        card = page.locator(f"[data-device-id='{device_id}']")
        await card.locator("[data-testid=device-status].online").wait_for()

        # the values the camera reports, chosen from what it offers
        panel = await open_settings(page, device_id)
        assert await panel.evaluate("d => d.open && d.matches(':modal')")
        form = panel.locator("[data-testid=settings-form]")
        await form.wait_for()
        # found by their labels, as a screen reader names them
        size = panel.get_by_label("Size", exact=True)
        fps = panel.get_by_label("Frame rate", exact=True)
        hflip = panel.get_by_label("Mirror (flip left to right)")
        assert await size.input_value() == "640x360"
        assert await fps.input_value() == "15"
        assert not await hflip.is_checked()
        sizes = await size.locator("option").evaluate_all("os => os.map((o) => o.value)")
        assert {"640x360", "1280x720"} <= set(sizes)
        assert await panel.locator("[data-testid=settings-arch]").text_content() not in ("", "—")
        assert await panel.locator("[data-testid=settings-version]").text_content() not in ("", "—")
        assert await panel.locator("[data-testid=settings-update]").text_content()
        assert await panel.locator("[data-testid=settings-apply]").is_disabled(), "nothing changed"
        assert await accessibility_problems(page) == []
        await screenshot(page, "app-camera-settings")

        # a change: the agent applies it, keeps it, and the page says what is now true
        await fps.select_option("10")
        await hflip.check()
        await panel.locator("[data-testid=settings-apply]").click()
        status = panel.locator("[data-testid=settings-status]")
        await panel.locator("[data-testid=settings-status][data-state=applied]").wait_for()
        assert "10 frames a second" in (await status.text_content() or "")
        assert "mirrored" in (await status.text_content() or "")
        assert agent.hub is not None
        config = agent.hub.config
        assert (config.fps, config.hflip, config.vflip) == (10, True, False)
        kept = json.loads((state / SETTINGS_FILE).read_text())
        assert kept["fps"] == 10 and kept["hflip"] is True
        assert await fps.input_value() == "10" and await hflip.is_checked()

        # a frame rate the camera does not give at this size (as a stale list would offer):
        # refused in words with the next step, nothing changed, the form shows what is true
        await fps.evaluate("s => s.append(new Option('60 fps', '60'))")
        await fps.select_option("60")
        await panel.locator("[data-testid=settings-apply]").click()
        refusal = panel.locator("[data-testid=settings-error][data-refusal=not_supported]")
        await refusal.wait_for()
        assert "cannot do that" in (await refusal.text_content() or "")
        assert await part(panel, "status").get_attribute("data-state") == "refused"
        assert agent.hub.config == config
        assert await fps.input_value() == "10"
        assert await accessibility_problems(page) == []
        await screenshot(page, "app-camera-settings-refused")

        # restart, confirmed first; the agent stops as systemd would restart it
        await panel.locator("[data-testid=settings-restart]").click()
        confirm = panel.locator("[data-testid=settings-restart-confirm]")
        await confirm.wait_for()
        assert not agent.restart_requested, "nothing happens before the owner confirms"
        await panel.locator("[data-testid=settings-restart-yes]").click()
        await panel.locator("[data-testid=settings-status][data-state=restarting]").wait_for()
        await until(lambda: agent.restart_requested, 10, "the restart")
    # the first agent is gone; systemd's part: the same device starts again with its state
    async with running_agent(cloud.url, state) as again:
        await part(panel, "status", "[data-state=back]").wait_for(timeout=30_000)
        assert await fps.input_value() == "10" and await hflip.is_checked()
        assert again.hub is not None and again.hub.config.fps == 10 and again.hub.config.hflip

        await page.set_viewport_size(PHONE_VIEWPORT)
        assert await accessibility_problems(page) == []
        await screenshot(page, "app-camera-settings-phone")

        # Escape closes the panel and gives the focus back to its button
        await page.keyboard.press("Escape")
        await panel.wait_for(state="detached")
        focused = await page.evaluate("document.activeElement?.dataset.testid")
        assert focused == "camera-settings"
        await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_not_for_viewers_offline_says_why_and_a_silent_camera_times_out(
    cloud: CloudProcess, nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    owner, family = await api.account(), await api.account()
    await verify_addresses(cloud, owner, family)  # e-mail invitations: verified addresses
    silent = await api.owned_camera(owner, "Attic")  # answers nothing (online only)
    offline = await api.owned_camera(owner, "Shed")  # never connects
    r = await api.http.post(
        f"/api/devices/{silent.device_id}/invites", json={"email": family.email}, headers=owner.auth
    )
    assert r.status_code == 201, r.text
    r = await api.http.post(f"/api/invites/{r.json()['invite_id']}/accept", headers=family.auth)
    assert r.status_code == 200, r.text
    socket = await device_socket(nginx.ws_url, silent.hello())
    try:
        # a viewer of a shared camera: no settings to open
        family_ctx, family_page, _ = await open_app(browser, nginx, family)
        shared = family_page.locator(f"[data-device-id='{silent.device_id}']")
        await shared.locator("[data-testid=shared-by]").wait_for()
        assert await shared.locator("[data-testid=camera-settings]").count() == 0
        await family_ctx.close()

        context, page, problems = await open_app(browser, nginx, owner)
        await page.clock.install()
        # offline: no settings to show, and why
        panel = await open_settings(page, offline.device_id)
        status = panel.locator("[data-testid=settings-status][data-state=offline]")
        await status.wait_for()
        assert "offline" in (await status.text_content() or "")
        assert await panel.locator("[data-testid=settings-form]").is_hidden()
        await screenshot(page, "app-camera-settings-offline")
        await panel.locator("[data-testid=settings-close]").click()
        await panel.wait_for(state="detached")

        # online but never answering: "asking…", then said so, with a way to ask again
        card = page.locator(f"[data-device-id='{silent.device_id}']")
        await card.locator("[data-testid=device-status].online").wait_for()
        panel = await open_settings(page, silent.device_id)
        await panel.locator("[data-testid=settings-status][data-state=loading]").wait_for()
        request = await socket.recv("device_settings_request", timeout=10)
        assert request["payload"]["action"] == "get"
        await page.clock.fast_forward(ANSWER_TIMEOUT_MS + 1000)
        error = panel.locator("[data-testid=settings-error][data-refusal=timeout]")
        await error.wait_for()
        assert "did not answer" in (await error.text_content() or "")
        assert await panel.locator("[data-testid=settings-retry]").is_visible()

        # asked again, it answers (a camera scripted by this test); then it refuses a change
        # for each reason a camera has, and each shows its words with the form kept as it is
        words = await page.evaluate(
            """async () => (await import("/js/camera-settings.js")).REFUSAL_WORDS"""
        )
        await part(panel, "retry").click()
        request = await socket.recv("device_settings_request", timeout=10)
        settings = {"rotation": 0, "hflip": False, "vflip": False}
        settings |= {"width": 640, "height": 360, "fps": 15}
        answer = {"ok": True, "settings": settings, "flips": True, "version": "1.2.3"}
        answer |= {"arch": "aarch64", "modes": [{"width": 640, "height": 360, "max_fps": 30}]}
        await socket.send(
            "device_settings", {**answer, "request_id": request["payload"]["request_id"]}
        )
        fps = panel.get_by_label("Frame rate", exact=True)
        await part(panel, "form").wait_for()
        for refusal in ("invalid", "camera_failed", "in_progress"):
            await fps.select_option("30")
            await part(panel, "apply").click()
            request = await socket.recv("device_settings_request", timeout=10)
            assert request["payload"]["action"] == "set"
            assert request["payload"]["settings"]["fps"] == 30
            refused = {"ok": False, "refusal": refusal, "message": "the camera's own words"}
            refused |= {"request_id": request["payload"]["request_id"]}
            await socket.send("device_settings", {**answer, **refused})
            error = part(panel, "error", f"[data-refusal={refusal}]")
            await error.wait_for()
            assert (await error.text_content() or "").strip() == words[refusal]
            assert await part(panel, "status").get_attribute("data-state") == "refused"
            assert await fps.input_value() == "15", "the form shows what is true"

        # the camera goes away while the panel is open: said so, no settings offered
        await socket.close()
        await part(panel, "status", "[data-state=offline]").wait_for()
        assert await part(panel, "form").is_hidden()
        assert await part(panel, "restart").is_hidden()

        # every refusal the camera or the cloud can give has its words
        missing = await page.evaluate(
            """async () => {
                 const { REFUSAL_WORDS } = await import("/js/camera-settings.js");
                 const { SETTINGS_REFUSALS } = await import("/js/protocol.js");
                 return [...SETTINGS_REFUSALS, "forbidden", "device_offline"]
                   .filter((code) => !REFUSAL_WORDS[code]);
               }"""
        )
        assert missing == []
        await context.close()
        assert unexpected(problems) == [], problems.errors
    finally:
        await socket.close()


async def test_settings_beside_the_live_video_change_the_picture_and_keep_the_session(
    cloud: CloudProcess, nginx: Nginx, browser: Browser, tmp_path: Path
) -> None:
    """The owner watching opens Settings on the watch page; a new size shows in the video that
    keeps playing (the same session).  A viewer of a shared camera has no Settings there."""
    async with running_agent(cloud.url, tmp_path / "state") as agent:
        account, device_id = await pair(agent, cloud.url)
        context, page, problems = await open_app(browser, nginx, account)
        await page.goto(f"{nginx.url}/#/watch/{device_id}")
        await watch_until_live(page)
        assert (
            await page.evaluate("document.querySelector('[data-testid=video]').videoWidth") == 640
        )
        session = await page.evaluate("window.__mumu.watch.sessionId")

        button = page.locator("[data-testid=watch-controls] [data-testid=camera-settings]")
        await button.click()
        panel = page.locator(f"dialog[data-testid=settings-panel][data-device-id='{device_id}']")
        await part(panel, "form").wait_for()
        assert await accessibility_problems(page) == []
        await screenshot(page, "app-watch-settings")
        await panel.get_by_label("Size", exact=True).select_option("1280x720")
        await part(panel, "apply").click()
        await part(panel, "status", "[data-state=applied]").wait_for()
        await page.wait_for_function(
            "() => document.querySelector('[data-testid=video]').videoWidth === 1280",
            timeout=20_000,
        )
        assert await page.evaluate("window.__mumu.watch.sessionId") == session
        await panel.locator("[data-testid=settings-close]").click()
        await panel.wait_for(state="detached")
        assert await page.evaluate("document.activeElement?.dataset.testid") == "camera-settings"
        assert await page.is_visible("[data-testid=watch-state][data-state=connected]")
        await context.close()
        assert unexpected(problems) == [], problems.errors
