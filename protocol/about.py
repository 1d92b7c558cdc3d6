"""What every MuMu command says about itself: its version (``--version``) and help texts that
show each option's default."""

from __future__ import annotations

import argparse
import importlib.metadata

PACKAGE = "mumu-camera"


def package_version() -> str:
    """The installed package's version ("unknown" when run from a tree that is not installed)."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; every option's help ends with its default, unless it
    has none worth saying (None, a flag's False, an empty list) or the help says it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "%(default)" not in text
            and "default" not in text.lower()
            and default is not None
            and default is not argparse.SUPPRESS
            and not isinstance(default, bool)
            and default != []
        ):
            text += " (default: %(default)s)"
        return text


def finish(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` ``--version`` and the defaults-showing help, down every subcommand."""
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {package_version()}",
        help="print the version and exit",
    )
    _format_all(parser)
    return parser


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser beneath it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(parsers(sub))
    return found


def _format_all(parser: argparse.ArgumentParser) -> None:
    for each in parsers(parser):
        each.formatter_class = HelpFormatter
