"""One LED on a GPIO pin (gpiozero), with a blink pattern per phase.

=============  =======================================================  ==============
phase          pattern                                                  period
=============  =======================================================  ==============
connecting     fast blink: 0.1 s on, 0.1 s off                          0.2 s (5 Hz)
pairing        slow blink: 1 s on, 1 s off (waiting for an owner)       2 s
online         steady on                                                -
error          two short flashes (0.15 s on, 0.15 s off, 0.15 s on),    2 s
               then 1.55 s off
(closed)       off                                                      -
=============  =======================================================  ==============

Patterns are played by gpiozero itself (the LED's ``source`` fed at ``TICK_S`` intervals), in
its own background thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Final

from device.provisioning.display import DisplayError, OptionStruct, parse_options
from device.provisioning.screen import Phase, Screen

#: The pattern clock: every step of a pattern lasts a whole number of ticks.
TICK_S: Final = 0.05

#: Each phase's pattern: ``(lit, seconds)`` steps, repeated forever.
PATTERNS: Final[dict[Phase, tuple[tuple[bool, float], ...]]] = {
    Phase.CONNECTING: ((True, 0.1), (False, 0.1)),
    Phase.PAIRING: ((True, 1.0), (False, 1.0)),
    Phase.ONLINE: ((True, 1.0),),
    Phase.ERROR: ((True, 0.15), (False, 0.15), (True, 0.15), (False, 1.55)),
}


def ticks(pattern: tuple[tuple[bool, float], ...]) -> Iterator[bool]:
    """The pattern as an endless stream of one value per tick."""
    one_period = [lit for lit, seconds in pattern for _ in range(round(seconds / TICK_S))]
    return itertools.cycle(one_period)


class LedOptions(OptionStruct):
    #: A gpiozero pin name: BCM number (``17``) or ``"GPIO17"``, ``"BOARD11"``.
    pin: int | str
    #: ``False`` when the LED is wired between the pin and 3.3 V (lit when the pin is low).
    active_high: bool = True


class LedDisplay:
    """Drives a ``gpiozero.LED`` (or any gpiozero output device with ``source``)."""

    def __init__(self, led: Any) -> None:
        self.led = led
        self.led.source_delay = TICK_S
        self.phase: Phase | None = None

    def show(self, screen: Screen) -> None:
        if screen.phase is self.phase:
            return  # keep the pattern running without a restart (no visible hiccup)
        self.phase = screen.phase
        pattern = PATTERNS[screen.phase]
        if len(pattern) == 1:
            self.led.source = None
            self.led.value = pattern[0][0]
        else:
            self.led.source = ticks(pattern)

    def close(self) -> None:
        self.led.source = None
        self.led.off()
        self.led.close()


def open_led(options: dict[str, object] | None = None, *, pin_factory: Any = None) -> LedDisplay:
    """Open the ``led`` display (``pin_factory`` is gpiozero's, for tests: ``MockFactory``)."""
    opts = parse_options("display 'led'", options, LedOptions)
    try:
        from gpiozero import LED
    except ImportError as exc:
        raise DisplayError(f"led: gpiozero is not installed ({exc})") from None
    try:
        led = LED(opts.pin, active_high=opts.active_high, pin_factory=pin_factory)
    except Exception as exc:  # gpiozero raises its own errors when there is no GPIO
        raise DisplayError(f"led: cannot use GPIO pin {opts.pin!r}: {exc}") from None
    return LedDisplay(led)
