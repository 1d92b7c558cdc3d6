"""Bad input gets a clear 4xx and faults a clear 503 with ``Retry-After``, never a 500: control
characters, deep and large bodies, the password workers overflowing, the database pool running
dry, and the test's own PostgreSQL and Redis stopped and started again under a running cloud."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests import signaling_client as sig
from tests.cloud_fixtures import BACKENDS, RELAXED, start_cloud
from tests.cloud_process import ApiClient, CloudProcess
from tests.services import PostgresServer, RedisServer, create_database


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


def refused(r: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    assert r.status_code == status, r.text
    error: dict[str, str] = r.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


BAD_TEXT = ["nul\x00byte", "bell\x07", "line\nbreak", "del\x7f", "c1\x85", "rtl\u202eoverride"]


async def test_control_characters_are_refused_before_storage(api: ApiClient) -> None:
    h = api.http
    owner = await api.account()
    camera = await api.owned_camera(owner, "Porch")
    for bad in BAD_TEXT:
        error = refused(
            await h.post(
                "/api/auth/register", json={"email": f"a{bad}@b.co", "password": "long enough 1"}
            ),
            422,
            "invalid_input",
        )
        assert error["message"].startswith("email:") and "control" in error["message"]
        refused(
            await h.post("/api/auth/login", json={"email": f"a{bad}@b.co", "password": "x" * 9}),
            422,
        )
        for body in ({"name": f"Cam {bad}"}, {"model": f"pi{bad}"}):
            error = refused(await h.post("/api/devices/register", json=body), 422, "invalid_input")
            assert error["message"].startswith(next(iter(body)))
        refused(
            await h.patch(
                f"/api/devices/{camera.device_id}", json={"name": bad}, headers=owner.auth
            ),
            422,
            "invalid_input",
        )
    # A NUL in the password is refused too (a password is never stored, but hashed as bytes).
    refused(
        await h.post("/api/auth/register", json={"email": "n@b.co", "password": "nul \x00 inside"}),
        422,
    )
    # Ids in paths and parameters: "no such camera", not a database error.
    for path in ("nul%00id", "%00", "x" * 65, "..%2Fetc"):
        refused(await h.get(f"/api/devices/{path}/sessions", headers=owner.auth), 404)
        refused(await h.patch(f"/api/devices/{path}", json={"name": "x"}, headers=owner.auth), 404)
        refused(await h.delete(f"/api/devices/{path}", headers=owner.auth), 404)
    refused(
        await h.post(
            "/api/pairing/generate", params={"device_id": "nul\x00id"}, headers=camera.auth
        ),
        403,
    )
    # Unicode that is not a control character is fine, and stored as sent.
    r = await h.patch(
        f"/api/devices/{camera.device_id}", json={"name": "Café 東京 🐈"}, headers=owner.auth
    )
    assert r.status_code == 200 and r.json()["name"] == "Café 東京 🐈"
    [device] = (await h.get("/api/devices", headers=owner.auth)).json()["devices"]
    assert device["name"] == "Café 東京 🐈"


async def test_deep_or_large_bodies_are_refused_before_decoding(api: ApiClient) -> None:
    h = api.http
    owner = await api.account()
    json_headers = {"content-type": "application/json"}
    for deep in ("[" * 100_000 + "]" * 100_000, '{"a":' * 20_000 + "1" + "}" * 20_000):
        for path, auth in (("/api/auth/login", {}), ("/api/devices/pair", owner.auth)):
            r = await h.post(path, content=deep.encode(), headers={**json_headers, **auth})
            # Over the size limit as well; either way a clear 4xx.
            assert r.status_code in (400, 413), r.text
    deep = '{"email": ' + "[" * 40 + "]" * 40 + ', "password": "long enough 1"}'
    refused(await h.post("/api/auth/login", content=deep, headers=json_headers), 400, "too_deep")
    shallow = {"email": [[[[]]]], "password": "long enough 1"}
    refused(await h.post("/api/auth/login", json=shallow), 422)
    big = json.dumps({"email": "a@b.co", "password": "p" * 70_000})
    refused(await h.post("/api/auth/login", content=big, headers=json_headers), 413, "too_large")
    metrics = (await h.get("/metrics")).text
    assert 'mumu_http_refusals_total{code="too_deep",status="400"}' in metrics


@pytest.mark.parametrize("kind", ["embedded"])
async def test_password_work_overflowing_answers_503_with_retry_after(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    limits = {"MUMU_PASSWORD_WORKERS": "1", "MUMU_PASSWORD_QUEUE": "1"}
    for cloud in start_cloud(request, tmp_path, kind, **limits):
        async with httpx.AsyncClient(base_url=cloud.url, timeout=90) as h:
            answers = await asyncio.gather(
                *(
                    h.post(
                        "/api/auth/login",
                        json={"email": f"nobody{n}@example.com", "password": "wrong password"},
                    )
                    for n in range(12)
                )
            )
            statuses = sorted(r.status_code for r in answers)
            assert set(statuses) <= {401, 503}, [r.text for r in answers]
            assert statuses.count(503) >= 1 and statuses.count(401) >= 1, statuses
            for r in answers:
                if r.status_code == 503:
                    refused(r, 503, "busy")
                    assert int(r.headers["retry-after"]) >= 1
            metrics = (await h.get("/metrics")).text
            assert 'mumu_password_jobs_total{kind="verify",outcome="rejected"}' in metrics
            assert 'outcome="rejected"} 0.0' not in metrics.split("verify")[1][:80]
            # Nothing is stuck: the next sign-in attempt is checked as usual.
            r = await h.post(
                "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong one"}
            )
            assert r.status_code == 401


Call = Callable[[], Awaitable[httpx.Response]]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "did not recover in time"
        await asyncio.sleep(0.2)


async def test_postgres_and_redis_outages_answer_503_and_recover_without_a_restart(
    tmp_path: Path,
) -> None:
    pg = PostgresServer().start()
    redis = RedisServer(tmp_path / "redis").start()
    env = {
        **RELAXED,
        "MUMU_DATABASE_URL": create_database(pg.url),
        "MUMU_REDIS_URL": redis.url,
        "MUMU_RETRY_AFTER": "7",
        "MUMU_DB_POOL_TIMEOUT": "2",
    }
    cloud = CloudProcess(tmp_path / "cloud", env=env).start()
    api = ApiClient(cloud.url)
    try:
        account = await api.account()
        camera = await api.owned_camera(account)
        h = api.http
        calls: dict[str, tuple[Call, int]] = {
            "login": (
                lambda: h.post(
                    "/api/auth/login", json={"email": account.email, "password": account.password}
                ),
                200,
            ),
            "refresh": (lambda: h.post("/api/auth/refresh", headers={"origin": cloud.url}), 200),
            "device list": (lambda: h.get("/api/devices", headers=account.auth), 200),
            "pairing": (
                lambda: h.post("/api/devices/pair", json={"code": "000000"}, headers=account.auth),
                404,
            ),
            "camera registration": (lambda: h.post("/api/devices/register"), 201),
            "pairing code": (
                lambda: h.post(
                    "/api/pairing/generate",
                    params={"device_id": camera.device_id},
                    headers=camera.auth,
                ),
                409,
            ),
        }

        async def all_answer_as_usual() -> bool:
            for call, status in calls.values():
                if (await call()).status_code != status:
                    return False
            return (await h.get("/readyz")).status_code == 200

        assert await all_answer_as_usual()
        for name, server, needs in (
            (
                "live_state",
                redis,
                {"login", "refresh", "device list", "pairing", "camera registration"},
            ),
            ("database", pg, set(calls)),
        ):
            server.stop()
            for what in needs:
                r = await calls[what][0]()
                error = refused(r, 503, "unavailable")
                assert r.headers["retry-after"] == "7", (what, r.headers)
                assert "unavailable" in error["message"]
            r = await h.get("/readyz")
            assert r.status_code == 503 and r.json()["checks"][name].startswith("failed")
            assert (await h.get("/healthz")).status_code == 200
            server.start()
            await until(all_answer_as_usual)
        metrics = (await h.get("/metrics")).text
        for dependency in ("database", "live_state"):
            line = f'mumu_dependency_unavailable_total{{dependency="{dependency}"}}'
            assert line in metrics and f"{line} 0.0" not in metrics
        assert "Traceback" not in cloud.log()
    finally:
        await api.aclose()
        cloud.stop()
        redis.stop()
        pg.close()


async def test_signaling_through_an_outage_says_unavailable_and_recovers(tmp_path: Path) -> None:
    """Sockets that are open when PostgreSQL or Redis goes away stay open: what needs the
    missing server is answered with an ``error`` ``unavailable`` (never a silent drop), a new
    ``hello`` is closed with 1013 (try again), and all of it works again when the server is
    back, without a restart."""
    pg = PostgresServer().start()
    redis = RedisServer(tmp_path / "redis").start()
    env = {
        **RELAXED,
        "MUMU_DATABASE_URL": create_database(pg.url),
        "MUMU_REDIS_URL": redis.url,
        "MUMU_DB_POOL_TIMEOUT": "2",
    }
    cloud = CloudProcess(tmp_path / "cloud", env=env).start()
    api = ApiClient(cloud.url)
    try:
        owner = await api.account()
        camera = await api.owned_camera(owner)
        device = await sig.device(cloud.ws_url, camera.hello())
        viewer = await sig.viewer(cloud.ws_url, owner.token)
        for server in (redis, pg):
            server.stop()
            # the open viewer asks to watch: the answer says the cloud is in trouble
            await viewer.send("watch_request", {"device_id": camera.device_id})
            error = await viewer.error(timeout=30)
            assert error["code"] == "unavailable", error
            if server is redis:
                await device.send("heartbeat")
                assert (await device.error(timeout=30))["code"] == "unavailable"
            # a new socket cannot be checked: told to try again
            late = await sig.Client.connect(cloud.ws_url, "viewer")
            await late.send("hello", {"token": owner.token})
            assert (await late.error(timeout=30))["code"] == "unavailable"
            assert await late.closed(timeout=30) == 1013
            server.start()

            async def device_heard() -> bool:
                # its next heartbeat (every 30 s) puts back the presence a restarted Redis lost
                await device.send("heartbeat")
                reply = await device.recv(timeout=30)
                while reply["type"] not in ("heartbeat_ack", "error"):
                    reply = await device.recv(timeout=30)
                return reply["type"] == "heartbeat_ack"

            await until(device_heard)

            async def watch_works() -> bool:
                await viewer.send("watch_request", {"device_id": camera.device_id})
                reply = await viewer.recv(timeout=30)
                while reply["type"] not in ("watch_ready", "error"):
                    reply = await viewer.recv(timeout=30)
                return reply["type"] == "watch_ready"

            await until(watch_works)
            await device.recv("watch_request")
        assert "Traceback" not in cloud.log()
        for s in (device, viewer):
            await s.close()
    finally:
        await api.aclose()
        cloud.stop()
        redis.stop()
        pg.close()


async def test_an_exhausted_database_pool_answers_503_not_500(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    tight = {"MUMU_DB_POOL_SIZE": "1", "MUMU_DB_POOL_TIMEOUT": "1", "MUMU_RETRY_AFTER": "3"}
    for cloud in start_cloud(request, tmp_path, "scaled", **tight):
        api = ApiClient(cloud.url)
        account = await api.account()
        database_url = cloud.env["MUMU_DATABASE_URL"]
        # Hold every pooled connection: their queries wait behind a lock nobody releases yet.
        blocker = await asyncpg.connect(database_url)
        try:
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE sign_ins IN ACCESS EXCLUSIVE MODE")
            pending = [
                asyncio.create_task(api.http.get("/api/devices", headers=account.auth))
                for _ in range(8)
            ]
            done, _ = await asyncio.wait(pending, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            assert done, "requests beyond the pool are answered while the pool is held"
            early = [t.result() for t in done]
            for r in early:
                refused(r, 503, "unavailable")
                assert r.headers["retry-after"] == "3"
            await transaction.rollback()
            answers = [await t for t in pending]
            statuses = [r.status_code for r in answers]
            assert set(statuses) <= {200, 503} and 200 in statuses, statuses
        finally:
            await blocker.close()
            await api.aclose()
