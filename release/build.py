"""Build a release bundle: the agent's wheel and every dependency's, for one architecture.

The wheels come from the package index (binary only, for the device's platform and Python, so
an x86_64 machine builds aarch64 bundles without emulation); the agent's own wheel is built from
this source tree with the release's version written into it.  Nothing is compiled for the
device and nothing is built on it: :mod:`device.update.install` makes the venv from these wheels.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from device.update.install import (
    MANIFEST,
    UPDATER_VERSION,
    VENV_BASE,
    VERSION_RE,
    InstallError,
    Manifest,
    Wheel,
    bundle_name,
    wheel_content,
)

ARCHES = ("aarch64", "x86_64")
#: Raspberry Pi OS / Debian bookworm have glibc 2.36: any manylinux wheel up to that runs.
GLIBC_MAX = 36
#: The top-level packages of the agent's wheel, and the files setuptools needs beside them.
SOURCE_PARTS = ("pyproject.toml", "README.md", "protocol", "cloud", "device", "release")
PROJECT = "mumu-camera"


class BuildError(Exception):
    """The bundle could not be built (one-line message)."""


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def platforms(arch: str) -> list[str]:
    if arch not in ARCHES:
        raise BuildError(f"unknown architecture {arch!r} (known: {', '.join(ARCHES)})")
    return [f"manylinux_2_{minor}_{arch}" for minor in range(17, GLIBC_MAX + 1)] + [
        f"manylinux2014_{arch}"
    ]


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise BuildError(f"{what} failed: {tail}")


def copy_source(source: Path, into: Path, version: str) -> Path:
    """The project's packages copied into ``into`` with ``version`` in pyproject.toml."""
    into.mkdir(parents=True, exist_ok=True)
    for part in SOURCE_PARTS:
        src = source / part
        if src.is_dir():
            shutil.copytree(src, into / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, into / part)
    pyproject = into / "pyproject.toml"
    text, count = re.subn(
        r'(?m)^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text(), count=1
    )
    if count != 1:
        raise BuildError("pyproject.toml has no version line")
    pyproject.write_text(text)
    return into


def _has_build_backend() -> bool:
    """Whether this interpreter has the setuptools pyproject.toml asks for (then no isolated
    build environment, which pip would otherwise make and fill for every wheel)."""
    import importlib.metadata

    from packaging.version import Version

    try:
        return Version(importlib.metadata.version("setuptools")) >= Version("77")
    except importlib.metadata.PackageNotFoundError:
        return False


