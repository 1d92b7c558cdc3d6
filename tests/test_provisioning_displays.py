"""Display backends: what they draw, decoded back (QR codes read with zxing-cpp), on luma's
``dummy`` device for the OLED, and typed option parsing."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from luma.core.device import dummy
from PIL import Image

from device.provisioning import (
    DISPLAYS,
    DisplayError,
    DisplayGroup,
    OptionError,
    PairingCode,
    Phase,
    Screen,
    console,
    oled,
    open_display,
    open_displays,
    png,
)
from device.provisioning.console import ConsoleDisplay
from device.provisioning.oled import OledDisplay
from device.provisioning.png import PngDisplay
from device.provisioning.qr import qr_matrix
from tests.services import require

#: As the cloud makes them: its origin, ``/#/claim/`` and ``secrets.token_urlsafe(32)``.
LONG_URL = "https://cam.example.com/#/claim/Zx8_k2Qm9VbLr4TtYw1pNs7HcE3uJdA6fGiKoP0aSeQ"
#: A shorter link (22-character token) that fits QR version 3.
SHORT_URL = "https://mumu.cam/#/claim/AbCdEfGhIjKlMnOpQrStUv"


def pairing(url: str | None = LONG_URL, code: str = "482913") -> Screen:
    return Screen(Phase.PAIRING, "", PairingCode(code, 0.0, url), "cam.example.com")


STATUS_SCREENS = [
    Screen(Phase.PAIRING, "Getting a pairing code"),
    Screen(Phase.CONNECTING, "Reaching cam.example.com"),
    Screen(Phase.ONLINE, "2 viewers"),
    Screen(Phase.ERROR, "Cloud unreachable (connection refused); retrying in 8 s"),
]


def decode(image: Image.Image, upscale: int = 1) -> list[str]:
    try:
        import zxingcpp
    except ImportError:
        require(False, "QR decoder zxing-cpp (pip install zxing-cpp)")
    image = image.convert("L")
    if upscale > 1:
        image = image.resize(
            (image.width * upscale, image.height * upscale), Image.Resampling.NEAREST
        )
    return [result.text for result in zxingcpp.read_barcodes(image)]


def lit(image: Image.Image) -> int:
    return sum(image.convert("L").histogram()[1:])


# --- QR ---------------------------------------------------------------------------------------


def test_claim_links_encode_at_error_level_l_in_small_versions() -> None:
    from device.provisioning.qr import claim_qr

    assert claim_qr(LONG_URL).version == 4  # 33 modules: 1 px per module on a 64 px OLED
    assert claim_qr(SHORT_URL).version == 3  # 29 modules: 2 px per module
    assert claim_qr(LONG_URL).error in {"L", "M", "Q", "H"}
    assert len(qr_matrix(LONG_URL)) == 33


# --- OLED on luma's dummy device ----------------------------------------------------------------


def oled_device() -> Any:
    return dummy(width=128, height=64, mode="1")  # what ssd1306/sh1106 are: 128x64, 1 bit


@pytest.mark.parametrize(("url", "scale"), [(LONG_URL, 1), (SHORT_URL, 2)])
def test_oled_pairing_screen_has_a_scannable_qr_of_the_claim_link(url: str, scale: int) -> None:
    device = oled_device()
    OledDisplay(device).show(pairing(url))
    image = device.image
    assert image.size == (128, 64) and image.mode == "1"
    assert decode(image, upscale=8) == [url]
    # module by module: dark modules unlit, on a lit square that fills the left 64 px
    matrix = qr_matrix(url)
    offset = (64 - len(matrix) * scale) // 2
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            x, y = offset + c * scale, offset + r * scale
            assert bool(image.getpixel((x, y))) is not dark, (r, c)
    assert image.getpixel((0, 0)) and image.getpixel((63, 63))  # the quiet zone is lit


def test_oled_shows_the_code_as_digits_right_of_the_qr() -> None:
    device = oled_device()
    OledDisplay(device).show(pairing(LONG_URL, "482913"))
    right = device.image.crop((66, 0, 128, 64))
    assert lit(right) > 200  # "Code", "482", "913"
    other = oled_device()
    OledDisplay(other).show(pairing(LONG_URL, "111111"))
    assert other.image.crop((66, 0, 128, 64)).tobytes() != right.tobytes()


def test_oled_without_claim_link_shows_the_code_full_width() -> None:
    device = oled_device()
    OledDisplay(device).show(pairing(None))
    assert decode(device.image, upscale=8) == []
    assert lit(device.image.crop((0, 0, 64, 64))) < 64 * 64 // 2  # no lit QR square


def test_oled_status_screens_differ_and_close_blanks_it() -> None:
    images = []
    for screen in STATUS_SCREENS:
        device = oled_device()
        OledDisplay(device).show(screen)
        assert lit(device.image) > 100
        images.append(device.image.tobytes())
    assert len(set(images)) == len(STATUS_SCREENS)
    display = OledDisplay(device)
    display.close()
    assert lit(device.image) == 0


def test_oled_render_matches_what_the_device_shows() -> None:
    device = oled_device()
    OledDisplay(device).show(pairing())
    assert oled.render(pairing()).tobytes() == device.image.tobytes()


# --- PNG -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(800, 480), (480, 320), (1920, 1080)])
def test_png_pairing_screen_has_a_decodable_qr(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "screen.png"
    PngDisplay(path, size).show(pairing())
    with Image.open(path) as image:
        assert image.size == size and image.format == "PNG"
        assert decode(image) == [LONG_URL]


def test_png_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "screen.png"
    display = PngDisplay(path)
    display.show(pairing())
    with path.open("rb") as reader:  # a reader that opened the file before the next screen
        for screen in STATUS_SCREENS:
            display.show(screen)
        assert os.fstat(reader.fileno()).st_ino != os.stat(path).st_ino  # renamed over it
        with Image.open(reader) as old:
            assert decode(old) == [LONG_URL]  # ... still reads the whole old picture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["screen.png"]  # no temp files left
    with Image.open(path) as image:
        assert decode(image) == []  # the last screen (error) has no QR


def test_png_status_screens_differ() -> None:
    images = {png.render(s).tobytes() for s in STATUS_SCREENS}
    assert len(images) == len(STATUS_SCREENS)


def test_png_write_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "dir-not-file"
    target.mkdir()
    with pytest.raises(OSError):
        PngDisplay(target).show(pairing())  # cannot rename a file over a directory
    assert [p.name for p in tmp_path.iterdir()] == ["dir-not-file"]


# --- console -------------------------------------------------------------------------------------


def matrix_from_terminal(text: str) -> list[list[bool]]:
    """Invert segno's compact terminal output: block characters are light modules."""
    rows: list[list[bool]] = []
    for line in text.splitlines():
        rows.append([c not in "█▀" for c in line])  # upper half: dark unless drawn
        rows.append([c not in "█▄" for c in line])
    return rows


