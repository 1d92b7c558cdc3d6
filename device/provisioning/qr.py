"""QR codes of claim links, small enough for a 64-pixel OLED.

The claim link is encoded at error level L (the smallest symbol for the text; segno may raise
the level when that still fits the same version) so that it stays scannable at one or two
pixels per module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import segno

if TYPE_CHECKING:
    from PIL import ImageDraw

#: ``matrix[row][column]`` is ``True`` for a dark module; no quiet zone included.
Matrix = tuple[tuple[bool, ...], ...]


def claim_qr(url: str) -> segno.QRCode:
    """The QR code of a claim link: a regular (not micro) QR code at error level L."""
    return segno.make(url, error="l", micro=False)


def qr_matrix(url: str) -> Matrix:
    """The module matrix of ``claim_qr(url)``."""
    qr = claim_qr(url)
    return tuple(tuple(bool(m) for m in row) for row in qr.matrix_iter(scale=1, border=0))


def fit_scale(modules: int, space: int, quiet_zone: int) -> int:
    """Largest whole pixels-per-module so that ``modules`` plus a quiet zone of ``quiet_zone``
    modules on each side fit in ``space`` pixels; 0 if not even one pixel per module fits."""
    return space // (modules + 2 * quiet_zone)


def draw_matrix(
    draw: ImageDraw.ImageDraw,
    matrix: Matrix,
    origin: tuple[int, int],
    scale: int,
    dark: int | str | tuple[int, int, int],
) -> None:
    """Paint the dark modules of ``matrix`` as ``scale``-pixel squares from ``origin``
    (the light modules are left as the background, which must be light)."""
    x0, y0 = origin
    for r, row in enumerate(matrix):
        for c, is_dark in enumerate(row):
            if is_dark:
                x, y = x0 + c * scale, y0 + r * scale
                draw.rectangle((x, y, x + scale - 1, y + scale - 1), fill=dark)
