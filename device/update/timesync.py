"""Whether the device clock has been set from the network, and a bounded wait for it.

A Raspberry Pi has no real-time clock: it boots on the time saved at the last shutdown
(``fake-hwclock``, ``systemd-timesyncd``'s clock file) and is set right when NTP answers.
``After=time-sync.target`` does not wait for that unless ``systemd-time-wait-sync`` is enabled,
which the image does not do: it would hold every unit ordered after ``time-sync.target`` (the
agent too) for as long as no NTP server answers, e.g. at the first boot before Wi-Fi is set up.
So the updater waits by itself, bounded (``clock_wait``), before it checks the signed metadata's
expiry against the clock; past the bound it checks against the clock it has (docs/updates.md,
"Clocks").

Synchronised means ``systemd-timesyncd`` has set the clock since boot (it creates
``/run/systemd/timesync/synchronized`` then), or the updater runs in a container
(``/run/systemd/container``: the host keeps the clock, and timesyncd does not run there).
The kernel's own flag (``adjtimex``) is out of reach: the unit's ``ProtectClock=yes`` denies the
call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

RUN = Path("/run")


def synchronized(run: Path = RUN) -> bool:
    return (run / "systemd/timesync/synchronized").exists() or (run / "systemd/container").exists()


def wait_until_synchronized(
    probe: Callable[[], bool],
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    limit: float,
    interval: float = 5.0,
) -> bool:
    """Poll ``probe`` until it says yes (True) or ``limit`` seconds have passed (False)."""
    until = clock() + limit
    while not probe():
        left = until - clock()
        if left <= 0:
            return False
        sleep(min(interval, left))
    return True
