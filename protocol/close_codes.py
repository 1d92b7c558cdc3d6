"""WebSocket close codes the cloud sends, defined once for the cloud, the agent and the web app.

4000-4999 are the application's (RFC 6455 section 7.4.2); 1013 is the registered "try again
later".  ``docs/protocol.md`` has the table people read, and ``tests/test_protocol.py`` checks
that it lists every code here; ``web/js/protocol.js`` gets them as ``CLOSE``.
"""

from __future__ import annotations

import enum
import re


class CloseCode(enum.IntEnum):
    #: The first frame was not a valid ``hello``.
    BAD_HELLO = 4400
    #: ``hello`` refused: unknown device, wrong device token, or an access token that is invalid,
    #: expired or tampered with.  A device registers anew; a viewer signs in again.
    UNAUTHENTICATED = 4401
    #: The viewer's sign-in was revoked (signed out, here or everywhere; password changed;
    #: account deleted).  The web app shows its sign-in page with "You were signed out".
    SIGNED_OUT = 4403
    #: Nothing received for longer than the presence TTL (two missed heartbeats).
    IDLE = 4408
    #: A newer connection of the same device replaced this one.
    REPLACED = 4409
    #: The socket did not read what the cloud sent it fast enough: its bounded outbound queue
    #: overflowed.  Handled like a dropped socket (its sessions get the resume grace); the client
    #: reconnects with backoff as after any drop.
    TOO_SLOW = 4429
    #: Try again later: the cloud could not check the ``hello`` (database or Redis trouble),
    #: or a bound on sockets was reached (an ``error`` ``too_many_connections`` says which).
    #: When the reason names a delay (``...; retry_after=<seconds>``: a bound that is full for
    #: a moment) the client comes back after that delay plus a random part of it; otherwise it
    #: backs off as after any drop.
    TRY_AGAIN = 1013
    #: The cloud process is restarting (a deploy): reconnect at a random moment within the
    #: window the reason gives (``restarting; reconnect_within=<seconds>``).  Sessions wait
    #: for their parties for the resume grace.
    RESTART = 1012


#: Close codes after which reconnecting with the same credentials cannot help.
CREDENTIALS_REFUSED: frozenset[CloseCode] = frozenset(
    {CloseCode.UNAUTHENTICATED, CloseCode.SIGNED_OUT}
)


#: What a ``RESTART`` close's reason carries before its window in whole seconds.
RESTART_WINDOW_KEY = "reconnect_within="
#: The longest window a client accepts from a reason (a longer one is cut to this).
RESTART_WINDOW_MAX_S = 120


#: What a ``TRY_AGAIN`` close's reason carries before its delay in whole seconds (and what an
#: HTTP 503's ``Retry-After`` header means to a client the same way).
RETRY_AFTER_KEY = "retry_after="
#: The longest delay a client accepts from a reason or a ``Retry-After`` (longer: cut to this).
RETRY_AFTER_MAX_S = 120


def try_again_reason(message: str, retry_after_s: int) -> str:
    """The reason of a ``TRY_AGAIN`` close: ``<message>; retry_after=<seconds>``."""
    return f"{message}; {RETRY_AFTER_KEY}{retry_after_s}"


def retry_after(reason: str) -> float | None:
    """Seconds a ``TRY_AGAIN`` close with ``reason`` asks the client to wait (``None``: the
    reason names none)."""
    found = re.search(re.escape(RETRY_AFTER_KEY) + r"(\d{1,6})", reason)
    if found is None:
        return None
    return float(min(int(found.group(1)), RETRY_AFTER_MAX_S))


def restart_reason(window_s: int) -> str:
    """The reason of a ``RESTART`` close: ``restarting; reconnect_within=<seconds>``."""
    return f"restarting; {RESTART_WINDOW_KEY}{window_s}"


def restart_window(reason: str) -> float | None:
    """Seconds over which to spread a reconnection after a ``RESTART`` close with ``reason``
    (``None``: the reason gives none; the client then backs off as after any drop)."""
    found = re.search(re.escape(RESTART_WINDOW_KEY) + r"(\d{1,6})", reason)
    if found is None:
        return None
    return float(min(int(found.group(1)), RESTART_WINDOW_MAX_S))
