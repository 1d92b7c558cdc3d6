"""coturn with the repository's config: REST credentials work, and the relay refuses to reach
private, metadata and multicast addresses (the test overrides only open 127.0.0.1).

A minimal TURN client over UDP (RFC 5766 Allocate and CreatePermission with long-term
credentials), so that what is checked is coturn's answer itself, not a browser's summary.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.browser import COTURN_CONF, Coturn, coturn_server, turn_credentials

MAGIC = 0x2112A442
ALLOCATE, CREATE_PERMISSION = 0x0003, 0x0008
SUCCESS, ERROR = 0x0100, 0x0110
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0006, 0x0008, 0x0009
XOR_PEER_ADDRESS, REALM, NONCE, REQUESTED_TRANSPORT = 0x0012, 0x0014, 0x0015, 0x0019


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def xor_peer(ip: str, port: int = 9) -> bytes:
    packed = socket.inet_aton(ip)
    xored = bytes(a ^ b for a, b in zip(packed, MAGIC.to_bytes(4, "big"), strict=True))
    return struct.pack("!BBH", 0, 1, port ^ (MAGIC >> 16)) + xored


class TurnClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.key = b""
        self.auth: list[bytes] = []

    def request(self, method: int, attrs: list[bytes]) -> tuple[int, dict[int, bytes]]:
        body = b"".join(attrs + self.auth)
        tid = os.urandom(12)
        if self.key:
            # MESSAGE-INTEGRITY covers the header with a length that already counts it.
            header = struct.pack("!HHI", method, len(body) + 24, MAGIC) + tid
            mac = hmac.new(self.key, header + body, hashlib.sha1).digest()
            body += attribute(MESSAGE_INTEGRITY, mac)
        self.sock.send(struct.pack("!HHI", method, len(body), MAGIC) + tid + body)
        data = self.sock.recv(2048)
        kind, length = struct.unpack("!HH", data[:4])
        assert data[8:20] == tid
        found: dict[int, bytes] = {}
        at = 20
        while at < 20 + length:
            a_kind, a_len = struct.unpack("!HH", data[at : at + 4])
            found[a_kind] = data[at + 4 : at + 4 + a_len]
            at += 4 + a_len + (-a_len % 4)
        return kind, found

    def allocate(self, username: str, password: str) -> int:
        transport = attribute(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))
        kind, attrs = self.request(ALLOCATE, [transport])
        assert kind == ALLOCATE | ERROR and error_code(attrs) == 401
        realm, nonce = attrs[REALM], attrs[NONCE]
        self.key = hashlib.md5(f"{username}:{realm.decode()}:{password}".encode()).digest()
        self.auth = [
            attribute(USERNAME, username.encode()),
            attribute(REALM, realm),
            attribute(NONCE, nonce),
        ]
        kind, attrs = self.request(ALLOCATE, [transport])
        return 200 if kind == ALLOCATE | SUCCESS else error_code(attrs)

    def permit(self, ip: str) -> int:
        kind, attrs = self.request(CREATE_PERMISSION, [attribute(XOR_PEER_ADDRESS, xor_peer(ip))])
        return 200 if kind == CREATE_PERMISSION | SUCCESS else error_code(attrs)

    def close(self) -> None:
        self.sock.close()


def error_code(attrs: dict[int, bytes]) -> int:
    value = attrs[ERROR_CODE]
    return value[2] * 100 + value[3]


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    with coturn_server("turn-test-secret") as server:
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


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.0.1", True),  # the test override (production denies it)
        ("127.0.0.2", False),  # the rest of loopback stays denied
        ("10.1.2.3", False),
        ("172.16.5.4", False),
        ("192.168.1.10", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # cloud metadata service
        ("224.0.0.251", False),  # multicast
        ("0.0.0.0", False),
        # (Public peers cannot be checked here: a relay bound to 127.0.0.1 cannot reach them.)
    ],
)
def test_relay_refuses_private_peers(coturn: Coturn, peer: str, allowed: bool) -> None:
    client = TurnClient(coturn.port)
    try:
        assert client.allocate(*turn_credentials(coturn.secret, "viewer-2")) == 200
        assert client.permit(peer) == (200 if allowed else 403)
    finally:
        client.close()


def test_production_config_denies_loopback_and_was_accepted(coturn: Coturn) -> None:
    text = COTURN_CONF.read_text()
    assert "denied-peer-ip=127.0.0.0-127.255.255.255" in text
    assert "allowed-peer-ip" not in text.replace("`allowed-peer-ip", "")
    assert "\nallow-loopback-peers" not in text
    for line in ("use-auth-secret", "no-cli", "no-tlsv1", "no-tlsv1_1", "no-multicast-peers"):
        assert f"\n{line}\n" in text, line
    assert "Bad configuration" not in coturn.log(), coturn.log()
