"""One camera, many viewers: :class:`MediaHub` fans encoded access units out to tracks.

Each viewer gets a :class:`HubTrack`, an aiortc ``MediaStreamTrack`` whose ``recv()`` returns
``av.Packet``s of H.264 (aiortc's pre-encoded path: the sender packetizes them, nothing is
decoded or re-encoded).  Every track has its own bounded queue: a viewer that falls behind by
more than ``queue_frames`` pictures loses its queue and resumes at the next keyframe (which is
requested for it), so it never stalls the others nor grows memory.

The camera runs only while at least one track is subscribed (or ``keep_warm`` is set): it is
opened on the first subscriber and closed after the last one leaves.  Opening and closing run
in worker threads, never on the event loop.  Use the hub from one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from device.hal.camera import TIME_BASE, AccessUnit, Camera, CameraConfig, Capabilities

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

CameraFactory = Callable[[CameraConfig], Camera]


@dataclass
class TrackStats:
    #: Access units handed to the consumer.
    delivered: int = 0
    #: Access units thrown away (waiting for a keyframe, or the queue overflowed).
    dropped: int = 0
    #: Times the queue overflowed and the track fell back to the next keyframe.
    overflows: int = 0
    #: Deepest the queue has been.
    max_queued: int = 0
    #: Keyframes handed to the consumer.
    keyframes: int = 0


class HubTrack(MediaStreamTrack):
    """A viewer's video track: H.264 ``av.Packet``s from the hub's camera."""

    kind = "video"

    def __init__(self, hub: MediaHub, queue_frames: int) -> None:
        super().__init__()
        self._hub = hub
        self._queue: collections.deque[AccessUnit] = collections.deque()
        self._limit = queue_frames
        self._wakeup = asyncio.Event()
        self._waiting_keyframe = True
        self.stats = TrackStats()

    def request_keyframe(self) -> None:
        """Ask the camera for a keyframe (e.g. the viewer sent a PLI or FIR)."""
        self._hub.request_keyframe()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _offer(self, unit: AccessUnit) -> None:
        """Called by the hub on the event loop for every access unit."""
        if len(self._queue) >= self._limit:
            self.stats.dropped += len(self._queue)
            self.stats.overflows += 1
            self._queue.clear()
            self._waiting_keyframe = True
            if not unit.keyframe:
                self._hub.request_keyframe()
        if self._waiting_keyframe:
            if not unit.keyframe:
                self.stats.dropped += 1
                return
            self._waiting_keyframe = False
        self._queue.append(unit)
        self.stats.max_queued = max(self.stats.max_queued, len(self._queue))
        self._wakeup.set()

    async def recv(self) -> av.Packet[Any]:
        import av

        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.readyState != "live":
            raise MediaStreamError
        unit = self._queue.popleft()
        self.stats.delivered += 1
        self.stats.keyframes += unit.keyframe
        packet = av.Packet(unit.data)
        packet.pts = unit.pts
        packet.dts = unit.pts
        packet.time_base = TIME_BASE
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._queue.clear()
            self._wakeup.set()
            self._hub._unsubscribe(self)


class MediaHub:
    """Shares one camera between every viewer; see the module doc.

    ``camera_factory(config)`` opens a camera (e.g. ``functools.partial(open_camera, None)``);
    it is called again each time the camera restarts.  ``queue_frames`` bounds each viewer's
    queue (half a second at 30 fps by default).  Keyframe requests closer together than
    ``keyframe_min_interval_s`` are merged into one, sent when the interval has passed.
    """

    def __init__(
        self,
        camera_factory: CameraFactory,
        config: CameraConfig,
        keep_warm: bool = False,
        queue_frames: int = 15,
        keyframe_min_interval_s: float = 0.25,
    ) -> None:
        self.camera_factory = camera_factory
        self.config = config
        self._keep_warm = keep_warm
        self.queue_frames = queue_frames
        self.keyframe_min_interval_s = keyframe_min_interval_s
        self._tracks: set[HubTrack] = set()
        self._camera: Camera | None = None
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._camera_started_at = 0.0
        #: How often a running camera's health is checked, and the first restart delay.
        self.health_check_s = 1.0
        self.restart_delay_s = 1.0
        self._closed = False
        self._last_keyframe_request = 0.0
        self._pending_keyframe: asyncio.TimerHandle | None = None
        #: Cameras started so far, access units received, keyframe requests passed on.
        self.starts = 0
        self.access_units = 0
        self.keyframe_requests = 0
        self.last_error: BaseException | None = None
        #: Cameras that failed while running (each restarted while viewers remain).
        self.failures = 0

    # --- viewers ----------------------------------------------------------------------------

    def subscribe(self) -> HubTrack:
        """A new viewer's track; starts the camera if it is not running (call on the loop)."""
        if self._closed:
            raise RuntimeError("media hub is closed")
        self._loop = asyncio.get_running_loop()
        track = HubTrack(self, self.queue_frames)
        self._tracks.add(track)
        if self._camera is not None:
            self.request_keyframe()
        self._poke()
        return track

    def _unsubscribe(self, track: HubTrack) -> None:
        self._tracks.discard(track)
        self._poke()

    @property
    def viewers(self) -> int:
        return len(self._tracks)

    @property
    def running(self) -> bool:
        """Whether a camera is open (started, or being started)."""
        return self._camera is not None

    @property
    def camera(self) -> Camera | None:
        return self._camera

    @property
    def capabilities(self) -> Capabilities | None:
        return self._camera.capabilities if self._camera else None

    @property
    def keep_warm(self) -> bool:
        return self._keep_warm

    async def set_keep_warm(self, keep_warm: bool) -> None:
        """Keep the camera running with no viewer (or stop doing so)."""
        self._loop = asyncio.get_running_loop()
        self._keep_warm = keep_warm
        self._poke()
        await self.settled()

    async def settled(self) -> None:
        """Wait until the camera is running if it should, stopped if it should not."""
        while self._reconciler is not None and not self._reconciler.done():
            await asyncio.shield(self._reconciler)

    async def close(self) -> None:
        """Stop every track and the camera."""
        self._closed = True
        for track in list(self._tracks):
            track.stop()
        if self._pending_keyframe is not None:
            self._pending_keyframe.cancel()
        if self._loop is not None:
            self._poke()
            await self.settled()
        if self._monitor is not None:
            self._monitor.cancel()

    # --- keyframes --------------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask the camera for a keyframe soon (merged with others close in time)."""
        if self._camera is None or self._loop is None:
            return
        if self._pending_keyframe is not None:
            return
        wait = self._last_keyframe_request + self.keyframe_min_interval_s - time.monotonic()
        if wait <= 0:
            self._send_keyframe_request()
        else:
            self._pending_keyframe = self._loop.call_later(wait, self._send_keyframe_request)

    def _send_keyframe_request(self) -> None:
        self._pending_keyframe = None
        self._last_keyframe_request = time.monotonic()
        if self._camera is not None:
            self.keyframe_requests += 1
            self._camera.request_keyframe()

    # --- the camera ---------------------------------------------------------------------------

    def _wanted(self) -> bool:
        return not self._closed and (bool(self._tracks) or self._keep_warm)

    def _poke(self) -> None:
        if self._loop is None:
            return
        if self._reconciler is None or self._reconciler.done():
            self._reconciler = self._loop.create_task(self._reconcile())

    async def _reconcile(self) -> None:
        while True:
            want = self._wanted()
            if want and self._camera is None:
                self._generation += 1
                try:
                    self._camera = await asyncio.to_thread(self._start_camera, self._generation)
                except Exception as exc:
                    log.exception("cannot start the camera")
                    self.last_error = exc
                    for track in list(self._tracks):
                        track.stop()
                    return
                self.starts += 1
                if self._monitor is None or self._monitor.done():
                    self._monitor = asyncio.create_task(self._watch_camera())
            elif not want and self._camera is not None:
                camera, self._camera = self._camera, None
                self._generation += 1
                await asyncio.to_thread(camera.close)
            else:
                return

    async def _watch_camera(self) -> None:
        """Restart a camera that failed while running (unplugged, driver error), with backoff.

        Viewers keep their tracks meanwhile: pictures resume, from a keyframe, when it is back.
        """
        delay = self.restart_delay_s
        while not self._closed:
            await asyncio.sleep(self.health_check_s)
            camera = self._camera
            if camera is None:
                if not self._wanted():
                    return
                continue
            if camera.error is None:
                if time.monotonic() - self._camera_started_at > 30:
                    delay = self.restart_delay_s  # healthy for a while: start over
                continue
            self.last_error = camera.error
            self.failures += 1
            log.error("the camera failed (%s); restarting it in %.0f s", camera.error, delay)
            if self._camera is camera:
                self._camera = None
                self._generation += 1
            await asyncio.to_thread(camera.close)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            self._poke()

    def _start_camera(self, generation: int) -> Camera:
        """In a worker thread: open and start a camera whose units reach :meth:`_dispatch`."""
        loop = self._loop
        assert loop is not None
        camera = self.camera_factory(self.config)

        def sink(unit: AccessUnit) -> None:  # the camera's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self._dispatch, generation, unit)

        # Known before its first unit can be dispatched (the loop may run that before it sees
        # this function return), so that ``capabilities`` is never None while frames flow.
        self._camera = camera
        self._camera_started_at = time.monotonic()
        try:
            camera.start(sink)
        except BaseException:
            self._camera = None
            camera.close()
            raise
        log.info("camera started: %s", camera.capabilities)
        return camera

    def _dispatch(self, generation: int, unit: AccessUnit) -> None:
        if generation != self._generation:
            return  # from a camera being closed
        self.access_units += 1
        for track in list(self._tracks):
            track._offer(unit)
