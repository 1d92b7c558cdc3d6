"""One signaling WebSocket: a bounded outbound queue with a writer of its own, and a message
budget.

Nothing shared ever awaits a client's socket: routing (the Redis reader, another connection's
handler) calls :meth:`Connection.deliver`, which only appends to this connection's queue; the
connection's own writer task does the awaiting.  A client that reads too slowly fills its queue
(``queue_messages`` frames or ``queue_bytes`` bytes) and is disconnected with
``CLOSE_TOO_SLOW``, then handled like any dropped socket (its sessions get the resume grace).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from litestar import WebSocket

from cloud.live import KICK, SignOutFrame
from protocol.close_codes import CloseCode

log = logging.getLogger(__name__)

Role = Literal["device", "viewer"]

#: Close codes: defined once in ``protocol.close_codes`` (docs/protocol.md lists them all).
CLOSE_BAD_HELLO = CloseCode.BAD_HELLO
CLOSE_UNAUTHENTICATED = CloseCode.UNAUTHENTICATED
CLOSE_SIGNED_OUT = CloseCode.SIGNED_OUT
CLOSE_IDLE = CloseCode.IDLE
CLOSE_REPLACED = CloseCode.REPLACED
CLOSE_TOO_SLOW = CloseCode.TOO_SLOW
CLOSE_TRY_AGAIN = CloseCode.TRY_AGAIN
CLOSE_RESTART = CloseCode.RESTART


#: Seconds a socket the cloud closed may take to go before it is reset (a client that reads
#: nothing never takes the close frame); much less for one closed for reading too slowly.
ABORT_AFTER_S = 10.0
ABORT_SLOW_AFTER_S = 1.0


class Ending(Enum):
    """How a connection ended, which decides what happens to its sessions."""

    OPEN = "open"
    #: The client sent a close frame: it meant to go.
    CLEAN = "clean"
    #: The socket dropped (no close frame, idle, reset): its party may come back.
    DROPPED = "dropped"
    #: The cloud closed it (replaced, signed out, too slow, bad hello).
    CLOSED_BY_CLOUD = "closed_by_cloud"


@dataclass(frozen=True)
class QueueLimits:
    messages: int = 1000
    bytes: int = 2 * 1024 * 1024


class TokenBucket:
    """``rate`` messages a second on average, bursts of ``burst``."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(eq=False)
class Connection:
    role: Role
    socket: WebSocket[Any, Any, Any]
    limits: QueueLimits = field(default_factory=QueueLimits)
    #: Called once when the queue overflows (the connection is being closed for it).
    on_overflow: Callable[[Connection], None] | None = None
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    principal: str = ""  # device id or user id, once authenticated
    #: Viewers: the sign-in whose access token opened this socket (see ``cloud.identity``).
    sign_in: str | None = None
    #: The client's address (behind trusted proxies: the one they forwarded).
    address: str = ""
    #: Resets the TCP connection at once (the server's transport, when it exposes one: see
    #: ``cloud.app.expose_transport_abort``).
    abort: Callable[[], None] | None = None
    ending: Ending = Ending.OPEN
    #: When a frame last came from the client (wall-clock seconds).
    last_heard: float = field(default_factory=time.time)
    #: Frames sent and dropped (queue full) so far.
    sent: int = 0
    _queue: collections.deque[str] = field(default_factory=collections.deque)
    _queued_bytes: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _close: tuple[int, str] | None = None
    _writer: asyncio.Task[None] | None = None
    _abort_timer: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        return self.ending is not Ending.OPEN or self._close is not None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(
            self._write_forever(), name=f"ws-writer-{self.role}-{self.conn_id[:8]}"
        )

    # --- sending: never awaits the socket ---------------------------------------------------------

    def send(self, text: str) -> bool:
        """Queue a frame; False if the connection is closing or its queue just overflowed."""
        if self.closed:
            return False
        size = len(text)
        if len(self._queue) >= self.limits.messages or self._queued_bytes + size > (
            self.limits.bytes
        ):
            self._queue.clear()
            self._queued_bytes = 0
            self.close(CLOSE_TOO_SLOW, "reading too slowly; reconnect")
            self.ending = Ending.DROPPED  # handled like a dropped socket: its party may return
            if self.on_overflow is not None:
                self.on_overflow(self)
            return False
        self._queue.append(text)
        self._queued_bytes += size

        self._wakeup.set()
        return True

    def deliver(self, text: str) -> None:
        """Callback for routed frames (control frames act on the connection)."""
        if text == KICK:
            self.close(CLOSE_REPLACED, "replaced by a newer connection of this device")
        elif text.startswith(SignOutFrame.PREFIX):
            if self.role == "viewer" and SignOutFrame.decode(text).applies_to(self.sign_in):
                self.close(CLOSE_SIGNED_OUT, "signed out")
        else:
            self.send(text)

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued (the writer sends the close frame)."""
        if self._close is not None:
            return
        self._close = (code, reason[:120])
        if self.ending is Ending.OPEN:
            self.ending = Ending.CLOSED_BY_CLOUD
        grace = ABORT_AFTER_S
        if code == CLOSE_TOO_SLOW:
            # Nothing more will be read by this client: do not wait behind its queue.
            self._queue.clear()
            self._queued_bytes = 0
            grace = ABORT_SLOW_AFTER_S
        self._wakeup.set()
        if self.abort is not None:
            # A client that reads nothing never takes the close frame, and its socket would
            # linger with a full buffer: reset it if it is still there after a grace.
            self._abort_timer = asyncio.get_running_loop().call_later(grace, self._abort_now)

    def _abort_now(self) -> None:
        self._abort_timer = None
        if self.abort is not None:
            with contextlib.suppress(Exception):
                self.abort()

    async def finish(self, timeout: float = 5.0) -> None:
        """Stop the writer: after it sent what is queued and the close frame, or ``timeout``."""
        if self._close is None:
            self.close(1000, "bye")
        writer = self._writer
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout)
            except TimeoutError:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
                self._abort_now()
            except Exception:
                pass
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None

    async def _write_forever(self) -> None:
        socket = self.socket
        try:
            while True:
                while self._queue:
                    text = self._queue.popleft()
                    self._queued_bytes -= len(text)
                    await socket.send_text(text)
                    self.sent += 1

                if self._close is not None:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The peer went away; the receive loop notices and cleans up.
            if self.ending is Ending.OPEN:
                self.ending = Ending.DROPPED
            return
        code, reason = self._close or (1000, "bye")
        with contextlib.suppress(Exception):
            await socket.close(code=code, reason=reason)
