"""Pairing that cannot be abused, against a real ``mumu-cloud serve`` on both backends: claim
links previewed before they pair, the global budget of wrong codes (which never locks out a
person at the camera), camera registrations per address, and factory reset retiring a camera."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests import signaling_client as sig
from tests.cloud_fixtures import BACKENDS, start_cloud
from tests.cloud_process import Account, ApiClient, CloudProcess


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


def from_address(cloud: CloudProcess, address: str) -> httpx.AsyncClient:
    """A client whose requests come from ``address`` (any 127.0.0.x works on loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=cloud.url, transport=transport, timeout=30.0)


async def test_a_claim_link_is_previewed_before_it_pairs(
    cloud: CloudProcess, api: ApiClient
) -> None:
    h = api.http
    account, stranger = await api.account(), await api.account()
    r = await h.post("/api/devices/register", json={"name": "Garage", "model": "Pi Zero 2 W"})
    camera = r.json()
    code = (
        await h.post(
            "/api/pairing/generate",
            params={"device_id": camera["device_id"]},
            headers={"authorization": f"Bearer {camera['device_token']}"},
        )
    ).json()
    token = code["claim_url"].rsplit("/", 1)[1]

    r = await h.post("/api/pairing/preview", json={"claim_token": token}, headers=account.auth)
    assert r.status_code == 200, r.text
    preview = r.json()
    assert (preview["name"], preview["model"]) == ("Garage", "Pi Zero 2 W")
    assert preview["expires_at"] == pytest.approx(code["expires_at"])
    assert set(preview) == {"name", "model", "expires_at"}, "no id, no owner, nothing else"
    # Previewing pairs nothing, and may be repeated.
    assert (await h.get("/api/devices", headers=account.auth)).json()["devices"] == []
    r = await h.post("/api/pairing/preview", json={"claim_token": token}, headers=stranger.auth)
    assert r.status_code == 200

    assert (await h.post("/api/pairing/preview", json={"claim_token": token})).status_code == 401
    for bad in ({"claim_token": "nope"}, {"code": code["code"]}, {}):
        r = await h.post("/api/pairing/preview", json=bad, headers=account.auth)
        assert r.status_code in (404, 422), (bad, r.text)
        assert r.json()["error"]["message"]

    r = await h.post("/api/devices/pair", json={"claim_token": token}, headers=account.auth)
    assert r.status_code == 200 and r.json()["device"]["name"] == "Garage"
    r = await h.post("/api/pairing/preview", json={"claim_token": token}, headers=stranger.auth)
    assert r.status_code == 404, "used up with the pairing"


