"""``mumu-cloud``: the cloud's command line."""

from __future__ import annotations

import argparse
import logging
import sys

from cloud.config import ConfigError, Settings, load
from cloud.settings_table import help_lines
from protocol import about


def parser() -> argparse.ArgumentParser:
    settings_help = "\n".join(help_lines())
    top = argparse.ArgumentParser(
        prog="mumu-cloud",
        description="MuMu Camera cloud: signaling, accounts, pairing, TURN credentials.",
        epilog=f"settings (environment; the table is in docs/settings.md):\n{settings_help}",
    )
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API and the signaling WebSockets")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="how much to log",
    )
    sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    from cloud.updates import cli as update_cli  # over-the-air updates: release, rollout, operator

    update_cli.add_parsers(sub)
    return about.finish(top)


def main(argv: list[str] | None = None) -> None:
    from cloud.updates import cli as update_cli

    args = parser().parse_args(argv)

    try:
        settings = load()
    except ConfigError as exc:
        print(f"mumu-cloud: invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    logging.basicConfig(
        level=args.log_level.upper() if args.command == "serve" else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)

    if args.command in ("release", "rollout", "operator"):
        try:
            update_cli.run(args, settings)
        except update_cli.CommandError as exc:
            print(f"mumu-cloud: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
        return

    if args.command == "migrate":
        import asyncio

        from cloud.store import SqlStore

        async def run() -> None:
            store = SqlStore(settings.database_url)
            await store.open()
            await store.close()

        asyncio.run(run())
        print("mumu-cloud: database is at the newest schema")
        return

    import uvicorn

    from cloud.app import create_app
    from cloud.http_server import CloudServer, HttpGuard, uvicorn_http_options

    check_open_files(settings)
    app = create_app(settings)
    services = app.state.services
    guard = HttpGuard.from_settings(settings, services.metrics)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # X-Forwarded-For is believed only from MUMU_TRUSTED_PROXIES (default: nobody), or any
        # local forwarder could pick the address every per-address limit counts.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        **uvicorn_http_options(guard),
        ws_max_size=1024 * 1024,
        # No permessage-deflate: inflating and deflating large frames ran on the event loop (a
        # camera flooding 60 kB answers cost everyone seconds on a busy machine) and its zlib
        # state costs memory per socket; signaling frames are small.
        ws_per_message_deflate=False,
        # No protocol-level pings: every client heartbeats (devices every 30 s) and a socket
        # silent past the presence TTL is closed by the hub, so pings would only add a timer,
        # a task and two frames per connection (500 a second at 10,000 devices).
        ws_ping_interval=None,
        ws_ping_timeout=None,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    # SIGTERM: stop accepting, tell every socket to come back (1012 with a reconnect window),
    # record last_seen in bulk, then let uvicorn finish.
    CloudServer(config, drain=services.hub.drain).run()


def check_open_files(settings: Settings) -> None:
    """Raise the soft open-files limit to the hard one, and warn when it is still below what
    the bounds may take (then a stranger could exhaust descriptors before any bound holds)."""
    from cloud.pending import open_files_needed, raise_open_files_limit

    needed = open_files_needed(settings)
    soft = raise_open_files_limit()
    if soft < needed:
        logging.getLogger("cloud").warning(
            "the open-files limit is %d, below the %d that MUMU_MAX_PENDING_SOCKETS, "
            "MUMU_UPDATE_DOWNLOADS and the database pool may take before one camera is "
            "connected; raise it (systemd: LimitNOFILE=, see the README) or lower those",
            soft,
            needed,
        )


if __name__ == "__main__":
    main()
