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
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            raw = json.loads(text)
            wheels = [Wheel(file=str(w["file"]), sha256=str(w["sha256"])) for w in raw["wheels"]]
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
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InstallError(f"{MANIFEST}: not a release manifest ({exc})") from None
        if not VERSION_RE.match(manifest.version):
            raise InstallError(f"{MANIFEST}: bad version {manifest.version!r}")
        for wheel in manifest.wheels:
            if not WHEEL_RE.match(wheel.file):
                raise InstallError(f"{MANIFEST}: bad wheel name {wheel.file!r}")
        return manifest

    def bundle_name(self) -> str:
        return bundle_name(self.version, self.arch)


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
    try:
        with tarfile.open(bundle, "r:") as tar:
            member = tar.getmember(MANIFEST)
            data = tar.extractfile(member)
            if data is None:
                raise InstallError(f"{bundle.name}: {MANIFEST} is not a file")
            return Manifest.from_json(data.read(1024 * 1024))
    except KeyError:
        raise InstallError(f"{bundle.name}: no {MANIFEST} in the bundle") from None
    except (tarfile.TarError, OSError) as exc:
        raise InstallError(f"{bundle.name}: not a readable bundle ({exc})") from None


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
    """Only the wheels the manifest names, as plain files: no links, no paths, no surprises."""
    import hashlib

    wanted = {w.file: w.sha256 for w in manifest.wheels}
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bundle, "r:") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not name.startswith("wheels/"):
                continue
            base = name.removeprefix("wheels/")
            if base not in wanted or not member.isfile():
                raise InstallError(f"unexpected bundle member {member.name!r}")
            source = tar.extractfile(member)
            assert source is not None
            digest = hashlib.sha256()
            with open(into / base, "wb") as out:
                while chunk := source.read(1024 * 1024):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != wanted.pop(base):
                raise InstallError(f"{base}: hash differs from the manifest")
    if wanted:
        raise InstallError(f"bundle lacks {', '.join(sorted(wanted))}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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


def remove_incomplete(root: Path) -> list[str]:
    """Delete every release directory without a manifest, and the staging area.  What
    ``current`` or ``committed`` points at is never deleted, whatever it holds."""
    removed: list[str] = []
    base = root / RELEASES
    linked = {link_target(root, CURRENT), link_target(root, COMMITTED)}
    if base.is_dir():
        for entry in base.iterdir():
            if entry.name in linked:
                continue
            if entry.name.startswith(".") or installed_manifest(root, entry.name) is None:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    shutil.rmtree(root / STAGING, ignore_errors=True)
    return removed


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
    shutil.rmtree(target, ignore_errors=True)
    staging = root / STAGING / manifest.version
    shutil.rmtree(staging, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _extract_wheels(bundle, manifest, staging / "wheels")
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
        if not (target / "bin" / "mumu-agent").exists():
            raise InstallError("the release has no bin/mumu-agent")
        write_atomic(target / MANIFEST, manifest.to_json())
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
    tmp = root / f".{link}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(f"{RELEASES}/{version}", tmp)
    os.replace(tmp, root / link)
    _fsync_dir(root)


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
