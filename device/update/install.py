"""Install a release bundle into ``<root>/releases/<version>`` and point a link at it.

This file is **standard library only** and runs with any ``python3``, so the SD image build (in a
chroot, with the image's own ``python3`` and nothing installed yet: the stage runs it straight
out of the agent's wheel inside the bundle) and the updater on the device use the same code::

    PYTHONPATH=wheels/mumu_camera-<version>-py3-none-any.whl \
        python3 -m device.update.install BUNDLE.tar --root /opt/mumu --activate
    python3 device/update/install.py BUNDLE.tar --root /opt/mumu --activate   # from a checkout

``--activate`` (a first install) points both ``current`` and ``committed`` at the release.

A bundle is an uncompressed tar (wheels are compressed already) holding ``mumu-release.json`` (the
manifest) and ``wheels/*.whl``: the agent and every dependency, built for one architecture and
one Python ABI, plus pip's own wheel.  The device builds the venv **at its final path** from the
wheelhouse, offline: a venv records its own absolute path and the interpreter's, so a venv built
elsewhere would not run here, while wheels do not care where they are unpacked.

A release directory is complete only once ``mumu-release.json`` is written into it, last, after
the venv passed an import check; anything without it is an interrupted install and is removed by
:func:`remove_incomplete`.  Links (``current``, ``committed``) are relative symlinks replaced by
one ``rename``, so a power cut leaves the old target or the new one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = "mumu-release.json"
#: The bundle format this code reads; a bundle asks for at least ``min_updater``.
UPDATER_VERSION = 1
FORMAT = 1
RELEASES = "releases"
STAGING = "staging"
#: ``current``: the release the agent runs.  ``committed``: the last release that passed its
#: probation (the updater itself runs from it, so a bad release cannot break its own rollback).
CURRENT = "current"
COMMITTED = "committed"
VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,63}\Z")
WHEEL_RE = re.compile(r"^[A-Za-z0-9_.+-]+\.whl\Z")
#: What a release must import before it may become ``current``.
SMOKE_IMPORTS = "import device.agent, device.cli, device.update.cli"


class InstallError(Exception):
    """The bundle is unusable or the install failed (one-line message)."""


@dataclass(frozen=True)
class Wheel:
    file: str
    sha256: str
    #: The wheel's bytes in the bundle, and the total of its members uncompressed (from its zip
    #: central directory): what unpacking it may write.  None in bundles built before them.
    length: int | None = None
    content: int | None = None


@dataclass(frozen=True)
class Manifest:
    version: str
    arch: str
    python_abi: str
    min_updater: int
    requirement: str
    wheels: list[Wheel] = field(default_factory=list)
    format: int = FORMAT
    name: str = "mumu-agent"
    created: str = ""
    system_site_packages: bool = True
    #: The wheels' total (what the bundle unpacks to before pip runs) and the installed
    #: release's size on disk as the build reckoned it (:func:`installed_estimate`).
    unpacked_size: int | None = None
    installed_size: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            raw = json.loads(text)
            wheels = [
                Wheel(
                    file=str(w["file"]),
                    sha256=str(w["sha256"]),
                    length=_size(w.get("length")),
                    content=_size(w.get("content")),
                )
                for w in raw["wheels"]
            ]
            manifest = cls(
                version=str(raw["version"]),
                arch=str(raw["arch"]),
                python_abi=str(raw["python_abi"]),
                min_updater=int(raw["min_updater"]),
                requirement=str(raw["requirement"]),
                wheels=wheels,
                format=int(raw.get("format", FORMAT)),
                name=str(raw.get("name", "mumu-agent")),
                created=str(raw.get("created", "")),
                system_site_packages=bool(raw.get("system_site_packages", True)),
                unpacked_size=_size(raw.get("unpacked_size")),
                installed_size=_size(raw.get("installed_size")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InstallError(f"{MANIFEST}: not a release manifest ({exc})") from None
        if not VERSION_RE.match(manifest.version):
            raise InstallError(f"{MANIFEST}: bad version {manifest.version!r}")
        for wheel in manifest.wheels:
            if not WHEEL_RE.match(wheel.file):
                raise InstallError(f"{MANIFEST}: bad wheel name {wheel.file!r}")
        return manifest

    def bundle_name(self) -> str:
        return bundle_name(self.version, self.arch)


def _size(value: object) -> int | None:
    """A size field of the manifest: absent (None) or a count of bytes."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a size: {value!r}")
    return value


