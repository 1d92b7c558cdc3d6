"""Staged rollouts against a real cloud (embedded, and PostgreSQL + Redis): a simulated fleet of
200 devices on real sockets, the operator's API and commands, the owner's view, and the signed
repository's files served with byte ranges."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.updates.service import bucket
from release import keys
from release.repo import UpdateRepository
from tests import signaling_client as sig
from tests.cloud_fixtures import BACKENDS, start_cloud
from tests.cloud_process import Account, ApiClient, Camera, CloudProcess
from tests.operators import make_operator, operator_command
from tests.test_cloud_invariants import metric
from tests.update_fixtures import tiny_bundle, unread_body_size
from tests.verification import verify_emails_sync

OPERATOR = "operator@example.com"
#: In MUMU_OPERATORS, without an account: whoever signs up with it first must gain nothing.
LISTED = "ops-alias@example.com"
FLEET = 200
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("update-repo")
    repo = UpdateRepository.create(tmp / "repo", tmp / "keys")
    bundles = [
        tiny_bundle(tmp / "dist", v, arch=a, size=300_000)
        for v in ("1.1.0", "1.2.0")
        for a in ("aarch64", "x86_64")
    ]
    repo.add_bundles(
        bundles, keys.load(tmp / "keys/targets.key"), keys.load(tmp / "keys/online.key")
    )
    return tmp / "repo"


@pytest.fixture(scope="module", params=BACKENDS)
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, repo_dir: Path
) -> Iterator[CloudProcess]:
    yield from start_cloud(
        request,
        tmp_path_factory.mktemp("cloud"),
        request.param,
        MUMU_UPDATE_REPO_DIR=str(repo_dir),
        MUMU_OPERATORS=f"{OPERATOR},{LISTED}",  # grants nothing: see test_operator_rights
        MUMU_ROLLOUT_POLL="1",
        MUMU_UPDATE_DOWNLOADS_PER_ADDRESS="2",
        MUMU_UPDATE_DOWNLOADS="3",
    )


@pytest.fixture
async def api(cloud: CloudProcess) -> AsyncIterator[ApiClient]:
    client = ApiClient(cloud.url)
    yield client
    await client.aclose()


async def operator(api: ApiClient, cloud: CloudProcess) -> Account:
    """The operator's account: signed up, verified, granted with ``mumu-cloud operator add``."""
    r = await api.http.post("/api/auth/login", json={"email": OPERATOR, "password": "operator pw"})
    if r.status_code == 200:
        return Account(OPERATOR, "operator pw", "", r.json()["access_token"])
    account = await api.account(OPERATOR, "operator pw")
    await asyncio.to_thread(make_operator, cloud, OPERATOR)
    return account


def hello(camera: Camera, version: str | None = "1.0.0", arch: str = "x86_64") -> dict[str, Any]:
    message = camera.hello()
    message["payload"].update({"version": version, "arch": arch})
    return message


async def offers(
    devices: dict[str, sig.Client], expect: set[str], quiet: float = 0.5
) -> dict[str, dict[str, Any]]:
    """The update_offer each device got: the expected ones are awaited, the others get
    ``quiet`` seconds to show one they should not have."""

    async def one(device_id: str, client: sig.Client) -> dict[str, Any] | None:
        wait = 10.0 if device_id in expect else quiet
        try:
            return (await client.recv("update_offer", timeout=wait))["payload"]
        except TimeoutError:
            return None

    got = await asyncio.gather(*(one(d, c) for d, c in devices.items()))
    return {d: o for d, o in zip(devices, got, strict=True) if o is not None}


async def report(
    client: sig.Client, states: list[str], version: str, rollout: int, **kw: Any
) -> None:
    for seq, state in enumerate(states, start=1):
        payload = {"state": state, "version": version, "seq": seq, "rollout_id": rollout, **kw}
        await client.send("update_status", payload)


