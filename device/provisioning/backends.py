"""The registry of display backends (name -> factory) and how the agent opens them.

Config, as the agent reads it from YAML::

    displays:
      - backend: oled        # driver: ssd1306|sh1106, port: 1, address: 0x3C, rotate: 0
        driver: sh1106
      - backend: led         # pin: 17, active_high: true
        pin: 17
      - backend: png         # path: /run/mumu/screen.png, width: 800, height: 480
        path: /run/mumu/screen.png
      - backend: console     # qr: true, stream: stdout

Opening a backend imports its vendor library (luma, gpiozero) then, never at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from device.provisioning.console import open_console
from device.provisioning.display import Display, DisplayGroup, OptionError
from device.provisioning.led import open_led
from device.provisioning.oled import open_oled
from device.provisioning.png import open_png

#: Options (already a plain dict from the config file) -> an open display.
DisplayFactory = Callable[[dict[str, object] | None], Display]

DISPLAYS: Final[dict[str, DisplayFactory]] = {
    "console": open_console,
    "oled": open_oled,
    "led": open_led,
    "png": open_png,
}


def open_display(name: str, options: Mapping[str, object] | None = None) -> Display:
    """Open backend ``name`` with its options.

    Raises ``OptionError`` for an unknown backend or bad options and ``DisplayError`` when the
    hardware cannot be opened; both carry a one-line message.
    """
    factory = DISPLAYS.get(name)
    if factory is None:
        known = ", ".join(sorted(DISPLAYS))
        raise OptionError(f"unknown display backend {name!r} (known: {known})")
    return factory(dict(options or {}))


def open_displays(entries: Sequence[Mapping[str, object]]) -> DisplayGroup:
    """Open every ``{"backend": name, **options}`` entry; closes those already opened if one
    fails, then re-raises."""
    opened: list[Display] = []
    try:
        for i, entry in enumerate(entries):
            options = dict(entry)
            name = options.pop("backend", None)
            if not isinstance(name, str):
                raise OptionError(f"displays[{i}]: 'backend' must name a display backend")
            opened.append(open_display(name, options))
    except BaseException:
        DisplayGroup(opened).close()
        raise
    return DisplayGroup(opened)
