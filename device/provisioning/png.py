"""A PNG file of the screen (for an HDMI/framebuffer viewer or a web preview).

The file is replaced atomically (written to a temporary file in the same directory, then
renamed), so a reader never sees half an image.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec

from device.provisioning.display import OptionStruct, parse_options
from device.provisioning.fonts import Font, font, text_width, wrap
from device.provisioning.qr import draw_matrix, fit_scale, qr_matrix
from device.provisioning.screen import Phase, Screen

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

BACKGROUND = (255, 255, 255)
INK = (17, 24, 39)
MUTED = (75, 85, 99)
#: The colour of each phase's status dot.
ACCENTS: dict[Phase, tuple[int, int, int]] = {
    Phase.CONNECTING: (37, 99, 235),
    Phase.PAIRING: (217, 119, 6),
    Phase.ONLINE: (22, 163, 74),
    Phase.ERROR: (220, 38, 38),
}
#: Quiet zone around the QR code, in modules (the standard's recommendation).
QUIET_ZONE = 4


class PngOptions(OptionStruct):
    #: Where to write the PNG; its directory must exist.
    path: Annotated[str, msgspec.Meta(min_length=1)]
    width: Annotated[int, msgspec.Meta(ge=160, le=7680)] = 800
    height: Annotated[int, msgspec.Meta(ge=120, le=4320)] = 480


def render(screen: Screen, size: tuple[int, int] = (800, 480)) -> Image.Image:
    """The RGB image of ``screen``."""
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    unit = min(width, height) / 480  # layout is designed for 800x480 and scales with it
    margin = round(32 * unit)
    if screen.phase is Phase.PAIRING and screen.code is not None:
        _draw_pairing(draw, screen, width, height, unit, margin)
    else:
        _draw_status(draw, screen, width, height, unit, margin)
    return image


def _draw_pairing(
    draw: ImageDraw.ImageDraw, screen: Screen, width: int, height: int, unit: float, margin: int
) -> None:
    assert screen.code is not None
    left = margin
    if screen.code.claim_url:
        matrix = qr_matrix(screen.code.claim_url)
        side = min(height - 2 * margin, width // 2 - margin)
        scale = fit_scale(len(matrix), side, QUIET_ZONE)
        if scale > 0:
            qr_side = (len(matrix) + 2 * QUIET_ZONE) * scale
            top = (height - qr_side) // 2
            quiet = QUIET_ZONE * scale
            draw.rectangle((margin, top, margin + qr_side - 1, top + qr_side - 1), fill=BACKGROUND)
            draw_matrix(draw, matrix, (margin + quiet, top + quiet), scale, dark=INK)
            left = margin + qr_side + margin
    column = width - left - margin
    title = font(round(34 * unit), bold=True)
    body = font(round(22 * unit))
    digits = _fit(screen.code.grouped, column, round(96 * unit), bold=True)
    y = margin + round(24 * unit)
    draw.text((left, y), screen.headline, font=title, fill=INK)
    y += round(62 * unit)
    where = f"Enter this code at {screen.site}" if screen.site else "Enter this code in the app"
    for line in wrap(where, body, column, max_lines=2):
        draw.text((left, y), line, font=body, fill=MUTED)
        y += round(30 * unit)
    y += round(8 * unit)
    draw.text((left, y), screen.code.grouped, font=digits, fill=INK)
    y += round(118 * unit)
    hint = "or scan the QR code with your phone." if left > margin else ""
    for line in wrap(hint, body, column, max_lines=2):
        draw.text((left, y), line, font=body, fill=MUTED)
        y += round(30 * unit)
    status = screen.detail or "Waiting to be claimed"
    bottom = height - margin - round(28 * unit)
    _draw_status_line(draw, screen.phase, status, left, bottom, width - margin - left, unit)


def _draw_status(
    draw: ImageDraw.ImageDraw, screen: Screen, width: int, height: int, unit: float, margin: int
) -> None:
    small = font(round(22 * unit))
    draw.text((margin, margin), "MuMu Camera", font=small, fill=MUTED)
    title = font(round(64 * unit), bold=True)
    title_text = "Pairing" if screen.phase is Phase.PAIRING else screen.headline
    dot = round(36 * unit)
    y = height // 2 - round(70 * unit)
    x = margin
    draw.ellipse(
        (x, y + round(16 * unit), x + dot, y + round(16 * unit) + dot), fill=_accent(screen)
    )
    draw.text((x + dot + round(24 * unit), y), title_text, font=title, fill=INK)
    y += round(100 * unit)
    body = font(round(28 * unit))
    for line in wrap(screen.detail, body, width - 2 * margin, max_lines=3):
        draw.text((margin, y), line, font=body, fill=MUTED)
        y += round(38 * unit)


def _draw_status_line(
    draw: ImageDraw.ImageDraw, phase: Phase, text: str, x: int, y: int, width: int, unit: float
) -> None:
    dot = round(16 * unit)
    gap = round(12 * unit)
    face = font(round(20 * unit))
    draw.ellipse((x, y + round(5 * unit), x + dot, y + round(5 * unit) + dot), fill=ACCENTS[phase])
    for line in wrap(text, face, width - dot - gap, max_lines=1):
        draw.text((x + dot + gap, y), line, font=face, fill=MUTED)


def _accent(screen: Screen) -> tuple[int, int, int]:
    return ACCENTS[screen.phase]


def _fit(text: str, width: int, size: int, *, bold: bool) -> Font:
    """The largest font not above ``size`` in which ``text`` fits ``width`` pixels."""
    while size > 8 and text_width(text, font(size, bold=bold)) > width:
        size -= 2
    return font(size, bold=bold)


def write_atomically(image: Image.Image, path: Path) -> None:
    """Write ``image`` as PNG at ``path`` via a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            image.save(out, format="PNG")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class PngDisplay:
    def __init__(self, path: Path, size: tuple[int, int] = (800, 480)) -> None:
        self.path = path
        self.size = size

    def show(self, screen: Screen) -> None:
        write_atomically(render(screen, self.size), self.path)

    def close(self) -> None:
        """The last picture stays: it is what the device showed when it stopped."""


def open_png(options: dict[str, object] | None = None) -> PngDisplay:
    opts = parse_options("display 'png'", options, PngOptions)
    return PngDisplay(Path(opts.path), (opts.width, opts.height))
