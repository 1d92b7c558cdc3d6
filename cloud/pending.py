"""Signaling sockets whose ``hello`` has not arrived yet: counted per client address and in all
(this process), from the moment the cloud accepts them.

A stranger needs no credentials to open a socket and say nothing, so these are the sockets one
address could pile up until the process runs out of file descriptors.  A socket stops counting
the moment its first frame arrives (not when it is answered), so a burst of cameras behind one
address coming back at once counts only for the instant each takes to send its ``hello``; the
burst allowance is the per-address count itself.
"""

from __future__ import annotations

import resource
from collections import Counter
from collections.abc import Callable
from typing import Literal

from cloud.config import Settings

#: Why a socket was refused: its address has too many waiting, or the process has.
Refusal = Literal["too_many_pending", "too_many_pending_total"]


class Waiting:
    """One socket's place among the waiting; :meth:`done` gives it back (once)."""

    def __init__(self, owner: PendingSockets, address: str) -> None:
        self._owner: PendingSockets | None = owner
        self.address = address

    def done(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release(self.address)


class PendingSockets:
    def __init__(
        self, per_address: int, total: int, on_change: Callable[[int], None] | None = None
    ) -> None:
        self.per_address = per_address
        self.total = total
        self._by_address: Counter[str] = Counter()
        self._count = 0
        self._on_change = on_change

    def __len__(self) -> int:
        return self._count

    def of(self, address: str) -> int:
        return self._by_address[address]

    def refusal(self, address: str) -> Refusal | None:
        """Why one more socket from ``address`` may not wait now (None: it may)."""
        if self._by_address[address] >= self.per_address:
            return "too_many_pending"
        if self._count >= self.total:
            return "too_many_pending_total"
        return None

    def admit(self, address: str) -> Waiting:
        self._by_address[address] += 1
        self._count += 1
        self._changed()
        return Waiting(self, address)

    def _release(self, address: str) -> None:
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]
        self._count -= 1
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._count)


#: Descriptors a process needs besides its sockets' bounds: listening sockets, the database
#: and Redis connections' margin, log files, the password workers, the interpreter's own.
BASE_FILES = 256


def open_files_needed(settings: Settings) -> int:
    """The open-files limit a process needs for its bounds alone: every socket that may wait
    for ``hello``, every update transfer, the database pool (and its overflow), and a base.
    Authenticated sockets come on top: one per camera and viewer the process holds."""
    return (
        settings.max_pending_sockets
        + settings.update_downloads
        + 2 * settings.db_pool_size
        + BASE_FILES
    )


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit, which any process may do
    (systemd's default soft limit is 1,024 whatever the hard one); the soft limit afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # Linux's usual nr_open
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
