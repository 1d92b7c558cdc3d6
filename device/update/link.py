"""The agent's side of updates: it runs unprivileged and only passes words along.

* An ``update_offer`` from the cloud becomes ``<state_dir>/update-offer.json`` (a path unit
  starts the privileged updater when it changes).
* How many viewers watch goes to ``$RUNTIME_DIRECTORY/viewers``: the updater switches only when
  it says 0.
* The updater's ``status.json`` goes to the cloud as ``update_status``, when it changes and
  after every ``hello_ack`` (the cloud ignores what it has seen, by ``seq``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from device.update import files
from device.update.files import Offer, Status
from device.update.install import machine_arch
from protocol.messages import UpdateOfferPayload, UpdateStatus, UpdateStatusPayload

log = logging.getLogger(__name__)

#: Where the updater writes its status (``MUMU_UPDATE_STATE_DIR`` overrides, for tests).
UPDATER_STATE_DIR: Final = Path("/var/lib/mumu-update")
POLL_S: Final = 2.0


def agent_release() -> tuple[str | None, str]:
    """This agent's version (its package's) and the machine's architecture."""
    try:
        version: str | None = importlib.metadata.version("mumu-camera")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return version, machine_arch()


class UpdateLink:
    def __init__(
        self,
        state_dir: Path,
        send: Callable[[UpdateStatus], None],
        *,
        runtime_dir: Path | None = None,
        updater_state_dir: Path | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        env_runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        self.offer_path = state_dir / files.OFFER_FILE
        self.viewers_path = (runtime_dir or Path(env_runtime or state_dir)) / files.VIEWERS_FILE
        updater_dir = updater_state_dir or Path(
            os.environ.get("MUMU_UPDATE_STATE_DIR", str(UPDATER_STATE_DIR))
        )
        self.status_path = updater_dir / files.STATUS_FILE
        self._send = send
        self._poll_s = poll_s
        self._sent_seq = -1
        self._mtime = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def _later(self, work: Callable[[], None]) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def offer(self, payload: UpdateOfferPayload) -> None:
        """Pass the cloud's offer to the updater (unchanged offers are not rewritten)."""
        offer = Offer(
            version=payload.version,
            rollout_id=payload.rollout_id,
            window=payload.window,
            received_at=time.time(),
        )
        old = files.read_struct(self.offer_path, Offer)
        if old is not None and (old.version, old.rollout_id, old.window) == (
            offer.version,
            offer.rollout_id,
            offer.window,
        ):
            return
        log.info("update offered: %s (rollout %d)", offer.version, offer.rollout_id)
        self._later(lambda: files.write_offer(self.offer_path, offer))

    def viewers(self, count: int) -> None:
        self._later(lambda: self._write_viewers(count))

    def _write_viewers(self, count: int) -> None:
        try:
            files.write_viewers(self.viewers_path, count)
        except OSError as exc:
            log.warning("cannot tell the updater how many viewers watch: %s", exc)

    def connected(self) -> None:
        """After ``hello_ack``: the latest status again (it may have been lost with a socket)."""
        status = files.read_struct(self.status_path, Status)
        if status is not None:
            self._forward(status)

    def _forward(self, status: Status) -> None:
        self._sent_seq = status.seq
        self._send(
            UpdateStatus(
                payload=UpdateStatusPayload(
                    state=status.state,
                    version=status.version,
                    seq=status.seq,
                    rollout_id=status.rollout_id,
                    reason=status.reason,
                    progress=status.progress,
                )
            )
        )

    async def run(self) -> None:
        """Forward every new status; starts by saying nobody watches (a fresh agent)."""
        await asyncio.to_thread(self._write_viewers, 0)
        while True:
            with contextlib.suppress(OSError):
                mtime = self.status_path.stat().st_mtime
                if mtime != self._mtime:
                    self._mtime = mtime
                    status = await asyncio.to_thread(files.read_struct, self.status_path, Status)
                    if status is not None and status.seq != self._sent_seq:
                        self._forward(status)
            await asyncio.sleep(self._poll_s)

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
