"""One camera, many viewers: :class:`MediaHub` fans encoded access units out to tracks.

Each viewer gets a :class:`HubTrack`, an aiortc ``MediaStreamTrack`` whose ``recv()`` returns
``av.Packet``s of H.264 (aiortc's pre-encoded path: the sender packetizes them, nothing is
decoded or re-encoded).  Every track has its own bounded queue: a viewer that falls behind by
more than ``queue_frames`` pictures loses its queue and resumes at the next keyframe (which is
requested for it), so it never stalls the others nor grows memory.

The camera runs only while at least one track is subscribed (or ``keep_warm`` is set): it is
opened on the first subscriber and closed after the last one leaves.  Opening and closing run
in worker threads, never on the event loop.  Use the hub from one event loop.

**One failure detector for every backend.**  A camera has failed when it says so
(:attr:`Camera.error`) or when no picture came for ``stall_timeout_s`` (``first_picture_s``
after opening): picamera2, for one, never reports a sensor that stopped.  The hub then closes
it and opens a new one with backoff, keeping every track (state ``restarting``); after
``max_restarts`` failed attempts in a row it gives up (state ``failed``): listeners hear it
first (the session manager ends its sessions with ``camera_failed``), then the tracks end.
The next subscriber tries again.  :attr:`MediaHub.state` and :meth:`MediaHub.add_listener`
publish it: ``idle -> starting -> running -> restarting -> running ... | failed``.

**One continuous timeline.**  Backends start their clocks at zero when opened; the hub shifts
each camera's timestamps so that they continue where the previous camera's stopped (plus the
wall-clock time in between), and never go backwards: aiortc derives RTP timestamps from them.

**GOP cache.**  A camera that cannot make a keyframe on request (UVC H.264 passed through) has
its access units since the last keyframe kept (bounded): a new viewer starts from them at once,
squeezed into a few RTP ticks so that its jitter buffer does not replay seconds of history,
instead of waiting for the camera's next keyframe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from device.hal.camera import (
    CLOCK_RATE,
    TIME_BASE,
    AccessUnit,
    Camera,
    CameraConfig,
    CameraError,
    Capabilities,
)

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

CameraFactory = Callable[[CameraConfig], Camera]
Clock = Callable[[], float]


class HubState(enum.StrEnum):
    #: Nobody wants the camera: it is closed.
    IDLE = "idle"
    #: Opening the camera, waiting for its first picture.
    STARTING = "starting"
    #: Pictures flow.
    RUNNING = "running"
    #: The camera failed (an error, or no picture for too long); it is being reopened with
    #: backoff.  Tracks stay: pictures resume, from a keyframe, when it is back.
    RESTARTING = "restarting"
    #: It could not be (re)started ``max_restarts`` times in a row: every track ended.  The
    #: next subscriber (or ``keep_warm``, every ``failed_retry_s``) tries again.
    FAILED = "failed"


StateListener = Callable[[HubState], None]


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
    #: Access units it started with from the hub's GOP cache.
    preloaded: int = 0


class HubTrack(MediaStreamTrack):
    """A viewer's video track: H.264 ``av.Packet``s from the hub's camera."""

    kind = "video"

    def __init__(self, hub: MediaHub, queue_frames: int) -> None:
        super().__init__()
        self._hub = hub
        self._queue: collections.deque[AccessUnit] = collections.deque()
        self._base_limit = queue_frames
        self._limit = queue_frames
        self._wakeup = asyncio.Event()
        self._waiting_keyframe = True
        self.stats = TrackStats()
        self.created_at = hub.clock()
        #: When the consumer (aiortc's sender) last took a picture (hub clock); ``None``: never.
        self.last_delivered_at: float | None = None
        #: Why the hub ended the track (``"camera_failed"``, ``"closed"``), if it did.
        self.ended_by: str | None = None

    def request_keyframe(self) -> None:
        """Ask the camera for a keyframe (e.g. the viewer sent a PLI or FIR)."""
        self._hub.request_keyframe()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _preload(self, units: list[AccessUnit]) -> None:
        """Start with the hub's GOP (a keyframe and what followed), timestamps squeezed into
        the last ``len(units)`` ticks before the newest: decoded at once, not replayed."""
        last = units[-1].pts
        count = len(units)
        self._queue.extend(
            dataclasses.replace(unit, pts=last - (count - 1 - i)) for i, unit in enumerate(units)
        )
        self._limit = self._base_limit + count
        self._waiting_keyframe = False
        self.stats.preloaded = count
        self.stats.max_queued = max(self.stats.max_queued, len(self._queue))
        self._wakeup.set()

    def _offer(self, unit: AccessUnit) -> None:
        """Called by the hub on the event loop for every access unit."""
        if len(self._queue) >= self._limit:
            self.stats.dropped += len(self._queue)
            self.stats.overflows += 1
            self._queue.clear()
            self._limit = self._base_limit
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

    async def recv_unit(self) -> AccessUnit:
        """The next access unit (the first one a track gets is a keyframe)."""
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.readyState != "live":
            raise MediaStreamError
        unit = self._queue.popleft()
        if len(self._queue) <= self._base_limit:
            self._limit = self._base_limit
        self.stats.delivered += 1
        self.stats.keyframes += unit.keyframe
        self.last_delivered_at = self._hub.clock()
        return unit

    def take_queued(self) -> list[AccessUnit]:
        """Every access unit queued now, without waiting."""
        units = list(self._queue)
        self._queue.clear()
        self.stats.delivered += len(units)
        return units

    async def recv(self) -> av.Packet[Any]:
        import av

        unit = await self.recv_unit()
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
    ``clock`` is ``time.monotonic`` unless a test says otherwise.
    """

    def __init__(
        self,
        camera_factory: CameraFactory,
        config: CameraConfig,
        keep_warm: bool = False,
        queue_frames: int = 15,
        keyframe_min_interval_s: float = 0.25,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.camera_factory = camera_factory
        self.config = config
        self._keep_warm = keep_warm
        self.queue_frames = queue_frames
        self.keyframe_min_interval_s = keyframe_min_interval_s
        self.clock = clock
        #: How often a running camera's health is checked.
        self.health_check_s = 0.5
        #: No picture for this long (after the first one) means the camera failed.
        self.stall_timeout_s = max(2.0, 4.0 / config.fps)
        #: No first picture this long after opening means the camera failed.
        self.first_picture_s = 5.0
        #: First restart delay (doubling for each failure in a row), and how many restarts in
        #: a row before the hub gives up (state ``failed``).
        self.restart_delay_s = 0.5
        self.max_restarts = 3
        #: A camera that ran this long before failing starts a fresh series of restarts.
        self.healthy_after_s = 30.0
        #: With ``keep_warm``, how long a failed hub waits before trying again.
        self.failed_retry_s = 60.0
        #: GOP cache bounds (cameras without keyframe-on-request only).
        self.gop_cache_frames = max(1, round(10 * config.fps))
        self.gop_cache_bytes = 8 * 1024 * 1024

        self._tracks: set[HubTrack] = set()
        self._camera: Camera | None = None
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._state = HubState.IDLE
        self._listeners: list[StateListener] = []
        self._closed = False
        self._last_keyframe_request = 0.0
        self._pending_keyframe: asyncio.TimerHandle | None = None
        # The timeline: the generation whose first unit was seen, its offset, the last output.
        self._unit_generation = 0
        self._pts_offset = 0
        self._last_pts: int | None = None
        self._last_unit_at: float | None = None
        self._keep_gop = False
        self._reopen = False
        self._gop: list[AccessUnit] = []
        self._gop_bytes = 0

        #: Cameras started so far, access units received, keyframe requests passed on.
        self.starts = 0
        self.access_units = 0
        self.keyframe_requests = 0
        self.last_error: BaseException | None = None
        #: Cameras that failed while running or could not be opened (each retried).
        self.failures = 0
        #: Times the hub gave up (state ``failed``).
        self.gave_up = 0
        #: Access units whose timestamp the hub had to move forward (a backend's clock went
        #: back within one camera's run).
        self.retimed = 0

    # --- viewers ----------------------------------------------------------------------------

    def subscribe(self) -> HubTrack:
        """A new viewer's track; starts the camera if it is not running (call on the loop)."""
        if self._closed:
            raise RuntimeError("media hub is closed")
        self._loop = asyncio.get_running_loop()
        track = HubTrack(self, self.queue_frames)
        self._tracks.add(track)
        if self._camera is not None and self._state is HubState.RUNNING:
            if self._keep_gop and self._gop:
                track._preload(self._gop)
            else:
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
    def tracks(self) -> list[HubTrack]:
        return list(self._tracks)

    @property
    def state(self) -> HubState:
        return self._state

    def add_listener(self, listener: StateListener) -> None:
        """``listener(state)`` on every change of :attr:`state` (on the event loop)."""
        self._listeners.append(listener)

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
    def last_picture_at(self) -> float | None:
        """When the last access unit arrived (hub clock)."""
        return self._last_unit_at

    @property
    def gop_cached(self) -> int:
        return len(self._gop)

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
        """Wait until the camera is running (or failed) if it should run, closed if not."""
        while True:
            if self._wanted():
                if self._state in (HubState.RUNNING, HubState.FAILED):
                    return
            elif self._task is None or self._task.done():
                return
            changed = self._changed
            await changed.wait()

    async def close(self) -> None:
        """Stop every track and the camera."""
        self._closed = True
        for track in list(self._tracks):
            track.ended_by = "closed"
            track.stop()
        if self._pending_keyframe is not None:
            self._pending_keyframe.cancel()
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def reconfigure(self, config: CameraConfig) -> BaseException | None:
        """Use ``config`` from now on.  A running camera is closed and opened again with it
        (tracks stay: pictures resume from a keyframe, at the new size); the outcome of that
        first opening is returned (``None``: pictures flow, or the camera is not running).  On
        a failure the caller decides: :meth:`reconfigure` back to what worked."""
        self._loop = asyncio.get_running_loop()
        self.config = config
        self.stall_timeout_s = max(2.0, 4.0 / config.fps)
        self.gop_cache_frames = max(1, round(10 * config.fps))
        if self._camera is None or self._task is None or self._task.done():
            return None
        failures, starts = self.failures, self.starts
        self._reopen = True
        self._wake.set()
        while True:
            changed = self._changed
            if self.failures > failures:
                return self.last_error
            if (
                self.starts > starts
                and self._state is HubState.RUNNING
                and not self._reopen
                and self._unit_generation == self._generation
            ):
                return None
            if self._state in (HubState.IDLE, HubState.FAILED):
                return self.last_error if self._state is HubState.FAILED else None
            await changed.wait()

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
        self._wake.set()
        if self._task is None or self._task.done():
            if self._wanted():
                self._set_state(HubState.STARTING)
            if self._wanted() or self._camera is not None:
                self._task = self._loop.create_task(self._run(), name="media-hub")

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _set_state(self, state: HubState) -> None:
        if state is self._state:
            return
        log.info("camera %s", state.value)
        self._state = state
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("a camera state listener failed")
        self._notify()

    async def _run(self) -> None:
        """The one task that opens, watches, restarts and closes the camera."""
        failures = 0
        try:
            while self._wanted():
                if self._state is not HubState.RESTARTING:
                    self._set_state(HubState.STARTING)
                opened = self.clock()
                try:
                    camera = await asyncio.to_thread(self._start_camera, self._next_generation())
                except Exception as exc:
                    problem: BaseException | None = exc
                    log.error("cannot start the camera: %s", exc)
                else:
                    self.starts += 1
                    self._notify()
                    problem = await self._watch(camera, opened)
                    await self._close_camera(camera)
                    if problem is not None and self.clock() - opened > self.healthy_after_s:
                        failures = 0  # healthy for a while: a fresh series of restarts
                if problem is None:
                    continue  # no longer wanted (or wanted again meanwhile): loop decides
                self.last_error = problem
                self.failures += 1
                failures += 1
                if failures > self.max_restarts:
                    self._give_up(problem)
                    if not self._keep_warm or self._closed:
                        return
                    await self._pause(self.failed_retry_s)
                    failures = 0
                    continue
                delay = self.restart_delay_s * 2 ** (failures - 1)
                log.error("the camera failed (%s); restarting it in %.1f s", problem, delay)
                self._set_state(HubState.RESTARTING)
                await self._pause(delay)
            if self._state is not HubState.FAILED or self._closed:
                self._set_state(HubState.IDLE)
        finally:
            self._notify()

    def _next_generation(self) -> int:
        self._generation += 1
        return self._generation

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up early when nobody wants the camera any more."""
        deadline = self.clock() + seconds
        while self._wanted() and (left := deadline - self.clock()) > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def _watch(self, camera: Camera, opened: float) -> BaseException | None:
        """Until the camera is no longer wanted (``None``) or has failed (why)."""
        generation = self._generation
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.health_check_s)
            if not self._wanted():
                return None
            if self._reopen:  # reconfigure(): closed here, opened again with the new config
                self._reopen = False
                return None
            if camera.error is not None:
                return camera.error
            now = self.clock()
            if self._unit_generation == generation and self._last_unit_at is not None:
                silent, limit = now - self._last_unit_at, self.stall_timeout_s
            else:
                silent, limit = now - opened, self.first_picture_s
            if silent > limit:
                return CameraError(f"no picture from the camera for {silent:.1f} s")

    async def _close_camera(self, camera: Camera) -> None:
        if self._camera is camera:
            self._camera = None
            self._generation += 1  # its last units are ignored
        try:
            await asyncio.to_thread(camera.close)
        except Exception:
            log.exception("closing the camera failed")
        self._notify()

    def _give_up(self, problem: BaseException) -> None:
        self.gave_up += 1
        log.error("the camera does not work (%s): giving up until the next viewer", problem)
        self._set_state(HubState.FAILED)  # listeners end their sessions first
        for track in list(self._tracks):
            track.ended_by = "camera_failed"
            track.stop()

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
        self._keep_gop = not camera.capabilities.keyframe_on_request
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
        now = self.clock()
        if self._unit_generation != generation:  # this camera's first picture
            self._unit_generation = generation
            self._gop.clear()
            self._gop_bytes = 0
            if self._last_pts is None or self._last_unit_at is None:
                self._pts_offset = 0
            else:  # continue the timeline, with the time the camera was away
                gap = max(1, round((now - self._last_unit_at) * CLOCK_RATE))
                self._pts_offset = self._last_pts + gap - unit.pts
            self._set_state(HubState.RUNNING)
        pts = unit.pts + self._pts_offset
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # a backend's clock went back: never follow it
            self.retimed += 1
        if pts != unit.pts:
            unit = dataclasses.replace(unit, pts=pts)
        self._last_pts = pts
        self._last_unit_at = now
        self.access_units += 1
        if self._keep_gop:
            self._cache(unit)
        for track in list(self._tracks):
            track._offer(unit)

    def _cache(self, unit: AccessUnit) -> None:
        if unit.keyframe:
            self._gop = [unit]
            self._gop_bytes = len(unit.data)
        elif self._gop:
            size = len(unit.data)
            if (
                len(self._gop) >= self.gop_cache_frames
                or self._gop_bytes + size > self.gop_cache_bytes
            ):
                self._gop = []  # too long to replay: the next keyframe starts a new one
                self._gop_bytes = 0
            else:
                self._gop.append(unit)
                self._gop_bytes += size