@pytest.mark.parametrize("kind", BACKENDS)
async def test_the_global_code_budget_never_locks_out_the_person_at_the_camera(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for cloud in start_cloud(request, tmp_path, kind, MUMU_PAIR_CODE_BUDGET="3/minute"):
        api = ApiClient(cloud.url)
        home = from_address(cloud, "127.0.0.1")  # the camera's socket comes from here too
        elsewhere = from_address(cloud, "127.0.0.2")
        try:
            owner, attacker = await api.account(), await api.account()
            camera = await api.camera("Porch")
            device = await sig.device(cloud.ws_url, camera.hello())
            code = (await api.code(camera))["code"]
            wrong = f"{(int(code) + 1) % 1_000_000:06d}"

            for n in range(3):  # the budget: three codes tried from outside the camera's network
                guess = f"{(int(code) + 2 + n) % 1_000_000:06d}"
                r = await elsewhere.post(
                    "/api/devices/pair", json={"code": guess}, headers=attacker.auth
                )
                assert r.status_code == 404, r.text

            # Spent: from another network, a right and a wrong code get the same answer.
            answers = [
                await elsewhere.post("/api/devices/pair", json={"code": c}, headers=h)
                for c, h in ((code, attacker.auth), (wrong, attacker.auth), (code, owner.auth))
            ]
            for r in answers:
                assert r.status_code == 429, r.text
                assert r.json() == answers[0].json()
                assert r.json()["error"]["code"] == "code_pairing_paused"
                assert "QR code" in r.json()["error"]["message"]
                assert 1 <= int(r.headers["retry-after"]) <= 60
            # A wrong code from the camera's network is told the same.
            r = await home.post("/api/devices/pair", json={"code": wrong}, headers=owner.auth)
            assert r.status_code == 429 and r.json() == answers[0].json()

            # The person at the camera, on its network, pairs with the right code.
            r = await home.post("/api/devices/pair", json={"code": code}, headers=owner.auth)
            assert r.status_code == 200, r.text
            assert r.json()["device"]["device_id"] == camera.device_id
            assert (await device.recv("pairing_status"))["payload"] == {"paired": True}

            # The QR code's claim link works from anywhere meanwhile.
            other = await api.camera("Shed")
            token = (await api.code(other))["claim_url"].rsplit("/", 1)[1]
            r = await elsewhere.post(
                "/api/devices/pair", json={"claim_token": token}, headers=attacker.auth
            )
            assert r.status_code == 200, r.text
            metrics = (await api.http.get("/metrics")).text
            assert 'mumu_pairing_attempts_total{outcome="paused"} 4.0' in metrics
            await device.close()
        finally:
            for client in (home, elsewhere):
                await client.aclose()
            await api.aclose()


@pytest.mark.parametrize("kind", ["embedded"])
async def test_camera_registrations_and_sign_ups_are_limited_per_address(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    limits = {
        "MUMU_DEVICE_REGISTER_RATE_PER_ADDRESS": "3/hour",
        "MUMU_REGISTER_RATE_PER_ADDRESS": "2/hour",
    }
    for cloud in start_cloud(request, tmp_path, kind, **limits):
        one, two = from_address(cloud, "127.0.0.5"), from_address(cloud, "127.0.0.6")
        try:
            for _ in range(3):
                assert (await one.post("/api/devices/register")).status_code == 201
            r = await one.post("/api/devices/register")
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["retry-after"]) > 60
            assert (await two.post("/api/devices/register")).status_code == 201
            # Sign-ups too.
            for n in range(3):
                r = await one.post(
                    "/api/auth/register",
                    json={"email": f"n{n}-{id(one)}@example.com", "password": "long enough 1"},
                )
                assert r.status_code == (201 if n < 2 else 429), r.text
            metrics = (await one.get("/metrics")).text
            assert 'mumu_rate_limited_total{limit="device-register-addr"} 1.0' in metrics
            assert 'mumu_rate_limited_total{limit="register-addr"} 1.0' in metrics
        finally:
            await one.aclose()
            await two.aclose()


async def test_a_factory_reset_retires_the_camera_for_its_previous_owner(
    cloud: CloudProcess, api: ApiClient
) -> None:
    h = api.http
    owner = await api.account()
    camera = await api.owned_camera(owner, "Nursery")
    device = await sig.device(cloud.ws_url, camera.hello())
    viewer = await sig.viewer(cloud.ws_url, owner.token)
    await viewer.send("watch_request", {"device_id": camera.device_id})
    session_id = (await viewer.recv("watch_ready"))["payload"]["session_id"]
    await device.recv("watch_request")

    url = "/api/devices/retire"
    params = {"device_id": camera.device_id}
    assert (await h.post(url, params=params)).status_code == 401
    r = await h.post(url, params=params, headers={"authorization": "Bearer wrong"})
    assert r.status_code == 403
    assert (await h.post(url, params=params, headers=owner.auth)).status_code == 403
    r = await h.post(url, params=params, headers=camera.auth)
    assert r.status_code == 204, r.text

    ended = (await viewer.recv("watch_ended"))["payload"]
    assert ended == {"session_id": session_id, "reason": "device_unpaired"}
    assert await device.closed() == 4409, "its socket is closed"
    assert (await h.get("/api/devices", headers=owner.auth)).json()["devices"] == []
    await viewer.send("watch_request", {"device_id": camera.device_id})
    assert (await viewer.error())["code"] == "forbidden"
    # Its old credentials are refused everywhere; retiring again is harmless.
    refused = await sig.Client.connect(cloud.ws_url, "device")
    await refused.send_raw(json.dumps(camera.hello()))
    assert (await refused.error())["code"] == "not_authenticated"
    r = await h.post(
        "/api/pairing/generate", params={"device_id": camera.device_id}, headers=camera.auth
    )
    assert r.status_code == 403
    assert (await h.post(url, params=params, headers=camera.auth)).status_code == 204
    r = await h.delete(f"/api/devices/{camera.device_id}", headers=owner.auth)
    assert r.status_code == 404
    metrics = (await h.get("/metrics")).text
    assert "mumu_devices_retired_total 1.0" in metrics
    await viewer.close()


async def test_session_history_belongs_to_the_current_pairing(
    cloud: CloudProcess, api: ApiClient
) -> None:
    first, second = await api.account(), await api.account()
    camera = await api.owned_camera(first)
    device = await sig.device(cloud.ws_url, camera.hello())
    viewer = await sig.viewer(cloud.ws_url, first.token)
    await viewer.send("watch_request", {"device_id": camera.device_id})
    await viewer.recv("watch_ready")
    url = f"/api/devices/{camera.device_id}"
    assert len((await api.http.get(f"{url}/sessions", headers=first.auth)).json()["sessions"]) == 1
    assert (await api.http.delete(url, headers=first.auth)).status_code == 204
    await api.pair(second, camera)
    r = await api.http.get(f"{url}/sessions", headers=second.auth)
    assert r.json() == {"sessions": []}, "the previous owner's viewing is not the new owner's"
    await viewer.close()
    await device.close()


async def test_a_code_the_camera_replaced_says_it_expired(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """A person who read the code, and types it after the camera showed a new one, is told it
    expired (the next step: the new code), not that it is wrong."""
    h = api.http
    person = await api.account()
    camera = await api.camera("Porch")
    first = await api.code(camera)
    second = await api.code(camera)
    token = first["claim_url"].rsplit("/", 1)[1]
    for body in ({"code": first["code"]}, {"claim_token": token}):
        r = await h.post("/api/devices/pair", json=body, headers=person.auth)
        assert (r.status_code, r.json()["error"]["code"]) == (410, "code_expired"), r.text
    r = await h.post("/api/devices/pair", json={"code": second["code"]}, headers=person.auth)
    assert r.status_code == 200, r.text


async def test_a_used_code_or_link_tells_its_owner_and_nobody_else(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """The owner who enters a used code or reopens a used claim link learns the camera is on
    their account already (the app offers Watch); anybody else gets the wrong-code answer."""
    h = api.http
    owner, stranger = await api.account(), await api.account()
    camera = await api.camera("Porch")
    code = await api.code(camera)
    token = code["claim_url"].rsplit("/", 1)[1]
    r = await h.post("/api/devices/pair", json={"code": code["code"]}, headers=owner.auth)
    assert r.status_code == 200, r.text

    r = await h.post("/api/devices/pair", json={"code": code["code"]}, headers=owner.auth)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "already_yours"), r.text
    r = await h.post("/api/devices/pair", json={"claim_token": token}, headers=owner.auth)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "already_yours"), r.text
    r = await h.post("/api/pairing/preview", json={"claim_token": token}, headers=owner.auth)
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["already_yours"] is True and preview["device_id"] == camera.device_id
    assert preview["name"] == "Porch"

    for body in ({"code": code["code"]}, {"claim_token": token}):
        r = await h.post("/api/devices/pair", json=body, headers=stranger.auth)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "invalid_code"), r.text
    r = await h.post("/api/pairing/preview", json={"claim_token": token}, headers=stranger.auth)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "invalid_code"), r.text
    listed = (await h.get("/api/devices", headers=owner.auth)).json()["devices"]
    assert [d["device_id"] for d in listed] == [camera.device_id]

    # Unpaired, the old code means nothing any more, to its old owner either.
    assert (
        await h.delete(f"/api/devices/{camera.device_id}", headers=owner.auth)
    ).status_code == 204
    r = await h.post("/api/devices/pair", json={"code": code["code"]}, headers=owner.auth)
    assert r.status_code in (404, 410), r.text
    r = await h.post("/api/pairing/preview", json={"claim_token": token}, headers=owner.auth)
    assert r.status_code in (404, 410), r.text


