"""``mumu-cloud release ...``, ``mumu-cloud rollout ...`` and ``mumu-cloud operator ...``: the
operator's commands.

They change the database; every running cloud process notices within ``MUMU_ROLLOUT_POLL``
seconds and offers the release to the included devices it can reach.  ``operator add`` grants
the web app's rollouts page and API to an existing account whose address is verified; the
running clouds check the database on every request, so a grant or removal holds at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from cloud.config import Settings
from cloud.live import MemoryLiveState
from cloud.store import SqlStore
from cloud.updates import repo as repo_files
from cloud.updates.operators import Grant, OperatorStore
from cloud.updates.service import DEFAULT_MIN_SAMPLE, DEFAULT_THRESHOLD, UpdateService
from cloud.updates.store import DuplicateRelease, UpdateStore


class CommandError(Exception):
    #: The command's exit status.
    exit_code = 1


class Refused(CommandError):
    """The command cannot do this for this input (e.g. granting an unverified account)."""

    exit_code = 2


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser("release", help="releases the cloud may offer (after mumu-release)")
    rsub = release.add_subparsers(dest="action", required=True)
    add = rsub.add_parser("add", help="make a signed release known (its arches from the repo)")
    add.add_argument("version", help="the release's version, as signed by mumu-release")
    add.add_argument("--arch", action="append", help="aarch64, x86_64 (default: as signed)")
    add.add_argument("--notes", default="", help="release notes shown to operators")
    rsub.add_parser("list", help="the known releases")

    rollout = sub.add_parser("rollout", help="staged rollouts: start, raise, pause, resume")
    osub = rollout.add_subparsers(dest="action", required=True)
    start = osub.add_parser("start", help="offer VERSION to PERCENT %% of a channel's devices")
    start.add_argument("version", help="a release made known with 'release add'")
    start.add_argument(
        "--percent", type=float, required=True, help="share of the channel's devices, 0..100"
    )
    start.add_argument("--channel", default="stable", help="the devices' update channel")
    start.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="failure rate that pauses it"
    )
    start.add_argument(
        "--min-sample", type=int, default=DEFAULT_MIN_SAMPLE, help="devices tried before judging"
    )
    raise_ = osub.add_parser("set", help="raise a rollout's percentage")
    raise_.add_argument("id", type=int, help="the rollout's id ('rollout list')")
    raise_.add_argument(
        "--percent", type=float, required=True, help="the new share of devices, 0..100"
    )
    for name, words in (
        ("pause", "stop offering it"),
        ("resume", "offer it again"),
        ("cancel", "end it"),
    ):
        osub.add_parser(name, help=words).add_argument(
            "id", type=int, help="the rollout's id ('rollout list')"
        )
    osub.add_parser("list", help="rollouts with their counts and failure reasons")

    operator = sub.add_parser(
        "operator", help="who may manage releases and rollouts (the web app's rollouts page)"
    )
    psub = operator.add_subparsers(dest="action", required=True)
    psub.add_parser(
        "add", help="grant operator rights to an existing account whose address is verified"
    ).add_argument("email", help="the account's e-mail address")
    psub.add_parser("remove", help="take an account's operator rights away").add_argument(
        "email", help="the account's e-mail address"
    )
    psub.add_parser("list", help="the operators (and MUMU_OPERATORS addresses that are not)")


def run(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> None:
    db = SqlStore(settings.database_url)
    await db.open()
    store = UpdateStore(lambda: db.engine)
    # No sockets here: the running clouds push offers when they see the change.
    service = UpdateService(store, MemoryLiveState(), lambda _device: _none())
    try:
        if args.command == "release":
            await _release(args, settings, store)
        elif args.command == "operator":
            await _operator(args, settings, OperatorStore(lambda: db.engine))
        else:
            await _rollout(args, store, service)
    finally:
        await db.close()


async def _none() -> None:
    return None


async def _release(args: argparse.Namespace, settings: Settings, store: UpdateStore) -> None:
    if args.action == "list":
        for r in await store.releases():
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at))
            print(f"{r.version:12} {','.join(r.arches):20} {when}  {r.notes}")
        return
    arches = args.arch
    if settings.update_repo_dir is not None:
        signed = repo_files.signed_versions(settings.update_repo_dir).get(args.version)
        if not signed:
            raise CommandError(f"{args.version} is not in the signed repository: publish it first")
        arches = sorted(set(arches or signed) & signed)
    if not arches:
        raise CommandError("name the architectures with --arch (or set MUMU_UPDATE_REPO_DIR)")
    try:
        await store.add_release(args.version, arches, args.notes)
    except DuplicateRelease:
        raise CommandError(f"release {args.version} exists already") from None
    print(f"release {args.version} ({', '.join(arches)}) added")


async def _rollout(args: argparse.Namespace, store: UpdateStore, service: UpdateService) -> None:
    if args.action == "list":
        for r in await store.rollouts():
            counts = await store.counts(r.id)
            print(
                json.dumps(
                    {
                        "id": r.id,
                        "version": r.version,
                        "channel": r.channel,
                        "percent": r.percentage,
                        "state": r.state,
                        "paused_reason": r.paused_reason,
                        "offered": counts.offered,
                        "tried": counts.tried,
                        "failed": counts.failed,
                        "committed": counts.committed,
                        "reasons": counts.reasons,
                    }
                )
            )
        return
    if args.action == "start":
        if not 0 <= args.percent <= 100 or not 0 <= args.threshold <= 1:
            raise CommandError("--percent is 0..100 and --threshold 0..1")
        if await store.release(args.version) is None:
            raise CommandError(f"no release {args.version}: mumu-cloud release add it first")
        rollout = await store.create_rollout(
            args.version, args.channel, args.percent, args.threshold, args.min_sample
        )
        share = f"{rollout.percentage:g}% of {rollout.channel}"
        print(f"rollout {rollout.id}: {rollout.version} to {share}")
        return
    percentage = args.percent if args.action == "set" else None
    state = {"pause": "paused", "resume": "active", "cancel": "cancelled"}.get(args.action)
    try:
        rollout = await service.change(args.id, percentage, state)
    except LookupError:
        raise CommandError(f"no rollout {args.id}") from None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(f"rollout {rollout.id}: {rollout.state}, {rollout.percentage:g}%")


async def _operator(args: argparse.Namespace, settings: Settings, store: OperatorStore) -> None:
    if args.action == "list":
        for o in await store.all():
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(o.added_at))
            note = "" if o.verified else "  (no rights while its address is unverified)"
            print(f"{o.email:40} since {when}{note}")
        for email, why in (await store.listed_but_not_operators(settings.operators)).items():
            print(f"# {email}: in MUMU_OPERATORS, not an operator: {why}")
        return
    email = args.email.strip().lower()
    if args.action == "remove":
        if not await store.revoke(email):
            raise CommandError(f"{email} is not an operator")
        print(f"{email} is no longer an operator")
        return
    grant = await store.grant(email)
    if grant is Grant.NO_ACCOUNT:
        raise Refused(f"no account has the address {email}: sign up and verify it first")
    if grant is Grant.UNVERIFIED:
        raise Refused(f"{email} is not verified: open the link mailed to it first")
    print(f"{email} is an operator" + (" already" if grant is Grant.ALREADY else ""))
