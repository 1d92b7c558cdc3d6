"""``mumu-release``: build agent bundles and keep the signed update repository.

Typical use (docs/updates.md has the key ceremony)::

    # each root key holder, on their own offline machine, with their own password:
    mumu-release root keygen --keys . --name holder1       # hands over holder1.pub.json
    # the release manager (targets key: a .pub.json, or hsm:2?label=... for a PKCS#11 token):
    mumu-release init --root-key holder1.pub.json --root-key holder2.pub.json \
                      --root-key holder3.pub.json --threshold 2 \
                      --targets-key targets.pub.json --online-key online.pub.json --out root.json
    mumu-release root sign root.json --key holder1.key     # each holder in turn
    mumu-release root publish root.json --repo /srv/mumu/updates \
                      --targets-key targets.key --online-key online.key
    mumu-release build   --version 1.4.0 --arch aarch64 --out dist/
    mumu-release publish --repo /srv/mumu/updates --targets-key targets.key \
                         --online-key online.key dist/mumu-agent-1.4.0-aarch64.tar
    mumu-release renew   --repo /srv/mumu/updates --online-key /etc/mumu/online.key  # 12-hourly
    mumu-release init    --repo demo-repo --keys demo-keys   # a demo: every key here, one password
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tuf.api.exceptions import UnsignedMetadataError

from device.update.install import UPDATER_VERSION
from protocol import about
from release import keys
from release.build import ARCHES, BuildError, build
from release.repo import RepoError, UpdateRepository, load_root, sign_root, write_root


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

    i = sub.add_parser(
        "init",
        help="the first root from the holders' public keys (--root-key ..., --out), to be "
        "signed with 'root sign'; or, for a demo, a whole repository and all its keys here "
        "(--repo, --keys)",
    )
    i.add_argument(
        "--root-key",
        action="append",
        default=[],
        help="a root key holder's .pub.json (or a token key's hsm: URI); repeatable "
        "(default: none, the demo's way)",
    )
    i.add_argument(
        "--targets-key", help="the targets key's .pub.json or hsm: URI (default: none; demo: made)"
    )
    i.add_argument("--online-key", help="the online key's .pub.json (default: none; demo: made)")
    i.add_argument("--out", type=Path, help="where the unsigned root is written (default: none)")
    i.add_argument("--repo", type=Path, help="demo: the new repository's directory (default: none)")
    i.add_argument("--keys", type=Path, help="demo: where every new key is written (default: none)")
    i.add_argument("--root-keys", type=int, default=3, help="demo: how many root keys to make")
    i.add_argument("--threshold", type=int, default=2, help="root keys that must sign a new root")

    p = sub.add_parser("publish", help="sign bundles into the repository (targets key)")
    p.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    p.add_argument(
        "--targets-key", required=True, help="the targets key (.key, or hsm: URI of a token)"
    )
    p.add_argument("--online-key", required=True, help="the online key (.key)")
    p.add_argument("bundles", type=Path, nargs="+", help="bundles made by 'build'")

    r = sub.add_parser(
        "renew", help="re-sign snapshot and timestamp with the online key (run every 12 h)"
    )
    r.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    r.add_argument("--online-key", required=True, help="the online key (.key)")
    r.add_argument(
        "--targets-key",
        help="also re-sign targets (twice a year; .key or hsm: URI; default: not)",
    )

    ls = sub.add_parser("list", help="the published bundles and the metadata's expiry")
    ls.add_argument("--repo", type=Path, required=True, help="the repository's directory")

    k = sub.add_parser("keygen", help="a new key (the targets or online key, a replacement)")
    k.add_argument("--keys", type=Path, required=True, help="where the new key is written")
    k.add_argument("--name", required=True, help="the key's file name, without extension")

    t = sub.add_parser(
        "token-key", help="write the public key of a PKCS#11 token's key as a .pub.json"
    )
    t.add_argument("--key", required=True, help="hsm:<key id>?label=<token label>")
    t.add_argument("--out", type=Path, required=True, help="the .pub.json to write")

    root = sub.add_parser("root", help="the root key ceremony, one holder at a time")
    rsub = root.add_subparsers(dest="root_command", required=True)
    rk = rsub.add_parser(
        "keygen", help="a root key holder's new key, encrypted with the holder's own password"
    )
    rk.add_argument("--keys", type=Path, required=True, help="where the new key is written")
    rk.add_argument("--name", required=True, help="the key's file name, without extension")
    rs = rsub.add_parser("sign", help="add one root key's signature to a root file")
    rs.add_argument("file", type=Path, help="the root file (from 'init --out' or 'root next')")
    rs.add_argument("--key", required=True, help="the holder's root key (.key or hsm: URI)")
    rs.add_argument(
        "--repo",
        type=Path,
        help="the repository a new root version follows: a key of its current root may sign "
        "too (default: only this root's keys)",
    )
    rv = rsub.add_parser("verify", help="whose signatures a root file has, and whether enough")
    rv.add_argument("file", type=Path, help="the root file")
    rv.add_argument(
        "--repo", type=Path, help="check against its current root too (default: only itself)"
    )
    rp = rsub.add_parser("publish", help="put a root signed enough into the repository")
    rp.add_argument("file", type=Path, help="the root file")
    rp.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    rp.add_argument(
        "--targets-key",
        help="the first root only: the targets key (.key or hsm: URI; default: none)",
    )
    rp.add_argument("--online-key", help="the first root only: the online key (default: none)")
    rn = rsub.add_parser(
        "next", help="write the next root version, unsigned (rotation, or the yearly renewal)"
    )
    rn.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    rn.add_argument("--out", type=Path, required=True, help="where the unsigned root is written")
    _root_changes(rn)

    rot = sub.add_parser(
        "rotate-root",
        help="write the next root version; needs a threshold of old AND new root keys",
    )
    rot.add_argument("--repo", type=Path, required=True, help="the repository's directory")
    rot.add_argument(
        "--sign",
        action="append",
        default=[],
        help="a root key (.key); repeatable (default: none)",
    )
    _root_changes(rot)
    return about.finish(parser)


def _root_changes(rot: argparse.ArgumentParser) -> None:
    rot.add_argument(
        "--add-root-key",
        type=Path,
        action="append",
        default=[],
        help="a new root key's .pub.json or hsm: URI; repeatable (default: none)",
    )
    rot.add_argument(
        "--remove-root-key",
        action="append",
        default=[],
        help="a key id; repeatable (default: none)",
    )
    rot.add_argument("--threshold", type=int, help="root keys that must sign (default: unchanged)")
    rot.add_argument("--online-key", help="a new online key's .pub.json (default: unchanged)")
    rot.add_argument(
        "--targets-key",
        help="a new targets key's .pub.json or hsm: URI (default: unchanged)",
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        run(args)
    except (BuildError, RepoError, keys.KeyError_) as exc:
        print(f"mumu-release: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except UnsignedMetadataError as exc:  # a signer failed half-way (a token pulled out)
        print(f"mumu-release: cannot sign: {exc.__cause__ or exc}", file=sys.stderr)
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
        init(args)
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
        signer = keys.generate(args.keys, args.name, password=keys.new_password(args.name))
        print(f"{args.keys / (args.name + '.key')}: key id {signer.public_key.keyid}")
    elif args.command == "token-key":
        key = keys.token_public(args.key)
        keys.write_public(key, args.out)
        print(f"{args.out}: key id {key.keyid} ({key.scheme})")
    elif args.command == "root":
        root_command(args)
    elif args.command == "rotate-root":
        repo = UpdateRepository(args.repo)
        version = repo.rotate_root([keys.load(p) for p in args.sign], **_changes(args))
        print(f"wrote root version {version}")


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "add": [keys.public(p) for p in args.add_root_key],
        "remove": args.remove_root_key,
        "threshold": args.threshold,
        "online": keys.public(args.online_key) if args.online_key else None,
        "targets": keys.public(args.targets_key) if args.targets_key else None,
    }


def init(args: argparse.Namespace) -> None:
    if not args.root_key:
        if args.repo is None or args.keys is None:
            raise RepoError("init: --root-key ... --out (the ceremony) or --repo and --keys")
        repo = UpdateRepository.create(
            args.repo, args.keys, root_keys=args.root_keys, threshold=args.threshold
        )
        print(f"created {args.repo}; keys in {args.keys}")
        print(f"trust root for the image: {repo.metadata_dir / '1.root.json'}")
        print(
            "every key was made on this machine under one password: a demo. For real keys, "
            "each holder makes their own (docs/updates.md, key ceremony)",
            file=sys.stderr,
        )
        return
    missing = [o for o in ("targets_key", "online_key", "out") if getattr(args, o) is None]
    if missing or args.repo or args.keys:
        raise RepoError(
            "init --root-key needs --targets-key, --online-key and --out, and no --repo/--keys"
        )
    if args.out.exists():
        raise RepoError(f"{args.out} exists already")
    md = UpdateRepository(Path(".")).new_root(
        [keys.public(p) for p in args.root_key],
        threshold=args.threshold,
        targets=keys.public(args.targets_key),
        online=keys.public(args.online_key),
    )
    write_root(md, args.out)
    print(f"wrote {args.out}: root version 1, unsigned, {args.threshold} of {len(args.root_key)}")
    print("next: each holder runs 'mumu-release root sign' on it in turn")


def root_command(args: argparse.Namespace) -> None:
    cmd = args.root_command
    if cmd == "keygen":
        password = keys.new_password(args.name)
        if not password:
            raise keys.KeyError_(
                f"a root key is always encrypted: set {keys.PASSWORD_ENV} or run at a terminal"
            )
        signer = keys.generate(args.keys, args.name, password=password)
        print(f"{args.keys / (args.name + '.pub.json')}: key id {signer.public_key.keyid}")
        print("hand the .pub.json over; the .key never leaves this machine's offline medium")
    elif cmd == "next":
        if args.out.exists():
            raise RepoError(f"{args.out} exists already")
        md = UpdateRepository(args.repo).next_root(**_changes(args))
        write_root(md, args.out)
        print(f"wrote {args.out}: root version {md.signed.version}, unsigned")
    elif cmd == "sign":
        md = load_root(args.file)
        previous = None
        if args.repo is not None and md.signed.version > 1:
            previous = UpdateRepository(args.repo).root().signed
        holder = keys.load(args.key)
        sign_root(md, holder, previous)
        write_root(md, args.file)
        print(f"signed {args.file} with {holder.public_key.keyid}")
        if args.repo is not None:
            print(UpdateRepository(args.repo).root_verdict(md).describe())
    elif cmd == "verify":
        md = load_root(args.file)
        repo = UpdateRepository(args.repo) if args.repo is not None else None
        if repo is None:
            result = md.signed.get_root_verification_result(None, md.signed_bytes, md.signatures)
            verified = result.verified
            print(
                f"root version {md.signed.version}: {len(result.second.signed)} of the "
                f"{result.second.threshold} signatures it needs from its own keys"
            )
        else:
            verdict = repo.root_verdict(md)
            verified = verdict.verified
            print(verdict.describe())
            if verdict.waiting_for:
                print(f"  may still sign (old or new root keys): {', '.join(verdict.waiting_for)}")
        for keyid in md.signed.roles["root"].keyids:
            print(f"  {keyid} {'signed' if keyid in md.signatures else 'not signed'}")
        if not verified:
            raise SystemExit(1)
    elif cmd == "publish":
        md = load_root(args.file)
        repo = UpdateRepository(args.repo)
        verdict = repo.root_verdict(md)  # before any key is unlocked
        if not verdict.verified:
            raise RepoError(verdict.describe())
        version = repo.publish_root(
            md,
            targets_signer=keys.load(args.targets_key) if args.targets_key else None,
            online_signer=keys.load(args.online_key) if args.online_key else None,
        )
        print(f"published root version {version} in {args.repo}")
        if version == 1:
            print(f"trust root for the image: {repo.metadata_dir / '1.root.json'}")


if __name__ == "__main__":
    main()
