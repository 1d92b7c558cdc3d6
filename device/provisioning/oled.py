"""SSD1306 / SH1106 128x64 monochrome OLED over I2C (luma.oled), imported lazily.

Pairing screen: the claim link's QR code on a lit 64x64 square at the left (dark modules on a
light background, the polarity every scanner reads), the six digits at the right. Other
phases: a headline and a wrapped detail line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from device.provisioning.display import (
    DisplayError,
    OptionStruct,
    int_from_text,
    parse_options,
)
from device.provisioning.fonts import Font, font, text_width, wrap
from device.provisioning.qr import draw_matrix, fit_scale, qr_matrix
from device.provisioning.screen import Phase, Screen

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

WIDTH = 128
HEIGHT = 64
#: Quiet zone (in modules) kept around the QR code inside the lit square, at the least.
QUIET_ZONE = 1


class OledOptions(OptionStruct):
    driver: Literal["ssd1306", "sh1106"] = "ssd1306"
    #: I2C bus number (``/dev/i2c-<port>``).
    port: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    #: 7-bit I2C address; ``0x3C`` or ``0x3D`` on most modules.
    address: Annotated[int, msgspec.Meta(ge=0x03, le=0x77)] = 0x3C
    #: 0, 1, 2 or 3 quarter turns (2 = upside down).
    rotate: Annotated[int, msgspec.Meta(ge=0, le=3)] = 0
    #: 0-255.
    contrast: Annotated[int, msgspec.Meta(ge=0, le=255)] = 255


def render(screen: Screen, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    """The 1-bit image of ``screen`` (white = lit pixel)."""
    from PIL import Image, ImageDraw

    image = Image.new("1", size, 0)
    draw_screen(ImageDraw.Draw(image), screen, size)
    return image


def draw_screen(draw: ImageDraw.ImageDraw, screen: Screen, size: tuple[int, int]) -> None:
    width, height = size
    if screen.phase is Phase.PAIRING and screen.code is not None:
        _draw_code(draw, screen, width, height)
        return
    title = "Pairing" if screen.phase is Phase.PAIRING else screen.headline
    if screen.phase is Phase.ERROR:
        title = "! " + title
    big = font(18, bold=True)
    small = font(11)
    draw.text((0, 0), title, font=big, fill=1)
    draw.line((0, 23, width - 1, 23), fill=1)
    for i, line in enumerate(wrap(screen.detail, small, width, max_lines=3)):
        draw.text((0, 25 + i * 12), line, font=small, fill=1)


def _draw_code(draw: ImageDraw.ImageDraw, screen: Screen, width: int, height: int) -> None:
    assert screen.code is not None
    text_left = 0
    if screen.code.claim_url:
        matrix = qr_matrix(screen.code.claim_url)
        scale = fit_scale(len(matrix), height, QUIET_ZONE)
        if scale > 0:
            draw.rectangle((0, 0, height - 1, height - 1), fill=1)
            offset = (height - len(matrix) * scale) // 2
            draw_matrix(draw, matrix, (offset, offset), scale, dark=0)
            text_left = height + 2
    column = width - text_left
    label = font(11)
    digits = font(22, bold=True) if column < 100 else font(28, bold=True)
    code = screen.code.code
    lines = [code[:3], code[3:]] if column < 100 and len(code) == 6 else [screen.code.grouped]
    _centered(draw, "Code", label, text_left, column, 0)
    y = 13
    for line in lines:
        _centered(draw, line, digits, text_left, column, y)
        y += 25
    if len(lines) == 1 and screen.site:
        _centered(draw, screen.site, label, text_left, column, 50)


def _centered(
    draw: ImageDraw.ImageDraw,
    text: str,
    face: Font,
    left: int,
    width: int,
    y: int,
) -> None:
    x = left + max(0, (width - text_width(text, face)) // 2)
    draw.text((x, y), text, font=face, fill=1)


class OledDisplay:
    """Draws screens on any luma.core device (a real SSD1306/SH1106, or luma's ``dummy``)."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def show(self, screen: Screen) -> None:
        from luma.core.render import canvas

        with canvas(self.device) as draw:
            draw_screen(draw, screen, self.device.size)

    def close(self) -> None:
        self.device.clear()
        self.device.cleanup()


def open_oled(options: dict[str, object] | None = None) -> OledDisplay:
    """Open the OLED named by the ``oled`` display options."""
    raw = dict(options or {})
    if "address" in raw:
        raw["address"] = int_from_text("oled.address", raw["address"])
    opts = parse_options("display 'oled'", raw, OledOptions)
    try:
        from luma.core.interface.serial import i2c
        from luma.oled.device import sh1106, ssd1306
    except ImportError as exc:
        raise DisplayError(f"oled: luma.oled is not installed ({exc})") from None
    driver = {"ssd1306": ssd1306, "sh1106": sh1106}[opts.driver]
    try:
        serial = i2c(port=opts.port, address=opts.address)
        device = driver(serial, width=WIDTH, height=HEIGHT, rotate=opts.rotate)
        device.contrast(opts.contrast)
    except Exception as exc:  # luma raises its own errors and OSError for a missing bus/device
        raise DisplayError(
            f"oled: no {opts.driver} at I2C port {opts.port} address {opts.address:#04x}: {exc}"
        ) from None
    return OledDisplay(device)
