"""The terminal: the code and a QR of the claim link (Unicode half blocks), and state lines."""

from __future__ import annotations

import sys
from typing import Literal, TextIO

from device.provisioning.display import OptionStruct, parse_options
from device.provisioning.qr import claim_qr
from device.provisioning.screen import Phase, Screen


class ConsoleOptions(OptionStruct):
    #: Print the QR code of the claim link under the code.
    qr: bool = True
    stream: Literal["stdout", "stderr"] = "stdout"


def render(screen: Screen, *, qr: bool = True) -> str:
    """The text printed for ``screen`` (ends with a newline)."""
    if screen.phase is not Phase.PAIRING or screen.code is None:
        detail = f": {screen.detail}" if screen.detail else ""
        title = "Pairing" if screen.phase is Phase.PAIRING else screen.headline
        return f"[mumu] {title}{detail}\n"
    code = screen.code
    where = f" at {screen.site}" if screen.site else ""
    lines = [
        "",
        f"[mumu] {screen.headline}: enter the code{where}",
        "",
        f"        {code.grouped}",
        "",
    ]
    text = "\n".join(lines) + "\n"
    if qr and code.claim_url:
        text += "or scan this QR code with your phone:\n" + _qr_text(code.claim_url)
        text += f"({code.claim_url})\n"
    if screen.detail:
        text += f"[mumu] {screen.detail}\n"
    return text


def _qr_text(url: str) -> str:
    import io

    out = io.StringIO()
    claim_qr(url).terminal(out=out, compact=True, border=2)
    return out.getvalue()


class ConsoleDisplay:
    def __init__(self, out: TextIO | None = None, *, qr: bool = True) -> None:
        self.out = out if out is not None else sys.stdout
        self.qr = qr

    def show(self, screen: Screen) -> None:
        self.out.write(render(screen, qr=self.qr))
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


def open_console(options: dict[str, object] | None = None) -> ConsoleDisplay:
    opts = parse_options("display 'console'", options, ConsoleOptions)
    return ConsoleDisplay(sys.stdout if opts.stream == "stdout" else sys.stderr, qr=opts.qr)
