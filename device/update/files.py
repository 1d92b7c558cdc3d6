"""The files the agent and the updater share, and their formats.

The agent (user ``mumu``) writes the offer it received and how many viewers are watching; the
updater (root) reads them.  The updater writes its status; the agent reads it and reports it to
the cloud.  Every write is atomic (temporary file + rename), so a reader never sees half a file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from device.update import install
from protocol.messages import UpdateState, Version, Window

OFFER_FILE: Final = "update-offer.json"
VIEWERS_FILE: Final = "viewers"
STATUS_FILE: Final = "status.json"
T = TypeVar("T")


class Offer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    rollout_id: int
    window: Window | None = None
    received_at: float = 0.0


class Status(msgspec.Struct, frozen=True, omit_defaults=True):
    """The updater's latest word, as the agent forwards it (``update_status``)."""

    seq: int
    state: UpdateState
    version: str
    rollout_id: int | None = None
    reason: str | None = None
    progress: float | None = None
    #: The release the agent runs (``current``) when this was written.
    current: str | None = None
    at: float = 0.0


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Through the updater's one disk seam (:func:`device.update.install.write_atomic`): the
    data synced before the rename that publishes it, the directory after."""
    install.write_atomic(path, data, mode)


def read_struct(path: Path, kind: type[T]) -> T | None:
    """The file decoded as ``kind``; None if it is missing or not valid."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def write_offer(path: Path, offer: Offer) -> None:
    write_atomic(path, msgspec.json.encode(offer), mode=0o600)


def write_viewers(path: Path, count: int) -> None:
    write_atomic(path, f"{count} {time.time():.0f}\n".encode(), mode=0o644)


def read_viewers(path: Path) -> int:
    """Viewers watching now (0 when the agent is not running or never said)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
