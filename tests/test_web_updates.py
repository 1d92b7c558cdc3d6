"""Updates in the web app, in headless Chromium against a real cloud behind nginx: each camera's
version and update state as a sentence, the owner's update window, and the operators' rollout
page (and that nobody else gets it)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from release import keys
from release.repo import UpdateRepository
from tests.browser import (
    Nginx,
    accessibility_problems,
    launch_chromium,
    nginx_server,
    screenshot,
)
from tests.cloud_fixtures import RELAXED
from tests.cloud_process import ApiClient, CloudProcess
from tests.operators import make_operator
from tests.signaling_client import device
from tests.test_web_app import open_app, unexpected
from tests.update_fixtures import tiny_bundle, unread_body_size

if TYPE_CHECKING:
    from playwright.async_api import Browser

OPERATOR = "ops@example.com"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    tmp = tmp_path_factory.mktemp("web-updates")
    repo = UpdateRepository.create(tmp / "repo", tmp / "keys")
    repo.add_bundles(
        [tiny_bundle(tmp / "dist", "1.1.0", arch="aarch64")],
        keys.load(tmp / "keys/targets.key"),
        keys.load(tmp / "keys/online.key"),
    )
    env = {
        **RELAXED,
        "MUMU_TRUSTED_PROXIES": "127.0.0.1",
        "MUMU_UPDATE_REPO_DIR": str(repo.path),
    }
    with CloudProcess(tmp / "cloud", env=env) as process:
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


async def test_a_camera_card_says_its_version_and_update_state(
    nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    owner = await api.account()
    camera = await api.owned_camera(owner, "Hall")
    context, page, problems = await open_app(browser, nginx, owner)
    await page.wait_for_selector("[data-testid=signaling-state][data-state=open]")
    hello = camera.hello()
    hello["payload"].update({"version": "1.0.0", "arch": "aarch64"})
    cam = await device(nginx.ws_url, hello)
    card = page.locator(f"[data-device-id='{camera.device_id}']")
    await card.locator("[data-testid=device-version]").filter(has_text="Version 1.0.0").wait_for()
    state = card.locator("[data-testid=update-state]")
    assert await state.is_hidden()

    await cam.send(
        "update_status",
        {
            "state": "waiting",
            "version": "1.1.0",
            "seq": 1,
            "reason": "installed; waiting until nobody is watching (1 viewer now)",
        },
    )
    await state.filter(has_text="Update to 1.1.0 is waiting").wait_for()
    await cam.send(
        "update_status",
        {"state": "downloading", "version": "1.1.0", "seq": 2, "progress": 0.42},
    )
    await state.filter(has_text="42 %").wait_for()
    await cam.send(
        "update_status",
        {
            "state": "rolled_back",
            "version": "1.1.0",
            "seq": 3,
            "reason": "1.1.0 crashed 3 times after the switch (last exit: exited 1)",
        },
    )
    await state.filter(has_text="did not work and was undone").wait_for()
    assert await state.get_attribute("data-state") == "rolled_back"
    assert await accessibility_problems(page) == []
    await screenshot(page, "app-camera-update-rolled-back")

    # a reload shows the same (from the API, not only from live messages)
    await page.reload()
    await state.filter(has_text="crashed 3 times").wait_for()

    # the Updates panel says which window is in force, by the person's clock
    async def window_now(shift_from: int, shift_to: int) -> str:
        """Set the window to [now + shift_from, now + shift_to) minutes of the browser's
        clock, open the panel again, and read its sentence."""
        window = await page.evaluate(
            """([a, b]) => [a, b].map((shift) => {
                 const at = new Date(Date.now() + shift * 60_000);
                 const two = (n) => String(n).padStart(2, "0");
                 return `${two(at.getHours())}:${two(at.getMinutes())}`;
               }).join("-")""",
            [shift_from, shift_to],
        )
        r = await api.http.put(
            f"/api/devices/{camera.device_id}/update-settings",
            json={"window": window},
            headers=owner.auth,
        )
        assert r.status_code == 200, r.text
        await page.reload()
        await card.locator("[data-testid=updates]").click()
        return await card.locator("[data-testid=window-now]").text_content() or ""

    await card.locator("[data-testid=updates]").click()
    sentence = await card.locator("[data-testid=window-now]").text_content()
    assert sentence == "Updates install any time nobody is watching."
    assert (await window_now(-60, 60)).endswith("— now."), "inside the window"
    later = await window_now(120, 180)
    assert re.fullmatch(r"Updates install between .+ and .+ — next from .+\.", later), later
    assert await accessibility_problems(page) == []

    # the owner keeps switches to the night
    await card.locator("[data-testid=window-from]").fill("02:00")
    await card.locator("[data-testid=window-to]").fill("05:00")
    await card.locator("[data-testid=window-save]").click()
    await page.wait_for_selector("[data-testid=banner]:has-text('only between 02:00 and 05:00')")
    cameras = (await api.http.get("/api/devices/updates", headers=owner.auth)).json()["cameras"]
    assert cameras[0]["window"] == "02:00-05:00"
    await cam.close()
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_the_rollout_page_is_for_operators(
    cloud: CloudProcess, nginx: Nginx, browser: Browser, api: ApiClient
) -> None:
    someone = await api.account()
    context, page, _ = await open_app(browser, nginx, someone)
    assert await page.locator("[data-testid=nav-rollouts]").is_hidden()
    await page.goto(nginx.url + "/#/rollouts")
    error = page.locator("[data-testid=rollouts-error]")
    await error.filter(has_text="Only the cloud's operators").wait_for()
    # one refusal, and nothing that looks like it is still loading
    rollouts = page.locator("[data-testid=rollouts]")
    assert await rollouts.get_attribute("aria-busy") is None
    assert (await rollouts.text_content() or "") == ""
    await context.close()

    operator = await api.account(OPERATOR, "operator password 1")
    await asyncio.to_thread(make_operator, cloud, OPERATOR)  # mumu-cloud operator add
    context, page, problems = await open_app(browser, nginx, operator)
    await page.locator("[data-testid=nav-rollouts]").wait_for(state="visible")
    await page.click("[data-testid=nav-rollouts]")
    await page.fill("[data-testid=release-version]", "1.1.0")
    # an architecture it is not signed for is refused in words
    await page.fill("[data-testid=release-arches]", "armv7l")
    await page.click("text=Add signed release")
    await (
        page.locator("[data-testid=rollouts-error]")
        .filter(has_text="not signed for those architectures")
        .wait_for()
    )
    await page.fill("[data-testid=release-arches]", "aarch64")
    async with page.expect_request("**/api/operator/releases") as sent:
        await page.click("text=Add signed release")
    body = (await sent.value).post_data_json
    assert body == {"version": "1.1.0", "notes": "", "arches": ["aarch64"]}, body
    await page.wait_for_selector("[data-testid=releases] li:has-text('1.1.0 (aarch64)')")
    await page.fill("[data-testid=start-percentage]", "10")
    await page.click("[data-testid=start-form] button[type=submit]")
    row = page.locator("[data-testid=rollout]").first
    await row.locator("[data-testid=rollout-state]").filter(has_text="active").wait_for()
    assert "10 %" in (await row.text_content() or "")
    await row.locator("[data-testid=pause]").click()
    await (
        row.locator("[data-testid=paused-reason]")
        .filter(has_text="paused by an operator")
        .wait_for()
    )
    assert await accessibility_problems(page) == []
    await screenshot(page, "app-rollouts-paused")
    await row.locator("[data-testid=resume]").click()
    await row.locator("[data-testid=rollout-state]").filter(has_text="active").wait_for()
    await context.close()
    assert unexpected(problems) == [], problems.errors


async def test_cameras_fetch_the_repository_through_nginx_a_few_at_a_time_per_address(
    cloud: CloudProcess, nginx: Nginx
) -> None:
    """The cameras' default repository, `<cloud>/updates/`, through the shipped nginx: served
    with byte ranges, and nginx passes the client's address on and does not buffer, so the
    cloud's bound on transfers per address (4 by default) holds behind it."""
    repo = Path(cloud.env["MUMU_UPDATE_REPO_DIR"])
    big = repo / "targets" / "nginx-transfer-test.tar"
    data = bytes(unread_body_size(hops=2))  # client - nginx - cloud
    big.write_bytes(data)
    url = f"/updates/targets/{big.name}"
    stranger = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
    try:
        async with (
            httpx.AsyncClient(base_url=nginx.url, transport=stranger, timeout=30) as http,
            httpx.AsyncClient(base_url=nginx.url, timeout=30) as camera,
            contextlib.AsyncExitStack() as held,
        ):
            meta = await camera.get("/updates/metadata/timestamp.json")
            assert meta.status_code == 200 and meta.json()["signed"]["_type"] == "timestamp"
            for _ in range(4):
                transfer = await held.enter_async_context(http.stream("GET", url))
                assert transfer.status_code == 200
            refused = await http.get(url)
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"]
            # another address is not held up by the stranger's transfers
            part = await camera.get(url, headers={"Range": "bytes=-100"})
            assert part.status_code == 206 and part.content == data[-100:]
    finally:
        big.unlink()
