"""WebSocket close codes the cloud sends, defined once for the cloud, the agent and the web app.

4000-4999 are the application's (RFC 6455 section 7.4.2); 1013 is the registered "try again
later".  ``docs/protocol.md`` has the table people read, and ``tests/test_protocol.py`` checks
that it lists every code here; ``web/js/protocol.js`` gets them as ``CLOSE``.
"""

from __future__ import annotations

import enum


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
    TRY_AGAIN = 1013
    #: The cloud process is restarting (a deploy): reconnect at a random moment within the
    #: window the reason gives (``restarting; reconnect_within=<seconds>``).  Sessions wait
    #: for their parties for the resume grace.
    RESTART = 1012


#: Close codes after which reconnecting with the same credentials cannot help.
CREDENTIALS_REFUSED: frozenset[CloseCode] = frozenset(
    {CloseCode.UNAUTHENTICATED, CloseCode.SIGNED_OUT}
)
