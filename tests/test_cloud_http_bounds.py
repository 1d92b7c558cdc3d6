"""HTTP bounds when the cloud is reached directly: slow headers and bodies, connections per
address, body size, and whose X-Forwarded-For is believed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from device.signaling import TryAgain, websocket_connect
from tests.cloud_fixtures import start_cloud
from tests.cloud_process import CloudProcess
from tests.test_cloud_invariants import until


@pytest.fixture(scope="module")
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudProcess]:
    yield from start_cloud(
        request,
        tmp_path_factory.mktemp("cloud"),
        "embedded",
        MUMU_HTTP_HEADER_TIMEOUT="1",
        MUMU_HTTP_BODY_TIMEOUT="1",
        MUMU_LOGIN_RATE_PER_ADDRESS="3/minute",
    )


@contextlib.asynccontextmanager
async def raw(
    cloud: CloudProcess,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(cloud.host, cloud.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader, timeout: float = 15.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(timeout):
        return await reader.read()


async def test_slow_headers_are_cut_off(cloud: CloudProcess) -> None:
    async with raw(cloud) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and the rest never comes
        await writer.drain()
        answer = await until_closed(reader)
        assert answer.startswith(b"HTTP/1.1 408"), answer
    async with raw(cloud) as (reader, _):  # says nothing at all
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 408")
    async with raw(cloud) as (reader, writer):  # one byte now and then: still cut off
        closed = asyncio.create_task(until_closed(reader))
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            done, _ = await asyncio.wait({closed}, timeout=0.2)
            if done:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
        assert (await closed).startswith(b"HTTP/1.1 408")


async def test_slow_bodies_are_cut_off(cloud: CloudProcess) -> None:
    async with raw(cloud) as (reader, writer):
        writer.write(
            b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"email": '
        )
        await writer.drain()
        await until_closed(reader)  # closed, whatever it managed to say
    async with httpx.AsyncClient(base_url=cloud.url) as http:  # and the server is fine
        assert (await http.get("/healthz")).status_code == 200

        # counted as the client's doing (once the handler has seen the hang-up), never as a
        # failure of the server
        async def counted() -> bool:
            return 'code="client_disconnected",status="499"}' in (await http.get("/metrics")).text

        await until(counted, 15, "the hang-up counted")
        assert 'status="500"' not in (await http.get("/metrics")).text


async def test_slow_connections_per_address_are_bounded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for cloud in start_cloud(
        request,
        tmp_path_factory.mktemp("slow"),
        "embedded",
        MUMU_HTTP_HEADER_TIMEOUT="30",
        MUMU_HTTP_CONNECTIONS_PER_ADDRESS="6",
    ):
        await _slow_connections_are_bounded(cloud)


async def _slow_connections_are_bounded(cloud: CloudProcess) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # a burst as large as the bound is served...
        async with httpx.AsyncClient(base_url=cloud.url) as http:
            burst = await asyncio.gather(*(http.get("/healthz") for _ in range(6)))
        assert {r.status_code for r in burst} == {200}
        # ...and sockets still sending their head count against their address from accept
        held = [await stack.enter_async_context(raw(cloud)) for _ in range(6)]
        async with raw(cloud) as (reader, _):
            answer = await until_closed(reader)
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower()
        # the agent's connect factory takes it for what it is: come back in a second
        with pytest.raises(TryAgain) as refused:
            async with websocket_connect()(f"{cloud.ws_url}/ws/device"):
                pass
        assert refused.value.retry_after_s == 1.0
        assert len(held) == 6
    async with httpx.AsyncClient(base_url=cloud.url) as http:  # released: served again
        assert (await http.get("/healthz")).status_code == 200
        metrics = (await http.get("/metrics")).text
    assert 'mumu_http_connections_closed_total{reason="per_address"}' in metrics
    assert 'mumu_http_connections_closed_total{reason="header_timeout"}' in metrics


async def test_a_burst_whose_heads_have_arrived_is_not_refused_but_silence_still_is(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The event loop accepts a whole backlog before it reads any of it (a NAT's cameras
    coming back after a restart): a connection counts as waiting only until its head has
    *arrived*, so a burst beyond the bound whose heads are in is served, and connections whose
    heads arrived while counted make room; silent ones beyond the bound are still refused."""
    bound = 6
    for cloud in start_cloud(
        request,
        tmp_path_factory.mktemp("burst"),
        "embedded",
        MUMU_HTTP_HEADER_TIMEOUT="30",
        MUMU_HTTP_CONNECTIONS_PER_ADDRESS=str(bound),
    ):
        await _burst_is_served(cloud, bound)


