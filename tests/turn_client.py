"""A minimal TURN client over UDP (RFC 5766 / 6156: Allocate and CreatePermission with
long-term credentials, IPv4 and IPv6), so that what a test checks is coturn's own answer, not a
browser's summary of it.  CreatePermission sends nothing to the peer."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import socket
import struct

MAGIC = 0x2112A442
ALLOCATE, REFRESH, CREATE_PERMISSION = 0x0003, 0x0004, 0x0008
SUCCESS, ERROR = 0x0100, 0x0110
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0006, 0x0008, 0x0009
LIFETIME, XOR_PEER_ADDRESS, REALM, NONCE = 0x000D, 0x0012, 0x0014, 0x0015
REQUESTED_ADDRESS_FAMILY, REQUESTED_TRANSPORT = 0x0017, 0x0019


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def xor_peer(ip: str, tid: bytes, port: int = 9) -> bytes:
    address = ipaddress.ip_address(ip)
    key = MAGIC.to_bytes(4, "big") + tid  # IPv4 uses the first 4 bytes only
    packed = bytes(a ^ b for a, b in zip(address.packed, key, strict=False))
    family = 1 if address.version == 4 else 2
    return struct.pack("!BBH", 0, family, port ^ (MAGIC >> 16)) + packed


_used: set[tuple[str, int, int]] = set()


def fresh_socket(server: str, port: int) -> socket.socket:
    """A UDP socket connected to ``server``:``port`` from a local port no earlier client of this
    process used with that server.  coturn keys an allocation by its 5-tuple and may still hold
    an earlier client's (its release is best-effort): an Allocate from a reused port would get
    ``437 Allocation Mismatch`` instead of the ``401`` challenge, one run in many."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    taken: list[socket.socket] = []  # kept open until the end, so the kernel moves on
    try:
        while True:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.connect((server, port))
            key = (server, port, sock.getsockname()[1])
            if key not in _used:
                _used.add(key)
                return sock
            taken.append(sock)
    finally:
        for sock in taken:
            sock.close()


class TurnClient:
    """One client transport (a UDP socket) talking to coturn at ``server``:``port``."""

    def __init__(self, port: int, server: str = "127.0.0.1") -> None:
        self.sock = fresh_socket(server, port)
        self.sock.settimeout(5)
        self.key = b""
        self.auth: list[bytes] = []

    def request(
        self, method: int, attrs: list[bytes] | None = None, peer: str | None = None
    ) -> tuple[int, dict[int, bytes]]:
        tid = os.urandom(12)
        parts = list(attrs or [])
        if peer is not None:
            parts.append(attribute(XOR_PEER_ADDRESS, xor_peer(peer, tid)))
        body = b"".join(parts + self.auth)
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

    def allocate(self, username: str, password: str, ipv6_relay: bool = False) -> int:
        """Allocate a relay (an IPv6 one if asked); 200 or the error code."""
        attrs = [attribute(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]
        if ipv6_relay:
            attrs.append(attribute(REQUESTED_ADDRESS_FAMILY, bytes([2, 0, 0, 0])))
        kind, found = self.request(ALLOCATE, attrs)
        code = error_code(found) if ERROR_CODE in found else None
        assert (kind, code) == (ALLOCATE | ERROR, 401), (
            f"unauthenticated Allocate: {kind:#06x} {code}"
        )
        realm, nonce = found[REALM], found[NONCE]
        self.key = hashlib.md5(f"{username}:{realm.decode()}:{password}".encode()).digest()
        self.auth = [
            attribute(USERNAME, username.encode()),
            attribute(REALM, realm),
            attribute(NONCE, nonce),
        ]
        kind, found = self.request(ALLOCATE, attrs)
        return 200 if kind == ALLOCATE | SUCCESS else error_code(found)

    def permit(self, ip: str) -> int:
        """CreatePermission for ``ip`` (no traffic is sent to it); 200 or the error code."""
        kind, found = self.request(CREATE_PERMISSION, peer=ip)
        return 200 if kind == CREATE_PERMISSION | SUCCESS else error_code(found)

    def close(self) -> None:
        """Release the allocation (Refresh with lifetime 0: it stops counting against the
        user's quota at once), then the socket."""
        if self.key:
            with contextlib.suppress(OSError, AssertionError):
                self.request(REFRESH, [attribute(LIFETIME, (0).to_bytes(4, "big"))])
        self.sock.close()


def error_code(attrs: dict[int, bytes]) -> int:
    value = attrs[ERROR_CODE]
    return value[2] * 100 + value[3]
