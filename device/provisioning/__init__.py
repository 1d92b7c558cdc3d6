"""Device provisioning: pairing codes on a display (console, OLED, LED, PNG), the pairing
controller that keeps them fresh, and the button that sends the device back to pairing.

The agent's side of it::

    from device.provisioning import (
        ConnectionState, PairingController, button_held_at_boot, open_displays,
    )

    if button_held_at_boot(27, hold_seconds=5):   # before connecting; blocking
        ...  # forget credentials, register anew (factory reset)
    display = open_displays([{"backend": "oled"}, {"backend": "led", "pin": 17}])
    controller = PairingController(display, "https://cam.example.com", device_id, token)
"""

from device.provisioning.backends import DISPLAYS, open_display, open_displays
from device.provisioning.button import (
    ButtonError,
    ButtonOptions,
    button_held_at_boot,
    parse_button_options,
)
from device.provisioning.controller import ConnectionState, PairingController
from device.provisioning.display import Display, DisplayError, DisplayGroup, OptionError
from device.provisioning.screen import PairingCode, Phase, Screen

__all__ = [
    "DISPLAYS",
    "ButtonError",
    "ButtonOptions",
    "ConnectionState",
    "Display",
    "DisplayError",
    "DisplayGroup",
    "OptionError",
    "PairingCode",
    "PairingController",
    "Phase",
    "Screen",
    "button_held_at_boot",
    "open_display",
    "open_displays",
    "parse_button_options",
]
