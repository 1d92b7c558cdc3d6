"""Fonts for the rendered screens (OLED and PNG), with text measuring and wrapping.

A DejaVu font is used when the system has one (Raspberry Pi OS does); otherwise Pillow's
built-in font, so rendering never depends on what is installed.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from PIL import ImageFont

Font: TypeAlias = "ImageFont.FreeTypeFont | ImageFont.ImageFont"

_FACES = {
    False: ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    True: ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
}


@functools.cache
def font(size: int, *, bold: bool = False) -> Font:
    """A sans-serif font of ``size`` pixels."""
    from PIL import ImageFont

    for name in _FACES[bold]:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def text_width(text: str, face: Font) -> int:
    left, _top, right, _bottom = face.getbbox(text)
    return int(right - left)


def wrap(text: str, face: Font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap of ``text`` into at most ``max_lines`` lines of ``width`` pixels;
    the last line is cut with an ellipsis when the text does not fit."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if text_width(candidate, face) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while text_width(line, face) > width and len(line) > 1:  # one word wider than a line
            cut = len(line)
            while cut > 1 and text_width(line[:cut], face) > width:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and text_width(last + "…", face) > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + "…"]
    return lines