def build_wheel(source: Path, out: Path) -> Path:
    """The project's wheel (no dependencies), with the build backend pyproject.toml names."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *(["--no-build-isolation"] if _has_build_backend() else []),
            "--quiet",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        "building the agent's wheel",
    )
    wheels = sorted(out.glob("mumu_camera-*.whl"))
    if not wheels:
        raise BuildError("building the agent's wheel made no wheel")
    return wheels[-1]


def environment_constraints(path: Path) -> Path:
    """``path`` pins every distribution this interpreter's environment runs (``pip freeze``,
    ``mumu-camera`` itself left out): a bundle built with it carries the versions the test
    suite ran against, not whatever the index holds that day."""
    frozen = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "freeze",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    keep = [
        line
        for line in frozen.splitlines()
        if "==" in line and not line.lower().startswith(("mumu-camera", "mumu_camera"))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(keep) + "\n")
    return path


def download_dependencies(
    wheel: Path, arch: str, python: str, out: Path, constraints: Path | None = None
) -> None:
    """The device extra's dependencies and pip itself, as binary wheels for the device
    (``constraints``: a pip constraints file that pins their versions)."""
    target = [
        "--only-binary=:all:",
        *[arg for p in platforms(arch) for arg in ("--platform", p)],
        "--python-version",
        python,
        "--implementation",
        "cp",
        *[a for abi in (f"cp{python.replace('.', '')}", "abi3", "none") for a in ("--abi", abi)],
    ]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            *target,
            *(["--constraint", str(constraints)] if constraints is not None else []),
            "--dest",
            str(out),
            f"{PROJECT}[device] @ {wheel.resolve().as_uri()}",
            "pip",
        ],
        f"downloading the dependencies for {arch}",
    )


def cached_dependencies(
    wheel: Path, arch: str, python: str, out: Path, cache: Path, constraints: Path | None = None
) -> None:
    """:func:`download_dependencies` through a cache keyed by the dependency list, the platform,
    the Python and the constraints: releases that differ only in our own code reuse one
    download.  Safe to share between processes (a lock per entry)."""
    import fcntl
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = sorted(
            line for line in zf.read(metadata).decode().splitlines() if line.startswith("Requires")
        )
    pins = constraints.read_text() if constraints is not None else ""
    key = hashlib.sha256("\n".join([arch, python, *requires, pins]).encode()).hexdigest()[:16]
    entry = cache / f"deps-{arch}-cp{python.replace('.', '')}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{entry.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build filling this entry: wait for it
        if not (entry / ".complete").exists():
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(parents=True)
            download_dependencies(wheel, arch, python, entry, constraints)
            for own in entry.glob("mumu_camera-*.whl"):
                own.unlink()
            (entry / ".complete").touch()
    for dep in entry.glob("*.whl"):
        shutil.copy2(dep, out / dep.name)


def project_version(source: Path | None = None) -> str:
    """The version in ``pyproject.toml`` (what a release of this tree is called by default)."""
    import tomllib

    data = tomllib.loads(((source or project_root()) / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_list(files: list[Path]) -> tuple[list[Wheel], int]:
    """The manifest's wheels (hash, length, uncompressed content from each central directory)
    and the installed release's size as reckoned from them: every member rounded up to whole
    blocks plus one for its inode, ``.py`` files twice (their bytecode), and the venv's own
    files.  The device refuses a bundle that would unpack to more than it says."""
    listed: list[Wheel] = []
    installed = VENV_BASE
    for path in files:
        content, estimate = wheel_content(path)
        listed.append(
            Wheel(file=path.name, sha256=_sha256(path), length=path.stat().st_size, content=content)
        )
        installed += estimate
    return listed, installed


def build(
    version: str,
    arch: str,
    out_dir: Path,
    *,
    source: Path | None = None,
    python: str = "3.11",
    min_updater: int = UPDATER_VERSION,
    system_site_packages: bool = True,
    cache: Path | None = None,
    constraints: Path | None = None,
) -> Path:
    """Write ``out_dir/mumu-agent-<version>-<arch>.tar`` and return its path.
    ``constraints``: pin the dependencies (:func:`environment_constraints`)."""
    if not VERSION_RE.match(version):
        raise BuildError(f"bad version {version!r}")
    source = source or project_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mumu-release-") as tmp_name:
        tmp = Path(tmp_name)
        tree = copy_source(source, tmp / "src", version)
        wheels = tmp / "wheels"
        wheel = build_wheel(tree, wheels)
        if cache is not None:
            cached_dependencies(wheel, arch, python, wheels, cache, constraints)
        else:
            download_dependencies(wheel, arch, python, wheels, constraints)
        files = sorted(p for p in wheels.iterdir() if p.suffix == ".whl")
        listed, installed = wheel_list(files)
        manifest = Manifest(
            version=version,
            arch=arch,
            python_abi=f"cp{python.replace('.', '')}",
            min_updater=min_updater,
            requirement=f"{PROJECT}[device]=={version}",
            wheels=listed,
            created=datetime.now(UTC).replace(microsecond=0).isoformat(),
            system_site_packages=system_site_packages,
            unpacked_size=sum(w.length or 0 for w in listed),
            installed_size=installed,
        )
        try:
            Manifest.from_json(manifest.to_json())
        except InstallError as exc:
            raise BuildError(str(exc)) from None
        bundle = out_dir / bundle_name(version, arch)
        partial = bundle.with_name(f".{bundle.name}.tmp")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            data = manifest.to_json().encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
            for path in files:
                tar.add(path, arcname=f"wheels/{path.name}", recursive=False)
        os.replace(partial, bundle)
    return bundle