async def _burst_is_served(cloud: CloudProcess, bound: int) -> None:
    assert cloud.proc is not None
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    refused = 'mumu_http_connections_closed_total{reason="per_address"}'

    async def refusals() -> float:  # asked from another address: 127.0.0.1 is full
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=cloud.url, transport=transport) as http:
            text = (await http.get("/metrics")).text
        found = [line for line in text.splitlines() if line.startswith(refused + " ")]
        return float(found[0].split()[1]) if found else 0.0

    before = await refusals()
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(raw(cloud)) for _ in range(bound)]

        async def all_counted() -> bool:  # the held ones were accepted and are counted
            async with raw(cloud) as (reader, _):
                return (await until_closed(reader)).startswith(b"HTTP/1.1 503")

        await until(all_counted, 15, "the held connections counted")
        before = await refusals()
        os.kill(cloud.proc.pid, signal.SIGSTOP)  # its loop busy: the backlog fills
        try:
            burst = [await stack.enter_async_context(raw(cloud)) for _ in range(3 * bound)]
            for _, writer in [*burst, *held[:4]]:  # heads arrive, none read yet
                writer.write(head)
                await writer.drain()
            silent = [await stack.enter_async_context(raw(cloud)) for _ in range(4)]
            partial = await stack.enter_async_context(raw(cloud))
            partial[1].write(b"GET /healthz HTTP/1.1\r\n")  # ...and the rest never comes
            await partial[1].drain()
        finally:
            os.kill(cloud.proc.pid, signal.SIGCONT)
        for reader, _ in [*burst, *held[:4]]:
            async with asyncio.timeout(15):
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")

        # two held ones still silent: four of the five newcomers fit, one is refused
        async def answer(reader: asyncio.StreamReader) -> bytes:
            try:
                return await until_closed(reader, 40)
            except ConnectionResetError:  # refused with bytes of its own left unread
                return b"reset"

        closing = [asyncio.create_task(answer(r)) for r, _ in [*silent, partial]]
        done, waiting = await asyncio.wait(closing, return_when=asyncio.FIRST_COMPLETED)
        assert [t.result()[:12] for t in done] in ([b"HTTP/1.1 503"], [b"reset"])
        assert await refusals() - before == 1 and len(waiting) == 4
        for task in waiting:
            task.cancel()


async def test_oversized_bodies_are_refused(cloud: CloudProcess) -> None:
    async with httpx.AsyncClient(base_url=cloud.url) as http:
        big = {"email": "a@example.com", "password": "x" * 200_000}
        response = await http.post("/api/auth/login", json=big)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"


async def test_x_forwarded_for_is_not_believed_by_default(cloud: CloudProcess) -> None:
    """Any local forwarder passing the header would otherwise pick the address that every
    per-address limit counts."""
    # (timeout: a wrong password is still checked, by argon2 at the lowest CPU priority)
    async with httpx.AsyncClient(base_url=cloud.url, timeout=90) as http:
        codes = []
        for i in range(4):
            r = await http.post(
                "/api/auth/login",
                json={"email": f"nobody{i}@example.com", "password": "wrong password"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            )
            codes.append(r.status_code)
    assert codes == [401, 401, 401, 429]


async def test_trusted_proxies_forward_the_client_address(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for cloud in start_cloud(
        request,
        tmp_path_factory.mktemp("proxied"),
        "embedded",
        MUMU_TRUSTED_PROXIES="127.0.0.1",
        MUMU_LOGIN_RATE_PER_ADDRESS="3/minute",
    ):
        async with httpx.AsyncClient(base_url=cloud.url, timeout=90) as http:

            async def login(address: str, n: int) -> int:
                r = await http.post(
                    "/api/auth/login",
                    json={"email": f"nobody{n}@example.com", "password": "wrong password"},
                    headers={"X-Forwarded-For": address},
                )
                return r.status_code

            spread = [await login(f"198.51.100.{i}", i) for i in range(4)]
            same = [await login("203.0.113.9", 10 + i) for i in range(4)]
        assert spread == [401] * 4
        assert same == [401, 401, 401, 429]
