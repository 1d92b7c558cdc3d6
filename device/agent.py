"""The device agent: identity, the cloud connection, the pairing display and the watch sessions.

``Agent(config).run()`` runs until :meth:`Agent.stop` (SIGTERM/SIGINT in ``mumu-agent run``):

1. A button held at boot (when one is configured) forgets the credentials: factory reset (the
   cloud is told with the old ones, now or once it can be reached, so they stop working).
2. Saved credentials are reused; with none, the agent registers (retrying with backoff).
3. :class:`~device.signaling.SignalingClient` keeps the WebSocket up; ``hello_ack`` and
   ``pairing_status`` drive the :class:`~device.provisioning.PairingController` (a code on the
   display while unpaired), watch messages drive the
   :class:`~device.sessions.SessionManager` (one peer per viewer, one camera for all).
4. systemd hears ``READY=1`` after the first ``hello_ack`` and ``WATCHDOG=1`` pings.

On stop: every session ends (``watch_end`` goes out if the cloud is reachable), peers close,
the socket closes with a normal closure, the camera and the display are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from device import credentials as creds
from device.config import AgentConfig, ConfigError, explain_option_error
from device.credentials import Credentials, RegistrationError
from device.signaling import Backoff, Connect, SignalingClient
from device.systemd import Notifier
from protocol.messages import (
    AgentUpdate,
    DeviceSettingsRequest,
    DeviceWatchRequest,
    HeartbeatAck,
    HelloAck,
    PairingStatus,
    SignalAnswer,
    SignalIce,
    SignalOffer,
    UpdateOffer,
    WatchEnded,
)

if TYPE_CHECKING:
    from device.hal import CameraConfig
    from device.media import HubState, MediaHub
    from device.provisioning import Display, PairingController
    from device.sessions import SessionManager
    from device.settings import DeviceSettingsService
    from device.snapshots import Snapshots
    from device.update.link import UpdateLink

log = logging.getLogger(__name__)

#: How long shutdown waits for ``watch_end`` messages to reach the cloud.
SHUTDOWN_FLUSH_S = 1.0


def camera_config(config: AgentConfig) -> CameraConfig:
    from device.hal import CameraConfig

    cam = config.camera
    return CameraConfig(
        width=cam.width,
        height=cam.height,
        fps=cam.fps,
        bitrate=cam.bitrate,
        keyframe_interval_s=cam.keyframe_interval,
        device=cam.device,
    )


def open_displays(config: AgentConfig) -> Display:
    """Every configured display that opens; a bad option is a :class:`ConfigError`, hardware
    that is absent is logged and skipped (the camera still works without its screen)."""
    from device.provisioning import DisplayError, DisplayGroup, OptionError, open_display

    opened: list[Display] = []
    for i, entry in enumerate(config.displays):
        options = dict(entry)
        name = str(options.pop("backend"))
        try:
            opened.append(open_display(name, options))
        except OptionError as exc:
            DisplayGroup(opened).close()
            raise ConfigError(f"displays[{i}]: {explain_option_error(str(exc))}") from None
        except DisplayError as exc:
            log.error("display %s unavailable, going on without it: %s", name, exc)
    return DisplayGroup(opened)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        display: Display | None = None,
        notifier: Notifier | None = None,
        connect: Connect | None = None,
    ) -> None:
        """``display``: already opened (default: open the configured ones when running).
        ``connect``: the signaling client's connect factory (default: a real WebSocket)."""
        self.config = config
        self.notifier = notifier or Notifier()
        self._display = display
        self._connect = connect
        self._stop = asyncio.Event()
        self._credentials: Credentials | None = None
        self._registration_backoff = Backoff(config.reconnect.base, config.reconnect.cap)
        self._http: httpx.AsyncClient | None = None
        self._controller: PairingController | None = None
        self._controller_task: asyncio.Task[None] | None = None
        self._hub: MediaHub | None = None
        self._sessions: SessionManager | None = None
        self._snapshots: Snapshots | None = None
        self._client: SignalingClient | None = None
        self._update: UpdateLink | None = None  # over-the-air updates (device/update/link.py)
        self._settings: DeviceSettingsService | None = None
        #: The owner asked for a restart (``device_settings_request {action: restart}``).
        self.restart_requested = False
        self._ready_sent = False
        #: Registrations that failed (and were retried with backoff).
        self.registration_failures = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to shut down (safe from a signal handler on the loop)."""
        self._stop.set()

    async def run(self) -> None:
        from device.media import MediaHub
        from device.sessions import SessionManager

        config = self.config
        if self._display is None:
            self._display = open_displays(config)
        if config.button is not None and await self._factory_reset_requested():
            log.warning("button held at boot: factory reset, retiring the device credentials")
            creds.begin_factory_reset(config.state_path)
        self._credentials = creds.load(config.state_path)
        if self._credentials is not None:
            log.info(
                "device %s (credentials from %s)",
                self._credentials.device_id,
                creds.path_in(config.state_path),
            )

        from device.settings import DeviceSettingsService, load_saved, with_saved

        self._http = httpx.AsyncClient(timeout=10.0)
        saved = load_saved(config.state_path)  # the owner's settings win over agent.yaml's
        self._hub = MediaHub(
            self._camera_factory(), with_saved(camera_config(config), saved), keep_warm=False
        )
        self._client = SignalingClient(
            config.cloud_url,
            self,
            Backoff(config.reconnect.base, config.reconnect.cap),
            heartbeat_interval=config.heartbeat_interval,
            connect=self._connect,
        )
        if config.snapshots.enabled:
            from device.snapshots import Snapshots

            shots = config.snapshots
            self._snapshots = Snapshots(
                self._hub,
                interval_s=shots.interval,
                workers=shots.workers,
                queue=shots.queue,
                max_width=shots.max_width,
                timeout_s=shots.timeout,
            )
        self._sessions = SessionManager(
            self._hub,
            self._client.send,
            max_sessions=config.max_sessions,
            offer_timeout=config.offer_timeout,
            frame_timeout=config.frame_timeout,
            on_viewers=self._viewers_changed,
            snapshots=self._snapshots,
        )
        from device.update.link import UpdateLink, agent_release

        self._update = UpdateLink(config.state_path, self._client.send)
        self._settings = DeviceSettingsService(
            self._hub,
            self._client.send,
            config.state_path,
            release=agent_release(),
            update=self._update_state,
            restart=self._restart,
        )
        update_link = asyncio.create_task(self._update.run(), name="update-link")
        self._hub.add_listener(self._camera_state)
        watchdog = asyncio.create_task(self.notifier.watchdog(), name="watchdog")
        signaling = asyncio.create_task(self._client.run(), name="signaling")
        retiring = asyncio.create_task(
            creds.retire_pending(
                self._http,
                config.cloud_url,
                config.state_path,
                Backoff(config.reconnect.base, config.reconnect.cap).next_delay,
            ),
            name="retire-old-identity",
        )
        try:
            if config.keep_warm:
                await self._hub.set_keep_warm(True)
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({stopping, signaling}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            failed = signaling.exception() if signaling.done() else None
            if failed is not None:
                raise failed
        finally:
            update_link.cancel()
            retiring.cancel()
            await self._shutdown(signaling, watchdog)

    async def _shutdown(self, signaling: asyncio.Task[None], watchdog: asyncio.Task[None]) -> None:
        log.info("shutting down")
        self.notifier.stopping()
        if self._sessions is not None:
            await self._sessions.close(notify=True, timeout=2.0)
        if self._client is not None:
            await self._client.flush(SHUTDOWN_FLUSH_S)
            await self._client.close()
        for task in (signaling, watchdog):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._snapshots is not None:
            await self._snapshots.close()
        if self._settings is not None:
            await self._settings.close()
        if self._hub is not None:
            await self._hub.close()
        if self._controller is not None:
            await self._controller.close()  # stops its run() and closes the display
            if self._controller_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._controller_task
        elif self._display is not None:
            await asyncio.to_thread(self._display.close)
        if self._http is not None:
            await self._http.aclose()
        log.info("stopped")

    def _camera_factory(self) -> Any:
        from device.hal import open_camera

        backend = self.config.camera.backend
        factory: Any = functools.partial(open_camera, None if backend == "auto" else backend)
        return factory

    async def _factory_reset_requested(self) -> bool:
        from device.provisioning import (
            ButtonError,
            OptionError,
            button_held_at_boot,
            parse_button_options,
        )

        try:
            options = parse_button_options(self.config.button)
        except OptionError as exc:
            raise ConfigError(str(exc)) from None
        try:
            return await asyncio.to_thread(
                button_held_at_boot,
                options.pin,
                options.hold_seconds,
                pull_up=options.pull_up,
            )
        except ButtonError as exc:
            log.error("cannot read the reset button: %s", exc)
            return False

    # --- what the signaling client asks ----------------------------------------------------------

    async def credentials(self) -> Credentials:
        while self._credentials is None:
            try:
                self._credentials = await self._register()
            except RegistrationError as exc:
                self.registration_failures += 1
                delay = max(self._registration_backoff.next_delay(), exc.retry_after_s or 0.0)
                log.warning("registration failed: %s; retrying in %.2f s", exc, delay)
                await self._show_connecting(f"Cannot reach the cloud; retrying in {delay:.0f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    raise RegistrationError("stopping") from None
        self._registration_backoff.reset()
        self._ensure_controller(self._credentials)
        return self._credentials

    async def _register(self) -> Credentials:
        assert self._http is not None
        await self._show_connecting("Registering with the cloud")
        new = await creds.register(
            self._http, self.config.cloud_url, self.config.name, creds.device_model()
        )
        path = creds.save(self.config.state_path, new)
        log.info("registered as device %s; credentials saved in %s", new.device_id, path)
        if self._controller is not None:
            self._controller.set_credentials(new.device_id, new.device_token)
        return new

    async def credentials_refused(self, refused: Credentials) -> None:
        if self._credentials == refused:
            self._credentials = None
            creds.forget(self.config.state_path)

    def connected(self, ack: HelloAck) -> None:
        from device.provisioning import ConnectionState

        first = not self._ready_sent
        if self._controller is not None:
            self._controller.set_connection_state(ConnectionState.CONNECTED)
            self._controller.set_paired(bool(ack.payload.paired))
        # Sessions are kept across reconnections: the cloud gives a returning device a grace
        # period, queued answers and watch_ends go out now, and a session whose offer was lost
        # ends at its offer timeout.  The cloud may say which sessions it keeps (our hello
        # listed those that stream): the others end.  An unpaired device keeps none.
        if self._sessions is not None:
            self._sessions.set_paired(bool(ack.payload.paired))
            if ack.payload.sessions is not None:
                self._sessions.keep_only(ack.payload.sessions)
        status = f"connected as {ack.payload.id}, {'paired' if ack.payload.paired else 'unpaired'}"
        if first:
            self._ready_sent = True
            self.notifier.ready(status)
        else:
            self.notifier.status(status)
        if self._update is not None:
            self._update.connected()

    def disconnected(self, reason: str) -> None:
        from device.provisioning import ConnectionState

        if self._controller is not None:
            self._controller.set_connection_state(
                ConnectionState.CONNECTING, "Cloud unreachable; reconnecting"
            )
        self.notifier.status(f"reconnecting: {reason}")

    def received(self, message: Any) -> None:
        sessions = self._sessions
        assert sessions is not None
        if isinstance(message, DeviceWatchRequest):
            sessions.watch_request(message.payload)
        elif isinstance(message, SignalOffer):
            sessions.offer(message)
        elif isinstance(message, SignalIce):
            sessions.ice(message.payload)
        elif isinstance(message, WatchEnded):
            sessions.ended(message.payload.session_id, message.payload.reason)
        elif isinstance(message, PairingStatus):
            log.info("the cloud says: %s", "paired" if message.payload.paired else "unpaired")
            sessions.ownership_changed(message.payload.paired)  # a new owner, or none: all end
            if self._controller is not None:
                self._controller.set_paired(message.payload.paired)
        elif isinstance(message, UpdateOffer):
            if self._update is not None:
                self._update.offer(message.payload)
        elif isinstance(message, DeviceSettingsRequest):
            if self._settings is not None:
                self._settings.request(message.payload)
        elif isinstance(message, HeartbeatAck):
            pass
        else:
            log.warning("ignoring %s from the cloud", type(message).__name__)

    def streaming_sessions(self) -> list[str]:
        return [] if self._sessions is None else self._sessions.streaming()

    def still_meaningful(self, message: msgspec.Struct) -> bool:
        if isinstance(message, SignalOffer | SignalAnswer | SignalIce):
            return self._sessions is not None and self._sessions.alive(message.payload.session_id)
        return True  # watch_end always goes: the cloud may still hold the session

    def _restart(self) -> None:
        self.restart_requested = True
        self.stop()

    async def _update_state(self) -> AgentUpdate | None:
        """Where the agent's update stands, from the updater's status file."""
        from device.update import files
        from device.update.files import Status

        if self._update is None:
            return None
        status = await asyncio.to_thread(files.read_struct, self._update.status_path, Status)
        if status is None:
            return None
        return AgentUpdate(state=status.state, version=status.version, reason=status.reason)

    # --- the display -----------------------------------------------------------------------------

    def _ensure_controller(self, current: Credentials) -> None:
        from device.provisioning import PairingController

        if self._controller is not None:
            return
        assert self._display is not None and self._http is not None
        self._controller = PairingController(
            self._display,
            self.config.cloud_url,
            current.device_id,
            current.device_token,
            client=self._http,
            backoff_initial_s=self.config.reconnect.base,
            backoff_max_s=self.config.reconnect.cap,
        )
        self._controller_task = asyncio.create_task(self._controller.run(), name="pairing")

    async def _show_connecting(self, detail: str) -> None:
        """Before the controller exists (no credentials yet), the display shows this."""
        from device.provisioning import Phase, Screen

        if self._controller is not None or self._display is None:
            return
        try:
            await asyncio.to_thread(self._display.show, Screen(Phase.CONNECTING, detail))
        except Exception:
            log.exception("the display failed")

    def _camera_state(self, state: HubState) -> None:
        from device.media import HubState

        if self._controller is None:
            return
        if state is HubState.FAILED:
            error = self._hub.last_error if self._hub is not None else None
            self._controller.set_camera_problem(f"Camera not working: {error or 'no picture'}")
        elif state is HubState.RUNNING:
            self._controller.set_camera_problem("")

    def _viewers_changed(self, count: int) -> None:
        log.info("%d viewer(s) connected", count)
        if self._update is not None:
            self._update.viewers(count)
        if self._controller is not None:
            self._controller.set_viewers(count)

    # --- for tests and the benchmark -------------------------------------------------------------

    @property
    def sessions(self) -> SessionManager | None:
        return self._sessions

    @property
    def client(self) -> SignalingClient | None:
        return self._client

    @property
    def hub(self) -> MediaHub | None:
        return self._hub

    @property
    def snapshots(self) -> Snapshots | None:
        return self._snapshots

    @property
    def settings(self) -> DeviceSettingsService | None:
        return self._settings

    @property
    def controller(self) -> PairingController | None:
        return self._controller
