"""Snapshots peer to peer: the camera's current picture as a JPEG, over a session's data channel.

A viewer opens a data channel labelled ``snapshot`` (``protocol/snapshot.py``) on its watch
session and asks for a picture; :class:`Snapshots` answers it on the same channel.  Nothing
passes through the cloud.

How a picture is made: a short-lived hub track (so the camera runs, and a keyframe is asked
for: the track's first unit is one) gives the keyframe and whatever followed it already; those
are decoded with PyAV and the newest picture is scaled and compressed with Pillow **in a worker
thread** of a bounded pool, never on the event loop.

Bounds (``snapshots`` in ``agent.yaml``; counted in :class:`SnapshotCounters`; listed in
``docs/security.md``):

* one snapshot per ``interval`` seconds per session (``rate_limited`` otherwise);
* at most ``workers`` pictures decoded at once and ``queue`` more waiting (``busy`` otherwise);
* a JPEG of at most ``max_width`` pixels wide and :data:`MAX_SNAPSHOT_BYTES` (the quality, then
  the size, are lowered to fit);
* ``timeout`` seconds for the camera to give a picture (``no_picture`` otherwise);
* requests longer than :data:`MAX_SNAPSHOT_REQUEST_BYTES` or not valid are refused
  (``invalid_request``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from protocol.snapshot import (
    MAX_SNAPSHOT_BYTES,
    MAX_SNAPSHOT_REQUEST_BYTES,
    SNAPSHOT_CHUNK_BYTES,
    SnapshotError,
    SnapshotErrorCode,
    SnapshotHeader,
    SnapshotId,
    SnapshotRequest,
)

if TYPE_CHECKING:
    from device.hal.camera import AccessUnit
    from device.media import MediaHub

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class SnapshotFailed(Exception):
    def __init__(self, code: SnapshotErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: SnapshotErrorCode = code
        self.message = message


@dataclass
class Picture:
    jpeg: bytes
    width: int
    height: int
    taken_at: float


@dataclass
class SnapshotCounters:
    #: Snapshots sent, and their bytes.
    sent: int = 0
    bytes_sent: int = 0
    #: Refused: too soon after the last one of the session; the pool was full; invalid.
    rate_limited: int = 0
    busy: int = 0
    invalid: int = 0
    #: The camera gave no picture in time, or it could not be decoded.
    failed: int = 0


def encode_picture(units: list[bytes], max_width: int, max_bytes: int) -> tuple[bytes, int, int]:
    """In a worker thread: decode H.264 access units (a keyframe first) and compress the newest
    picture as a JPEG of at most ``max_width`` pixels wide and ``max_bytes``."""
    import av

    decoder = av.CodecContext.create("h264", "r")
    frame: Any = None
    for data in units:
        try:
            for decoded in decoder.decode(av.Packet(data)):
                frame = decoded
        except av.error.FFmpegError:
            continue  # a damaged unit: the picture before it is as good
    try:
        for decoded in decoder.decode(None):
            frame = decoded
    except av.error.FFmpegError:
        pass
    if frame is None:
        raise SnapshotFailed("no_picture", "the camera's picture could not be decoded")
    width, height = frame.width, frame.height
    quality = 85
    while True:
        if width > max_width:
            height = max(2, round(height * max_width / width) // 2 * 2)
            width = max_width // 2 * 2
        image = frame.reformat(width=width, height=height, format="rgb24").to_image()
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=False)
        data = out.getvalue()
        if len(data) <= max_bytes:
            return data, width, height
        if quality > 50:
            quality -= 15
        else:
            max_width = max(16, width * 3 // 4)


def _id_of(text: str) -> str | None:
    """The ``id`` of a request that is otherwise invalid, when it is a valid id (to echo it)."""
    try:
        found = msgspec.json.decode(text, type=dict[str, Any]).get("id")
        return msgspec.convert(found, SnapshotId)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class Snapshots:
    """Answers ``snapshot_request`` on data channels; one per agent (shared by its sessions)."""

    def __init__(
        self,
        hub: MediaHub,
        *,
        interval_s: float = 1.0,
        workers: int = 1,
        queue: int = 2,
        max_width: int = 1920,
        timeout_s: float = 5.0,
        max_bytes: int = MAX_SNAPSHOT_BYTES,
        clock: Clock = time.monotonic,
    ) -> None:
        self.hub = hub
        self.interval_s = interval_s
        self.max_width = max_width
        self.timeout_s = timeout_s
        self.max_bytes = min(max_bytes, MAX_SNAPSHOT_BYTES)
        self.clock = clock
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="snapshot"
        )
        self._slots = workers + queue
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: When each session last asked (monotonic clock).
        self._last: dict[str, float] = {}
        self.counters = SnapshotCounters()

    def attach(self, channel: Any, session: str) -> None:
        """Serve ``channel`` (an aiortc ``RTCDataChannel`` labelled ``snapshot``) for one
        session: the rate limit is the session's, whatever channels it opens, until
        :meth:`forget`."""

        def on_message(message: str | bytes) -> None:
            request = self._parse(message)
            if isinstance(request, SnapshotError):
                self.counters.invalid += 1
                self._send(channel, request)
                return
            now = self.clock()
            last = self._last.get(session)
            if last is not None and now - last < self.interval_s:
                self.counters.rate_limited += 1
                wait = self.interval_s - (now - last)
                self._send(
                    channel,
                    SnapshotError(
                        id=request.id,
                        code="rate_limited",
                        message=f"one snapshot per {self.interval_s:g} s; try in {wait:.1f} s",
                    ),
                )
                return
            if self._in_flight >= self._slots:
                self.counters.busy += 1
                self._send(
                    channel,
                    SnapshotError(
                        id=request.id,
                        code="busy",
                        message="the camera is making other snapshots; try again in a moment",
                    ),
                )
                return
            self._last[session] = now
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(
                self._answer(channel, request), name=f"snapshot-{session[:8]}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        channel.on("message", on_message)

    async def take(self, max_width: int | None = None) -> Picture:
        """The camera's current picture (``SnapshotFailed`` if it gives none in time)."""
        track = self.hub.subscribe()
        try:
            async with asyncio.timeout(self.timeout_s):
                first = await track.recv_unit()
        except (TimeoutError, Exception) as exc:
            track.stop()
            raise SnapshotFailed("no_picture", "the camera gave no picture in time") from exc
        units: list[AccessUnit] = [first, *track.take_queued()]
        track.stop()
        width = min(self.max_width, max_width or self.max_width)
        loop = asyncio.get_running_loop()
        jpeg, w, h = await loop.run_in_executor(
            self._pool, encode_picture, [u.data for u in units], width, self.max_bytes
        )
        return Picture(jpeg, w, h, units[-1].capture_time)

    def forget(self, session: str) -> None:
        """The session ended."""
        self._last.pop(session, None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- internals ------------------------------------------------------------------------------

    def _parse(self, message: str | bytes) -> SnapshotRequest | SnapshotError:
        if not isinstance(message, str) or len(message) > MAX_SNAPSHOT_REQUEST_BYTES:
            return SnapshotError(
                id=None, code="invalid_request", message="send a snapshot_request as JSON text"
            )
        try:
            return msgspec.json.decode(message, type=SnapshotRequest)
        except msgspec.DecodeError as exc:
            return SnapshotError(id=_id_of(message), code="invalid_request", message=str(exc)[:200])

    def _send(self, channel: Any, reply: SnapshotHeader | SnapshotError) -> None:
        if channel.readyState == "open":
            channel.send(msgspec.json.encode(reply).decode())

    async def _answer(self, channel: Any, request: SnapshotRequest) -> None:
        try:
            picture = await self.take(request.max_width)
        except SnapshotFailed as exc:
            self.counters.failed += 1
            self._send(channel, SnapshotError(id=request.id, code=exc.code, message=exc.message))
            return
        except Exception:
            self.counters.failed += 1
            log.exception("a snapshot failed")
            self._send(
                channel,
                SnapshotError(id=request.id, code="no_picture", message="the snapshot failed"),
            )
            return
        finally:
            self._in_flight -= 1
        if channel.readyState != "open":
            return
        self._send(
            channel,
            SnapshotHeader(
                id=request.id,
                bytes=len(picture.jpeg),
                width=picture.width,
                height=picture.height,
                taken_at=picture.taken_at,
            ),
        )
        for start in range(0, len(picture.jpeg), SNAPSHOT_CHUNK_BYTES):
            channel.send(picture.jpeg[start : start + SNAPSHOT_CHUNK_BYTES])
        self.counters.sent += 1
        self.counters.bytes_sent += len(picture.jpeg)