def test_console_prints_the_code_and_a_qr_of_the_claim_link() -> None:
    out = io.StringIO()
    ConsoleDisplay(out).show(pairing())
    text = out.getvalue()
    assert "482 913" in text and "cam.example.com" in text
    qr_lines = [line for line in text.splitlines() if line and set(line) <= set(" █▀▄")]
    rows = matrix_from_terminal("\n".join(qr_lines))
    border = 2
    matrix = qr_matrix(LONG_URL)
    inner = [row[border : border + len(matrix)] for row in rows[border : border + len(matrix)]]
    assert inner == [list(r) for r in matrix]


def test_console_state_lines() -> None:
    out = io.StringIO()
    display = ConsoleDisplay(out, qr=False)
    for screen in STATUS_SCREENS:
        display.show(screen)
    display.show(pairing())
    lines = out.getvalue().splitlines()
    assert "[mumu] Online: 2 viewers" in lines
    assert any(line.startswith("[mumu] Error: Cloud unreachable") for line in lines)
    assert "█" not in out.getvalue()
    assert console.render(pairing(None)).count("\n") < 10


# --- options and the registry --------------------------------------------------------------------


def test_registry_names_the_four_backends() -> None:
    assert set(DISPLAYS) == {"console", "oled", "led", "png"}


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("hdmi", {}, "unknown display backend 'hdmi' (known: console, led, oled, png)"),
        (
            "oled",
            {"driver": "ssd1309"},
            "display 'oled': Invalid enum value 'ssd1309' - at `$.driver`",
        ),
        ("oled", {"address": "banana"}, "oled.address: 'banana' is not an integer"),
        ("oled", {"address": 0x80}, "display 'oled': Expected `int` <= 119"),
        ("oled", {"port": "one"}, "display 'oled': Expected `int`, got `str` - at `$.port`"),
        ("led", {}, "display 'led': Object missing required field `pin`"),
        ("png", {"path": "/tmp/x.png", "colour": "red"}, "unknown field `colour`"),
        ("console", {"qr": "yes"}, "display 'console': Expected `bool`, got `str`"),
    ],
)
def test_bad_options_give_one_line_errors(
    name: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(OptionError) as error:
        open_display(name, options)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_oled_options_accept_hex_addresses_then_need_the_hardware() -> None:
    require_no_oled = not Path("/dev/i2c-1").exists()
    if not require_no_oled:
        pytest.skip("this machine has an I2C bus: hardware-tests/ covers the real OLED")
    with pytest.raises(DisplayError) as error:
        open_display("oled", {"driver": "sh1106", "address": "0x3D"})
    assert str(error.value).startswith("oled: no sh1106 at I2C port 1 address 0x3d")
    assert "\n" not in str(error.value)


def test_open_displays_opens_each_entry(tmp_path: Path) -> None:
    group = open_displays(
        [
            {"backend": "console", "qr": False, "stream": "stderr"},
            {"backend": "png", "path": str(tmp_path / "s.png"), "width": 320, "height": 240},
        ]
    )
    assert [type(d).__name__ for d in group.displays] == ["ConsoleDisplay", "PngDisplay"]
    group.show(pairing())
    assert (tmp_path / "s.png").exists()
    group.close()
    with pytest.raises(OptionError, match=r"displays\[1\]: 'backend'"):
        open_displays([{"backend": "console"}, {"pin": 17}])


def test_a_failing_display_does_not_blank_the_others(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    group = DisplayGroup([PngDisplay(tmp_path / "missing-dir" / "bad.png"), PngDisplay(good)])
    group.show(pairing())
    with Image.open(good) as image:
        assert decode(image) == [LONG_URL]
