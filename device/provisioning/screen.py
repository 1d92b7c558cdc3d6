"""What a display shows: one immutable ``Screen`` per state of the device.

The ``PairingController`` composes screens; every display backend renders the same ``Screen``
in its own way (text, pixels, a blink pattern).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Phase(enum.StrEnum):
    """The four things a device can be doing, as far as a person looking at it cares."""

    #: Reaching the cloud (at start, or after losing the connection).
    CONNECTING = "connecting"
    #: No account owns the device: show a pairing code and wait for someone to claim it.
    PAIRING = "pairing"
    #: Paired and connected: viewers can watch.
    ONLINE = "online"
    #: Something is wrong (cloud unreachable, credentials rejected); the device keeps retrying.
    ERROR = "error"


#: The headline each backend shows for a phase.
HEADLINES: Final[dict[Phase, str]] = {
    Phase.CONNECTING: "Connecting",
    Phase.PAIRING: "Pair this camera",
    Phase.ONLINE: "Online",
    Phase.ERROR: "Error",
}


@dataclass(frozen=True, slots=True)
class PairingCode:
    """A code the cloud issued for this device (``POST /api/pairing/generate``)."""

    #: Six digits that a person types into the web app.
    code: str
    #: Unix time (by the cloud's clock) after which the cloud refuses the code.
    expires_at: float
    #: A link holding a long random claim token; shown as a QR code. ``None`` if the cloud
    #: gave none.
    claim_url: str | None = None

    @property
    def grouped(self) -> str:
        """The code as people read it: ``"123 456"``."""
        half = len(self.code) // 2
        return f"{self.code[:half]} {self.code[half:]}" if len(self.code) == 6 else self.code


@dataclass(frozen=True, slots=True)
class Screen:
    """Everything a display needs to draw one state."""

    phase: Phase
    #: One short line under the headline ("2 viewers", "Cloud unreachable, retrying in 8 s").
    detail: str = ""
    #: The code to show; only in ``Phase.PAIRING`` (``None`` while the first one is fetched).
    code: PairingCode | None = None
    #: Host name of the web app where a person enters the code (``"cam.example.com"``).
    site: str = ""

    @property
    def headline(self) -> str:
        return HEADLINES[self.phase]
