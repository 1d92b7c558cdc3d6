"""Every MuMu command prints its version with ``--version`` and shows each option's default."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

import pytest

from protocol import about


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from cloud import cli as cloud_cli
    from device import cli as agent_cli
    from device import firstboot
    from device.update import cli as update_cli
    from release import cli as release_cli

    return {
        "mumu-cloud": cloud_cli.parser,
        "mumu-agent": agent_cli._parser,
        "mumu-update": update_cli.parser,
        "mumu-release": release_cli._parser,
        "mumu-firstboot": firstboot.parser,
    }


COMMANDS = ["mumu-cloud", "mumu-agent", "mumu-update", "mumu-release", "mumu-firstboot"]


@pytest.mark.parametrize("command", COMMANDS)
def test_version_prints_the_package_version(command: str) -> None:
    """The installed entry point itself, as a person would run it."""
    bin_dir = __import__("pathlib").Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / command), "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{command} {about.package_version()}"
    assert about.package_version() != "unknown"


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = []
    for each in about.parsers(parser):
        for action in each._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            found.append((each.prog, action))
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_says_what_it_does_and_its_default(command: str) -> None:
    parser = _parsers()[command]()
    options = _options(parser)
    assert options
    for prog, action in options:
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{prog} {name}: no help text"
        formatter = about.HelpFormatter(prog)
        text = (formatter._get_help_string(action) or "") % {
            **vars(action),
            "default": action.default,
        }
        if not action.option_strings or action.required:
            continue
        has_default = (
            action.default is not None
            and not isinstance(action.default, bool)
            and action.default != []
        )
        if has_default:
            assert f"(default: {action.default})" in text or "default" in (action.help or ""), (
                f"{prog} {name}: the help does not show the default {action.default!r}: {text!r}"
            )
        elif not isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            # No built-in default: the help says where the value comes from when not given.
            assert "default" in text.lower(), f"{prog} {name}: says nothing of its default"
    # and the whole help renders (every subcommand), with the defaults in it
    for each in about.parsers(parser):
        assert each.format_help()
