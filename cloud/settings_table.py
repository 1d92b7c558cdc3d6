"""The cloud's settings as ``mumu-cloud --help`` lists them and as ``docs/settings.md`` tables
them, both written from the declarations in ``cloud/config.py``.

``python -m cloud.settings_table`` rewrites the table in ``docs/settings.md`` (between the
``settings:begin``/``settings:end`` markers); ``tests/test_settings.py`` fails while it is stale.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

from cloud.config import CONFIG_FILE, SECTIONS, declarations
from cloud.setting import Declared

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
BEGIN = "<!-- settings:begin (written by python -m cloud.settings_table; edit cloud/config.py) -->"
END = "<!-- settings:end -->"


def default_text(decl: Declared, default: Any) -> str:
    """A default as a person reads it: ``900 s (15 min)``, ``65536 bytes (64 KiB)``, ``none``."""
    if decl.default_doc is not None:
        return decl.default_doc
    if default is None:
        return "unset"
    if default == ():
        return "none"
    if isinstance(default, str):
        return f"`{default}`"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    shown = f"{default} {decl.unit}".strip()
    if decl.unit == "s" and isinstance(default, int):
        shown += _in_larger_units(default, ((86400, "day"), (3600, "h"), (60, "min")))
    elif decl.unit == "bytes" and isinstance(default, int):
        shown += _in_larger_units(default, ((1 << 20, "MiB"), (1 << 10, "KiB")))
    return shown


def accepts_text(decl: Declared) -> str:
    """What a variable accepts, with its unit: ``10..86400 s``."""
    return f"{decl.parser.accepts} {decl.unit}".strip()


def help_lines(width: int = 100) -> list[str]:
    """``VARIABLE  help [accepts; default …]`` for every setting, wrapped, for ``--help``."""
    indent = " " * 2
    hanging = " " * 40
    lines = []
    for decl, default in _rows():
        body = _plain(f"{decl.help} [{accepts_text(decl)}; default {default_text(decl, default)}]")
        head = f"{indent}{decl.env:37} "
        lines.extend(
            textwrap.wrap(
                body,
                width=width,
                initial_indent=head if len(head) <= len(hanging) else indent + decl.env + " ",
                subsequent_indent=hanging,
                break_on_hyphens=False,
                break_long_words=False,
            )
        )
    return lines


def render_table() -> str:
    """The markdown table of every setting, in declaration order, a heading row per section."""
    out = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    for each, decl in declarations():
        if each.name in SECTIONS:
            out.append(f"| **{SECTIONS[each.name]}** | | | |")
        out.append(_row(decl, each.default))
    out.append("| **The settings file** | | | |")
    out.append(_row(CONFIG_FILE, None))
    return "\n".join(out) + "\n"


def rewrite(doc: str) -> str:
    """``doc`` with the table between the markers replaced by a fresh one."""
    head, found_begin, rest = doc.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found_begin and found_end):
        raise ValueError(f"the settings markers are missing: {BEGIN} … {END}")
    return f"{head}{BEGIN}\n{render_table()}{END}{tail}"


def main() -> None:
    DOC.write_text(rewrite(DOC.read_text()))
    print(f"wrote the settings table in {DOC}", file=sys.stderr)


def _rows() -> list[tuple[Declared, Any]]:
    return [(decl, each.default) for each, decl in declarations()] + [(CONFIG_FILE, None)]


def _row(decl: Declared, default: Any) -> str:
    cells = [f"`{decl.env}`", default_text(decl, default), accepts_text(decl), decl.help]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _in_larger_units(value: int, units: tuple[tuple[int, str], ...]) -> str:
    for size, name in units:
        if value >= size and value % size == 0:
            count = value // size
            plural = "s" if name == "day" and count != 1 else ""
            return f" ({count} {name}{plural})"
    return ""


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")


if __name__ == "__main__":
    main()
