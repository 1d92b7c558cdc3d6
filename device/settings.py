"""Camera settings from the app: read, change (and keep) them, or restart the agent.

The owner's ``device_settings_request`` reaches the agent through the cloud (which checks
ownership in its database, ``cloud/device_settings.py``); :class:`DeviceSettingsService`
answers each with ``device_settings``:

* ``get``: the settings as they are, the sizes the camera offers (known once the camera ran; a
  camera that has not run yet is opened briefly to learn them), whether it can flip its
  picture, the agent's release and where its update stands.
* ``set``: checked against what the camera offers (refused with a reason otherwise: nothing
  changes), applied (a running camera restarts with them; viewers keep watching and get the new
  picture within a second), kept in ``<state_dir>/camera-settings.json`` (they win over
  ``agent.yaml``'s ``camera`` section, at every start), then answered.  A camera that does not
  run with them gets its old settings back and the answer says ``camera_failed``.
* ``restart``: answered, then the agent stops cleanly and systemd starts it again.

One change at a time (``in_progress`` otherwise).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from protocol.messages import (
    AgentUpdate,
    CameraMode,
    CameraSettings,
    DeviceSettings,
    DeviceSettingsPayload,
    DeviceSettingsRequestPayload,
    SettingsRefusal,
)

if TYPE_CHECKING:
    from device.hal import CameraConfig, Capabilities
    from device.media import MediaHub

log = logging.getLogger(__name__)

SETTINGS_FILE: Final = "camera-settings.json"
#: How long a camera that has not run yet may take to show what it offers.
PROBE_TIMEOUT_S: Final = 10.0

Send = Callable[[DeviceSettings], None]


class Saved(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What the owner changed, as kept on the device."""

    rotation: int = 0
    hflip: bool = False
    vflip: bool = False
    width: int | None = None
    height: int | None = None
    fps: int | None = None


def load_saved(state_dir: Path) -> Saved:
    """The kept settings (none kept, or an unreadable file: nothing changed)."""
    path = state_dir / SETTINGS_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=Saved)
    except FileNotFoundError:
        return Saved()
    except (OSError, msgspec.DecodeError) as exc:
        log.error("ignoring %s: %s", path, exc)
        return Saved()


def save(state_dir: Path, saved: Saved) -> None:
    from device.update.files import write_atomic

    write_atomic(state_dir / SETTINGS_FILE, msgspec.json.encode(saved), mode=0o600)


def with_saved(config: CameraConfig, saved: Saved) -> CameraConfig:
    """``config`` (from agent.yaml) with the owner's kept settings applied."""
    turned = saved.rotation == 180
    return dataclasses.replace(
        config,
        width=saved.width or config.width,
        height=saved.height or config.height,
        fps=saved.fps or config.fps,
        hflip=saved.hflip != turned,
        vflip=saved.vflip != turned,
    )


class Refused(Exception):
    def __init__(self, refusal: SettingsRefusal, message: str) -> None:
        super().__init__(message)
        self.refusal: SettingsRefusal = refusal
        self.message = message


def _modes(caps: Capabilities | None) -> list[CameraMode]:
    if caps is None:
        return []
    modes = [CameraMode(width=m.width, height=m.height, max_fps=m.max_fps) for m in caps.modes]
    if not any((m.width, m.height) == (caps.width, caps.height) for m in modes):
        modes.insert(0, CameraMode(width=caps.width, height=caps.height, max_fps=round(caps.fps)))
    return modes[:64]


