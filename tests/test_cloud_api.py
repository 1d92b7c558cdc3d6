"""The HTTP API against a real ``mumu-cloud serve``: embedded (SQLite) and scaled (PostgreSQL +
Redis), every refusal included."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.cloud_fixtures import BACKENDS, JWT_SECRET, RELAXED, start_cloud
from tests.cloud_process import ApiClient, CloudProcess
from tests.services import redis_server


@pytest.fixture(scope="module", params=BACKENDS)
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    yield from start_cloud(
        request,
        tmp_path_factory.mktemp("cloud"),
        request.param,
        MUMU_PUBLIC_URL="https://cams.example.org",
    )


@pytest.fixture
async def api(cloud: CloudProcess) -> AsyncIterator[ApiClient]:
    client = ApiClient(cloud.url)
    yield client
    await client.aclose()


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str), body
    assert body["error"]["message"], "the error says something in words"
    if code is not None:
        assert body["error"]["code"] == code, body


async def test_register_and_login(api: ApiClient) -> None:
    h = api.http
    email = f"reg-{time.monotonic_ns()}@Example.com"
    r = await h.post("/api/auth/register", json={"email": email, "password": "long enough 1"})
    assert r.status_code == 201
    assert r.json()["email"] == email.lower()
    # An address that has an account answers like a new one (its owner is mailed instead).
    r = await h.post(
        "/api/auth/register", json={"email": email.upper(), "password": "x" * 9 + "yz1"}
    )
    assert r.status_code == 201 and r.json() == {"email": email.lower()}, r.text
    assert_error(
        await h.post("/api/auth/register", json={"email": "a@b.co", "password": "short"}), 422
    )
    assert_error(
        await h.post("/api/auth/register", json={"email": "nope", "password": "long enough 1"}), 422
    )
    assert_error(
        await h.post("/api/auth/register", json={"email": "c@d.co", "password": "aaaaaaaaaaaa"}),
        422,
    )
    assert_error(
        await h.post(
            "/api/auth/register", content=b'{"email":', headers={"content-type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    assert_error(
        await h.post(
            "/api/auth/register",
            json={"email": "e@f.co", "password": "long enough 1", "admin": True},
        ),
        422,
    )
    assert_error(await h.post("/api/auth/register", json=["not", "an", "object"]), 422)

    r = await h.post("/api/auth/login", json={"email": email, "password": "long enough 1"})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 900
    assert_error(
        await h.post("/api/auth/login", json={"email": email, "password": "wrong password"}),
        401,
        "bad_credentials",
    )
    assert_error(
        await h.post("/api/auth/login", json={"email": "ghost@x.co", "password": "whatever1"}),
        401,
        "bad_credentials",
    )


async def test_user_tokens_are_checked(api: ApiClient) -> None:
    account = await api.account()
    h = api.http
    assert (await h.get("/api/devices", headers=account.auth)).status_code == 200
    now = int(time.time())
    sign_in = jwt.decode(account.token, JWT_SECRET, algorithms=["HS256"])["sid"]
    claims = {"sub": account.user_id, "iat": now, "exp": now + 60, "typ": "access"}
    bad_tokens = {
        # Signed with the right key but naming no sign-in, or one of another account: these
        # could not be revoked, so they are not honoured.
        "no sign-in": jwt.encode(claims, JWT_SECRET, algorithm="HS256"),
        "made-up sign-in": jwt.encode({**claims, "sid": "made-up"}, JWT_SECRET, algorithm="HS256"),
        "another's sign-in": jwt.encode(
            {**claims, "sub": "someone-else", "sid": sign_in}, JWT_SECRET, algorithm="HS256"
        ),
        "missing": None,
        "garbage": "not-a-jwt",
        "expired": jwt.encode(
            {"sub": account.user_id, "iat": now - 7200, "exp": now - 3600, "typ": "access"},
            JWT_SECRET,
            algorithm="HS256",
        ),
        "wrong key": jwt.encode(
            {"sub": account.user_id, "iat": now, "exp": now + 60, "typ": "access"},
            "another secret that is long enough for hs256",
            algorithm="HS256",
        ),
        "alg none": jwt.encode(
            {"sub": account.user_id, "iat": now, "exp": now + 60, "typ": "access"},
            key=None,
            algorithm="none",
        ),
        "tampered": account.token[:-3] + ("AAA" if not account.token.endswith("AAA") else "BBB"),
    }
    for name, token in bad_tokens.items():
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        r = await h.get("/api/devices", headers=headers)
        assert r.status_code == 401, (name, r.text)
        assert_error(r, 401)


async def test_device_registration_and_pairing_codes(api: ApiClient) -> None:
    h = api.http
    r = await h.post("/api/devices/register")
    assert r.status_code == 201
    bare = r.json()
    assert set(bare) == {"device_id", "device_token"} and len(bare["device_token"]) >= 40
    camera = await api.camera("Porch")
    other = await api.camera("Garage")

    gen = "/api/pairing/generate"
    assert_error(await h.post(gen, params={"device_id": camera.device_id}), 401)
    assert_error(await h.post(gen, params={"device_id": camera.device_id}, headers=other.auth), 403)
    assert_error(
        await h.post(
            gen, params={"device_id": camera.device_id}, headers={"authorization": "Bearer nope"}
        ),
        403,
    )
    assert_error(
        await h.post(gen, params={"device_id": "no-such-device"}, headers=camera.auth), 403
    )
    assert_error(await h.post(gen, headers=camera.auth), 422)

    before = time.time()
    first = await api.code(camera)
    assert len(first["code"]) == 6 and first["code"].isdigit()
    assert before + 290 <= first["expires_at"] <= time.time() + 310
    assert first["claim_url"].startswith("https://cams.example.org/#/claim/")
    assert len(first["claim_url"].rsplit("/", 1)[1]) >= 40

    second = await api.code(camera)  # replaces the first, which says it expired
    assert second["code"] != first["code"], "a replaced code is not handed out again at once"
    account = await api.account()
    assert_error(
        await h.post("/api/devices/pair", json={"code": first["code"]}, headers=account.auth),
        410,
        "code_expired",
    )
    r = await h.post("/api/devices/pair", json={"code": second["code"]}, headers=account.auth)
    assert r.status_code == 200, r.text
    assert r.json()["device"]["device_id"] == camera.device_id
    assert r.json()["device"]["name"] == "Porch"
    # single use: its owner is told the camera is theirs already
    assert_error(
        await h.post("/api/devices/pair", json={"code": second["code"]}, headers=account.auth),
        409,
        "already_yours",
    )
    # an owned camera gets no codes and cannot be claimed by anyone else...
    assert_error(
        await h.post(gen, params={"device_id": camera.device_id}, headers=camera.auth),
        409,
        "already_paired",
    )
    # ...until its owner unpairs it
    assert (
        await h.delete(f"/api/devices/{camera.device_id}", headers=account.auth)
    ).status_code == 204
    stranger = await api.account()
    await api.pair(stranger, camera)


async def test_pairing_refusals(api: ApiClient) -> None:
    h = api.http
    account = await api.account()
    assert_error(
        await h.post("/api/devices/pair", json={"code": "12345"}, headers=account.auth), 422
    )
    assert_error(
        await h.post("/api/devices/pair", json={"code": "abcdef"}, headers=account.auth), 422
    )
    assert_error(await h.post("/api/devices/pair", json={}, headers=account.auth), 422)
    assert_error(
        await h.post(
            "/api/devices/pair", json={"code": "123456", "claim_token": "x"}, headers=account.auth
        ),
        422,
    )
    assert_error(await h.post("/api/devices/pair", json={"code": "123456"}), 401)
    camera = await api.camera()
    code = await api.code(camera)
    # the claim link pairs just as well, and is single use too (its owner is told so)
    token = code["claim_url"].rsplit("/", 1)[1]
    r = await h.post("/api/devices/pair", json={"claim_token": token}, headers=account.auth)
    assert r.status_code == 200
    for used in ({"claim_token": token}, {"code": code["code"]}):
        r = await h.post("/api/devices/pair", json=used, headers=account.auth)
        assert_error(r, 409, "already_yours")


async def test_device_list_rename_unpair_history(api: ApiClient) -> None:
    h = api.http
    owner, stranger = await api.account(), await api.account()
    camera = await api.owned_camera(owner, "Front door")
    r = await h.get("/api/devices", headers=owner.auth)
    [device] = r.json()["devices"]
    assert device["device_id"] == camera.device_id and device["name"] == "Front door"
    assert device["online"] is False and device["last_seen"] is None
    assert device["paired_at"].endswith("+00:00")
    assert (await h.get("/api/devices", headers=stranger.auth)).json() == {"devices": []}

    url = f"/api/devices/{camera.device_id}"
    r = await h.patch(url, json={"name": "  Back door "}, headers=owner.auth)
    assert r.status_code == 200 and r.json()["name"] == "Back door"
    assert_error(await h.patch(url, json={"name": "Mine"}, headers=stranger.auth), 404)
    assert_error(await h.patch(url, json={"name": ""}, headers=owner.auth), 422)
    assert_error(await h.patch(url, json={"name": "   "}, headers=owner.auth), 422)
    assert_error(await h.patch(url, json={"name": 5}, headers=owner.auth), 422)
    assert_error(await h.patch("/api/devices/nope", json={"name": "x"}, headers=owner.auth), 404)

    r = await h.get(f"{url}/sessions", headers=owner.auth)
    assert r.status_code == 200 and r.json() == {"sessions": []}
    assert_error(await h.get(f"{url}/sessions", headers=stranger.auth), 404)
    assert_error(await h.get(f"{url}/sessions?limit=0", headers=owner.auth), 422)

    assert_error(await h.delete(url, headers=stranger.auth), 404)
    assert (await h.delete(url, headers=owner.auth)).status_code == 204
    assert (await h.get("/api/devices", headers=owner.auth)).json() == {"devices": []}
    assert_error(await h.delete(url, headers=owner.auth), 404)


async def test_unknown_routes_and_methods_answer_in_the_error_shape(api: ApiClient) -> None:
    assert_error(await api.http.get("/api/nothing-here"), 404)
    assert_error(await api.http.put("/api/auth/login", json={}), 405)


async def test_health_metrics_and_openapi(api: ApiClient) -> None:
    h = api.http
    assert (await h.get("/healthz")).json()["status"] == "ok"
    ready = (await h.get("/readyz")).json()
    assert ready["status"] == "ok" and ready["checks"]["database"] == "ok"
    # make a pairing attempt so its counter shows
    account = await api.account()
    await h.post("/api/devices/pair", json={"code": "000000"}, headers=account.auth)
    metrics = (await h.get("/metrics")).text
    for name in (
        'mumu_websocket_connections{role="device"}',
        'mumu_websocket_connections{role="viewer"}',
        "mumu_watch_sessions_started_total",
        "mumu_websocket_queue_overflows_total{role=",
        "mumu_websocket_refused_total{reason=",
        "mumu_redis_resubscribes",
        "mumu_pairing_attempts_total{outcome=",
        "mumu_db_query_seconds_bucket",
    ):
        assert name in metrics, name
    spec = (await h.get("/api/docs/openapi.json")).json()
    for path in (
        "/api/auth/register",
        "/api/auth/login",
        "/api/devices/register",
        "/api/devices",
        "/api/devices/{device_id}",
        "/api/devices/{device_id}/sessions",
        "/api/devices/pair",
        "/api/devices/retire",
        "/api/pairing/generate",
        "/api/pairing/preview",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/auth/logout-all",
        "/api/account",
        "/api/account/password",
        "/api/account/delete",
        "/api/account/verification",
        "/api/account/email",
        "/api/auth/verify",
        "/api/auth/forgot",
        "/api/auth/reset",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert "bearer" in spec["components"]["securitySchemes"]


def test_turn_credentials_follow_the_coturn_rest_scheme() -> None:
    import hashlib
    import hmac

    from cloud.turn import ice_servers

    servers = ice_servers(
        stun_urls=("stun:s:3478",),
        turn_urls=("turn:t:3478",),
        turn_secret="s3cret",
        ttl_s=600,
        ident="user1",
        now=1000.0,
    )
    assert servers[0].urls == ["stun:s:3478"] and servers[0].username is None
    turn = servers[1]
    assert turn.username == "1600:user1"
    expected = base64.b64encode(hmac.new(b"s3cret", b"1600:user1", hashlib.sha1).digest()).decode()
    assert turn.credential == expected


@pytest.mark.parametrize("kind", ["embedded"])
async def test_rate_limits_answer_429_with_retry_after(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    strict = {
        "MUMU_LOGIN_RATE": "3/minute",
        "MUMU_PAIR_RATE": "4/minute",
        "MUMU_REGISTER_RATE_PER_ADDRESS": "1000/minute",
    }
    for cloud in start_cloud(request, tmp_path, kind, **strict):
        api = ApiClient(cloud.url)
        try:
            account = await api.account()  # one login used
            h = api.http
            codes = []
            for _ in range(3):
                r = await h.post(
                    "/api/auth/login", json={"email": account.email, "password": "wrong password"}
                )
                codes.append(r.status_code)
            assert codes[:2] == [401, 401] and codes[2] == 429
            assert int(r.headers["retry-after"]) >= 1
            assert_error(r, 429, "rate_limited")
            # even the right password waits now: guessing gains nothing
            r = await h.post(
                "/api/auth/login", json={"email": account.email, "password": account.password}
            )
            assert r.status_code == 429

            pairer = await api.account(password="another pass 2")
            statuses = [
                (
                    await h.post(
                        "/api/devices/pair", json={"code": f"{n:06d}"}, headers=pairer.auth
                    )
                ).status_code
                for n in range(6)
            ]
            assert statuses[:4] == [404] * 4 and statuses[4:] == [429, 429]
        finally:
            await api.aclose()


async def test_readyz_says_503_when_redis_is_gone(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with redis_server(tmp_path / "r") as url:
        cloud = CloudProcess(tmp_path / "c", env={**RELAXED, "MUMU_REDIS_URL": url}).start()
    try:
        async with httpx.AsyncClient(base_url=cloud.url) as h:
            r = await h.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["live_state"].startswith("failed")
            assert (await h.get("/healthz")).status_code == 200
    finally:
        cloud.stop()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MUMU_DATABASE_URL": "mysql://x/y"}, "MUMU_DATABASE_URL"),
        ({"MUMU_TURN_TTL": "soon"}, "MUMU_TURN_TTL"),
        ({"MUMU_TURN_TTL": "5"}, "MUMU_TURN_TTL"),
        ({"MUMU_TURN_URLS": "turn:x:3478"}, "MUMU_TURN_SECRET"),
        ({"MUMU_TURN_URLS": "http://x", "MUMU_TURN_SECRET": "s"}, "MUMU_TURN_URLS"),
        ({"MUMU_REDIS_URL": "http://x"}, "MUMU_REDIS_URL"),
        ({"MUMU_LOGIN_RATE": "lots"}, "MUMU_LOGIN_RATE"),
        ({"MUMU_PAIR_CODE_BUDGET": "lots"}, "MUMU_PAIR_CODE_BUDGET"),
        ({"MUMU_PASSWORD_WORKERS": "0"}, "MUMU_PASSWORD_WORKERS"),
        ({"MUMU_MAX_JSON_DEPTH": "100000"}, "MUMU_MAX_JSON_DEPTH"),
        ({"MUMU_JWT_TTL": "5"}, "MUMU_JWT_TTL"),
        ({"MUMU_PUBLIC_URL": "cams.example.org"}, "MUMU_PUBLIC_URL"),
    ],
)
def test_invalid_settings_stop_start_up_with_one_line(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    import os

    done = subprocess.run(
        [str(Path(sys.executable).parent / "mumu-cloud"), "serve", "--port", "1"],
        env={**os.environ, "MUMU_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], done.stderr


def test_yaml_config_file_and_unknown_keys(tmp_path: Path) -> None:
    from cloud.config import ConfigError, load

    config = tmp_path / "cloud.yaml"
    config.write_text("turn_urls: [turn:a:3478, turns:b:443]\nturn_secret: s\nturn_ttl: 900\n")
    settings = load({"MUMU_CONFIG": str(config), "MUMU_DATA_DIR": str(tmp_path)})
    assert settings.turn_urls == ("turn:a:3478", "turns:b:443") and settings.turn_ttl_s == 900
    # the environment wins over the file
    assert (
        load(
            {"MUMU_CONFIG": str(config), "MUMU_DATA_DIR": str(tmp_path), "MUMU_TURN_TTL": "120"}
        ).turn_ttl_s
        == 120
    )
    config.write_text("turn_ttl: 900\ncolour: blue\n")
    with pytest.raises(ConfigError, match="MUMU_COLOUR"):
        load({"MUMU_CONFIG": str(config), "MUMU_DATA_DIR": str(tmp_path)})
    # a generated JWT secret is kept (0600) and reused
    first = load({"MUMU_DATA_DIR": str(tmp_path / "d")}).jwt_secret
    assert load({"MUMU_DATA_DIR": str(tmp_path / "d")}).jwt_secret == first
    assert (tmp_path / "d" / "jwt-secret").stat().st_mode & 0o777 == 0o600
