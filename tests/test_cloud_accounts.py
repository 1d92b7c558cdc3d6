"""Accounts that can be revoked, against a real ``mumu-cloud serve`` on both backends: refresh
tokens that rotate (and a replayed one that ends the sign-in), two tabs refreshing at once,
sign-out on the server, sign-out everywhere, password change and account deletion, each
closing the sockets it must.  Addresses proven by one-time links read from a real SMTP server
(``tests/mail_server.py``): sign-up, "Send again", a new address, a password reset; none of
them tells a stranger whether an address has an account."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from cloud.account_links import AccountLink, AccountLinks
from cloud.schema import account_links
from cloud.store import SqlStore
from tests import signaling_client as sig
from tests.cloud_fixtures import BACKENDS, JWT_SECRET, start_cloud
from tests.cloud_process import ApiClient, CloudProcess
from tests.mail_server import MailServer, ReceivedMail
from tests.test_cloud_invariants import metric

COOKIE = "mumu_refresh"
CLOSE_SIGNED_OUT = 4403


@pytest.fixture(scope="module", params=BACKENDS)
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    yield from start_cloud(request, tmp_path_factory.mktemp("cloud"), request.param)


@pytest.fixture
async def api(cloud: CloudProcess) -> AsyncIterator[ApiClient]:
    client = ApiClient(cloud.url)
    yield client
    await client.aclose()


class Browser:
    """One browser: its own cookie jar (the refresh cookie) and its latest access token."""

    def __init__(self, cloud: CloudProcess) -> None:
        # A browser names the page of every POST it makes: here, the app's own origin.
        self.http = httpx.AsyncClient(
            base_url=cloud.url, timeout=30.0, headers={"origin": cloud.url}
        )
        self.token = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    @property
    def refresh_cookie(self) -> str | None:
        return self.http.cookies.get(COOKIE)

    async def sign_in(self, email: str, password: str) -> httpx.Response:
        r = await self.http.post("/api/auth/login", json={"email": email, "password": password})
        if r.status_code == 200:
            self.token = r.json()["access_token"]
        return r

    async def refresh(self, cookie: str | None = None) -> httpx.Response:
        """Refresh with the jar's cookie, or with ``cookie`` (an older copy) sent by hand."""
        if cookie is None:
            r = await self.http.post("/api/auth/refresh")
        else:
            async with httpx.AsyncClient(
                base_url=str(self.http.base_url), headers={"origin": self.http.headers["origin"]}
            ) as bare:
                r = await bare.post(
                    "/api/auth/refresh", headers={"cookie": f"{COOKIE}={cookie}".encode()}
                )
        if r.status_code == 200 and cookie is None:
            self.token = r.json()["access_token"]
        return r

    async def authorized(self) -> bool:
        r = await self.http.get("/api/devices", headers=self.auth)
        assert r.status_code in (200, 401), r.text
        return r.status_code == 200

    async def aclose(self) -> None:
        await self.http.aclose()


async def browsers_of(
    cloud: CloudProcess, api: ApiClient, n: int, password: str = "correct horse 1"
) -> tuple[str, list[Browser]]:
    account = await api.account(password=password)
    signed_in = []
    for _ in range(n):
        browser = Browser(cloud)
        r = await browser.sign_in(account.email, password)
        assert r.status_code == 200, r.text
        signed_in.append(browser)
    return account.email, signed_in


def set_cookie(r: httpx.Response) -> str:
    return ";".join(r.headers.get_list("set-cookie"))


async def test_sign_in_sets_a_strict_http_only_refresh_cookie(
    cloud: CloudProcess, api: ApiClient
) -> None:
    email, [browser] = await browsers_of(cloud, api, 1)
    r = await browser.sign_in(email, "correct horse 1")
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    assert body["refresh_expires_in"] == 30 * 86400
    assert "refresh_token" not in body, "the refresh token never reaches page scripts"
    cookie = set_cookie(r)
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/api/auth", "Max-Age=2592000"):
        assert attribute.lower() in cookie.lower(), cookie
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 900 and claims["sid"]
    await browser.aclose()


async def test_refresh_rotates_and_a_replayed_token_ends_the_sign_in(
    cloud: CloudProcess, api: ApiClient
) -> None:
    _, [browser, other] = await browsers_of(cloud, api, 2)
    first = browser.refresh_cookie
    assert first
    r = await browser.refresh()
    assert r.status_code == 200, r.text
    second = browser.refresh_cookie
    assert second and second != first, "rotated"
    assert await browser.authorized()

    # The token just replaced still gets an access token for a moment (another tab), and
    # leaves the cookie alone.
    r = await browser.refresh(cookie=first)
    assert r.status_code == 200 and "set-cookie" not in r.headers, r.text

    r = await browser.refresh()
    assert r.status_code == 200
    socket = await sig.viewer(cloud.ws_url, browser.token)
    other_socket = await sig.viewer(cloud.ws_url, other.token)

    # `first` is two rotations old now: somebody kept a copy. The sign-in ends for everyone.
    r = await browser.refresh(cookie=first)
    assert r.status_code == 401 and r.json()["error"]["code"] == "signed_out", r.text
    assert "two places" in r.json()["error"]["message"]
    assert await socket.closed() == CLOSE_SIGNED_OUT
    assert not await browser.authorized()
    r = await browser.refresh()
    assert r.status_code == 401 and r.json()["error"]["code"] == "signed_out"
    assert browser.refresh_cookie is None, "the 401 deletes the cookie"

    # The account's other sign-in is not touched.
    assert await other.authorized()
    await other_socket.send("heartbeat")
    await other_socket.recv("heartbeat_ack")
    metrics = (await api.http.get("/metrics")).text
    assert 'mumu_auth_events_total{event="refresh_reused"}' in metrics
    for client in (socket, other_socket):
        await client.close()
    for b in (browser, other):
        await b.aclose()


