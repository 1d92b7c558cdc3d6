"""The whole system end to end, in a real browser.

Debian's Chromium (headless, Playwright) opens the web app through real nginx in front of two
``mumu-cloud serve`` processes on PostgreSQL + Redis; the camera is the real agent
(``mumu-agent run --camera synthetic``) connected through the same nginx; TURN is a real coturn
with the repository's config.  One stack and one Chromium serve the whole module
(``tests/e2e_stack.py``); each test opens its own browser contexts.

* a person signs up in the page, pairs the camera with the code the agent printed, watches
  (frames really decoded and shown), ends, sees the camera online, unpairs it;
* relay only (``?relay=1``): the selected candidate pair is a TURN relay and frames flow;
  a cloud whose TURN secret coturn does not know: the page says so, it does not hang;
* two browser contexts watch the camera at once;
* the cloud process holding the page's socket is SIGKILLed mid-watch: the video keeps
  playing and the page reconnects to the other process by itself;
* Debian's firefox-esr (WebDriver BiDi, ``tests/firefox.py``): with the H.264 prefs its offer
  carries H.264 and it plays; as shipped (no H.264) the page says it cannot play the video.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.browser import NO_H264, PHONE_VIEWPORT, launch_chromium, screenshot
from tests.cloud_process import Account, ApiClient
from tests.e2e_stack import (
    PAIRED,
    UNPAIRED,
    WRONG_TURN_SECRET,
    Stack,
    frames_flow,
    open_app,
    open_sockets,
    playback,
    selected_pair,
    start_stack,
    text_of,
    wait_playing,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with start_stack(request, tmp_path_factory.mktemp("e2e")) as started:
        yield started


@pytest.fixture(autouse=True)
def _diagnostics(stack: Stack) -> Iterator[None]:
    """Shown by pytest only when a test fails: what the agent, clouds and nginx said."""
    yield
    print(stack.diagnostics())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def owner(stack: Stack) -> AsyncIterator[tuple[Account, str]]:
    """An account owning the agent's camera (paired over HTTP with the code the agent shows
    now); its device id."""
    api = ApiClient(stack.url)
    try:
        account = await api.account()
        mark = len(stack.agent.lines)
        device = await api.pair_code(account, await stack.pairing_code())
        await stack.agent_says(PAIRED, after_line=mark)
        yield account, str(device["device_id"])
    finally:
        await api.aclose()


#: Records the peer connections' ``icecandidateerror`` events (TURN refusals) in the page.
RECORD_ICE_ERRORS = """
window.__iceErrors = [];
const Native = window.RTCPeerConnection;
window.RTCPeerConnection = class extends Native {
  constructor(...args) {
    super(...args);
    this.addEventListener("icecandidateerror", (e) =>
      window.__iceErrors.push({ code: e.errorCode, text: e.errorText, url: e.url }));
  }
};
"""


async def watch(page: Page, url: str, device_id: str, *, relay: bool = False) -> None:
    query = "?relay=1" if relay else ""
    await page.goto(f"{url}/{query}#/watch/{device_id}")


# --- a person's path, all in the page ---------------------------------------------------------


async def test_sign_up_pair_watch_end_unpair(stack: Stack, browser: Browser) -> None:
    code = await stack.pairing_code()
    email = f"e2e-{time.monotonic_ns()}@example.com"
    context, page = await open_app(browser, stack.url)
    try:
        await page.click("[data-testid=to-signup]")
        await page.fill("[data-testid=email]", email)
        await page.fill("[data-testid=password]", "a long enough password")
        await page.click("[data-testid=submit]")
        await page.wait_for_selector("[data-testid=devices-empty]")
        assert await text_of(page, "who") == email

        # Pair: the code the agent printed on its console, typed as a person would.
        mark = len(stack.agent.lines)
        await page.click("[data-testid=add-camera]")
        await page.fill("[data-testid=pair-code]", f"{code[:3]} {code[3:]}")
        await page.click("[data-testid=pair-submit]")
        await page.wait_for_selector("[data-testid=pair-success]")
        assert await text_of(page, "paired-name") == "E2E camera"
        await stack.agent_says(PAIRED, after_line=mark)

        await page.click("[data-testid=to-devices]")
        card = page.locator("[data-testid=device-card]")
        await card.wait_for()
        status = card.locator("[data-testid=device-status]")
        await status.filter(has_text="Online").wait_for(timeout=15_000)
        device_id = await card.get_attribute("data-device-id")
        assert device_id

        # Watch: the video is really playing.
        await card.locator("[data-testid=watch]").click()
        state = await wait_playing(page)
        assert (state["width"], state["height"]) == (640, 360), state
        await frames_flow(page, seconds=3)
        pair = await selected_pair(page)
        assert pair is not None and pair["state"] == "succeeded", pair
        assert (pair["local"], pair["remote"]) == ("host", "host"), pair  # direct, on loopback
        assert await text_of(page, "watch-title") == "E2E camera"
        shot = await screenshot(page, "e2e-watch-live")
        assert shot.stat().st_size > 10_000
        await stack.agent_says(r"peer connected", after_line=mark)

        # End: the page stops, the agent hears of it.
        await page.click("[data-testid=end-watch]")
        await page.wait_for_selector("[data-testid=watch-state][data-state=ended]")
        assert await page.is_visible("[data-testid=retry]")
        await stack.agent_says(r"session [\w-]+.*(ended|closed)", after_line=mark)

        # The list: still online.  Unpair in the UI: the list is empty, the agent shows a new code.
        await page.click("[data-testid=back]")
        card = page.locator(f"[data-device-id='{device_id}']")
        await (
            card.locator("[data-testid=device-status]")
            .filter(has_text="Online")
            .wait_for(timeout=15_000)
        )
        mark = len(stack.agent.lines)
        await card.locator("[data-testid=unpair]").click()
        await card.locator("[data-testid=unpair-confirm]").click()
        await page.wait_for_selector("[data-testid=devices-empty]")
        await stack.agent_says(UNPAIRED, after_line=mark)
        assert await stack.pairing_code(after_line=mark) != code
    finally:
        await context.close()


# --- several viewers, the relay --------------------------------------------------------------


async def test_two_browser_contexts_watch_one_camera(
    stack: Stack, browser: Browser, owner: tuple[Account, str]
) -> None:
    account, device_id = owner
    contexts = []
    try:
        pages: list[Page] = []
        for viewport in (None, PHONE_VIEWPORT):
            options = {"viewport": viewport} if viewport else {}
            context, page = await open_app(browser, stack.url, account, **options)
            contexts.append(context)
            pages.append(page)
            await watch(page, stack.url, device_id)
        for page in pages:
            await wait_playing(page)
        sessions = {await page.evaluate("window.__mumu.watch.sessionId") for page in pages}
        assert len(sessions) == 2, sessions
        # Both play at the same time: frames grow on each over the same seconds.
        await asyncio.gather(*(frames_flow(page, seconds=3) for page in pages))
        await screenshot(pages[1], "e2e-watch-second-viewer-phone")
    finally:
        for context in contexts:
            await context.close()


async def test_relay_only_through_coturn(
    stack: Stack, browser: Browser, owner: tuple[Account, str]
) -> None:
    account, device_id = owner
    context, page = await open_app(browser, stack.url, account)
    try:
        await watch(page, stack.url, device_id, relay=True)
        await wait_playing(page)
        assert await page.is_visible("[data-testid=relay-forced]")
        await frames_flow(page, seconds=3)
        pair = await selected_pair(page)
        assert pair is not None, "no selected candidate pair"
        assert pair["local"] == "relay", pair
        # The relayed address is coturn's (relay-ip=127.0.0.1, its min/max-port range).
        assert pair["localAddress"] == "127.0.0.1", pair
        assert pair["url"] is None or f":{stack.coturn.port}" in pair["url"], pair
        await page.wait_for_function("() => window.__mumu.stats && window.__mumu.stats.path")
        assert "Relayed" in await text_of(page, "stat-path")
        await screenshot(page, "e2e-watch-relay")
    finally:
        await context.close()


async def test_a_wrong_turn_secret_fails_in_words(
    stack: Stack, browser: Browser, owner: tuple[Account, str]
) -> None:
    """A cloud whose TURN secret coturn does not know: relay-only watching cannot work.  The
    page must say so within a bounded time, not spin forever."""
    account, device_id = owner
    with stack.other_cloud(WRONG_TURN_SECRET) as (_, nginx):
        context, page = await open_app(browser, nginx.url, account)
        await context.add_init_script(RECORD_ICE_ERRORS)
        try:
            started = time.monotonic()
            await watch(page, nginx.url, device_id, relay=True)
            await page.wait_for_selector(
                "[data-testid=watch-state][data-state=failed],"
                "[data-testid=watch-state][data-state=recovering]",
                timeout=20_000,  # as soon as gathering ends, not the 30 s connect timeout
            )
            took = time.monotonic() - started
            message = await text_of(page, "watch-message")
            assert await page.is_visible("[data-testid=watch-message]")
            assert "could not be set up" in message, (took, message)
            assert "relay (TURN) server refused the credentials" in message, (took, message)
            await screenshot(page, "e2e-watch-wrong-turn-secret")
            # Why: coturn refused the credentials this cloud made (401 on both transports).
            errors = await page.evaluate("window.__iceErrors")
            assert {e["url"] for e in errors if e["code"] == 401} == set(stack.coturn.urls), errors
            # No picture ever came (Chrome shows a 2x2 placeholder frame before any media).
            assert (await playback(page))["width"] < 16
        finally:
            await context.close()


# --- a cloud process dies ------------------------------------------------------------------------

RECORD_SIGNALING_STATES = """() => {
  window.__signalingStates = [];
  window.__mumu.signaling.addEventListener("state", (e) =>
    window.__signalingStates.push(e.detail.state));
}"""


async def placement(stack: Stack, timeout: float = 10.0) -> tuple[int, bool]:
    """Which cloud holds the page's socket (the only viewer socket), and whether the agent's
    socket is on the same one (from each cloud's ``/metrics``)."""
    deadline = time.monotonic() + timeout
    while True:
        viewers, devices = stack.sockets("viewer"), stack.sockets("device")
        if sorted(viewers) == [0, 1] and sorted(devices) == [0, 1]:
            index = viewers.index(1)
            return index, devices[index] == 1
        assert time.monotonic() < deadline, (viewers, devices)
        await asyncio.sleep(0.1)


async def steer(page: Page, stack: Stack, *, with_agent: bool, timeout: float = 30.0) -> int:
    """Reconnects the page's signaling socket until nginx puts it on the cloud that does (or
    does not) hold the agent's socket; that cloud's index."""
    deadline = time.monotonic() + timeout
    while True:
        index, together = await placement(stack)
        if together == with_agent:
            return index
        assert time.monotonic() < deadline, "nginx never put the page where it was wanted"
        await page.evaluate("window.__mumu.signaling.ws.close()")
        await page.wait_for_selector("[data-testid=signaling-state][data-state=reconnecting]")
        await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")
        await wait_playing(page)
        await asyncio.sleep(0.5)


async def kill_and_recover(page: Page, stack: Stack, index: int) -> None:
    """SIGKILLs cloud ``index`` (which holds the page's socket): the video plays on, and the
    page is back on the other process by itself, in the same watch session."""
    killed, survivor = stack.clouds[index], stack.clouds[1 - index]
    session_id = await page.evaluate("window.__mumu.watch.sessionId")
    await page.evaluate(RECORD_SIGNALING_STATES)
    before = (await playback(page))["frames"]
    killed.kill()
    try:
        # The video plays on (media never went through the cloud) ...
        counts = await frames_flow(page, seconds=4)
        assert counts[0] >= before
        # ... and the page is back, on the other process, by itself, in the same session.
        await page.wait_for_function(
            "() => window.__signalingStates.includes('reconnecting')", timeout=10_000
        )
        await page.wait_for_selector(
            "[data-testid=signaling-state][data-state=open]", timeout=30_000
        )
        assert await text_of(page, "signaling-state") == "Connected"
        assert open_sockets(survivor, "viewer") == 1
        assert await page.evaluate("window.__mumu.watch.sessionId") == session_id
        assert await page.get_attribute("[data-testid=watch-state]", "data-state") == "connected"
        await frames_flow(page, seconds=2)
    finally:
        killed.restart()


async def test_killing_the_cloud_of_the_page_keeps_the_video_playing(
    stack: Stack, browser: Browser, owner: tuple[Account, str]
) -> None:
    """Twice: once with the agent's socket on the same process as the page's (both reconnect),
    once on the other one (only the page does), in whichever order nginx deals them."""
    account, device_id = owner
    context, page = await open_app(browser, stack.url, account)
    try:
        await watch(page, stack.url, device_id)
        await wait_playing(page)
        index, together = await placement(stack)
        await kill_and_recover(page, stack, index)
        # The other case: steer the page's socket next to (or away from) the agent's.
        await kill_and_recover(page, stack, await steer(page, stack, with_agent=not together))
        assert (await selected_pair(page) or {}).get("state") == "succeeded"
    finally:
        await context.close()


# --- pictures peer to peer, and browsers that cannot play H.264 -------------------------------


async def test_a_snapshot_is_saved_from_the_camera_and_the_list_keeps_its_picture(
    stack: Stack, browser: Browser, owner: tuple[Account, str]
) -> None:
    account, device_id = owner
    context, page = await open_app(browser, stack.url, account, accept_downloads=True)
    try:
        await watch(page, stack.url, device_id)
        await wait_playing(page)
        # The JPEG comes from the camera over the session's data channel, not from the screen.
        channel_open = "window.__mumu.watch.snapshots && window.__mumu.watch.snapshots.open"
        await page.wait_for_function(channel_open, timeout=10_000)
        async with page.expect_download() as info:
            await page.click("[data-testid=snapshot]")
        download = await info.value
        assert download.suggested_filename.startswith("MuMu ")
        assert download.suggested_filename.endswith(".jpg")
        path = await download.path()
        data = path.read_bytes()
        assert data[:3] == b"\xff\xd8\xff", "a JPEG"
        # The list shows the camera's latest picture, kept in this browser.
        await page.goto(stack.url + "/#/devices")
        thumb = page.locator(f"[data-device-id='{device_id}'] [data-testid=device-thumbnail]")
        await page.wait_for_function(
            "(id) => document.querySelector(`[data-device-id='${id}'] "
            "[data-testid=device-thumbnail]`)?.src.startsWith('blob:')",
            arg=device_id,
            timeout=10_000,
        )
        assert await thumb.get_attribute("alt")
    finally:
        await context.close()


async def test_a_browser_without_h264_is_told_so_and_does_not_retry(
    stack: Stack, browser: Browser, owner: tuple[Account, str]
) -> None:
    account, device_id = owner
    context, page = await open_app(browser, stack.url, account)
    try:
        await context.add_init_script(NO_H264)
        await watch(page, stack.url, device_id)
        await page.reload()
        await page.wait_for_selector(
            "[data-testid=watch-state][data-state=unsupported]", timeout=20_000
        )
        words = await text_of(page, "watch-message")
        assert "cannot play this camera" in words, words
        # Failed for good: no request waiting for an answer, no session, no retry scheduled.
        watch_now = await page.evaluate(
            "(() => { const w = window.__mumu.watch;"
            " return { state: w.state, awaiting: w.awaiting, session: w.sessionId }; })()"
        )
        assert watch_now == {"state": "unsupported", "awaiting": None, "session": None}
    finally:
        await context.close()


# --- Firefox ESR ------------------------------------------------------------------------------


async def test_firefox_esr_offers_h264_and_plays_the_camera(
    stack: Stack, owner: tuple[Account, str]
) -> None:
    """Debian's firefox-esr over WebDriver BiDi: its offer carries H.264 (or this fails loudly:
    without the profile's prefs it offers only VP8, VP9 and AV1), the page goes live and
    frames are decoded and presented."""
    from tests.firefox import launch_firefox

    account, device_id = owner
    async with launch_firefox() as firefox:
        await firefox.navigate(stack.url + "/")
        await firefox.evaluate(
            f"(localStorage.setItem('mumu.token', {account.token!r}),"
            f" localStorage.setItem('mumu.email', {account.email!r}), true)"
        )
        await firefox.navigate(f"{stack.url}/#/watch/{device_id}")
        offer = await firefox.wait_for(
            "window.__mumu.pc && window.__mumu.pc.localDescription"
            " && window.__mumu.pc.localDescription.sdp"
        )
        assert re.search(r"a=rtpmap:\d+ H264/90000", offer), (
            "Firefox's offer has no H.264: its profile lacks media.webrtc.hw.h264.enabled and "
            "gfx.blacklist.webrtc.hw.acceleration.h264, or libavcodec is missing\n" + offer
        )
        await firefox.wait_for(
            "document.querySelector('[data-testid=watch-state]').dataset.state === 'connected'",
            timeout=45,
        )
        played = await firefox.wait_for(
            "(() => { const v = document.querySelector('[data-testid=video]');"
            " return v.videoWidth > 0 && v.currentTime > 1 && !v.paused && v.videoWidth; })()",
            timeout=45,
        )
        assert played == 640
        stats = await firefox.wait_for("window.__mumu.stats && window.__mumu.stats.framesDecoded")
        assert stats > 0
        codec = await firefox.evaluate("window.__mumu.stats.codec")
        assert codec in ("H264", None), codec  # Firefox may not name it; its offer did
        view = await firefox.evaluate(
            "document.querySelector('[data-testid=watch-state]').dataset.view"
        )
        assert view == "live"


async def test_firefox_without_h264_is_told_it_cannot_play_not_that_the_camera_is_offline(
    stack: Stack, owner: tuple[Account, str]
) -> None:
    """Firefox as Debian ships it offers no H.264.  The camera either serves it anyway (another
    codec) or refuses; the page then says this browser cannot play the video, at once, and
    does not call an online camera offline nor retry forever."""
    from tests.firefox import launch_firefox

    account, device_id = owner
    async with launch_firefox(h264=False) as firefox:
        await firefox.navigate(stack.url + "/")
        await firefox.evaluate(
            f"(localStorage.setItem('mumu.token', {account.token!r}),"
            f" localStorage.setItem('mumu.email', {account.email!r}), true)"
        )
        await firefox.navigate(f"{stack.url}/#/watch/{device_id}")
        try:
            state = await firefox.wait_for(
                "(() => { const s = document.querySelector('[data-testid=watch-state]')"
                ".dataset.state; return ['unsupported', 'connected'].includes(s) && s; })()",
                timeout=45,
            )
        except TimeoutError:
            seen = await firefox.evaluate(
                "({ state: window.__mumu.watch?.state, message: window.__mumu.watch?.message,"
                " signaling: window.__mumu.signaling?.state,"
                " ended: window.__mumu.watch?.endedByCamera,"
                " sdp: window.__mumu.pc?.localDescription?.sdp?.slice(0, 4000) })"
            )
            raise AssertionError(f"the page never said it: {seen}") from None
        print(f"\nFirefox without H.264: {state}")
        if state == "unsupported":
            message = await firefox.evaluate(
                "document.querySelector('[data-testid=watch-message]').textContent"
            )
            # the steps for Firefox on Linux, not only "enable H.264"
            assert message.startswith("Firefox cannot play this camera's video"), message
            assert "about:config" in message and "libavcodec" in message, message
            assert await firefox.evaluate(
                "!document.querySelector('[data-testid=watch-back]').hidden"
                " && document.querySelector('[data-testid=retry]').hidden"
            )
            # and the camera list says so before Watch
            await firefox.navigate(f"{stack.url}/#/devices")
            warning = await firefox.wait_for(
                "document.querySelector('[data-testid=no-h264]')?.textContent", timeout=15
            )
            assert "media.webrtc.hw.h264.enabled" in warning, warning
