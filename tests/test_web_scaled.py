"""The web app against a scaled cloud: two ``mumu-cloud serve`` processes on one PostgreSQL and
one Redis, each serving the app itself (``MUMU_WEB_DIR``), in Debian's headless Chromium.  A
browser on one process and a browser on the other are signed in to the same account: what one
process does to the account's sign-ins reaches the page on the other through Redis at once
(``sign_ins_changed``, and the sign-out frame that closes a revoked browser's socket)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser import WEB_ROOT, PageProblems, launch_chromium
from tests.cloud_fixtures import RELAXED, backend_env
from tests.cloud_process import Account, ApiClient, CloudProcess
from tests.mail_server import MailServer
from tests.test_web_app import sign_in_by_form, signing_out_drops_rows, unexpected

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page


@pytest.fixture(scope="module")
def clouds(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    mail_server: MailServer,
) -> Iterator[tuple[CloudProcess, CloudProcess]]:
    env = {
        **RELAXED,
        **backend_env("scaled", request),
        "MUMU_SMTP_URL": mail_server.url,
        "MUMU_WEB_DIR": str(WEB_ROOT),
    }
    tmp = tmp_path_factory.mktemp("scaled-web")
    with CloudProcess(tmp / "a", env=env) as a, CloudProcess(tmp / "b", env=env) as b:
        yield a, b


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


async def signed_in(
    browser: Browser, cloud: CloudProcess, account: Account
) -> tuple[BrowserContext, Page, PageProblems]:
    """A fresh browser context signed in at ``cloud``'s own address through the sign-in form
    (so it holds that process's refresh cookie), its signaling socket open there."""
    context = await browser.new_context()
    page = await context.new_page()
    problems = PageProblems()
    problems.watch(page)
    await sign_in_by_form(page, cloud.url, account)
    return context, page, problems


async def test_a_sign_in_ended_on_one_process_leaves_the_page_on_another(
    clouds: tuple[CloudProcess, CloudProcess], browser: Browser
) -> None:
    a, b = clouds
    api = ApiClient(a.url)
    try:
        account = await api.account()
        # The account page on process A; the two browsers that go, on process B: B's sign-out
        # and A's revoke each reach the other process through Redis.
        here, watcher, problems = await signed_in(browser, a, account)
        there, leaving, _ = await signed_in(browser, b, account)
        third, revoked, revoked_problems = await signed_in(browser, b, account)
        await signing_out_drops_rows(watcher, leaving, revoked)
        for context in (here, there, third):
            await context.close()
        assert unexpected(problems) == [], problems.errors
        assert unexpected(revoked_problems) == [], revoked_problems.errors
    finally:
        await api.aclose()
