"""Accounts that can be revoked, against a real ``mumu-cloud serve`` on both backends: refresh
tokens that rotate (and a replayed one that ends the sign-in), two tabs refreshing at once,
sign-out on the server, sign-out everywhere, password change and account deletion, each
closing the sockets it must."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests import signaling_client as sig
from tests.cloud_fixtures import BACKENDS, JWT_SECRET, start_cloud
from tests.cloud_process import ApiClient, CloudProcess
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
