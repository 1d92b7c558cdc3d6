"""The LED patterns and the boot button on gpiozero's own mock pins (``MockFactory``).

Timings are checked loosely: the patterns run in gpiozero's background thread on a shared,
busy machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from device.provisioning import (
    ButtonError,
    DisplayError,
    OptionError,
    Phase,
    Screen,
    button_held_at_boot,
    parse_button_options,
)
from device.provisioning.led import PATTERNS, LedDisplay, open_led


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    try:
        yield f
    finally:
        f.close()


def transitions(pin: MockPin) -> list[tuple[float, bool]]:
    """(seconds since the previous change, new state) for each change after the first."""
    return [(s.timestamp, bool(s.state)) for s in pin.states[1:]]


# --- LED ---------------------------------------------------------------------------------------


def test_each_phase_blinks_its_own_pattern(factory: MockFactory) -> None:
    pins = {phase: 17 + i for i, phase in enumerate(Phase)}  # one LED per phase, side by side
    leds = {phase: open_led({"pin": pin}, pin_factory=factory) for phase, pin in pins.items()}
    for phase, led in leds.items():
        factory.pin(pins[phase]).clear_states()
        led.show(Screen(phase))
    time.sleep(2.6)
    for led in leds.values():
        led.led.source = None  # freeze them before looking
    seen = {phase: transitions(factory.pin(pin)) for phase, pin in pins.items()}
    for led in leds.values():
        led.close()

    # connecting: fast blink, 0.1 s on / 0.1 s off
    fast = seen[Phase.CONNECTING]
    assert len(fast) >= 8
    assert all(0.05 <= dt <= 0.5 for dt, _ in fast[1:])
    assert [state for _, state in fast[:4]] == [True, False, True, False]

    # pairing: slow blink, 1 s on / 1 s off
    slow = seen[Phase.PAIRING]
    assert [state for _, state in slow[:3]] == [True, False, True]
    assert all(0.8 <= dt <= 1.6 for dt, _ in slow[1:3])

    # online: steady on, one change only
    assert [state for _, state in seen[Phase.ONLINE]] == [True]

    # error: two short flashes, then a long pause
    error = seen[Phase.ERROR]
    assert [state for _, state in error[:5]] == [True, False, True, False, True]
    short_gaps = [dt for dt, _ in error[1:4]]
    assert all(0.08 <= dt <= 0.6 for dt in short_gaps)
    assert 1.2 <= error[4][0] <= 2.5  # the pause before the next pair of flashes


def test_patterns_are_distinct() -> None:
    assert len(set(PATTERNS.values())) == len(PATTERNS) == len(Phase)


def test_same_phase_again_does_not_restart_the_pattern(factory: MockFactory) -> None:
    led = open_led({"pin": 22}, pin_factory=factory)
    led.show(Screen(Phase.PAIRING))
    thread = led.led._source_thread
    led.show(Screen(Phase.PAIRING, "another detail"))
    assert led.led._source_thread is thread
    led.close()


def test_active_low_led_and_close_turns_it_off(factory: MockFactory) -> None:
    led = open_led({"pin": "GPIO23", "active_high": False}, pin_factory=factory)
    pin = factory.pin(23)
    led.show(Screen(Phase.ONLINE))
    assert pin.state is False  # lit: pulled low
    led.show(Screen(Phase.CONNECTING))
    led.close()
    assert pin.state is True  # dark
    assert led.led.closed


def test_led_display_wraps_any_gpiozero_led(factory: MockFactory) -> None:
    from gpiozero import LED

    display = LedDisplay(LED(24, pin_factory=factory))
    display.show(Screen(Phase.ONLINE))
    assert factory.pin(24).state is True
    display.close()


def test_a_pin_in_use_is_a_one_line_error(factory: MockFactory) -> None:
    first = open_led({"pin": 25}, pin_factory=factory)
    with pytest.raises(DisplayError, match=r"^led: cannot use GPIO pin 25: ") as error:
        open_led({"pin": 25}, pin_factory=factory)
    assert "\n" not in str(error.value)
    first.close()


# --- button ------------------------------------------------------------------------------------


class ButtonPin(MockPin):  # type: ignore[misc]  # gpiozero is untyped
    """A GPIO wired to a push button to ground: while pressed it reads low, pull-up or not
    (gpiozero's MockPin would otherwise let the pull-up win when the Button is created)."""

    pressed = False

    def press(self) -> None:
        self.pressed = True
        self.drive_low()

    def release(self) -> None:
        self.pressed = False
        self.drive_high()

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        if self.pressed:
            self.drive_low()


@pytest.fixture
def buttons() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=ButtonPin)
    try:
        yield f
    finally:
        f.close()


def test_not_pressed_at_boot(buttons: MockFactory) -> None:
    assert button_held_at_boot(27, 5.0, pin_factory=buttons) is False


def test_held_through_the_hold_time(buttons: MockFactory) -> None:
    pin = buttons.pin(27)
    assert isinstance(pin, ButtonPin)
    pin.press()
    started: list[bool] = []
    held = button_held_at_boot(
        27, 0.3, pin_factory=buttons, on_hold_started=lambda: started.append(True)
    )
    assert held is True and started == [True]


def test_released_too_soon(buttons: MockFactory) -> None:
    pin = buttons.pin(27)
    assert isinstance(pin, ButtonPin)
    pin.press()
    timer = threading.Timer(0.1, pin.release)
    timer.start()
    try:
        assert button_held_at_boot(27, 3.0, pin_factory=buttons) is False
    finally:
        timer.cancel()


def test_pin_is_released_for_others_afterwards(buttons: MockFactory) -> None:
    assert button_held_at_boot(27, 0.1, pin_factory=buttons) is False
    assert button_held_at_boot(27, 0.1, pin_factory=buttons) is False  # not "pin in use"


def test_idle_button_with_pull_down_is_not_pressed(buttons: MockFactory) -> None:
    pin = buttons.pin(5)
    assert isinstance(pin, ButtonPin)
    assert button_held_at_boot(5, 0.1, pull_up=False, pin_factory=buttons) is False


def test_button_error_is_one_line(buttons: MockFactory) -> None:
    with pytest.raises(ButtonError, match=r"^button: cannot use GPIO pin 'GPIO99': "):
        button_held_at_boot("GPIO99", 0.1, pin_factory=buttons)


def test_button_options() -> None:
    opts = parse_button_options({"pin": 27})
    assert (opts.pin, opts.hold_seconds, opts.pull_up) == (27, 5.0, True)
    with pytest.raises(OptionError, match=r"button: Expected `float` > 0\.0"):
        parse_button_options({"pin": 27, "hold_seconds": 0})
    with pytest.raises(OptionError, match="button: Object missing required field `pin`"):
        parse_button_options({})
