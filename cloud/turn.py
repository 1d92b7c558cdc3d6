"""ICE servers for a watch session, with coturn REST-API (``use-auth-secret``) credentials.

username = ``"<expiry unix time>:<id>"``; credential = ``base64(HMAC-SHA1(secret, username))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from protocol.messages import IceServer


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def ice_servers(
    *,
    stun_urls: tuple[str, ...],
    turn_urls: tuple[str, ...],
    turn_secret: str | None,
    ttl_s: int,
    ident: str,
    now: float | None = None,
) -> list[IceServer]:
    servers: list[IceServer] = []
    if stun_urls:
        servers.append(IceServer(urls=list(stun_urls)))
    if turn_urls and turn_secret:
        expiry = int(now if now is not None else time.time()) + ttl_s
        username = f"{expiry}:{ident}"
        servers.append(
            IceServer(
                urls=list(turn_urls),
                username=username,
                credential=turn_credential(turn_secret, username),
            )
        )
    return servers
