"""coturn with the repository's config: REST credentials work, the relay reaches public peers and
refuses private, loopback, metadata and multicast ones, and allocations are bounded per account.

Checked with a minimal TURN client (``tests.turn_client``) so that what is asserted is coturn's
own answer.  CreatePermission sends no traffic, so permission to a public address can be checked
on a machine with no route to it.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterator

import pytest

from cloud.turn import ice_servers
from tests.browser import COTURN_CONF, Coturn, coturn_server, turn_credentials
from tests.turn_client import TurnClient

PUBLIC_PEERS = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2001:4860:4860::8888"]


def denied_ranges() -> list[tuple[str, str]]:
    """Every ``denied-peer-ip`` of the shipped config as (first, last) address."""
    ranges = []
    for value in re.findall(r"^denied-peer-ip=(\S+)$", COTURN_CONF.read_text(), flags=re.M):
        first, _, last = value.partition("-")
        ranges.append((first, last or first))
    return ranges


def permit(coturn: Coturn, peer: str) -> int:
    """Allocate (an IPv6 relay for an IPv6 peer) and ask permission for ``peer``.  A user of
    its own each time: a released allocation counts against the user's quota for a while."""
    v6 = ipaddress.ip_address(peer).version == 6
    client = TurnClient(coturn.port, "::1" if v6 else "127.0.0.1")
    user = f"viewer-{uuid.uuid4().hex}"
    try:
        assert client.allocate(*turn_credentials(coturn.secret, user), ipv6_relay=v6) == 200
        return client.permit(peer)
    finally:
        client.close()


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    """The config plus the one-machine test overrides (loopback 127.0.0.1 allowed)."""
    with coturn_server("turn-test-secret") as server:
        yield server


@pytest.fixture(scope="module")
def shipped() -> Iterator[Coturn]:
    """The config exactly as shipped (only where it listens and relays changes)."""
    with coturn_server("turn-test-secret", as_shipped=True) as server:
        yield server


def test_rest_credentials_allocate_and_wrong_ones_do_not(coturn: Coturn) -> None:
    username, password = turn_credentials(coturn.secret, "viewer-1")
    client = TurnClient(coturn.port)
    try:
        assert client.allocate(username, password) == 200
    finally:
        client.close()
    for bad_user, bad_password in (
        (username, turn_credentials("another secret", "viewer-1")[1]),
        turn_credentials(coturn.secret, "viewer-1", ttl_s=-60),  # expired
    ):
        client = TurnClient(coturn.port)
        try:
            assert client.allocate(bad_user, bad_password) == 401
        finally:
            client.close()


@pytest.mark.parametrize("peer", PUBLIC_PEERS)
def test_shipped_config_relays_to_public_peers(shipped: Coturn, peer: str) -> None:
    """A range that starts at ``::`` once made coturn refuse every IPv4 peer: relayed video
    failed in production while the tests (with their loopback overrides) passed."""
    assert permit(shipped, peer) == 200


@pytest.mark.parametrize(
    "peer",
    sorted(
        {address for pair in denied_ranges() for address in pair}
        | {"::", "::1", "127.0.0.1", "::127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"}
    ),
)
def test_shipped_config_refuses_every_denied_range(shipped: Coturn, peer: str) -> None:
    assert permit(shipped, peer) == 403


def test_shipped_config_was_accepted_and_keeps_its_hardening(shipped: Coturn) -> None:
    text = COTURN_CONF.read_text()
    assert "denied-peer-ip=127.0.0.0-127.255.255.255" in text
    assert "allowed-peer-ip" not in text.replace("`allowed-peer-ip", "")
    assert "\nallow-loopback-peers" not in text
    for line in ("use-auth-secret", "no-cli", "no-tlsv1", "no-tlsv1_1", "no-multicast-peers"):
        assert f"\n{line}\n" in text, line
    for first, _ in denied_ranges():
        # coturn reads a range that starts at "::" as covering all of IPv4 (coturn 4.6)
        assert ipaddress.ip_address(first) != ipaddress.ip_address("::"), first
    assert "Bad configuration" not in shipped.log(), shipped.log()


def test_the_test_overrides_open_only_127_0_0_1(coturn: Coturn) -> None:
    assert permit(coturn, "127.0.0.1") == 200
    assert permit(coturn, "127.0.0.2") == 403
    assert permit(coturn, "10.1.2.3") == 403


def test_allocations_are_bounded_per_account(shipped: Coturn) -> None:
    """coturn's user-quota counts the allocations of a REST user id (the part after the
    expiry), whatever the expiry: each account (and each camera) has ``user-quota`` relays at
    most, however many credentials the cloud hands it."""
    quota = int(re.search(r"^user-quota=(\d+)$", COTURN_CONF.read_text(), flags=re.M)[1])  # type: ignore[index]
    clients: list[TurnClient] = []

    def allocate(ident: str, now: float) -> int:
        [server] = ice_servers(
            stun_urls=(),
            turn_urls=("turn:127.0.0.1",),
            turn_secret=shipped.secret,
            ttl_s=600,
            ident=ident,
            now=now,
        )
        assert server.username is not None and server.credential is not None
        client = TurnClient(shipped.port)
        clients.append(client)
        return client.allocate(server.username, server.credential)

    try:
        # credentials minted at different times (different expiries) for one account
        results = [allocate("account-a", 1_900_000_000 + i) for i in range(quota)]
        assert results == [200] * quota
        assert allocate("account-a", 1_900_000_500) == 486  # Allocation Quota Reached
        assert allocate("account-b", 1_900_000_000) == 200
    finally:
        for client in clients:
            client.close()
