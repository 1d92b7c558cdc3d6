"""Provisioning hardware on a real Raspberry Pi: the OLED (luma.oled over I2C), the status LED and
the boot button (gpiozero). Not part of CI; each test skips when its hardware is absent.

    .venv/bin/python -m pytest hardware-tests/test_provisioning_hw.py -s -v

Environment (defaults in brackets):

- ``MUMU_HW_OLED`` [``ssd1306``]: ``ssd1306`` or ``sh1106``; ``none`` skips the OLED tests
- ``MUMU_HW_OLED_PORT`` [``1``], ``MUMU_HW_OLED_ADDRESS`` [``0x3C``]
- ``MUMU_HW_LED_PIN``: the LED's GPIO (e.g. ``17``); unset skips the LED test (driving a pin
  with something else on it could harm it)
- ``MUMU_HW_BUTTON_PIN``: the button's GPIO (e.g. ``27``, button to ground); unset skips
- ``MUMU_HW_INTERACTIVE=1``: ask a person to press the button
- ``MUMU_HW_PAUSE`` [``2``]: seconds each screen or pattern stays up, for a person to look at
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from device.provisioning import (
    DisplayError,
    PairingCode,
    Phase,
    Screen,
    button_held_at_boot,
    open_display,
)

PAUSE = float(os.environ.get("MUMU_HW_PAUSE", "2"))
CLAIM_URL = "https://cam.example.com/#/claim/Zx8_k2Qm9VbLr4TtYw1pNs7HcE3uJdA6fGiKoP0aSeQ"

SCREENS = [
    Screen(Phase.CONNECTING, "Reaching cam.example.com"),
    Screen(Phase.PAIRING, "Getting a pairing code"),
    Screen(Phase.PAIRING, "", PairingCode("482913", 0.0, CLAIM_URL), "cam.example.com"),
    Screen(Phase.PAIRING, "", PairingCode("482913", 0.0, CLAIM_URL[:50]), "cam.example.com"),
    Screen(Phase.ONLINE, "2 viewers"),
    Screen(Phase.ERROR, "Cloud unreachable (connection refused); retrying in 8 s"),
]


def on_a_pi() -> bool:
    model = Path("/proc/device-tree/model")
    return model.exists() and "Raspberry Pi" in model.read_text(errors="replace")


def pin_from_env(name: str) -> int | str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (no such hardware declared)")
    if not on_a_pi():
        pytest.skip("not a Raspberry Pi")
    return int(value) if value.isdigit() else value


def test_oled_shows_every_screen() -> None:
    driver = os.environ.get("MUMU_HW_OLED", "ssd1306")
    port = int(os.environ.get("MUMU_HW_OLED_PORT", "1"))
    if driver == "none":
        pytest.skip("MUMU_HW_OLED=none")
    if not Path(f"/dev/i2c-{port}").exists():
        pytest.skip(f"no /dev/i2c-{port} (enable I2C with raspi-config)")
    options = {
        "driver": driver,
        "port": port,
        "address": os.environ.get("MUMU_HW_OLED_ADDRESS", "0x3C"),
    }
    try:
        display = open_display("oled", options)
    except DisplayError as exc:
        pytest.skip(str(exc))
    try:
        for screen in SCREENS:
            print(f"OLED: {screen.phase} {screen.detail or (screen.code and screen.code.code)}")
            display.show(screen)  # real I2C writes: raises if the panel stops answering
            time.sleep(PAUSE)
    finally:
        display.close()


def test_led_blinks_every_pattern() -> None:
    pin = pin_from_env("MUMU_HW_LED_PIN")
    display = open_display("led", {"pin": pin})
    led = display.led  # type: ignore[attr-defined]
    try:
        for phase in Phase:
            print(f"LED: {phase}")
            display.show(Screen(phase))
            samples = []
            deadline = time.monotonic() + max(PAUSE, 2.2)
            while time.monotonic() < deadline:
                samples.append(bool(led.is_lit))
                time.sleep(0.02)
            if phase is Phase.ONLINE:
                assert all(samples)
            else:
                assert any(samples) and not all(samples), phase
    finally:
        display.close()


def test_button_not_held_is_not_a_reset() -> None:
    pin = pin_from_env("MUMU_HW_BUTTON_PIN")
    if os.environ.get("MUMU_HW_INTERACTIVE") == "1":
        input("\nRelease the button (if held) and press Enter... ")
    assert button_held_at_boot(pin, 1.0) is False


def test_button_held_is_a_reset() -> None:
    pin = pin_from_env("MUMU_HW_BUTTON_PIN")
    if os.environ.get("MUMU_HW_INTERACTIVE") != "1":
        pytest.skip("needs a person: MUMU_HW_INTERACTIVE=1")
    input("\nPress and HOLD the button, then press Enter (keep holding for 3 s)... ")
    assert button_held_at_boot(pin, 3.0, on_hold_started=lambda: print("holding...")) is True
    input("Release the button and press Enter... ")
    assert button_held_at_boot(pin, 1.0) is False