async def test_an_owners_name_for_a_camera_does_not_reach_the_next_owner(
    cloud: CloudProcess, api: ApiClient
) -> None:
    h = api.http
    first, second, third = await api.account(), await api.account(), await api.account()
    camera = await api.owned_camera(first, "Garage")
    r = await h.patch(
        f"/api/devices/{camera.device_id}", json={"name": "Anna's bedroom"}, headers=first.auth
    )
    assert r.status_code == 200, r.text
    assert (
        await h.delete(f"/api/devices/{camera.device_id}", headers=first.auth)
    ).status_code == 204

    code = (await api.code(camera))["code"]
    token = (await api.code(camera))["claim_url"].rsplit("/", 1)[1]
    r = await h.post("/api/pairing/preview", json={"claim_token": token}, headers=second.auth)
    assert r.json()["name"] == f"Camera {camera.device_id[:6]}", r.text
    del code
    r = await h.post("/api/devices/pair", json={"claim_token": token}, headers=second.auth)
    assert r.json()["device"]["name"] == f"Camera {camera.device_id[:6]}", r.text

    # An account deleted with its cameras: the same.
    r = await h.patch(
        f"/api/devices/{camera.device_id}", json={"name": "Second's study"}, headers=second.auth
    )
    assert r.status_code == 200, r.text
    r = await h.post("/api/account/delete", json={"password": second.password}, headers=second.auth)
    assert r.status_code == 204, r.text
    await api.pair(third, camera)
    listed = (await h.get("/api/devices", headers=third.auth)).json()["devices"]
    assert [d["name"] for d in listed] == [f"Camera {camera.device_id[:6]}"]


