"""``mumu-agent``: the device agent's command line.

``mumu-agent run`` runs the agent (under systemd: ``Type=notify``); ``mumu-agent probe`` prints
the cameras and encoders found.  Exit status 2: the configuration is invalid (one line on
stderr names the key).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from device.config import CONFIG_ENV, DEFAULT_CONFIG_FILE, AgentConfig, ConfigError, load
from protocol import about

if TYPE_CHECKING:
    from device.provisioning import Display, Screen

log = logging.getLogger("device.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mumu-agent",
        description="MuMu Camera device agent: camera, pairing display, WebRTC to viewers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the agent",
        description=(
            f"Run the agent. Settings come from --config, else ${CONFIG_ENV}, else "
            f"{DEFAULT_CONFIG_FILE} (which may be missing); flags override the file."
        ),
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG_FILE})",
    )
    run.add_argument(
        "--cloud",
        metavar="URL",
        help="the cloud's URL, http(s)://host[:port] (default: from the config file)",
    )
    run.add_argument(
        "--camera",
        metavar="BACKEND",
        help="auto | picamera2 | v4l2 | synthetic (default: from the config file, else auto)",
    )
    run.add_argument(
        "--display",
        metavar="BACKEND",
        action="append",
        help="console | oled | led | png | none (repeatable; replaces the configured ones; "
        "default: from the config file)",
    )
    run.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the credentials are kept (default: from the config file, else /var/lib/mumu)",
    )
    run.add_argument(
        "--name",
        help="the device's name when it registers (default: from the config file, else the "
        "host name)",
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default: from the config file, else info)",
    )
    sub.add_parser("probe", help="list the cameras and encoders this device has")
    return about.finish(parser)


def _fail(message: str) -> None:
    print(f"mumu-agent: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_config(args: argparse.Namespace) -> AgentConfig:
    overrides: dict[str, object] = {
        "cloud": args.cloud,
        "camera.backend": args.camera,
        "state_dir": args.state_dir,
        "name": args.name,
        "log_level": args.log_level,
    }
    if args.display:
        names = [d for d in args.display if d != "none"]
        overrides["displays"] = [{"backend": name} for name in names]
    config = load(args.config, overrides)
    _check_state_dir(config.state_path)
    return config


def _check_state_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"state_dir: cannot create {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"state_dir: {path} is not writable by this user")


class _PhaseToLog:
    """The display the agent draws on, passed through; what it shows (connecting, pairing,
    online, error) becomes the ``PHASE`` field of the journal records that follow."""

    def __init__(self, display: Display) -> None:
        self.display = display

    def show(self, screen: Screen) -> None:
        from device.systemd import set_log_field

        set_log_field("phase", screen.phase.value)
        self.display.show(screen)

    def close(self) -> None:
        self.display.close()


def _configure_logging(config: AgentConfig) -> None:
    """Logging (the journal with structured fields where systemd-python is); records carry the
    device id as soon as the credentials file has one."""
    from device import credentials
    from device.systemd import configure_logging, set_log_field_source

    configure_logging(config.log_level)

    def device_id() -> str | None:
        try:
            found = credentials.load(config.state_path)
        except Exception:
            return None
        return found.device_id if found is not None else None

    set_log_field_source("device_id", device_id)


def run(args: argparse.Namespace) -> None:
    from device.agent import Agent, open_displays

    try:
        config = load_config(args)
        _configure_logging(config)
        display: Display = _PhaseToLog(open_displays(config))
    except ConfigError as exc:
        _fail(f"invalid configuration: {exc}")
        return
    agent = Agent(config, display=display)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.stop)
        await agent.run()

    log.info("mumu-agent starting: cloud %s, camera %s", config.cloud, config.camera.backend)
    try:
        asyncio.run(main())
    except ConfigError as exc:
        _fail(f"invalid configuration: {exc}")
        return
    if agent.restart_requested:
        # The owner asked for a restart: under systemd (Restart=always) exiting is enough;
        # started by hand (the demo), start again in place.
        if os.environ.get("INVOCATION_ID"):
            log.info("restarting: systemd starts the agent again")
            return
        log.info("restarting")
        os.execv(sys.executable, [sys.executable, "-m", "device.cli", *sys.argv[1:]])


def probe() -> None:
    from device.hal import probe_report

    print(probe_report())


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "probe":
        probe()
        return
    with contextlib.suppress(BrokenPipeError):
        run(args)


if __name__ == "__main__":
    main()