async def test_two_tabs_refreshing_at_once_both_get_an_access_token(
    cloud: CloudProcess, api: ApiClient
) -> None:
    _, [browser] = await browsers_of(cloud, api, 1)
    cookie = browser.refresh_cookie
    for _ in range(5):
        answers = await asyncio.gather(*(browser.refresh(cookie=cookie) for _ in range(4)))
        assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
        rotated = [r for r in answers if "set-cookie" in r.headers]
        assert len(rotated) == 1, "exactly one request rotated the token"
        cookie = httpx.Cookies(rotated[0].cookies).get(COOKIE)
        assert cookie
    r = await browser.refresh(cookie=cookie)
    assert r.status_code == 200 and "set-cookie" in r.headers
    await browser.aclose()


async def test_a_refresh_cookie_that_is_not_ours_is_refused_without_harm(
    cloud: CloudProcess, api: ApiClient
) -> None:
    _, [browser] = await browsers_of(cloud, api, 1)
    sign_in = jwt.decode(browser.token, JWT_SECRET, algorithms=["HS256"])["sid"]
    for forged in ("", "nonsense", f"{sign_in}.guess.guess", f"{sign_in}.a.b.c", "é" * 40):
        r = await browser.refresh(cookie=forged)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] in {"refresh_missing", "refresh_invalid"}
    # A made-up token naming the sign-in (its id is in every access token) does not end it.
    assert await browser.authorized()
    assert (await browser.refresh()).status_code == 200
    await browser.aclose()


async def test_sign_out_revokes_on_the_server(cloud: CloudProcess, api: ApiClient) -> None:
    _, [leaving, staying] = await browsers_of(cloud, api, 2)
    leaving_socket = await sig.viewer(cloud.ws_url, leaving.token)
    staying_socket = await sig.viewer(cloud.ws_url, staying.token)
    token, cookie = leaving.token, leaving.refresh_cookie

    r = await leaving.http.post("/api/auth/logout")
    assert r.status_code == 204
    assert leaving.refresh_cookie is None
    assert await leaving_socket.closed() == CLOSE_SIGNED_OUT
    assert not await leaving.authorized(), "the access token died with its sign-in"
    r = await leaving.refresh(cookie=cookie)
    assert r.status_code == 401 and "you signed out" in r.json()["error"]["message"]
    refused = await sig.Client.connect(cloud.ws_url, "viewer")
    await refused.send("hello", {"token": token})
    assert (await refused.error())["code"] == "not_authenticated"
    assert await refused.closed() == 4401

    assert await staying.authorized()
    await staying_socket.send("heartbeat")
    await staying_socket.recv("heartbeat_ack")
    # Signing out with only an access token (no cookie) works too, and twice is harmless.
    bare = httpx.AsyncClient(base_url=cloud.url)
    assert (await bare.post("/api/auth/logout", headers=staying.auth)).status_code == 204
    assert (await bare.post("/api/auth/logout", headers=staying.auth)).status_code == 204
    assert (await bare.post("/api/auth/logout")).status_code == 204
    assert await staying_socket.closed() == CLOSE_SIGNED_OUT
    assert not await staying.authorized()
    await bare.aclose()
    for b in (leaving, staying):
        await b.aclose()


async def test_sign_out_everywhere(cloud: CloudProcess, api: ApiClient) -> None:
    email, browsers = await browsers_of(cloud, api, 3)
    sockets = [await sig.viewer(cloud.ws_url, b.token) for b in browsers]
    stranger_email, [stranger] = await browsers_of(cloud, api, 1)
    stranger_socket = await sig.viewer(cloud.ws_url, stranger.token)

    assert (await browsers[0].http.post("/api/auth/logout-all")).status_code == 401
    r = await browsers[0].http.post("/api/auth/logout-all", headers=browsers[0].auth)
    assert r.status_code == 204
    for socket in sockets:
        assert await socket.closed() == CLOSE_SIGNED_OUT
    for browser in browsers:
        assert not await browser.authorized()
        assert (await browser.refresh()).status_code == 401
    assert await stranger.authorized()
    await stranger_socket.send("heartbeat")
    await stranger_socket.recv("heartbeat_ack")
    # Signing in again works as ever.
    assert (await browsers[1].sign_in(email, "correct horse 1")).status_code == 200
    assert await browsers[1].authorized()
    assert stranger_email != email
    await stranger_socket.close()
    for b in [*browsers, stranger]:
        await b.aclose()


async def test_changing_the_password_revokes_every_sign_in_but_the_new_one(
    cloud: CloudProcess, api: ApiClient
) -> None:
    email, [changer, other] = await browsers_of(cloud, api, 2)
    sockets = [await sig.viewer(cloud.ws_url, b.token) for b in (changer, other)]
    url = "/api/account/password"

    def change(current: str, new: str) -> dict[str, str]:
        return {"current_password": current, "new_password": new}

    wrong = change("not it", "brand new pass 2")
    r = await changer.http.post(url, json=wrong, headers=changer.auth)
    assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_password"
    assert await changer.authorized(), "a wrong current password changes nothing"
    for weak in ("short", "aaaaaaaaaaaa", "nul\x00 in the password"):
        r = await changer.http.post(url, json=change("correct horse 1", weak), headers=changer.auth)
        assert r.status_code == 422, (weak, r.text)
    unsigned = await changer.http.post(url, json=change("correct horse 1", "x" * 9))
    assert unsigned.status_code == 401

    old_cookie = changer.refresh_cookie
    r = await changer.http.post(
        url, json=change("correct horse 1", "brand new pass 2"), headers=changer.auth
    )
    assert r.status_code == 200, r.text
    new_token = r.json()["access_token"]
    assert changer.refresh_cookie not in (None, old_cookie), "a new sign-in for the caller"
    for socket in sockets:
        assert await socket.closed() == CLOSE_SIGNED_OUT
    assert not await changer.authorized(), "the old access token is dead"
    assert not await other.authorized()
    r = await other.refresh()
    assert r.status_code == 401 and "password" in r.json()["error"]["message"]
    changer.token = new_token
    assert await changer.authorized()
    assert (await changer.refresh()).status_code == 200

    fresh = Browser(cloud)
    assert (await fresh.sign_in(email, "correct horse 1")).status_code == 401
    assert (await fresh.sign_in(email, "brand new pass 2")).status_code == 200
    for b in (changer, other, fresh):
        await b.aclose()