async def test_a_camera_keeps_its_name_when_its_owner_pairs_it_again(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """Unpaired and paired again by the same owner, a camera has the name that owner gave it;
    paired by anybody else it has the default name, and the former one is forgotten."""
    h = api.http
    owner, other = await api.account(), await api.account()
    camera = await api.owned_camera(owner, "Garage")
    default = f"Camera {camera.device_id[:6]}"
    url = f"/api/devices/{camera.device_id}"
    r = await h.patch(url, json={"name": "Anna's bedroom"}, headers=owner.auth)
    assert r.status_code == 200, r.text

    async def names(account: Account) -> list[str]:
        r = await h.get("/api/devices", headers=account.auth)
        return [d["name"] for d in r.json()["devices"]]

    assert (await h.delete(url, headers=owner.auth)).status_code == 204
    token = (await api.code(camera))["claim_url"].rsplit("/", 1)[1]
    r = await h.post("/api/pairing/preview", json={"claim_token": token}, headers=other.auth)
    assert r.json()["name"] == default, "the preview does not tell a stranger the old name"
    r = await h.post("/api/devices/pair", json={"claim_token": token}, headers=owner.auth)
    assert r.json()["device"]["name"] == "Anna's bedroom", r.text
    assert await names(owner) == ["Anna's bedroom"]

    # Another owner in between: the default name, and the first owner's is gone for good.
    assert (await h.delete(url, headers=owner.auth)).status_code == 204
    await api.pair(other, camera)
    assert await names(other) == [default]
    assert (await h.delete(url, headers=other.auth)).status_code == 204
    await api.pair(owner, camera)
    assert await names(owner) == [default]

    # An account deleted while its camera was unpaired leaves no name behind.
    r = await h.patch(url, json={"name": "Porch"}, headers=owner.auth)
    assert r.status_code == 200, r.text
    assert (await h.delete(url, headers=owner.auth)).status_code == 204
    r = await h.post("/api/account/delete", json={"password": owner.password}, headers=owner.auth)
    assert r.status_code == 204, r.text
    await api.pair(other, camera)
    assert await names(other) == [default]
