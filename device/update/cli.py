"""``mumu-update``: the privileged updater (root), run by systemd units.

* ``mumu-update boot``   before the agent starts (``mumu-update-boot.service``): the boot
  counter of an update on probation, rollback when the device keeps restarting during it.
* ``mumu-update run``    when the agent leaves an offer (``mumu-update.path``), at boot and on a
  timer (``mumu-update.timer``): verify, download, install, switch, probation, commit or roll
  back.  Returns when there is nothing left to do.
* ``mumu-update status`` what is installed, running, on probation, and the recent history.

Settings: ``/etc/mumu/update.yaml`` (or ``--settings``, see :mod:`device.update.settings`); the
repository is the agent config's ``update_repo_url``, else ``<cloud>/updates/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import msgspec

from device.config import ConfigError
from device.config import load as load_agent_config
from device.update import install as installer
from device.update.machine import Updater
from device.update.services import Systemd
from device.update.settings import DEFAULT_FILE, SettingsError, UpdaterSettings
from device.update.settings import load as load_settings
from protocol import about

SETTINGS_ENV = "MUMU_UPDATE_SETTINGS"


def repo_and_cloud(settings: UpdaterSettings) -> tuple[str | None, str | None]:
    try:
        agent = load_agent_config(settings.agent_config, env={})
    except ConfigError as exc:
        logging.getLogger(__name__).error("cannot read the agent's config: %s", exc)
        return None, None
    repo = agent.update_repo_url or f"{agent.cloud_url.rstrip('/')}/updates/"
    return repo, agent.cloud_url


def make_updater(settings: UpdaterSettings) -> Updater:
    repo, cloud = repo_and_cloud(settings)
    return Updater(settings, services=Systemd(), repo_url=repo, cloud_url=cloud)


def status_text(updater: Updater) -> str:
    state = updater.load()
    root = updater.root
    lines = [
        f"current:   {installer.link_target(root, installer.CURRENT)}",
        f"committed: {installer.link_target(root, installer.COMMITTED)}",
        f"installed: {', '.join(installer.installed_versions(root)) or '-'}",
    ]
    if state.probation is not None:
        p = state.probation
        lines.append(f"probation: {p.version} (previous {p.previous}, boots {p.boots})")
    for version, reason in state.bad.items():
        lines.append(f"bad:       {version}: {reason}")
    for status in state.history[-10:]:
        lines.append(
            f"  #{status.seq} {status.state} {status.version}"
            + (f" ({status.progress:.0%})" if status.progress is not None else "")
            + (f": {status.reason}" if status.reason else "")
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mumu-update", description=__doc__.split("\n")[0])
    top.add_argument(
        "--settings",
        type=Path,
        default=Path(os.environ.get(SETTINGS_ENV, str(DEFAULT_FILE))),
        help=f"settings file (default: ${SETTINGS_ENV}, else {DEFAULT_FILE})",
    )
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("boot", help="before the agent starts: the probation boot counter")
    sub.add_parser("run", help="act on the agent's offer and any probation, then exit")
    sub.add_parser("status", help="releases, probation and recent history")
    sub.add_parser("state", help="the raw state as JSON")
    return about.finish(top)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(name)s: %(message)s", stream=sys.stdout)
    try:
        settings = load_settings(args.settings)
    except SettingsError as exc:
        print(f"mumu-update: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    updater = make_updater(settings)
    if args.command == "status":
        print(status_text(updater))
        return
    if args.command == "state":
        print(msgspec.json.format(msgspec.json.encode(updater.load())).decode())
        return
    with updater.locked() as mine:
        if not mine:
            print("mumu-update: another updater is running", file=sys.stderr)
            return
        try:
            outcome = updater.boot() if args.command == "boot" else updater.run()
        except Exception as exc:  # run() reports its own; this is the boot check's, in words
            print(f"mumu-update {args.command}: failed: {type(exc).__name__}: {exc}")
            raise SystemExit(1) from None
    print(
        f"mumu-update {args.command}: {outcome.kind}"
        + (f" {outcome.version}" if outcome.version else "")
        + (f": {outcome.reason}" if outcome.reason else "")
    )


if __name__ == "__main__":
    main()