async def fleet_state(api: ApiClient, op: Account) -> dict[str, Any]:
    r = await api.http.get("/api/operator/updates", headers=op.auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_a_ten_percent_rollout_over_200_devices_grows_and_pauses_itself(
    cloud: CloudProcess, api: ApiClient
) -> None:
    op = await operator(api, cloud)
    cameras = await asyncio.gather(*(api.camera(f"sim {i}") for i in range(FLEET)))
    devices = {c.device_id: await sig.device(cloud.ws_url, hello(c)) for c in cameras}
    r = await api.http.post("/api/operator/releases", json={"version": "1.1.0"}, headers=op.auth)
    assert r.status_code == 201, r.text
    assert r.json()["arches"] == ["aarch64", "x86_64"]  # from the signed repository
    r = await api.http.post(
        "/api/operator/rollouts",
        json={"version": "1.1.0", "percentage": 10, "failure_threshold": 0.25, "min_sample": 8},
        headers=op.auth,
    )
    assert r.status_code == 201, r.text
    rollout = r.json()["id"]

    expected = {d for d in devices if bucket(rollout, d) < 1000}
    first = await offers(devices, expected)
    assert set(first) == expected  # membership is the stable hash, nothing else
    assert 8 <= len(first) <= 35, len(first)  # ~10 % of 200
    assert all(
        o == {"version": "1.1.0", "rollout_id": rollout, "window": None} for o in first.values()
    )
    for device_id in first:  # they all update fine
        await report(
            devices[device_id],
            ["downloading", "installed", "healthy", "committed"],
            "1.1.0",
            rollout,
        )

    async def committed() -> bool:
        found = (await fleet_state(api, op))["rollouts"][0]
        return bool(found["committed"] == len(first))

    await wait_for(committed)

    # raising the percentage only adds devices; the updated ones are not offered it again
    r = await api.http.patch(
        f"/api/operator/rollouts/{rollout}", json={"percentage": 50}, headers=op.auth
    )
    assert r.status_code == 200, r.text
    second = await offers(
        devices, {d for d in devices if bucket(rollout, d) < 5000 and d not in first}
    )
    assert set(second).isdisjoint(first)
    assert set(second) | set(first) == {d for d in devices if bucket(rollout, d) < 5000}
    lower = await api.http.patch(
        f"/api/operator/rollouts/{rollout}", json={"percentage": 20}, headers=op.auth
    )
    assert lower.status_code == 409

    # the new ones fail: once 8 have tried and more than 25 % failed, it pauses itself
    newcomers = sorted(second)
    failing = len(first)  # 50 % of those that tried
    assert len(newcomers) > failing + 3
    reason = "1.1.0 crashed 3 times after the switch (last exit: exited 1)"
    for device_id in newcomers[:failing]:
        await report(
            devices[device_id],
            ["downloading", "installed", "rolled_back"],
            "1.1.0",
            rollout,
            reason=reason,
        )
    waiting = newcomers[failing : failing + 3]
    for device_id in waiting:  # these did not try yet: waiting does not count
        await devices[device_id].send(
            "update_status",
            {
                "state": "waiting",
                "version": "1.1.0",
                "seq": 1,
                "rollout_id": rollout,
                "reason": "1 viewer",
            },
        )

    async def paused() -> bool:
        found = (await fleet_state(api, op))["rollouts"][0]
        return bool(found["state"] == "paused" and found["failed"] == failing)

    await wait_for(paused)
    state = (await fleet_state(api, op))["rollouts"][0]
    assert state["tried"] == len(first) + failing and state["failed"] == failing
    assert "paused by itself" in state["paused_reason"]
    assert state["reasons"] == {reason: failing}
    assert (await fleet_state(api, op))["versions"]["1.1.0"] == len(first)

    # paused: a device that comes back is not offered it
    quiet = newcomers[-1]
    await devices[quiet].close()
    devices[quiet] = await sig.device(
        cloud.ws_url, hello(next(c for c in cameras if c.device_id == quiet))
    )
    assert await offers({quiet: devices[quiet]}, set(), quiet=1.0) == {}
    # resumed by the operator: offered again, except to those that rolled it back
    r = await api.http.patch(
        f"/api/operator/rollouts/{rollout}", json={"state": "active"}, headers=op.auth
    )
    assert r.status_code == 200 and r.json()["paused_reason"] is None
    again = await offers(devices, {quiet})
    assert quiet in again and not set(again) & set(newcomers[:failing])
    for client in devices.values():
        await client.close()


async def test_operator_rights_are_granted_on_the_server_to_verified_accounts_only(
    cloud: CloudProcess, api: ApiClient
) -> None:
    """MUMU_OPERATORS grants nothing: a stranger who signs up first with a listed address is
    refused.  ``mumu-cloud operator add`` refuses a missing or unverified account, grants a
    verified one (200 at once), and ``remove`` takes the rights away at once."""
    listing = "/api/operator/updates"
    stranger = await api.account(LISTED, "first come 1")
    r = await api.http.get(listing, headers=stranger.auth)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"

    refused = await asyncio.to_thread(operator_command, cloud, "add", "nobody@example.com")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    refused = await asyncio.to_thread(operator_command, cloud, "add", LISTED)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert (await api.http.get(listing, headers=stranger.auth)).status_code == 403

    await asyncio.to_thread(verify_emails_sync, cloud, LISTED)
    assert (await api.http.get(listing, headers=stranger.auth)).status_code == 403
    added = await asyncio.to_thread(operator_command, cloud, "add", LISTED.upper())
    assert added.returncode == 0, added.stderr
    assert (await api.http.get(listing, headers=stranger.auth)).status_code == 200
    listed = await asyncio.to_thread(operator_command, cloud, "list")
    assert LISTED in listed.stdout

    removed = await asyncio.to_thread(operator_command, cloud, "remove", LISTED)
    assert removed.returncode == 0, removed.stderr
    r = await api.http.get(listing, headers=stranger.auth)
    assert r.status_code == 403, "removed at once"
    again = await asyncio.to_thread(operator_command, cloud, "remove", LISTED)
    assert again.returncode == 1

    # Deleting the account takes its grant with it: an account made later with the same
    # address (and verified) is not an operator until granted.
    await asyncio.to_thread(operator_command, cloud, "add", LISTED)
    r = await api.http.post(
        "/api/account/delete", json={"password": "first come 1"}, headers=stranger.auth
    )
    assert r.status_code == 204, r.text
    successor = await api.account(LISTED, "second come 2")
    await asyncio.to_thread(verify_emails_sync, cloud, LISTED)
    assert (await api.http.get(listing, headers=successor.auth)).status_code == 403


@pytest.mark.parametrize("cloud", ["embedded"], indirect=True)  # one code path
async def test_operators_only_and_clear_errors(cloud: CloudProcess, api: ApiClient) -> None:
    someone = await api.account()
    r = await api.http.get("/api/operator/updates", headers=someone.auth)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    op = await operator(api, cloud)
    for body, status in (
        ({"version": "9.9.9"}, 422),  # not in the signed repository
        ({"version": "1.2.0", "arches": ["mips"]}, 422),
        ({"version": "not a version"}, 422),
    ):
        r = await api.http.post("/api/operator/releases", json=body, headers=op.auth)
        assert r.status_code == status, (body, r.text)
    r = await api.http.post(
        "/api/operator/rollouts", json={"version": "7.0.0", "percentage": 5}, headers=op.auth
    )
    assert r.status_code == 404
    r = await api.http.patch(
        "/api/operator/rollouts/99999", json={"state": "paused"}, headers=op.auth
    )
    assert r.status_code == 404


async def next_update(viewer: sig.Client, wanted: Any) -> dict[str, Any]:
    while True:
        update: dict[str, Any] = (await viewer.recv("device_update"))["payload"]
        if wanted(update):
            return update


@pytest.mark.parametrize("cloud", ["embedded"], indirect=True)  # one code path
async def test_an_owner_sees_each_cameras_version_and_update_state(
    cloud: CloudProcess, api: ApiClient
) -> None:
    # (newer than any release of this module's rollouts: nothing is offered to it meanwhile)
    owner = await api.account()
    camera = await api.owned_camera(owner)
    viewer = await sig.viewer(cloud.ws_url, owner.token)
    device = await sig.device(cloud.ws_url, hello(camera, "9.0.0"))
    update = await next_update(viewer, lambda u: u.get("version") == "9.0.0")
    assert update["device_id"] == camera.device_id
    await device.send(
        "update_status",
        {"state": "downloading", "version": "9.1.0", "seq": 3, "progress": 0.4},
    )
    update = await next_update(viewer, lambda u: "state" in u)
    assert (update["state"], update["target"], update["progress"]) == ("downloading", "9.1.0", 0.4)
    # a late, older status is ignored
    await device.send("update_status", {"state": "waiting", "version": "9.1.0", "seq": 2})
    await device.send("heartbeat", {})
    await device.recv("heartbeat_ack")
    r = await api.http.get("/api/devices/updates", headers=owner.auth)
    assert r.status_code == 200
    (mine,) = r.json()["cameras"]
    assert (mine["version"], mine["state"], mine["progress"]) == ("9.0.0", "downloading", 0.4)
    # the owner's window goes with the next offer
    r = await api.http.put(
        f"/api/devices/{camera.device_id}/update-settings",
        json={"window": "02:00-05:00"},
        headers=owner.auth,
    )
    assert r.status_code == 200
    bad = await api.http.put(
        f"/api/devices/{camera.device_id}/update-settings",
        json={"window": "25:00-05:00"},
        headers=owner.auth,
    )
    assert bad.status_code == 422
    stranger = await api.account()
    r = await api.http.put(
        f"/api/devices/{camera.device_id}/update-settings",
        json={"window": None},
        headers=stranger.auth,
    )
    assert r.status_code == 404
    # an update_status from a viewer is not accepted
    await viewer.send("update_status", {"state": "failed", "version": "9.0.0", "seq": 1})
    assert (await viewer.error())["code"] == "unknown_type"
    await device.close()
    await viewer.close()


@pytest.mark.parametrize("cloud", ["embedded"], indirect=True)  # one code path
async def test_the_repository_is_served_with_byte_ranges(
    cloud: CloudProcess, repo_dir: Path
) -> None:
    target = next((repo_dir / "targets").iterdir())
    data = target.read_bytes()
    async with httpx.AsyncClient(base_url=cloud.url) as http:
        whole = await http.get(f"/updates/targets/{target.name}")
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes"
        part = await http.get(f"/updates/targets/{target.name}", headers={"Range": "bytes=1000-"})
        assert part.status_code == 206 and part.content == data[1000:]
        assert part.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        tail = await http.get(f"/updates/targets/{target.name}", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        beyond = await http.get(
            f"/updates/targets/{target.name}", headers={"Range": f"bytes={len(data)}-"}
        )
        assert beyond.status_code == 416
        meta = await http.get("/updates/metadata/timestamp.json")
        assert meta.status_code == 200 and meta.headers["cache-control"] == "no-cache"
        for bad in (
            "/updates/../keys/online.key",
            "/updates/metadata/../../keys/targets.key",
            "/updates/keys/online.key",
            "/updates/metadata/",
        ):
            r = await http.get(bad)
            assert r.status_code == 404, bad


@pytest.mark.parametrize("cloud", BACKENDS, indirect=True)
async def test_links_out_of_the_repository_serve_nothing(
    cloud: CloudProcess, repo_dir: Path, tmp_path: Path
) -> None:
    """A link placed in metadata/ or targets/ (to a file or a directory, relative or absolute)
    that points out of the repository, a FIFO, or a link to a file inside it: 404, and none of
    the outside file's bytes."""
    secret = b"the stored jwt secret " * 8
    outside = tmp_path / "jwt-secret"
    outside.write_bytes(secret)
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "mumu.db").write_bytes(secret)
    inside = next(p for p in (repo_dir / "targets").iterdir() if p.is_file())
    made: list[Path] = []

    def link(where: str, name: str, to: Path, relative: bool = False) -> str:
        path = repo_dir / where / name
        path.symlink_to(os.path.relpath(to, path.parent) if relative else to)
        made.append(path)
        return f"/updates/{where}/{name}"

    refused = [
        link("targets", "abs-file.tar", outside),
        link("metadata", "abs-file.json", outside),
        link("targets", "rel-file.tar", outside, relative=True),
        link("targets", "to-inside.tar", inside, relative=True),  # a link at all is not served
    ]
    for where in ("targets", "metadata"):
        link(where, "abs-dir", outside_dir)
        refused.append(f"/updates/{where}/abs-dir/mumu.db")
    link("targets", "rel-dir", outside_dir, relative=True)
    refused.append("/updates/targets/rel-dir/mumu.db")
    fifo = repo_dir / "targets" / "pipe.tar"
    os.mkfifo(fifo)
    made.append(fifo)
    refused.append("/updates/targets/pipe.tar")
    try:
        async with httpx.AsyncClient(base_url=cloud.url, timeout=10) as http:
            for url in refused:
                r = await http.get(url)
                assert r.status_code == 404, (url, r.status_code)
                assert b"jwt secret" not in r.content, url
            assert (await http.get(f"/updates/targets/{inside.name}")).status_code == 200
    finally:
        for path in made:
            path.unlink()


async def in_flight(cloud: CloudProcess) -> float:
    return await metric(cloud.url, "mumu_update_downloads_in_flight")


async def until_in_flight(cloud: CloudProcess, transfers: int) -> None:
    async def settled() -> bool:
        return await in_flight(cloud) == transfers

    await wait_for(settled)


@pytest.mark.parametrize("cloud", ["embedded"], indirect=True)  # one code path
async def test_repository_transfers_are_bounded_per_address_and_in_all(
    cloud: CloudProcess, repo_dir: Path
) -> None:
    """Anybody may download from /updates/: this cloud lets one address hold 2 transfers and
    everybody 3.  A transfer holds its slot while its body is sent — a body that the client does
    not read, larger than loopback's socket buffers take — and gives it back when the client
    hangs up or has read it all."""
    big = repo_dir / "targets" / "transfer-bounds-test.tar"
    data = bytes(unread_body_size(hops=1))
    big.write_bytes(data)
    try:
        await _bounded_transfers(cloud, f"/updates/targets/{big.name}", data)
    finally:
        big.unlink()


async def _bounded_transfers(cloud: CloudProcess, url: str, data: bytes) -> None:
    def from_address(host: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=host)
        return httpx.AsyncClient(base_url=cloud.url, transport=transport, timeout=30)

    async with (
        from_address("127.0.0.1") as first,
        from_address("127.0.0.2") as second,
        httpx.AsyncClient(base_url=cloud.url, timeout=30) as http,
        contextlib.AsyncExitStack() as held,  # the transfers held open, closed first
    ):
        one = await held.enter_async_context(first.stream("GET", url))
        two = await held.enter_async_context(first.stream("GET", url))
        assert one.status_code == two.status_code == 200
        refused = await first.get(url)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_downloads"
        assert int(refused.headers["retry-after"]) > 0

        three = await held.enter_async_context(second.stream("GET", url))
        assert three.status_code == 200
        full = await second.get(url)
        assert full.status_code == 503, full.text
        assert full.json()["error"]["code"] == "busy"
        assert int(full.headers["retry-after"]) > 0
        assert await in_flight(cloud) == 3
        metrics = (await http.get("/metrics")).text
        assert 'mumu_http_refusals_total{code="too_many_downloads",status="429"}' in metrics

        await one.aclose()  # hangs up mid-body: its slot comes back
        await until_in_flight(cloud, 2)
        resumed = await first.get(url, headers={"Range": f"bytes={len(data) - 1000}-"})
        assert resumed.status_code == 206 and resumed.content == data[-1000:]

        assert len(await two.aread()) == len(data)  # read to the end: its slot comes back
        await until_in_flight(cloud, 1)
    await until_in_flight(cloud, 0)


@pytest.mark.parametrize("cloud", ["embedded"], indirect=True)  # the commands are one code path
def test_the_operator_commands(cloud: CloudProcess, repo_dir: Path) -> None:
    env = {**os.environ, **cloud.env, "MUMU_DATA_DIR": str(cloud.data_dir)}

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BIN / "mumu-cloud", *args], env=env, capture_output=True, text=True, timeout=120
        )

    added = command("release", "add", "1.2.0", "--notes", "faster keyframes")
    assert added.returncode == 0 or "exists already" in added.stderr, added.stderr
    assert "1.2.0" in command("release", "list").stdout
    started = command("rollout", "start", "1.2.0", "--percent", "5", "--channel", "beta")
    assert started.returncode == 0, started.stderr
    rollout_id = started.stdout.split()[1].rstrip(":")
    assert command("rollout", "set", rollout_id, "--percent", "25").returncode == 0
    lowered = command("rollout", "set", rollout_id, "--percent", "1")
    assert lowered.returncode == 1 and "never lowered" in lowered.stderr
    assert command("rollout", "pause", rollout_id).returncode == 0
    listed = command("rollout", "list").stdout
    assert '"state": "paused"' in listed and '"channel": "beta"' in listed
    missing = command("rollout", "start", "8.8.8", "--percent", "5")
    assert missing.returncode == 1 and "release add" in missing.stderr
