"""Staged rollouts: which device gets which release when, and when a rollout stops itself.

* A device's version and architecture come from its ``hello``.
* A rollout (version, channel, percentage) includes a device when a stable hash of the rollout
  and the device id falls under the percentage: raising it only adds devices, and each rollout
  starts with different ones (the first 5 % are not always the same guinea pigs).
* An included device running an older version gets ``update_offer`` after each ``hello`` and
  when the rollout starts, grows or resumes; one that rolled the version back or failed it is
  not offered it again by this rollout.
* ``update_status`` from devices updates their row; once ``min_sample`` devices have *tried*
  the version (anything past ``waiting``), a failure rate (rolled back + failed) above the
  rollout's threshold pauses it: no more offers until an operator resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

from packaging.version import InvalidVersion, Version

from cloud.batch import Batcher
from cloud.live import LiveState
from cloud.updates.store import DeviceUpdate, Rollout, UpdateStore
from protocol import encode
from protocol.messages import (
    DeviceUpdate as DeviceUpdateMessage,
)
from protocol.messages import (
    DeviceUpdatePayload,
    UpdateOffer,
    UpdateOfferPayload,
    UpdateStatusPayload,
)

log = logging.getLogger(__name__)

BUCKETS = 10_000
DEFAULT_THRESHOLD = 0.2
DEFAULT_MIN_SAMPLE = 5


def bucket(rollout_id: int, device_id: str) -> int:
    """The device's place in the rollout, 0..9999, the same every time it is asked."""
    digest = hashlib.sha256(f"mumu-rollout:{rollout_id}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def included(rollout: Rollout, device_id: str) -> bool:
    return bucket(rollout.id, device_id) < round(rollout.percentage * BUCKETS / 100)


def older(version: str | None, than: str) -> bool:
    if version is None:
        return False  # an agent from before updates cannot take them
    try:
        return Version(version) < Version(than)
    except InvalidVersion:
        return False


class UpdateService:
    def __init__(
        self,
        store: UpdateStore,
        live: LiveState,
        owner_of: Callable[[str], Awaitable[str | None]],
        *,
        poll_s: float = 5.0,
    ) -> None:
        """``owner_of``: the device's owner (from the database) for ``device_update``."""
        self.store = store
        self.live = live
        self.owner_of = owner_of
        self.poll_s = poll_s
        self._watcher: asyncio.Task[None] | None = None
        self._seen_change = 0.0
        self._rows: Batcher[str, DeviceUpdate] = Batcher(store.devices)
        #: channel -> (its active rollout, when read): rollouts change rarely, hellos often.
        self._active: dict[str, tuple[Rollout | None, float]] = {}

    # --- lifecycle: changes made by mumu-cloud in another process -------------------------------

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch_rollouts(), name="rollout-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def _watch_rollouts(self) -> None:
        with contextlib.suppress(Exception):
            self._seen_change = await self.store.last_change()
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                change = await self.store.last_change()
                if change > self._seen_change:
                    self._seen_change = change
                    self._active.clear()
                    for rollout in await self.store.rollouts():
                        if rollout.state == "active":
                            await self.push(rollout)
            except Exception:
                log.exception("rollout watcher failed")

    # --- from the signaling hub -----------------------------------------------------------------

    async def device_connected(self, device_id: str, version: str | None, arch: str | None) -> None:
        # A reconnect storm brings thousands of hellos: one query for each batch of them, a
        # write only when the version changed, and the active rollouts from memory.
        before = await self._rows.get(device_id)
        if before is not None and before.agent_version == version and before.arch == arch:
            row = before
        else:
            row = await self.store.record_hello(device_id, version, arch)
            if version is not None and (before is None or before.agent_version != version):
                await self._tell_owner(row)  # only news: a new version
        rollout = await self._active_rollout(row.channel)
        if rollout is not None:
            await self._offer(rollout, row)

    async def _active_rollout(self, channel: str) -> Rollout | None:
        cached = self._active.get(channel)
        now = asyncio.get_running_loop().time()
        if cached is None or now - cached[1] > self.poll_s:
            cached = (await self.store.active_rollout(channel), now)
            self._active[channel] = cached
        return cached[0]

    async def status(self, device_id: str, payload: UpdateStatusPayload) -> None:
        # The status may overtake the hello's own record (that runs beside the socket).
        row = await self.store.device(device_id) or await self.store.ensure_device(device_id)
        same_target = row.target_version == payload.version
        if same_target and payload.seq <= row.seq and row.state is not None:
            return  # seen, or older than what we have
        values: dict[str, object] = {
            "state": payload.state,
            "reason": payload.reason,
            "progress": payload.progress,
            "seq": payload.seq,
            "target_version": payload.version,
        }
        if payload.rollout_id is not None:
            values["rollout_id"] = payload.rollout_id
        if payload.state == "committed":
            values["agent_version"] = payload.version
        await self.store.set_device(device_id, **values)
        updated = await self.store.device(device_id)
        if updated is not None:
            await self._tell_owner(updated)
        rollout_id = payload.rollout_id or row.rollout_id
        if rollout_id is not None and payload.state in ("rolled_back", "failed"):
            await self.check_failures(rollout_id)

    # --- rollouts -------------------------------------------------------------------------------

    async def check_failures(self, rollout_id: int) -> bool:
        """Pause the rollout if its failure rate passed its threshold; True if it did now."""
        rollout = await self.store.rollout(rollout_id)
        if rollout is None or rollout.state != "active":
            return False
        counts = await self.store.counts(rollout_id)
        if counts.tried < rollout.min_sample:
            return False
        rate = counts.failed / counts.tried
        if rate <= rollout.failure_threshold:
            return False
        reason = (
            f"paused by itself: {counts.failed} of {counts.tried} devices that tried "
            f"{rollout.version} failed ({rate:.0%}, threshold {rollout.failure_threshold:.0%})"
        )
        paused = await self.store.pause_if_active(rollout_id, reason)
        self._active.clear()
        if paused:
            log.warning("rollout %d: %s", rollout_id, reason)
        return paused

    async def change(self, rollout_id: int, percentage: float | None, state: str | None) -> Rollout:
        """An operator raises, pauses, resumes or cancels a rollout (LookupError: no such one;
        ValueError: not allowed, in words)."""
        rollout = await self.store.rollout(rollout_id)
        if rollout is None:
            raise LookupError(rollout_id)
        if rollout.state in ("finished", "cancelled"):
            raise ValueError(f"rollout {rollout_id} is {rollout.state}; start a new one")
        values: dict[str, object] = {}
        if percentage is not None:
            if percentage < rollout.percentage:
                raise ValueError(
                    "a percentage is never lowered (devices that updated stay updated): "
                    "pause the rollout, or publish a newer release"
                )
            values["percentage"] = percentage
        if state is not None:
            values["state"] = state
            if state == "active":
                values["paused_reason"] = None
            elif state == "paused":
                values["paused_reason"] = "paused by an operator"
        updated = await self.store.update_rollout(rollout_id, **values)
        self._active.clear()
        assert updated is not None
        if updated.state == "active":
            await self.push(updated)
        return updated

    async def settings_changed(self, device_id: str) -> None:
        """The owner changed the window: a pending offer goes again with it."""
        row = await self.store.device(device_id)
        if row is None:
            return
        rollout = await self.store.active_rollout(row.channel)
        if rollout is not None and row.device_id in await self.live.online([row.device_id]):
            await self._offer(rollout, row)

    async def push(self, rollout: Rollout) -> int:
        """Offer the rollout to every included device that is online now; how many."""
        # This process offers it now: its watcher need not do it again for this change.
        self._seen_change = max(self._seen_change, rollout.updated_at)
        self._active.clear()
        rows = await self.store.devices_on_channel(rollout.channel)
        online = await self.live.online([r.device_id for r in rows])
        sent = 0
        for row in rows:
            if row.device_id in online and await self._offer(rollout, row):
                sent += 1
        return sent

    async def _offer(self, rollout: Rollout, row: DeviceUpdate) -> bool:
        if rollout.state != "active" or not included(rollout, row.device_id):
            return False
        if not older(row.agent_version, rollout.version):
            return False
        release = await self.store.release(rollout.version)
        if release is None or (row.arch is not None and row.arch not in release.arches):
            return False
        if row.rollout_id == rollout.id and row.state in ("rolled_back", "failed"):
            return False
        if row.rollout_id != rollout.id:
            await self.store.record_offer(row.device_id, rollout.id, rollout.version)
        offer = UpdateOffer(
            payload=UpdateOfferPayload(
                version=rollout.version, rollout_id=rollout.id, window=row.window
            )
        )
        return await self.live.publish(f"device:{row.device_id}", encode(offer))

    async def _tell_owner(self, row: DeviceUpdate) -> None:
        owner = await self.owner_of(row.device_id)
        if owner is None:
            return
        message = DeviceUpdateMessage(
            payload=DeviceUpdatePayload(
                device_id=row.device_id,
                version=row.agent_version,
                state=row.state,  # type: ignore[arg-type]
                target=row.target_version,
                reason=row.reason,
                progress=row.progress,
            )
        )
        await self.live.publish(f"user:{owner}", encode(message))
