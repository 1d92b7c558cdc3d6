"""Who is on the other end of a viewer socket or an HTTP request: an account and its sign-in.

``authenticate(token)`` turns an access token into an :class:`Identity` or raises
:class:`~cloud.auth.TokenError`.  Both the HTTP API and the viewer WebSocket use it, so a
token revoked on the server (sign-out, password change, account deletion) is refused by both.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloud.auth import TokenError, TokenIssuer
from cloud.store import Store


@dataclass(frozen=True)
class Identity:
    user_id: str
    #: The sign-in (refresh-token family) the access token was issued for; ``None`` for tokens
    #: that carry none.  Revoking a sign-in closes the viewer sockets opened with its tokens.
    sign_in: str | None = None


Authenticate = Callable[[str], Awaitable[Identity]]


def token_authenticator(tokens: TokenIssuer, store: Store) -> Authenticate:
    """Checks the token's signature and expiry, then that its sign-in still holds: signing out,
    signing out everywhere, a password change and deleting the account all revoke (or delete)
    sign-ins, and with them every access token issued for them, at once.  One primary-key read
    per call; never a cached answer."""

    async def authenticate(token: str) -> Identity:
        claims = tokens.verify(token)
        if claims.sign_in is None:
            # Issued before sign-ins existed: it could not be revoked, so it is not honoured.
            raise TokenError("please sign in again")
        sign_in = await store.sign_in(claims.sign_in)
        if sign_in is None or sign_in.user_id != claims.user_id or sign_in.revoked_at is not None:
            raise TokenError("you were signed out; sign in again")
        if sign_in.expires_at <= time.time():
            raise TokenError("your session has expired; sign in again")
        return Identity(claims.user_id, claims.sign_in)

    return authenticate