class DeviceSettingsService:
    def __init__(
        self,
        hub: MediaHub,
        send: Send,
        state_dir: Path,
        *,
        release: tuple[str | None, str | None] = (None, None),
        update: Callable[[], Awaitable[AgentUpdate | None]] | None = None,
        restart: Callable[[], None] | None = None,
    ) -> None:
        self.hub = hub
        self._send = send
        self.state_dir = state_dir
        self.release = release
        self._update = update
        self._restart = restart
        self._saved = load_saved(state_dir)
        self._caps: Capabilities | None = None
        self._busy = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: Requests answered, by action and outcome (``set:ok``, ``set:not_supported``...).
        self.answered: dict[str, int] = {}
        hub.add_listener(lambda _state: self._remember_capabilities())

    @property
    def saved(self) -> Saved:
        return self._saved

    def request(self, payload: DeviceSettingsRequestPayload) -> None:
        """A request from the owner (answered in the background)."""
        task = asyncio.get_running_loop().create_task(
            self._handle(payload), name=f"settings-{payload.request_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # --- internals ------------------------------------------------------------------------------

    def _remember_capabilities(self) -> None:
        caps = self.hub.capabilities
        if caps is not None:
            self._caps = caps

    def current(self) -> CameraSettings:
        config = self.hub.config
        return CameraSettings(
            rotation=180 if self._saved.rotation == 180 else 0,
            hflip=self._saved.hflip,
            vflip=self._saved.vflip,
            width=config.width,
            height=config.height,
            fps=config.fps,
        )

    async def _handle(self, payload: DeviceSettingsRequestPayload) -> None:
        action = payload.action
        outcome = "ok"
        refusal: Refused | None = None
        try:
            if action == "set":
                if self._busy:
                    raise Refused("in_progress", "another change is being applied; try again")
                self._busy = True
                try:
                    await self._set(payload.settings)
                finally:
                    self._busy = False
            else:
                await self._capabilities()
        except Refused as exc:
            refusal = exc
            outcome = exc.refusal
        except Exception:
            log.exception("settings request %s failed", payload.request_id)
            refusal = Refused("camera_failed", "the camera could not be set up; nothing changed")
            outcome = "camera_failed"
        key = f"{action}:{outcome}"
        self.answered[key] = self.answered.get(key, 0) + 1
        await self._answer(payload.request_id, refusal, restarting=action == "restart")
        if action == "restart" and self._restart is not None:
            log.warning("the owner asked for a restart")
            self._restart()

    async def _capabilities(self) -> Capabilities | None:
        """What the camera offers; a camera that never ran is opened briefly to learn it."""
        self._remember_capabilities()
        if self._caps is None:
            track = self.hub.subscribe()
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    await track.recv_unit()
            except Exception as exc:
                log.warning("could not learn what the camera offers: %s", exc)
            finally:
                self._remember_capabilities()
                track.stop()
        return self._caps

    async def _set(self, change: CameraSettings | None) -> None:
        if change is None:
            raise Refused("invalid", "say what to change")
        if (change.width is None) != (change.height is None):
            raise Refused("invalid", "give the width and the height together")
        caps = await self._capabilities()
        saved = self._saved
        wanted = Saved(
            rotation=saved.rotation if change.rotation is None else change.rotation,
            hflip=saved.hflip if change.hflip is None else change.hflip,
            vflip=saved.vflip if change.vflip is None else change.vflip,
            width=change.width or saved.width,
            height=change.height or saved.height,
            fps=change.fps or saved.fps,
        )
        if wanted.rotation not in (0, 180):
            raise Refused("not_supported", "this camera can turn its picture by 180° only")
        flipping = wanted.rotation == 180 or wanted.hflip or wanted.vflip
        if flipping and (caps is None or not caps.flips):
            raise Refused("not_supported", "this camera cannot flip or turn its picture")
        old = self.hub.config
        width, height = wanted.width or old.width, wanted.height or old.height
        fps = wanted.fps or old.fps
        modes = _modes(caps)
        if modes:
            mode = next((m for m in modes if (m.width, m.height) == (width, height)), None)
            if mode is None:
                sizes = ", ".join(f"{m.width}x{m.height}" for m in modes)
                raise Refused("not_supported", f"this camera offers {sizes}")
            if fps > mode.max_fps:
                raise Refused(
                    "not_supported",
                    f"at {width}x{height} this camera gives at most {mode.max_fps} frames a second",
                )
        new = with_saved(old, wanted)
        if new != old:
            problem = await self.hub.reconfigure(new)
            if problem is not None:
                log.error("the camera failed with the new settings (%s): back to the old", problem)
                await self.hub.reconfigure(old)
                raise Refused(
                    "camera_failed",
                    f"the camera did not work at {width}x{height}, {fps} fps; nothing changed",
                )
        await asyncio.to_thread(save, self.state_dir, wanted)
        self._saved = wanted
        log.info("camera settings changed: %s", msgspec.json.encode(wanted).decode())

    async def _answer(self, request_id: str, refusal: Refused | None, *, restarting: bool) -> None:
        update: AgentUpdate | None = None
        if self._update is not None:
            try:
                update = await self._update()
            except Exception as exc:
                log.warning("cannot read the update state: %s", exc)
        version, arch = self.release
        fields: dict[str, Any] = {}
        if refusal is not None:
            fields = {"refusal": refusal.refusal, "message": refusal.message}
        self._send(
            DeviceSettings(
                payload=DeviceSettingsPayload(
                    ok=refusal is None,
                    settings=self.current(),
                    request_id=request_id,
                    modes=_modes(self._caps),
                    flips=bool(self._caps and self._caps.flips),
                    version=version,
                    arch=arch,
                    update=update,
                    restarting=restarting and refusal is None,
                    **fields,
                )
            )
        )
