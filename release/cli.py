"""``mumu-release``: build agent bundles and keep the signed update repository.

Typical use (docs/updates.md has the key ceremony)::

    mumu-release init    --repo /srv/mumu/updates --keys ./keys           # once, offline
    mumu-release build   --version 1.4.0 --arch aarch64 --out dist/
    mumu-release publish --repo /srv/mumu/updates --targets-key keys/targets.key \\
                         --online-key keys/online.key dist/mumu-agent-1.4.0-aarch64.tar
    mumu-release renew   --repo /srv/mumu/updates --online-key /etc/mumu/online.key  # 12-hourly
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from device.update.install import UPDATER_VERSION
from protocol import about
from release import keys
from release.build import ARCHES, BuildError, build
from release.repo import RepoError, UpdateRepository


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mumu-release",
        description="Build MuMu agent release bundles and keep the signed (TUF) repository.",
        epilog=__doc__.split("Typical use (docs/updates.md has the key ceremony)::", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build a bundle: the agent + its dependencies as wheels")
    b.add_argument("--version", required=True, help="the release's version (PEP 440)")
    b.add_argument("--arch", choices=ARCHES, default="aarch64", help="the device's architecture")
    b.add_argument("--python", default="3.11", help="the device's Python (bookworm: 3.11)")
    b.add_argument("--out", type=Path, default=Path("dist"), help="where the bundle is written")
    b.add_argument("--source", type=Path, help="the source tree (default: this one)")
    b.add_argument(
        "--min-updater",
        type=int,
        default=UPDATER_VERSION,
        help="the oldest updater (mumu-update) that may install the bundle",
    )
    b.add_argument(
        "--cache",
        type=Path,
        help="reuse downloaded dependency wheels from this directory (default: download afresh)",
    )
    b.add_argument(
        "--constraints",
        type=Path,
        help="a pip constraints file pinning the dependencies (image/build pins them to the "
        "versions its own environment runs); default: none, the newest allowed versions",
    )

    i = sub.add_parser("init", help="create a repository and its keys (offline machine)")
    i.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    i.add_argument("--keys", type=Path, required=True, help="where the new keys are written")
    i.add_argument("--root-keys", type=int, default=3, help="how many root keys to make")
    i.add_argument("--threshold", type=int, default=2, help="root keys that must sign a new root")

    p = sub.add_parser("publish", help="sign bundles into the repository (targets key)")
    p.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    p.add_argument("--targets-key", type=Path, required=True, help="the targets key (.key)")
    p.add_argument("--online-key", type=Path, required=True, help="the online key (.key)")
    p.add_argument("bundles", type=Path, nargs="+", help="bundles made by 'build'")

    r = sub.add_parser(
        "renew", help="re-sign snapshot and timestamp with the online key (run every 12 h)"
    )
    r.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    r.add_argument("--online-key", type=Path, required=True, help="the online key (.key)")
    r.add_argument(
        "--targets-key", type=Path, help="also re-sign targets (twice a year; default: not)"
    )

    ls = sub.add_parser("list", help="the published bundles and the metadata's expiry")
    ls.add_argument("--repo", type=Path, required=True, help="the repository's directory")

    k = sub.add_parser("keygen", help="a new key (a root key holder's, or a replacement)")
    k.add_argument("--keys", type=Path, required=True, help="where the new key is written")
    k.add_argument("--name", required=True, help="the key's file name, without extension")

    rot = sub.add_parser(
        "rotate-root",
        help="write the next root version; needs a threshold of old AND new root keys",
    )
    rot.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    rot.add_argument(
        "--sign",
        type=Path,
        action="append",
        default=[],
        help="a root key (.key); repeatable (default: none)",
    )
    rot.add_argument(
        "--add-root-key",
        type=Path,
        action="append",
        default=[],
        help="a new root key's .pub.json; repeatable (default: none)",
    )
    rot.add_argument(
        "--remove-root-key",
        action="append",
        default=[],
        help="a key id; repeatable (default: none)",
    )
    rot.add_argument("--threshold", type=int, help="root keys that must sign (default: unchanged)")
    rot.add_argument(
        "--online-key", type=Path, help="a new online key's .pub.json (default: unchanged)"
    )
    rot.add_argument(
        "--targets-key", type=Path, help="a new targets key's .pub.json (default: unchanged)"
    )
    return about.finish(parser)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        run(args)
    except (BuildError, RepoError, keys.KeyError_) as exc:
        print(f"mumu-release: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def run(args: argparse.Namespace) -> None:
    if args.command == "build":
        started = time.monotonic()
        bundle = build(
            args.version,
            args.arch,
            args.out,
            source=args.source,
            python=args.python,
            min_updater=args.min_updater,
            cache=args.cache,
            constraints=args.constraints,
        )
        size = bundle.stat().st_size / 1e6
        print(f"built {bundle} ({size:.0f} MB) in {time.monotonic() - started:.0f} s")
        print(bundle)
    elif args.command == "init":
        repo = UpdateRepository.create(
            args.repo, args.keys, root_keys=args.root_keys, threshold=args.threshold
        )
        print(f"created {args.repo}; keys in {args.keys}")
        print(f"trust root for the image: {repo.metadata_dir / '1.root.json'}")
        print("move each root-N.key to its holder's offline medium now (docs/updates.md)")
    elif args.command == "publish":
        repo = UpdateRepository(args.repo)
        added = repo.add_bundles(
            args.bundles, keys.load(args.targets_key), keys.load(args.online_key)
        )
        for manifest in added:
            print(f"published {manifest.version} for {manifest.arch}")
    elif args.command == "renew":
        repo = UpdateRepository(args.repo)
        targets = keys.load(args.targets_key) if args.targets_key else None
        repo.renew(keys.load(args.online_key), targets)
        print(f"timestamp valid until {repo.timestamp().signed.expires:%Y-%m-%d %H:%M} UTC")
    elif args.command == "list":
        repo = UpdateRepository(args.repo)
        for role in (repo.root(), repo.targets(), repo.snapshot(), repo.timestamp()):
            signed = role.signed
            print(f"{signed.type:9} v{signed.version:<4} expires {signed.expires:%Y-%m-%d %H:%M}")
        for release in repo.releases():
            print(json.dumps(release))
    elif args.command == "keygen":
        signer = keys.generate(args.keys, args.name)
        print(f"{args.keys / (args.name + '.key')}: key id {signer.public_key.keyid}")
    elif args.command == "rotate-root":
        repo = UpdateRepository(args.repo)
        version = repo.rotate_root(
            [keys.load(p) for p in args.sign],
            add=[keys.load_public(p) for p in args.add_root_key],
            remove=args.remove_root_key,
            threshold=args.threshold,
            online=keys.load_public(args.online_key) if args.online_key else None,
            targets=keys.load_public(args.targets_key) if args.targets_key else None,
        )
        print(f"wrote root version {version}")


if __name__ == "__main__":
    main()