async def test_deleting_the_account_unpairs_its_cameras_and_ends_everything(
    cloud: CloudProcess, api: ApiClient
) -> None:
    email, [owner, elsewhere] = await browsers_of(cloud, api, 2)
    account = await api.account()  # not the owner: a second account that must be untouched
    camera = await api.camera("Hall")
    code = (await api.code(camera))["code"]
    r = await owner.http.post("/api/devices/pair", json={"code": code}, headers=owner.auth)
    assert r.status_code == 200
    device = await sig.device(cloud.ws_url, camera.hello())
    viewer = await sig.viewer(cloud.ws_url, owner.token)
    other_socket = await sig.viewer(cloud.ws_url, elsewhere.token)
    await viewer.send("watch_request", {"device_id": camera.device_id})
    session_id = (await viewer.recv("watch_ready"))["payload"]["session_id"]
    await device.recv("watch_request")

    url = "/api/account/delete"
    r = await owner.http.post(url, json={"password": "wrong"}, headers=owner.auth)
    assert r.status_code == 403
    assert (await owner.http.post(url, json={}, headers=owner.auth)).status_code == 422
    assert (await owner.http.post(url, json={"password": "correct horse 1"})).status_code == 401

    r = await owner.http.post(url, json={"password": "correct horse 1"}, headers=owner.auth)
    assert r.status_code == 204, r.text
    ended = (await device.recv("watch_ended"))["payload"]
    assert ended == {"session_id": session_id, "reason": "device_unpaired"}
    assert (await device.recv("pairing_status"))["payload"] == {"paired": False}
    assert await viewer.closed() == CLOSE_SIGNED_OUT
    assert await other_socket.closed() == CLOSE_SIGNED_OUT
    assert not await owner.authorized() and not await elsewhere.authorized()
    assert (await elsewhere.refresh()).status_code == 401
    assert (await Browser(cloud).sign_in(email, "correct horse 1")).status_code == 401

    # The camera is free for somebody else; the e-mail address for a new account.
    await api.pair(account, camera)
    r = await api.http.post(
        "/api/auth/register", json={"email": email, "password": "correct horse 1"}
    )
    assert r.status_code == 201
    assert (await api.http.get("/api/devices", headers=account.auth)).json()["devices"]
    await device.close()
    for b in (owner, elsewhere):
        await b.aclose()


