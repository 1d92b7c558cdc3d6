"""A capture-time stamp drawn into the picture, readable back from decoded pixels.

Layout (all sizes in pixels of the encoded picture, origin top-left, no scaling):

* One row of ``BLOCKS = 38`` square blocks, each ``BLOCK = 16`` pixels wide and high, at
  ``y = 0..15``; block ``k`` covers ``x = 16*k .. 16*k+15``.  The stamp needs a picture at least
  608 pixels wide and 16 high.
* Each block is pure white (bit 1) or pure black (bit 0); the encoder is fed full-range white
  and black (luma 235 / 16 in limited range, neutral chroma).
* Block 0 is white and block 1 is black (sync).
* Blocks 2..33 are the 32 bits of the value, most significant first.
* Blocks 34..37 are a 4-bit check, most significant first: the XOR of the eight 4-bit nibbles
  of the value.
* The value is the capture wall-clock time in milliseconds since the Unix epoch, modulo 2**32.

Reading: for each block take the mean of ``(R + G + B) / 3`` over its central 8x8 pixels
(``x = 16*k+4 .. 16*k+11``, ``y = 4..11``); a bit is 1 when that mean is above 127.  If the
sync blocks are not white-then-black or the check does not match, there is no stamp.  The
latency of a picture is ``(now_ms mod 2**32) - value``, taken modulo 2**32.
"""

from __future__ import annotations

from typing import Final, Protocol

BLOCK: Final = 16
BLOCKS: Final = 38
WIDTH: Final = BLOCK * BLOCKS
HEIGHT: Final = BLOCK
MODULUS: Final = 2**32

LUMA_WHITE: Final = 235
LUMA_BLACK: Final = 16


def timecode_ms(wall_time: float) -> int:
    """The stamped value for a ``time.time()`` instant."""
    return int(wall_time * 1000) % MODULUS


def latency_ms(value: int, now: float) -> int:
    """Milliseconds from the stamp ``value`` to the ``time.time()`` instant ``now``."""
    return (timecode_ms(now) - value) % MODULUS


def _check(value: int) -> int:
    check = 0
    for shift in range(0, 32, 4):
        check ^= (value >> shift) & 0xF
    return check


def bits(value: int) -> list[int]:
    """The 38 block values (1 white, 0 black) for ``value``."""
    value %= MODULUS
    data = [(value >> (31 - i)) & 1 for i in range(32)]
    check = _check(value)
    return [1, 0, *data, *[(check >> (3 - i)) & 1 for i in range(4)]]


def luma_row(value: int) -> bytes:
    """One picture row of the stamp as 8-bit luma (limited range), ``WIDTH`` bytes long."""
    white = bytes([LUMA_WHITE]) * BLOCK
    black = bytes([LUMA_BLACK]) * BLOCK
    return b"".join(white if b else black for b in bits(value))


def _decode(levels: list[float]) -> int | None:
    got = [1 if level > 127 else 0 for level in levels]
    if got[0] != 1 or got[1] != 0:
        return None
    value = 0
    for b in got[2:34]:
        value = (value << 1) | b
    check = 0
    for b in got[34:38]:
        check = (check << 1) | b
    return value if check == _check(value) else None


class _RgbArray(Protocol):
    """A numpy-like ``(height, width, 3)`` uint8 array."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def tobytes(self) -> bytes: ...


def read_timecode_rgb24(
    data: bytes, width: int, height: int, stride: int | None = None
) -> int | None:
    """The stamp of a packed RGB24 picture (``stride`` bytes per row, default ``3 * width``)."""
    if width < WIDTH or height < HEIGHT:
        return None
    stride = stride or 3 * width
    levels: list[float] = []
    for k in range(BLOCKS):
        total = 0
        x0 = BLOCK * k + 4
        for y in range(4, 12):
            row = data[y * stride + 3 * x0 : y * stride + 3 * (x0 + 8)]
            total += sum(row)
        levels.append(total / (8 * 8 * 3))
    return _decode(levels)


def read_timecode(rgb_array: _RgbArray) -> int | None:
    """The stamp of a ``(height, width, 3)`` RGB uint8 array (numpy or alike), or ``None``."""
    height, width = rgb_array.shape[0], rgb_array.shape[1]
    return read_timecode_rgb24(rgb_array.tobytes(), width, height)