#: Bytes per file on the card beyond its data (a block, rounded up) and a venv's own files:
#: what :func:`installed_estimate` adds to the wheels' contents.
BLOCK = 4096
VENV_BASE = 1024 * 1024
#: How much larger than its compressed size a wheel may unpack in a bundle that does not say
#: (built before the sizes were signed): a real wheel is 2-5x, a deflate bomb 1000x.
MAX_RATIO = 20


def wheel_content(path: Path) -> tuple[int, int]:
    """A wheel's members' total uncompressed size, from its central directory, and the
    installed estimate for them (blocks rounded up; ``.py`` files twice, for their bytecode).
    What zipfile (and so pip) writes of a member never exceeds its recorded size."""
    import zipfile

    total = estimate = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                total += info.file_size
                blocks = -(-info.file_size // BLOCK) * BLOCK + BLOCK
                estimate += blocks * (2 if info.filename.endswith(".py") else 1)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InstallError(f"{path.name}: not a readable wheel ({exc})") from None
    return total, estimate


def bundle_name(version: str, arch: str) -> str:
    return f"mumu-agent-{version}-{arch}.tar"


def machine_arch() -> str:
    """``aarch64`` or ``x86_64`` (what ``uname -m`` says; ``arm64`` is aarch64)."""
    arch = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64", "AMD64": "x86_64"}.get(arch, arch)


def python_abi(python: str = sys.executable) -> str:
    """``cp311`` for the interpreter at ``python``."""
    if python == sys.executable:
        return f"cp{sys.version_info.major}{sys.version_info.minor}"
    out = subprocess.run(
        [python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def read_manifest(bundle: Path) -> Manifest:
    """The bundle's manifest (read from the members up to it, not the whole archive)."""
    try:
        with tarfile.open(bundle, "r:") as tar:
            for member in tar:
                if member.name.removeprefix("./") != MANIFEST:
                    continue
                data = tar.extractfile(member) if member.isreg() else None
                if data is None:
                    raise InstallError(f"{bundle.name}: {MANIFEST} is not a file")
                return Manifest.from_json(data.read(1024 * 1024))
    except (tarfile.TarError, OSError) as exc:
        raise InstallError(f"{bundle.name}: not a readable bundle ({exc})") from None
    raise InstallError(f"{bundle.name}: no {MANIFEST} in the bundle")


def check_compatible(
    manifest: Manifest, *, arch: str | None = None, abi: str | None = None
) -> None:
    """Refuse a bundle built for another machine, Python or a newer updater."""
    if manifest.format != FORMAT:
        raise InstallError(f"bundle format {manifest.format} is not {FORMAT}")
    if manifest.min_updater > UPDATER_VERSION:
        raise InstallError(
            f"release {manifest.version} needs updater {manifest.min_updater}, this is "
            f"{UPDATER_VERSION}: install an intermediate release first"
        )
    arch = arch or machine_arch()
    if manifest.arch != arch:
        raise InstallError(f"release {manifest.version} is for {manifest.arch}, not {arch}")
    if abi is not None and manifest.python_abi != abi:
        raise InstallError(
            f"release {manifest.version} is for {manifest.python_abi}, this Python is {abi}"
        )


def _extract_wheels(bundle: Path, manifest: Manifest, into: Path) -> None:
    """Only the wheels the manifest names, as plain files: no links, no paths, no surprises;
    no sparse member and none larger than the bytes the bundle stores for it (a 10 KB sparse
    member can claim 10 GiB); never more than the manifest's sizes."""
    import hashlib

    wanted = {w.file: w for w in manifest.wheels}
    stored = bundle.stat().st_size
    budget = manifest.unpacked_size if manifest.unpacked_size is not None else stored
    into.mkdir(parents=True, exist_ok=True)
    written = 0
    with tarfile.open(bundle, "r:") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not name.startswith("wheels/"):
                continue
            base = name.removeprefix("wheels/")
            if (
                member.type == tarfile.GNUTYPE_SPARSE
                or member.sparse is not None
                or any(k.startswith("GNU.sparse") for k in member.pax_headers)
            ):
                raise InstallError(f"{base}: a sparse member is refused")
            if base not in wanted or member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                raise InstallError(f"unexpected bundle member {member.name!r}")
            wheel = wanted.pop(base)
            if member.offset_data + member.size > stored:
                raise InstallError(
                    f"{base}: claims {member.size} bytes, more than the bundle stores for it"
                )
            if wheel.length is not None and member.size != wheel.length:
                raise InstallError(f"{base}: {member.size} bytes, the manifest says {wheel.length}")
            written += member.size
            if written > budget:
                raise InstallError(
                    f"the wheels exceed the {budget} bytes the manifest allows unpacked"
                )
            source = tar.extractfile(member)
            assert source is not None
            digest = hashlib.sha256()
            left = member.size
            with open(into / base, "wb") as out:
                while left and (chunk := source.read(min(left, 1024 * 1024))):
                    left -= len(chunk)
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != wheel.sha256:
                raise InstallError(f"{base}: hash differs from the manifest")
    if wanted:
        raise InstallError(f"bundle lacks {', '.join(sorted(wanted))}")


def check_wheel_contents(manifest: Manifest, wheels: Path) -> None:
    """Before pip runs: each wheel unpacks to no more than the manifest says (or, in a bundle
    that does not say, ``MAX_RATIO`` x its size), and all of them to no more than the signed
    installed size.  Read from each zip's central directory: nothing is decompressed."""
    total = 0
    for wheel in manifest.wheels:
        path = wheels / wheel.file
        content, _ = wheel_content(path)
        bound = wheel.content if wheel.content is not None else MAX_RATIO * path.stat().st_size
        if content > bound:
            raise InstallError(
                f"{wheel.file} unpacks to {content} bytes, more than the {bound} allowed: refused "
                "before pip ran"
            )
        total += content
    if manifest.installed_size is not None and total > manifest.installed_size:
        raise InstallError(
            f"the wheels unpack to {total} bytes, more than the {manifest.installed_size} "
            "installed size the release was signed with: refused before pip ran"
        )


# --- the disk: every change the updater makes to it goes through these ----------------------
#
# One seam, so that a test can see each change (and its order) and cut the power before or after
# any of them: ``observer(phase, operation, paths)`` is called with ``"before"`` and ``"after"``.
# Nothing else in the updater writes, renames or deletes what its decisions are read from.

observer: Callable[[str, str, tuple[str, ...]], None] | None = None


def _change(op: str, paths: tuple[Path, ...], do: Callable[[], object]) -> None:
    names = tuple(str(p) for p in paths)
    if observer is not None:
        observer("before", op, names)
    do()
    if observer is not None:
        observer("after", op, names)


def _fsync_path(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    _change("fsync", (path,), lambda: _fsync_path(path, 0))


def fsync_dir(path: Path) -> None:
    _change("fsync_dir", (path,), lambda: _fsync_path(path, os.O_DIRECTORY))


def rename(source: Path, dest: Path) -> None:
    _change("rename", (source, dest), lambda: os.replace(source, dest))


def unlink(path: Path) -> None:
    _change("unlink", (path,), lambda: path.unlink(missing_ok=True))


def remove_tree(path: Path) -> None:
    _change("rmtree", (path,), lambda: shutil.rmtree(path, ignore_errors=True))


def sync_tree(path: Path) -> None:
    """Every file and directory under ``path`` on the disk (before a rename publishes it)."""

    def sync() -> None:
        for top, _dirs, names in os.walk(path, topdown=False):
            for name in names:
                file = Path(top, name)
                if not file.is_symlink():
                    _fsync_path(file, 0)
            _fsync_path(Path(top), os.O_DIRECTORY)

    _change("sync_tree", (path,), sync)


def write_temp(directory: Path, prefix: str, data: bytes, mode: int) -> Path:
    """A new file in ``directory`` holding ``data``, on the disk (fsynced), not yet published."""
    tmp = Path(directory, f"{prefix}{os.getpid()}.{time.monotonic_ns()}.tmp")

    def write() -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)

    _change("write", (tmp,), write)
    return tmp


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """``path`` holds ``data`` or what it held before, whenever the power goes: the data is
    synced before the rename that publishes it, and the directory after it."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temp(path.parent, f".{path.name}.", raw, mode)
    try:
        rename(tmp, path)
    except Exception:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def release_dir(root: Path, version: str) -> Path:
    return root / RELEASES / version


def installed_manifest(root: Path, version: str) -> Manifest | None:
    """The manifest of a complete release, or None (absent or interrupted)."""
    try:
        return Manifest.from_json((release_dir(root, version) / MANIFEST).read_text())
    except (OSError, InstallError):
        return None


def installed_versions(root: Path) -> list[str]:
    base = root / RELEASES
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if installed_manifest(root, p.name) is not None)


def delete_release(root: Path, version: str) -> bool:
    """Remove ``releases/<version>``: the one place a release is deleted.  What ``current`` or
    ``committed`` points at is never deleted (False).  The directory is first renamed out of
    the releases' names (one rename, synced), so a power cut never leaves half a release that
    still looks complete; :func:`remove_incomplete` finishes what was cut short."""
    if version in (link_target(root, CURRENT), link_target(root, COMMITTED)):
        return False
    path = release_dir(root, version)
    if not path.exists() and not path.is_symlink():
        return True
    trash = root / RELEASES / f".gone-{version}"
    remove_tree(trash)
    rename(path, trash)
    fsync_dir(root / RELEASES)
    remove_tree(trash)
    return True


def remove_incomplete(root: Path) -> list[str]:
    """Delete every release directory without a manifest, and the staging area.  What
    ``current`` or ``committed`` points at is never deleted, whatever it holds."""
    removed: list[str] = []
    base = root / RELEASES
    if base.is_dir():
        for entry in sorted(base.iterdir()):
            if entry.name.startswith("."):
                remove_tree(entry)
                removed.append(entry.name)
            elif installed_manifest(root, entry.name) is None and delete_release(root, entry.name):
                removed.append(entry.name)
    if (root / STAGING).exists():
        remove_tree(root / STAGING)
    return removed


def complete(root: Path, version: str) -> bool:
    """Whether ``releases/<version>`` may become ``current`` or ``committed``: its manifest
    names that version, and it has the agent and the updater (both units run from a link)."""
    manifest = installed_manifest(root, version)
    bin_dir = release_dir(root, version) / "bin"
    return (
        manifest is not None
        and manifest.version == version
        and (bin_dir / "mumu-agent").exists()
        and (bin_dir / "mumu-update").exists()
    )


def publish_release(target: Path, manifest: Manifest) -> None:
    """Make ``target`` a complete release: everything in it on the disk first, then its
    manifest (the mark of a complete release) by one rename."""
    sync_tree(target)
    write_atomic(target / MANIFEST, manifest.to_json())


def install(
    bundle: Path,
    root: Path,
    *,
    python: str = "/usr/bin/python3",
    arch: str | None = None,
    log: list[str] | None = None,
) -> Manifest:
    """Build ``<root>/releases/<version>`` from ``bundle`` (already verified by the caller).

    Idempotent: a complete release of that version is left as it is.  Raises
    :class:`InstallError`; whatever it left half-done, :func:`remove_incomplete` removes."""
    manifest = read_manifest(bundle)
    check_compatible(manifest, arch=arch, abi=python_abi(python))
    target = release_dir(root, manifest.version)
    if installed_manifest(root, manifest.version) is not None:
        return manifest
    if not delete_release(root, manifest.version):
        raise InstallError(f"release {manifest.version} is in use and cannot be rebuilt")
    staging = root / STAGING / manifest.version
    remove_tree(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _extract_wheels(bundle, manifest, staging / "wheels")
        check_wheel_contents(manifest, staging / "wheels")
        pip_wheels = sorted((staging / "wheels").glob("pip-*.whl"))
        if not pip_wheels:
            raise InstallError("the bundle has no pip wheel")
        venv = [python, "-m", "venv", "--without-pip", str(target)]
        if manifest.system_site_packages:
            venv.insert(3, "--system-site-packages")
        _run(venv, log)
        # pip runs from its own wheel (python pip.whl/pip ...): no pip needed on the device.
        _run(
            [
                str(target / "bin" / "python"),
                str(pip_wheels[-1] / "pip"),
                "install",
                "--no-index",
                "--find-links",
                str(staging / "wheels"),
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--quiet",
                manifest.requirement,
            ],
            log,
        )
        _run([str(target / "bin" / "python"), "-c", SMOKE_IMPORTS], log)
        for program in ("mumu-agent", "mumu-update"):
            if not (target / "bin" / program).exists():
                raise InstallError(f"the release has no bin/{program}")
        publish_release(target, manifest)
    except Exception:
        delete_release(root, manifest.version)
        raise
    finally:
        remove_tree(staging)
    return manifest


def _run(argv: list[str], log: list[str] | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if log is not None:
        log.append(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise InstallError(f"{Path(argv[0]).name} failed ({done.returncode}): {' | '.join(tail)}")


def link_target(root: Path, link: str) -> str | None:
    """The version a link (``current``, ``committed``) points at, or None."""
    try:
        return Path(os.readlink(root / link)).name
    except OSError:
        return None


def point(root: Path, link: str, version: str) -> None:
    """Point ``<root>/<link>`` at ``releases/<version>`` with one rename (relative symlink).

    A release with a manifest is complete; one without a readable manifest is accepted only if
    it has an agent (a release installed by other means: rolling back to it must work)."""
    agent = release_dir(root, version) / "bin" / "mumu-agent"
    if installed_manifest(root, version) is None and not agent.exists():
        raise InstallError(f"release {version} is not installed completely")
    if link_target(root, link) == version:
        fsync_dir(root)  # a rename cut short of its sync is made durable now
        return
    tmp = root / f".{link}.tmp"
    if tmp.is_symlink() or tmp.exists():
        unlink(tmp)
    _change("symlink", (tmp,), lambda: os.symlink(f"{RELEASES}/{version}", tmp))
    rename(tmp, root / link)
    fsync_dir(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Install a MuMu release bundle into ROOT/releases/<version>."
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--root", type=Path, default=Path("/opt/mumu"))
    parser.add_argument("--python", default="/usr/bin/python3", help="the device's interpreter")
    parser.add_argument("--arch", help="the device's architecture (default: this machine's)")
    parser.add_argument(
        "--activate", action="store_true", help="point current and committed at it (first install)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        remove_incomplete(args.root)
        manifest = install(args.bundle, args.root, python=args.python, arch=args.arch)
        if args.activate:
            point(args.root, CURRENT, manifest.version)
            point(args.root, COMMITTED, manifest.version)
    except InstallError as exc:
        print(f"install: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    print(f"installed {manifest.version} ({manifest.arch}) in {took:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