async def test_the_account_page_lists_its_sign_ins(cloud: CloudProcess, api: ApiClient) -> None:
    email, [first, second] = await browsers_of(cloud, api, 2)
    r = await first.http.get("/api/account", headers=first.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["email"] == email and body["created_at"].endswith("+00:00")
    assert len(body["sign_ins"]) == 3  # and the sign-in api.account() made
    assert [s["current"] for s in body["sign_ins"]].count(True) == 1
    assert all(s["user_agent"].startswith("python-httpx") for s in body["sign_ins"])
    assert (await first.http.get("/api/account")).status_code == 401
    await second.http.post("/api/auth/logout")
    r = await first.http.get("/api/account", headers=first.auth)
    assert len(r.json()["sign_ins"]) == 2
    for b in (first, second):
        await b.aclose()


@pytest.fixture(scope="module")
def twin(cloud: CloudProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    """Another process of the same cloud when it is scaled (the same database and Redis: a
    frame for a socket there travels through Redis); the one process when it is embedded."""
    if "MUMU_REDIS_URL" not in cloud.env:
        yield cloud
        return
    with CloudProcess(tmp_path_factory.mktemp("twin"), env=cloud.env) as second:
        yield second


#: ``auth.new_sign_in_id``: ``secrets.token_urlsafe(16)``.
SIGN_IN_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


async def sign_in_ids(browser: Browser) -> dict[str, bool]:
    """The account's sign-ins as its page lists them: id -> whether it is the asker's."""
    r = await browser.http.get("/api/account", headers=browser.auth)
    assert r.status_code == 200, r.text
    ids = {s["id"]: s["current"] for s in r.json()["sign_ins"]}
    assert all(SIGN_IN_ID.match(i) for i in ids), ids
    return ids


async def test_one_browser_signs_out_another_and_the_list_hears_of_every_change(
    cloud: CloudProcess, twin: CloudProcess, api: ApiClient
) -> None:
    """``DELETE /api/account/sign-ins/{id}``: the owner's own sign-ins only; the revoked one's
    tokens and sockets end and its refresh says why; every change of the account's sign-ins
    (a sign-in, a sign-out, a revoke) reaches its other sockets as ``sign_ins_changed``, on
    another process too (scaled: through Redis), never a stranger's; a password change closes
    every socket but the new sign-in's (which has none yet)."""
    email, [here, gone] = await browsers_of(cloud, api, 2)
    _, [stranger] = await browsers_of(cloud, api, 1)
    watcher = await sig.viewer(twin.ws_url, here.token)  # the account page, on the twin
    gone_socket = await sig.viewer(cloud.ws_url, gone.token)
    stranger_socket = await sig.viewer(twin.ws_url, stranger.token)
    ids = await sign_in_ids(here)
    [here_id] = [i for i, current in ids.items() if current]
    [gone_id] = [i for i, current in (await sign_in_ids(gone)).items() if current]
    assert here_id != gone_id and gone_id in ids
    url = f"/api/account/sign-ins/{gone_id}"

    # Nobody else's, nothing malformed, nobody signed out: refused, nothing changes.
    assert (await stranger.http.delete(url, headers=stranger.auth)).status_code == 404
    assert (await here.http.delete(url)).status_code == 401
    for bad in ("x" * 65, "not%20an%20id", "a.b"):
        r = await here.http.delete(f"/api/account/sign-ins/{bad}", headers=here.auth)
        assert r.status_code == 404 and error_code(r) == "not_found", (bad, r.text)
    assert await gone.authorized()
    await watcher.nothing()

    r = await here.http.delete(url, headers=here.auth)
    assert r.status_code == 204, r.text
    assert await gone_socket.closed() == CLOSE_SIGNED_OUT
    assert (await watcher.recv())["type"] == "sign_ins_changed"
    assert not await gone.authorized()
    r = await gone.refresh()
    assert r.status_code == 401, r.text
    assert "signed out from another browser" in r.json()["error"]["message"]
    assert set(await sign_in_ids(here)) == set(ids) - {gone_id}
    assert (await here.http.delete(url, headers=here.auth)).status_code == 404, "ended already"
    await watcher.nothing()

    # A new sign-in, a sign-out, a password change: each one heard.
    newcomer = Browser(twin)
    assert (await newcomer.sign_in(email, "correct horse 1")).status_code == 200
    assert (await watcher.recv())["type"] == "sign_ins_changed"
    assert (await newcomer.http.post("/api/auth/logout")).status_code == 204
    assert (await watcher.recv())["type"] == "sign_ins_changed"
    # (the stranger heard none of it: its next frame answers its own heartbeat)
    await stranger_socket.send("heartbeat")
    assert (await stranger_socket.recv())["type"] == "heartbeat_ack"

    listener = await sig.viewer(twin.ws_url, here.token)
    change = {"current_password": "correct horse 1", "new_password": "other horse 22"}
    r = await here.http.post("/api/account/password", json=change, headers=here.auth)
    assert r.status_code == 200, r.text
    for socket in (watcher, listener):
        assert await socket.closed() == CLOSE_SIGNED_OUT  # every sign-in but the new one
    metrics = (await api.http.get("/metrics")).text
    assert 'mumu_auth_events_total{event="sign_in_revoked"} 1.0' in metrics
    await stranger_socket.close()
    for b in (here, gone, stranger, newcomer):
        await b.aclose()


@pytest.mark.parametrize("kind", ["embedded"])
async def test_sign_ins_per_account_refreshes_per_address_and_the_grace_are_bounded(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    limits = {
        "MUMU_MAX_SIGN_INS": "2",
        "MUMU_REFRESH_GRACE": "0",
        "MUMU_REFRESH_RATE_PER_ADDRESS": "5/minute",
    }
    for cloud in start_cloud(request, tmp_path, kind, **limits):
        api = ApiClient(cloud.url)
        email, [oldest, middle, newest] = await browsers_of(cloud, api, 3)
        assert not await oldest.authorized(), "the least recently used sign-in ended"
        r = await oldest.refresh()
        assert r.status_code == 401 and "too many" in r.json()["error"]["message"]
        assert await middle.authorized() and await newest.authorized()
        # No grace: the replaced token is a replay at once.
        before = newest.refresh_cookie
        assert (await newest.refresh()).status_code == 200
        assert (await newest.refresh(cookie=before)).status_code == 401
        assert not await newest.authorized()
        # Refreshes per address are bounded too (three so far).
        statuses = [(await middle.refresh()).status_code for _ in range(3)]
        assert statuses == [200, 200, 429], statuses
        assert email
        await api.aclose()
        for b in (oldest, middle, newest):
            await b.aclose()


PUBLIC_URL = "https://camera.example.org"


@pytest.fixture(scope="module", params=BACKENDS)
def guarded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    """A cloud with the shipped kind of sign-in bound (3 a minute, to be quick) and a public
    URL: the web app's origin, the only one whose pages may use the refresh cookie."""
    yield from start_cloud(
        request,
        tmp_path_factory.mktemp("guarded"),
        request.param,
        MUMU_LOGIN_RATE="3/minute",
        MUMU_CONFIRM_RATE="2/minute",
        MUMU_PUBLIC_URL=PUBLIC_URL,
    )


async def test_strangers_wrong_passwords_do_not_stop_the_owner_confirming_theirs(
    guarded: CloudProcess,
) -> None:
    """Wrong passwords from anywhere spend the account's sign-in bucket (the right password
    waits too); a signed-in owner confirms its password all the same, and its own guesses are
    bounded by a bucket of its sign-in."""
    api = ApiClient(guarded.url)
    owner = await api.account(password="owner pass 1")  # sign-in A: one login of three
    r = await api.http.post(
        "/api/auth/login", json={"email": owner.email, "password": "owner pass 1"}
    )
    assert r.status_code == 200  # sign-in B: two of three
    second = {"authorization": f"Bearer {r.json()['access_token']}"}
    async with httpx.AsyncClient(base_url=guarded.url) as stranger:
        tries = [
            (
                await stranger.post(
                    "/api/auth/login", json={"email": owner.email, "password": "a guess 1234"}
                )
            ).status_code
            for _ in range(2)
        ]
        assert tries == [401, 429]
    locked = await api.http.post(
        "/api/auth/login", json={"email": owner.email, "password": "owner pass 1"}
    )
    assert locked.status_code == 429

    delete = "/api/account/delete"
    guesses = [
        (await api.http.post(delete, json={"password": "not it 1"}, headers=owner.auth)).status_code
        for _ in range(3)
    ]
    assert guesses == [403, 403, 429], "sign-in A's own guesses are bounded"
    assert await metric(guarded.url, 'mumu_rate_limited_total{limit="confirm-sign-in"}') >= 1
    change = {"current_password": "owner pass 1", "new_password": "owner pass 2"}
    r = await api.http.post("/api/account/password", json=change, headers=second)
    assert r.status_code == 200, r.text
    await api.aclose()


def _cookie_of(r: httpx.Response) -> str:
    """The refresh token a sign-in set (by hand: the cookie is Secure, this is plain http)."""
    for header in r.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name == COOKIE:
            return rest.split(";", 1)[0]
    raise AssertionError("no refresh cookie")


async def test_only_the_apps_own_pages_may_use_the_refresh_cookie(guarded: CloudProcess) -> None:
    """A sibling subdomain is the same site, so the SameSite=Strict cookie goes with its form
    post: refresh and sign-out act only for the app's own origin (or Sec-Fetch-Site:
    same-origin); anything else is 403 cross_origin, counted, and changes nothing."""
    api = ApiClient(guarded.url)
    account = await api.account(password="origin pass 1")
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        r = await http.post(
            "/api/auth/login",
            json={"email": account.email, "password": account.password},
            headers={"origin": PUBLIC_URL},
        )
        assert r.status_code == 200, r.text
        cookie = _cookie_of(r)
        token = {"authorization": f"Bearer {r.json()['access_token']}"}

        async def post(path: str, **headers: str) -> httpx.Response:
            jar = {"cookie": f"{COOKIE}={cookie}"}
            return await http.post(path, headers={**jar, **headers})

        evil = "https://evil.example.org"
        refused = [
            {"origin": evil},
            {"origin": evil, "sec-fetch-site": "same-site"},
            {"origin": "null"},
            {"origin": "http://camera.example.org"},  # not the same scheme
            {"sec-fetch-site": "same-site"},
            {},  # neither header: no browser sends a POST like this
        ]
        for headers in refused:
            for path in ("/api/auth/refresh", "/api/auth/logout"):
                r = await post(path, **headers)
                assert r.status_code == 403, (path, headers, r.text)
                assert r.json()["error"]["code"] == "cross_origin"
                assert "set-cookie" not in r.headers, "the cookie is left alone"
        assert (await http.get("/api/devices", headers=token)).status_code == 200, "not signed out"
        r = await http.post(
            "/api/auth/login",
            json={"email": account.email, "password": account.password},
            headers={"origin": evil},
        )
        assert r.status_code == 403, "another page cannot sign this browser in either"
        text = (await http.get("/metrics")).text
        assert 'mumu_http_refusals_total{code="cross_origin",status="403"}' in text

        r = await post("/api/auth/refresh", origin=PUBLIC_URL)
        assert r.status_code == 200, r.text
        cookie = _cookie_of(r)  # rotated: the refused ones did not rotate it before
        r = await post("/api/auth/refresh", **{"sec-fetch-site": "same-origin"})
        assert r.status_code == 200, r.text
        cookie = _cookie_of(r)
        token = {"authorization": f"Bearer {r.json()['access_token']}"}
        r = await post("/api/auth/refresh", origin=guarded.url)  # the address it was sent to
        assert r.status_code == 200, r.text
        cookie = _cookie_of(r)
        token = {"authorization": f"Bearer {r.json()['access_token']}"}
        r = await post("/api/auth/logout", origin=PUBLIC_URL + ":443")
        assert r.status_code == 204
        assert (await http.get("/api/devices", headers=token)).status_code == 401
    await api.aclose()


def test_refresh_tokens_carry_a_mac_and_are_stored_hashed() -> None:
    from cloud.auth import RefreshTokens

    tokens = RefreshTokens("secret")
    token = tokens.mint("sid1")
    assert tokens.sign_in_of(token) == "sid1"
    sign_in, nonce, mac = token.split(".")
    assert len(nonce) >= 43, "256 random bits"
    assert tokens.sign_in_of(f"{sign_in}.{nonce}.{mac[:-1]}x") is None
    assert tokens.sign_in_of(f"sid2.{nonce}.{mac}") is None
    assert RefreshTokens("other secret").sign_in_of(token) is None
    assert len(tokens.hash(token)) == 64 and token not in tokens.hash(token)


# --- proven addresses, password reset, changing the address (issue 18) -------------------------

#: ``secrets.token_urlsafe(32)``: the alphabet and length of every link token.
LINK_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def error_code(r: httpx.Response) -> str:
    code: str = r.json()["error"]["code"]
    return code


def link_token(cloud: CloudProcess, mail: ReceivedMail, page: str) -> str:
    """The token of a mail's link, checked to be a link to the web app's ``page`` (at
    ``MUMU_PUBLIC_URL``, else the origin the request came in on)."""
    origin = cloud.env.get("MUMU_PUBLIC_URL", cloud.url)
    assert mail.link == f"{origin}/#/{page}/{mail.token}", mail.link
    assert LINK_TOKEN.match(mail.token), mail.token
    return mail.token


@asynccontextmanager
async def cloud_store(cloud: CloudProcess) -> AsyncIterator[SqlStore]:
    """The cloud's own database, read through the store."""
    url = cloud.env.get("MUMU_DATABASE_URL") or f"sqlite:///{cloud.data_dir / 'mumu.db'}"
    store = SqlStore(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def stored_links(cloud: CloudProcess, user_id: str) -> list[AccountLink]:
    async with cloud_store(cloud) as store:
        return await AccountLinks(store).of_user(user_id)


async def assert_kept_only_hashed(cloud: CloudProcess, tokens: list[str]) -> None:
    """No token is in the database: each is there as its SHA-256 only."""
    async with cloud_store(cloud) as store, store.transaction() as conn:
        rows = [tuple(r) for r in await conn.execute(select(account_links))]
        hashes = {r.token_hash for r in await conn.execute(select(account_links))}
    dump = repr(rows)
    for token in tokens:
        assert token not in dump
        assert hashlib.sha256(token.encode()).hexdigest() in hashes


async def account_of(cloud: CloudProcess, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=cloud.url) as http:
        r = await http.get("/api/account", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def fresh_email(tag: str) -> str:
    return f"{tag}-{time.monotonic_ns()}@example.com"


async def test_sign_up_mails_a_link_that_proves_the_address_once(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    email = fresh_email("verify")
    r = await api.http.post("/api/auth/register", json={"email": email, "password": "long pass 1"})
    assert r.status_code == 201 and r.json() == {"email": email}, r.text
    token = link_token(cloud, await mail_server.next_mail(email, "verify"), "verify")
    browser = Browser(cloud)
    assert (await browser.sign_in(email, "long pass 1")).status_code == 200
    body = await account_of(cloud, browser.token)
    assert body["email_verified"] is False and body["pending_email"] is None

    url = "/api/auth/verify"
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (tampered, "nonsense", token + "x", token[:-1]):
        r = await api.http.post(url, json={"token": bad})
        assert r.status_code == 400 and error_code(r) == "link_invalid", (bad, r.text)
    assert (await account_of(cloud, browser.token))["email_verified"] is False

    r = await api.http.post(url, json={"token": token})  # no sign-in needed
    assert r.status_code == 200 and r.json() == {"email": email}, r.text
    assert (await account_of(cloud, browser.token))["email_verified"] is True
    r = await api.http.post(url, json={"token": token})
    assert r.status_code == 410 and error_code(r) == "link_used", r.text

    r = await browser.http.post("/api/account/verification", headers=browser.auth)
    assert r.status_code == 409 and error_code(r) == "already_verified", r.text
    assert (await browser.http.post("/api/account/verification")).status_code == 401
    metrics = (await api.http.get("/metrics")).text
    assert 'mumu_account_links_total{outcome="used",purpose="verify"}' in metrics
    assert 'mumu_account_links_total{outcome="used_again",purpose="verify"}' in metrics
    await browser.aclose()


async def test_send_again_keeps_the_newest_few_links_open(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    account = await api.account()
    tokens = [link_token(cloud, await mail_server.next_mail(account.email, "verify"), "verify")]
    for _ in range(4):  # with the sign-up's, the five mails an hour an account may ask for
        r = await api.http.post("/api/account/verification", headers=account.auth)
        assert r.status_code == 202 and r.json() == {}, r.text
        mail = await mail_server.next_mail(account.email, "verify")
        tokens.append(link_token(cloud, mail, "verify"))
    assert len(set(tokens)) == 5
    r = await api.http.post("/api/account/verification", headers=account.auth)
    assert r.status_code == 429 and error_code(r) == "rate_limited" and r.headers["retry-after"]
    links = await stored_links(cloud, account.user_id)
    now = time.time()
    assert sum(link.expires_at > now for link in links) == 3, "at most a few open"
    r = await api.http.post("/api/auth/verify", json={"token": tokens[0]})
    assert r.status_code == 410 and error_code(r) == "link_expired", r.text
    assert (await api.http.post("/api/auth/verify", json={"token": tokens[2]})).status_code == 200
    assert (await account_of(cloud, account.token))["email_verified"] is True
    await assert_kept_only_hashed(cloud, tokens)


async def test_two_uses_of_one_link_at_once_exactly_one_wins(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    account = await api.account()
    token = link_token(cloud, await mail_server.next_mail(account.email, "verify"), "verify")
    answers = await asyncio.gather(
        *(api.http.post("/api/auth/verify", json={"token": token}) for _ in range(4))
    )
    assert sorted(r.status_code for r in answers) == [200, 410, 410, 410], [r.text for r in answers]

    r = await api.http.post("/api/auth/forgot", json={"email": account.email})
    assert r.status_code == 202
    token = link_token(cloud, await mail_server.next_mail(account.email, "reset"), "reset")
    passwords = [f"reset race {n} pw" for n in range(3)]
    answers = await asyncio.gather(
        *(api.http.post("/api/auth/reset", json={"token": token, "password": p}) for p in passwords)
    )
    assert sorted(r.status_code for r in answers) == [200, 410, 410], [r.text for r in answers]
    winner = passwords[[r.status_code for r in answers].index(200)]
    for password in [*passwords, "correct horse 1"]:
        r = await Browser(cloud).sign_in(account.email, password)
        assert r.status_code == (200 if password == winner else 401), password


async def test_signing_up_with_a_taken_address_answers_alike_and_mails_its_owner(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    account = await api.account()
    await mail_server.next_mail(account.email, "verify")

    async def sign_up(email: str) -> tuple[float, httpx.Response]:
        started = time.perf_counter()
        r = await api.http.post(
            "/api/auth/register", json={"email": email, "password": "another pass 2"}
        )
        return time.perf_counter() - started, r

    taken, new = [], []
    for _ in range(3):
        elapsed, r = await sign_up(account.email.upper())
        assert r.status_code == 201 and r.json() == {"email": account.email}, r.text
        taken.append(elapsed)
        elapsed, r = await sign_up(fresh_email("new"))
        assert r.status_code == 201 and set(r.json()) == {"email"}, r.text
        new.append(elapsed)
    # The password is hashed either way (~the cost of a sign-up): without it, a taken address
    # would answer in a few milliseconds.
    assert min(taken) > 0.3 * min(new), (taken, new)

    mail = await mail_server.next_mail(account.email, "already_registered")
    link_token(cloud, mail, "reset")
    assert "already" in mail.subject
    # Nothing changed: the password is the owner's, the account the same.
    assert (await Browser(cloud).sign_in(account.email, "another pass 2")).status_code == 401
    browser = Browser(cloud)
    assert (await browser.sign_in(account.email, "correct horse 1")).status_code == 200
    assert (await account_of(cloud, browser.token))["user_id"] == account.user_id
    await browser.aclose()


async def test_forgot_answers_alike_and_mails_only_an_address_with_an_account(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    account = await api.account()
    stranger = fresh_email("nobody")
    for email in (stranger, account.email):
        r = await api.http.post("/api/auth/forgot", json={"email": email})
        assert r.status_code == 202 and r.json() == {}, r.text
    mail = await mail_server.next_mail(account.email, "reset")
    link_token(cloud, mail, "reset")
    assert "30 minutes" in mail.text
    # One outbox sends in order: a mail to the stranger would have arrived before this one.
    assert mail_server.received(stranger) == []
    r = await api.http.post("/api/auth/forgot", json={"email": "not an address"})
    assert r.status_code == 422


async def test_a_reset_sets_the_password_and_ends_every_sign_in(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    email, [first, second] = await browsers_of(cloud, api, 2)
    account_id = (await account_of(cloud, first.token))["user_id"]
    assert (await account_of(cloud, first.token))["email_verified"] is False
    sockets = [await sig.viewer(cloud.ws_url, b.token) for b in (first, second)]
    assert (await api.http.post("/api/auth/forgot", json={"email": email})).status_code == 202
    token = link_token(cloud, await mail_server.next_mail(email, "reset"), "reset")
    [link] = [link for link in await stored_links(cloud, account_id) if link.purpose == "reset"]
    assert link.expires_at - link.created_at == 30 * 60 and link.email == email

    url = "/api/auth/reset"
    r = await api.http.post(url, json={"token": token, "password": "aaaaaaaaaaaa"})
    assert r.status_code == 422, "a weak password is refused and the link stays usable"
    r = await api.http.post("/api/auth/verify", json={"token": token})
    assert r.status_code == 400 and error_code(r) == "link_invalid", "a reset link proves nothing"
    r = await api.http.post(url, json={"token": token[::-1], "password": "fresh start 3"})
    assert r.status_code == 400 and error_code(r) == "link_invalid"
    assert await first.authorized(), "refusals change nothing"

    r = await api.http.post(url, json={"token": token, "password": "fresh start 3"})
    assert r.status_code == 200 and r.json() == {"email": email}, r.text
    for socket in sockets:
        assert await socket.closed() == CLOSE_SIGNED_OUT
    for browser in (first, second):
        assert not await browser.authorized()
        r = await browser.refresh()
        assert r.status_code == 401 and "reset" in r.json()["error"]["message"], r.text
    r = await api.http.post(url, json={"token": token, "password": "again other 4"})
    assert r.status_code == 410 and error_code(r) == "link_used"

    fresh = Browser(cloud)
    assert (await fresh.sign_in(email, "correct horse 1")).status_code == 401
    assert (await fresh.sign_in(email, "fresh start 3")).status_code == 200
    assert (await account_of(cloud, fresh.token))["email_verified"] is True, "it read the mail"
    metrics = (await api.http.get("/metrics")).text
    assert 'mumu_auth_events_total{event="password_reset"}' in metrics
    await assert_kept_only_hashed(cloud, [token])
    for b in (first, second, fresh):
        await b.aclose()


async def test_a_changed_or_reset_password_expires_every_open_reset_link(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    """A reset link mailed before the password changed (here, or by another reset link) must
    not undo the change: every open one expires with it."""
    email, [browser] = await browsers_of(cloud, api, 1)

    async def reset_links(n: int) -> list[str]:
        for _ in range(n):
            assert (await api.http.post("/api/auth/forgot", json={"email": email})).is_success
        return [
            link_token(cloud, await mail_server.next_mail(email, "reset"), "reset")
            for _ in range(n)
        ]

    async def refused(token: str) -> str:
        r = await api.http.post("/api/auth/reset", json={"token": token, "password": "late 9x!"})
        assert r.status_code == 410, r.text
        return error_code(r)

    before = await reset_links(2)
    change = {"current_password": "correct horse 1", "new_password": "changed horse 2"}
    r = await browser.http.post("/api/account/password", json=change, headers=browser.auth)
    assert r.status_code == 200, r.text
    assert [await refused(t) for t in before] == ["link_expired", "link_expired"]

    used, other = await reset_links(2)
    r = await api.http.post("/api/auth/reset", json={"token": used, "password": "reset horse 3"})
    assert r.status_code == 200, r.text
    assert await refused(other) == "link_expired"
    assert await refused(used) == "link_used"
    assert (await Browser(cloud).sign_in(email, "reset horse 3")).status_code == 200
    await browser.aclose()


async def test_a_forged_host_never_gets_into_a_mailed_link(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    """Without ``MUMU_PUBLIC_URL`` (this cloud has none), a link takes the origin a request
    names only when it is loopback; any other ``Host`` gets the cloud's own address (the socket
    the request reached), never the name the stranger chose (reset poisoning)."""
    account = await api.account()
    await mail_server.next_mail(account.email, "verify")
    for host in ("evil.example", "evil.example:443", "127.0.0.1.evil.example"):
        r = await api.http.post(
            "/api/auth/forgot", json={"email": account.email}, headers={"host": host}
        )
        assert r.status_code == 202, r.text
        mail = await mail_server.next_mail(account.email, "reset")
        assert mail.link == f"{cloud.url}/#/reset/{mail.token}", (host, mail.link)
        assert "evil" not in mail.text + mail.html, host
    email = fresh_email("poisoned")
    r = await api.http.post(
        "/api/auth/register",
        json={"email": email, "password": "long pass 1"},
        headers={"host": "evil.example"},
    )
    assert r.status_code == 201, r.text
    mail = await mail_server.next_mail(email, "verify")
    assert mail.link == f"{cloud.url}/#/verify/{mail.token}", mail.link
    # A loopback name is the reader's own machine: kept (the demo, a cloud tried locally).
    r = await api.http.post(
        "/api/auth/forgot", json={"email": account.email}, headers={"host": "localhost:9"}
    )
    assert r.status_code == 202
    mail = await mail_server.next_mail(account.email, "reset")
    assert mail.link == f"http://localhost:9/#/reset/{mail.token}", mail.link
    assert await metric(cloud.url, 'mumu_link_origins_total{source="own_address"}') >= 4
    assert await metric(cloud.url, 'mumu_link_origins_total{source="loopback"}') >= 1


async def test_a_new_address_is_proven_before_it_replaces_the_old(
    cloud: CloudProcess, api: ApiClient, mail_server: MailServer
) -> None:
    account = await api.account()
    other = await api.account()
    old, new = account.email, fresh_email("moved")
    url = "/api/account/email"
    r = await api.http.post(url, json={"email": new, "password": "wrong"}, headers=account.auth)
    assert r.status_code == 403 and error_code(r) == "wrong_password"
    for bad in (old, "not an address"):
        r = await api.http.post(
            url, json={"email": bad, "password": "correct horse 1"}, headers=account.auth
        )
        assert r.status_code == 422, (bad, r.text)
    assert (await api.http.post(url, json={"email": new, "password": "x"})).status_code == 401

    # An address with an account: the same answer, the same pending change, but no mail to it.
    r = await api.http.post(
        url, json={"email": other.email, "password": "correct horse 1"}, headers=account.auth
    )
    assert r.status_code == 202 and r.json() == {"pending_email": other.email}, r.text
    assert (await account_of(cloud, account.token))["pending_email"] == other.email

    r = await api.http.post(
        url, json={"email": new, "password": "correct horse 1"}, headers=account.auth
    )
    assert r.status_code == 202 and r.json() == {"pending_email": new}, r.text
    mail = await mail_server.next_mail(new, "confirm_new_address")
    token = link_token(cloud, mail, "verify")
    assert [m.kind for m in mail_server.received(other.email)] == ["verify"], "its sign-up only"
    body = await account_of(cloud, account.token)
    assert body["email"] == old and body["pending_email"] == new
    assert (await Browser(cloud).sign_in(old, "correct horse 1")).status_code == 200
    assert (await Browser(cloud).sign_in(new, "correct horse 1")).status_code == 401

    r = await api.http.post("/api/auth/verify", json={"token": token})
    assert r.status_code == 200 and r.json() == {"email": new}, r.text
    body = await account_of(cloud, account.token)
    assert body["email"] == new and body["email_verified"] is True
    assert body["pending_email"] is None
    assert (await Browser(cloud).sign_in(new, "correct horse 1")).status_code == 200
    assert (await Browser(cloud).sign_in(old, "correct horse 1")).status_code == 401
    told = await mail_server.next_mail(old, "address_changed")
    assert new in told.text
    r = await api.http.post("/api/auth/verify", json={"token": token})
    assert r.status_code == 410 and error_code(r) == "link_used"

    # A link to an address that got an account before it was opened cannot take it.
    contested = fresh_email("contested")
    r = await api.http.post(
        url, json={"email": contested, "password": "correct horse 1"}, headers=account.auth
    )
    assert r.status_code == 202
    late = link_token(
        cloud, await mail_server.next_mail(contested, "confirm_new_address"), "verify"
    )
    await api.account(email=contested)
    r = await api.http.post("/api/auth/verify", json={"token": late})
    assert r.status_code == 409 and error_code(r) == "email_taken", r.text
    assert (await account_of(cloud, account.token))["email"] == new
    await assert_kept_only_hashed(cloud, [token, late])


#: Links that expire in a second, and mail and reset requests bounded tightly.
TIGHT = {
    "MUMU_VERIFY_LINK_TTL": "1",
    "MUMU_RESET_LINK_TTL": "1",
    "MUMU_MAIL_RATE_PER_ACCOUNT": "2/hour",
    "MUMU_FORGOT_RATE_PER_ADDRESS": "4/hour",
    "MUMU_PUBLIC_URL": "https://cameras.example",
}


@pytest.fixture(scope="module", params=BACKENDS)
def tight(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    yield from start_cloud(request, tmp_path_factory.mktemp("tight"), request.param, **TIGHT)


async def test_links_expire_and_the_mail_an_account_gets_is_bounded(
    tight: CloudProcess, mail_server: MailServer
) -> None:
    api = ApiClient(tight.url)
    account = await api.account()
    verify = link_token(tight, await mail_server.next_mail(account.email, "verify"), "verify")
    stranger = fresh_email("stranger")

    # A stranger asks for resets: two mails reach the owner, then nothing more (same answer),
    # and the address that asks is refused after four.
    # (Naming another site in Host changes no link: they are at MUMU_PUBLIC_URL.)
    for n in range(4):
        email = account.email if n < 3 else stranger
        r = await api.http.post(
            "/api/auth/forgot", json={"email": email}, headers={"host": "evil.example"}
        )
        assert r.status_code == 202, r.text
    r = await api.http.post("/api/auth/forgot", json={"email": account.email})
    assert r.status_code == 429 and error_code(r) == "rate_limited" and r.headers["retry-after"]
    resets = [await mail_server.next_mail(account.email, "reset") for _ in range(2)]
    reset = link_token(tight, resets[0], "reset")
    assert link_token(tight, resets[1], "reset") != reset
    # ...which does not use up the owner's own: "Send again" still works (one more: the
    # sign-up's mail was the first), then 429.
    r = await api.http.post("/api/account/verification", headers=account.auth)
    assert r.status_code == 202, r.text
    await mail_server.next_mail(account.email, "verify")
    r = await api.http.post("/api/account/verification", headers=account.auth)
    assert r.status_code == 429 and error_code(r) == "rate_limited"
    assert [m.kind for m in mail_server.received(account.email)].count("reset") == 2
    metrics = (await api.http.get("/metrics")).text
    assert 'mumu_account_links_total{outcome="not_sent",purpose="reset"} 1.0' in metrics
    assert 'mumu_rate_limited_total{limit="forgot-addr"} 1.0' in metrics
    assert 'mumu_rate_limited_total{limit="mail-account"} 1.0' in metrics

    # Both kinds of link expire (each lives a second here).
    latest = max(link.expires_at for link in await stored_links(tight, account.user_id))
    await asyncio.sleep(max(0.0, latest - time.time()) + 0.2)
    r = await api.http.post("/api/auth/verify", json={"token": verify})
    assert r.status_code == 410 and error_code(r) == "link_expired", r.text
    r = await api.http.post("/api/auth/reset", json={"token": reset, "password": "too late 5x"})
    assert r.status_code == 410 and error_code(r) == "link_expired", r.text
    assert (await account_of(tight, account.token))["email_verified"] is False
    assert (await Browser(tight).sign_in(account.email, "correct horse 1")).status_code == 200
    await api.aclose()
