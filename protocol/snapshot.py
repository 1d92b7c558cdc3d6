"""Snapshots peer to peer: the ``snapshot`` data channel between a viewer and the camera.

A picture never passes through the cloud: the viewer opens a data channel labelled
:data:`SNAPSHOT_CHANNEL` on the watch session's peer connection (before its offer, so that the
offer has an ``application`` section), and asks for the camera's current picture::

    viewer -> device   {"type": "snapshot_request", "id": "k3", "max_width": 640}     (text)
    device -> viewer   {"type": "snapshot", "id": "k3", "bytes": 48213, "width": 640,
                        "height": 360, "taken_at": 1767000000.123}                     (text)
    device -> viewer   the JPEG, in binary messages of at most SNAPSHOT_CHUNK_BYTES,
                       ``bytes`` in all, in order (an ordered, reliable channel)
    or
    device -> viewer   {"type": "snapshot_error", "id": "k3", "code": "rate_limited",
                        "message": "..."}

The device answers from its current picture (it decodes the newest keyframe and what followed
it, off its event loop, one picture at a time), at most once per ``interval`` seconds per
session, at most :data:`MAX_SNAPSHOT_BYTES` (it lowers the JPEG quality, then the size, to fit).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

SNAPSHOT_CHANNEL: Final = "snapshot"
#: Largest binary message the device sends (portable between every browser's SCTP stack).
SNAPSHOT_CHUNK_BYTES: Final = 16 * 1024
#: Largest JPEG the device sends.
MAX_SNAPSHOT_BYTES: Final = 2 * 1024 * 1024
#: Largest request a device reads (bytes of text).
MAX_SNAPSHOT_REQUEST_BYTES: Final = 512

SnapshotId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")]
SnapshotErrorCode = Literal["rate_limited", "busy", "no_picture", "invalid_request"]


class _Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    pass


class SnapshotRequest(_Message, tag="snapshot_request"):
    id: SnapshotId
    #: Scale the picture down to at most this width (never up); ``None``: the camera's size.
    max_width: Annotated[int, msgspec.Meta(ge=16, le=8192)] | None = None


class SnapshotHeader(_Message, tag="snapshot"):
    id: SnapshotId
    bytes: Annotated[int, msgspec.Meta(ge=1, le=MAX_SNAPSHOT_BYTES)]
    width: int
    height: int
    #: When the picture was captured (Unix time, seconds), as well as the camera knows it.
    taken_at: float
    mime: Literal["image/jpeg"] = "image/jpeg"


class SnapshotError(_Message, tag="snapshot_error"):
    id: SnapshotId | None
    code: SnapshotErrorCode
    message: Annotated[str, msgspec.Meta(max_length=1024)]


SnapshotReply = SnapshotHeader | SnapshotError

SNAPSHOT_ERROR_CODES: Final[tuple[str, ...]] = SnapshotErrorCode.__args__  # type: ignore[attr-defined]
