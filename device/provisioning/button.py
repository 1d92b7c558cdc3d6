"""The provisioning button: held at boot, it sends the device back to pairing mode.

The agent calls ``button_held_at_boot`` once at start, before connecting; when it answers
``True`` the agent forgets its credentials and registers anew (a factory reset), so no other
account's ownership carries over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from device.provisioning.display import OptionStruct, parse_options


class ButtonError(RuntimeError):
    """The button's GPIO pin cannot be used (no GPIO here, pin busy); one-line message."""


class ButtonOptions(OptionStruct):
    #: A gpiozero pin name: BCM number (``27``) or ``"GPIO27"``, ``"BOARD13"``.
    pin: int | str
    #: How long the button must stay held after start for a reset.
    hold_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    #: ``True``: the button connects the pin to ground (internal pull-up); ``False``: to 3.3 V.
    pull_up: bool = True


def parse_button_options(options: dict[str, object] | None) -> ButtonOptions:
    return parse_options("button", options, ButtonOptions)


def button_held_at_boot(
    pin: int | str,
    hold_seconds: float = 5.0,
    *,
    pull_up: bool = True,
    pin_factory: Any = None,
    on_hold_started: Callable[[], None] | None = None,
) -> bool:
    """Whether the button on ``pin`` is pressed now and stays pressed for ``hold_seconds``.

    Returns at once (``False``) when the button is not pressed; otherwise blocks until it is
    released or ``hold_seconds`` have passed. ``on_hold_started`` runs when a press is seen
    (to show "keep holding to reset" on a display). Blocking: from asyncio, run it in a thread.
    """
    try:
        from gpiozero import Button
    except ImportError as exc:
        raise ButtonError(f"button: gpiozero is not installed ({exc})") from None
    try:
        button = Button(pin, pull_up=pull_up, bounce_time=None, pin_factory=pin_factory)
    except Exception as exc:
        raise ButtonError(f"button: cannot use GPIO pin {pin!r}: {exc}") from None
    try:
        if not button.is_pressed:
            return False
        if on_hold_started is not None:
            on_hold_started()
        released = bool(button.wait_for_release(timeout=hold_seconds))
        return not released and bool(button.is_pressed)
    finally:
        button.close()
