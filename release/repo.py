"""The signed update repository (The Update Framework, python-tuf's Metadata API).

Layout, servable by any static host (or the cloud, ``MUMU_UPDATE_REPO_DIR``)::

    metadata/N.root.json        root: the keys of every role; threshold of offline root keys
    metadata/N.targets.json     the bundles (length, sha256, version/arch/ABI) - targets key
    metadata/N.snapshot.json    the current targets version - online key
    metadata/timestamp.json     the current snapshot version, short-lived - online key
    targets/<sha256>.mumu-agent-<version>-<arch>.tar

Consistent snapshots: a client that fetched timestamp N reads exactly the snapshot and targets
it names, however the files change under it, and a bundle's URL names its hash.

Roles and keys (see docs/updates.md, "key ceremony"):

* ``root``: ``root_keys`` ed25519 keys, ``threshold`` of them sign every root version.  Kept
  offline (one per holder); the first root is baked into the SD image.
* ``targets``: signs a release when it is published (the release manager, offline or on an HSM).
* ``snapshot`` and ``timestamp``: one *online* key, so the server can renew their short expiry
  on a timer (``mumu-release renew``) without anybody holding an offline key.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from device.update.install import Manifest, bundle_name, read_manifest
from release import keys

PRETTY = JSONSerializer(compact=False)
ONLINE = "online"
TARGETS = "targets"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Expiry:
    """How long each role's metadata stays valid after it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=180)
    snapshot: timedelta = timedelta(days=7)
    #: Renewed every 12 h (``mumu-release renew``): a device notices a frozen repository within
    #: 3 days, and a device clock up to ~2.5 days ahead still accepts fresh metadata.
    timestamp: timedelta = timedelta(days=3)


class RepoError(Exception):
    """The repository is missing, inconsistent or refuses the operation (one-line message)."""


