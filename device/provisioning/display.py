"""The interface every display backend implements, its errors, and typed option parsing."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

import msgspec

from device.provisioning.screen import Screen

log = logging.getLogger(__name__)

T = TypeVar("T")


class Display(Protocol):
    """Somewhere to show the device's state: a terminal, an OLED, an LED, a PNG file.

    ``show`` is called only when the screen changes, from a worker thread (never two calls at
    once), so a backend may block briefly on its hardware. ``close`` releases the hardware and
    leaves it dark.
    """

    def show(self, screen: Screen) -> None: ...

    def close(self) -> None: ...


class OptionError(ValueError):
    """A display or button option is missing or invalid (the message is one line)."""


class DisplayError(RuntimeError):
    """A display could not be opened (hardware absent, no permission); one-line message."""


class OptionStruct(msgspec.Struct, forbid_unknown_fields=True):
    """Base of the options of a backend: unknown options are an error, not silently ignored."""


def parse_options(what: str, options: Mapping[str, object] | None, kind: type[T]) -> T:
    """Convert a config mapping (from YAML) to ``kind``; errors name ``what`` on one line."""
    try:
        return msgspec.convert(dict(options or {}), kind)
    except msgspec.ValidationError as exc:
        raise OptionError(f"{what}: {exc}") from None


def int_from_text(what: str, value: object) -> object:
    """Accept ``"0x3C"``-style integers written as strings in a config file."""
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            raise OptionError(f"{what}: {value!r} is not an integer") from None
    return value


class DisplayGroup:
    """Several displays shown together (an OLED and an LED, say).

    A failing display is logged and skipped so that it cannot blank the others.
    """

    def __init__(self, displays: Sequence[Display]) -> None:
        self.displays = tuple(displays)

    def show(self, screen: Screen) -> None:
        for display in self.displays:
            try:
                display.show(screen)
            except Exception:
                log.exception("display %s failed to show %s", type(display).__name__, screen.phase)

    def close(self) -> None:
        for display in self.displays:
            try:
                display.close()
            except Exception:
                log.exception("display %s failed to close", type(display).__name__)
