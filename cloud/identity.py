"""Who is on the other end of a viewer socket or an HTTP request: an account and its sign-in.

``authenticate(token)`` turns an access token into an :class:`Identity` or raises
:class:`~cloud.auth.TokenError`.  Both the HTTP API and the viewer WebSocket use it, so a
token revoked on the server (sign-out, password change, account deletion) is refused by both.
"""

from __future__ import annotations

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
    """Checks the token's signature and expiry, then that the account still exists."""

    async def authenticate(token: str) -> Identity:
        user_id = tokens.verify(token)
        if await store.user_by_id(user_id) is None:
            raise TokenError("that account no longer exists")
        return Identity(user_id)

    return authenticate