class UpdateRepository:
    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], datetime] = utcnow,
        expiry: Expiry | None = None,
    ) -> None:
        self.path = path
        self.metadata_dir = path / "metadata"
        self.targets_dir = path / "targets"
        self.clock = clock
        self.expiry = expiry or Expiry()

    # --- reading -------------------------------------------------------------------------------

    def _load(self, name: str, kind: type[Signed]) -> Metadata[Any]:
        file = self.metadata_dir / name
        try:
            md: Metadata[Any] = Metadata.from_file(str(file))
        except FileNotFoundError:
            raise RepoError(f"{file}: missing (mumu-release init creates a repository)") from None
        if not isinstance(md.signed, kind):
            raise RepoError(f"{file}: not {kind.type} metadata")
        return md

    def root_version(self) -> int:
        versions = [
            int(m.group(1))
            for p in self.metadata_dir.glob("*.root.json")
            if (m := re.fullmatch(r"(\d+)\.root\.json", p.name))
        ]
        if not versions:
            raise RepoError(f"{self.metadata_dir}: no root metadata")
        return max(versions)

    def root(self) -> Metadata[Root]:
        return self._load(f"{self.root_version()}.root.json", Root)

    def timestamp(self) -> Metadata[Timestamp]:
        return self._load("timestamp.json", Timestamp)

    def snapshot(self) -> Metadata[Snapshot]:
        version = self.timestamp().signed.snapshot_meta.version
        return self._load(f"{version}.snapshot.json", Snapshot)

    def targets(self) -> Metadata[Targets]:
        version = self.snapshot().signed.meta["targets.json"].version
        return self._load(f"{version}.targets.json", Targets)

    def releases(self) -> list[dict[str, Any]]:
        """Every published bundle: path, length, sha256 and its manifest fields."""
        out = []
        for path, target in sorted(self.targets().signed.targets.items()):
            out.append(
                {"path": path, "length": target.length, **target.hashes, **(target.custom or {})}
            )
        return out

    # --- writing -------------------------------------------------------------------------------

    def _expires(self, delta: timedelta) -> datetime:
        return self.clock().replace(microsecond=0) + delta

    def _write(self, md: Metadata[Any], name: str) -> None:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.metadata_dir / f".{name}.tmp"
        md.to_file(str(tmp), serializer=PRETTY)
        os.replace(tmp, self.metadata_dir / name)

    def _check_signer(self, role: str, signer: Signer) -> None:
        root = self.root().signed
        if signer.public_key.keyid not in root.roles[role].keyids:
            raise RepoError(f"that key is not a {role} key of this repository's root")

    @classmethod
    def create(
        cls,
        path: Path,
        keys_dir: Path,
        *,
        root_keys: int = 3,
        threshold: int = 2,
        clock: Callable[[], datetime] = utcnow,
        expiry: Expiry | None = None,
    ) -> UpdateRepository:
        """A new repository and new keys ``root-1..N``, ``targets``, ``online``, all made here
        (the demo's and the tests' way; docs/updates.md has the ceremony that makes each key on
        its holder's machine: :meth:`new_root`, :func:`sign_root`, :meth:`publish_root`)."""
        if not 1 <= threshold <= root_keys:
            raise RepoError("the root threshold must be between 1 and the number of root keys")
        repo = cls(path, clock=clock, expiry=expiry)
        if (repo.metadata_dir / "1.root.json").exists():
            raise RepoError(f"{path} holds a repository already")
        root_signers = [keys.generate(keys_dir, f"root-{i + 1}") for i in range(root_keys)]
        targets_signer = keys.generate(keys_dir, TARGETS)
        online_signer = keys.generate(keys_dir, ONLINE)
        root_md = repo.new_root(
            [s.public_key for s in root_signers],
            threshold=threshold,
            targets=targets_signer.public_key,
            online=online_signer.public_key,
        )
        for signer in root_signers:
            sign_root(root_md, signer)
        repo.publish_root(root_md, targets_signer=targets_signer, online_signer=online_signer)
        return repo

    # --- root, one holder at a time -----------------------------------------------------------

    def new_root(
        self, root_keys: list[Key], *, threshold: int, targets: Key, online: Key
    ) -> Metadata[Root]:
        """The first root, unsigned: the holders sign it one by one (:func:`sign_root`)."""
        keyids = {k.keyid for k in root_keys}
        if len(keyids) != len(root_keys):
            raise RepoError("the same root key is given twice")
        if not 1 <= threshold <= len(root_keys):
            raise RepoError("the root threshold must be between 1 and the number of root keys")
        if keyids & {targets.keyid, online.keyid}:
            raise RepoError("a root key must not be the targets or the online key too")
        root = Root(expires=self._expires(self.expiry.root), consistent_snapshot=True)
        for key in root_keys:
            root.add_key(key, Root.type)
        root.roles[Root.type].threshold = threshold
        root.add_key(targets, Targets.type)
        root.add_key(online, Snapshot.type)
        root.add_key(online, Timestamp.type)
        return Metadata(root)

    def next_root(
        self,
        *,
        add: Iterable[Key] = (),
        remove: Iterable[str] = (),
        threshold: int | None = None,
        online: Key | None = None,
        targets: Key | None = None,
    ) -> Metadata[Root]:
        """Root version N+1, unsigned: root keys added/removed, a new threshold, new online or
        targets keys, or none of these (the yearly re-signing)."""
        old = self.root()
        new = Metadata(Root.from_dict(old.signed.to_dict()))
        root = new.signed
        root.version += 1
        root.expires = self._expires(self.expiry.root)
        for key in add:
            root.add_key(key, Root.type)
        for keyid in remove:
            if keyid not in root.roles[Root.type].keyids:
                raise RepoError(f"{keyid} is not a root key of this repository")
            root.revoke_key(keyid, Root.type)
        if threshold is not None:
            root.roles[Root.type].threshold = threshold
        if not 1 <= root.roles[Root.type].threshold <= len(root.roles[Root.type].keyids):
            raise RepoError("the root threshold must be between 1 and the number of root keys")
        changes = ((Snapshot.type, online), (Timestamp.type, online), (Targets.type, targets))
        for role, new_key in changes:
            if new_key is None:
                continue
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(new_key, role)
        return new

    def _previous_root(self, md: Metadata[Root]) -> Root | None:
        """The root ``md`` follows (None for a first root), or why it follows none here."""
        version = md.signed.version
        if version == 1:
            if (self.metadata_dir / "1.root.json").exists():
                raise RepoError(f"{self.path} holds a repository already")
            return None
        current = self.root_version()
        if version != current + 1:
            raise RepoError(f"that is root version {version}; the next here is {current + 1}")
        return self.root().signed

    def root_verdict(self, md: Metadata[Root]) -> RootVerdict:
        """Whether ``md`` carries enough signatures to be published here."""
        previous = self._previous_root(md)
        result = md.signed.get_root_verification_result(previous, md.signed_bytes, md.signatures)
        return RootVerdict(
            version=md.signed.version,
            verified=result.verified,
            old_needed=result.first.threshold,
            old_signed=sorted(result.first.signed),
            new_needed=result.second.threshold,
            new_signed=sorted(result.second.signed),
            waiting_for=sorted(
                set(result.first.unsigned) | set(result.second.unsigned)
                if not result.verified
                else set()
            ),
            first=previous is None,
        )

    def publish_root(
        self,
        md: Metadata[Root],
        *,
        targets_signer: Signer | None = None,
        online_signer: Signer | None = None,
    ) -> int:
        """Write a root that carries its threshold(s) of signatures.  The first one also needs
        the targets and online keys: they sign the (empty) targets, snapshot and timestamp."""
        verdict = self.root_verdict(md)
        if not verdict.verified:
            raise RepoError(verdict.describe())
        root = md.signed
        if verdict.first:
            for role, signer in ((Targets.type, targets_signer), (Timestamp.type, online_signer)):
                if signer is None:
                    raise RepoError(f"the first root is published with the {role} key too")
                if signer.public_key.keyid not in root.roles[role].keyids:
                    raise RepoError(f"that key is not a {role} key of this root")
            assert targets_signer is not None and online_signer is not None
            self._write(md, "1.root.json")
            targets_md = Metadata(Targets(expires=self._expires(self.expiry.targets)))
            targets_md.sign(targets_signer)
            self._write(targets_md, "1.targets.json")
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            self._snapshot_and_timestamp(online_signer, targets_version=1, snapshot_version=1)
        else:
            self._write(md, f"{root.version}.root.json")
        return root.version

    def _snapshot_and_timestamp(
        self, online: Signer, *, targets_version: int, snapshot_version: int | None = None
    ) -> None:
        if snapshot_version is None:
            snapshot_version = self.snapshot().signed.version + 1
            timestamp_version = self.timestamp().signed.version + 1
        else:
            timestamp_version = 1
        snapshot = Snapshot(
            version=snapshot_version,
            expires=self._expires(self.expiry.snapshot),
            meta={"targets.json": MetaFile(version=targets_version)},
        )
        snapshot_md = Metadata(snapshot)
        snapshot_md.sign(online)
        self._write(snapshot_md, f"{snapshot_version}.snapshot.json")
        timestamp_md = Metadata(
            Timestamp(
                version=timestamp_version,
                expires=self._expires(self.expiry.timestamp),
                snapshot_meta=MetaFile(version=snapshot_version),
            )
        )
        timestamp_md.sign(online)
        self._write(timestamp_md, "timestamp.json")

    def add_bundles(
        self, bundles: Iterable[Path], targets_signer: Signer, online_signer: Signer
    ) -> list[Manifest]:
        """Publish bundles: copy them under ``targets/``, sign a new targets version listing
        them, then a new snapshot and timestamp."""
        self._check_signer(Targets.type, targets_signer)
        self._check_signer(Timestamp.type, online_signer)
        targets_md = self.targets()
        added = []
        for bundle in bundles:
            manifest = read_manifest(bundle)
            name = bundle_name(manifest.version, manifest.arch)
            target = TargetFile.from_file(name, str(bundle), ["sha256"])
            target.unrecognized_fields["custom"] = {
                "version": manifest.version,
                "arch": manifest.arch,
                "python_abi": manifest.python_abi,
                "min_updater": manifest.min_updater,
            }
            # what the device checks its free space against before it downloads a byte
            for key in ("unpacked_size", "installed_size"):
                value = getattr(manifest, key)
                if value is not None:
                    target.unrecognized_fields["custom"][key] = value
            old = targets_md.signed.targets.get(name)
            if old is not None and old.hashes != target.hashes:
                raise RepoError(
                    f"{name} is published already with other content: a version is never reused"
                )
            self.targets_dir.mkdir(parents=True, exist_ok=True)
            dest = self.targets_dir / f"{target.hashes['sha256']}.{name}"
            if not dest.exists():
                tmp = dest.with_name(f".{dest.name}.tmp")
                shutil.copyfile(bundle, tmp)
                os.replace(tmp, dest)
            targets_md.signed.targets[name] = target
            added.append(manifest)
        self._sign_targets(targets_md, targets_signer, online_signer)
        return added

    def _sign_targets(self, targets_md: Metadata[Targets], signer: Signer, online: Signer) -> None:
        targets_md.signed.version += 1
        targets_md.signed.expires = self._expires(self.expiry.targets)
        targets_md.signatures.clear()
        targets_md.sign(signer)
        self._write(targets_md, f"{targets_md.signed.version}.targets.json")
        self._snapshot_and_timestamp(online, targets_version=targets_md.signed.version)

    def renew(self, online_signer: Signer, targets_signer: Signer | None = None) -> None:
        """New snapshot and timestamp with fresh expiry (online key); with the targets key,
        targets too (its expiry is long, renew it at least twice a year)."""
        self._check_signer(Timestamp.type, online_signer)
        if targets_signer is not None:
            self._check_signer(Targets.type, targets_signer)
            self._sign_targets(self.targets(), targets_signer, online_signer)
            return
        version = self.snapshot().signed.meta["targets.json"].version
        self._snapshot_and_timestamp(online_signer, targets_version=version)

    def rotate_root(
        self,
        signers: list[Signer],
        *,
        add: Iterable[Key] = (),
        remove: Iterable[str] = (),
        threshold: int | None = None,
        online: Key | None = None,
        targets: Key | None = None,
    ) -> int:
        """Write root version N+1 signed here by ``signers`` (the holders present): it must
        carry a threshold of signatures from the old root's keys *and* from the new one's
        (devices check both).  :meth:`next_root` + :func:`sign_root` + :meth:`publish_root`
        do the same with each holder on their own machine."""
        new = self.next_root(
            add=add, remove=remove, threshold=threshold, online=online, targets=targets
        )
        previous = self.root().signed
        for signer in signers:
            sign_root(new, signer, previous)
        return self.publish_root(new)


@dataclass(frozen=True)
class RootVerdict:
    """How a root stands against the threshold(s) it must meet."""

    version: int
    verified: bool
    old_needed: int
    old_signed: list[str]
    new_needed: int
    new_signed: list[str]
    waiting_for: list[str]  # key ids that could still sign
    first: bool

    def describe(self) -> str:
        if self.first:
            counts = f"it needs {self.new_needed} ({len(self.new_signed)} given)"
        else:
            counts = (
                f"the old root needs {self.old_needed} ({len(self.old_signed)} given), "
                f"the new one {self.new_needed} ({len(self.new_signed)} given)"
            )
        if self.verified:
            return f"root version {self.version} is signed enough: {counts}"
        return f"not enough root signatures for root version {self.version}: {counts}"


def root_keyids(root: Root, previous: Root | None = None) -> set[str]:
    ids = set(root.roles[Root.type].keyids)
    if previous is not None:
        ids |= set(previous.roles[Root.type].keyids)
    return ids


def sign_root(md: Metadata[Root], signer: Signer, previous: Root | None = None) -> None:
    """Add one holder's signature to ``md`` (a root key of it, or of ``previous``, the root
    it follows: a leaving holder signs the root that removes them)."""
    if signer.public_key.keyid not in root_keyids(md.signed, previous):
        where = "this root or the one before it" if previous is not None else "this root"
        raise RepoError(f"that key is not a root key of {where}")
    md.sign(signer, append=True)


def load_root(path: Path) -> Metadata[Root]:
    """A root file passed between holders."""
    try:
        md: Metadata[Any] = Metadata.from_file(str(path))
    except FileNotFoundError:
        raise RepoError(f"{path}: missing") from None
    except Exception as exc:  # python-tuf's DeserializationError and friends
        raise RepoError(f"{path}: not TUF metadata: {exc}") from None
    if not isinstance(md.signed, Root):
        raise RepoError(f"{path}: not root metadata")
    return md


def write_root(md: Metadata[Root], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    md.to_file(str(tmp), serializer=PRETTY)
    os.replace(tmp, path)
