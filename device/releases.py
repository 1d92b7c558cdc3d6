"""Installed agent releases: ``/opt/mumu/releases/<version>`` venvs and the ``current`` link.

The layout on a camera::

    /opt/mumu/releases/0.1.0/       a venv built at this final path (venvs are not relocatable)
    /opt/mumu/releases/0.1.0/mumu-release.json   what was installed, from which wheelhouse
    /opt/mumu/current -> releases/0.1.0          what mumu-agent.service starts

:func:`install_release` builds a release from a wheelhouse, offline (``pip --no-index``), into a
temporary directory name first and renames it into place, so a half-built release never has its
final name.  :func:`switch_current` points ``current`` at a release in one ``rename(2)``, so a
power cut leaves either the old or the new link, never none.

The venv sees the system's site-packages (``--system-site-packages``): picamera2 and libcamera
come from Raspberry Pi OS's own packages (``python3-picamera2``), as does ``python3-systemd``.
Everything the agent itself needs is in the venv and wins over the system's copy (the venv's
site-packages come first on ``sys.path``); see ``image/README.md`` for why that includes ``av``.

This module uses only the standard library so that it runs with the system's ``python3`` before
any release exists (the image build runs it straight out of the agent's wheel)::

    PYTHONPATH=mumu_camera-0.1.0-py3-none-any.whl \\
        python3 -m device.releases install --wheelhouse DIR --version 0.1.0 --activate
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

ROOT: Final = Path("/opt/mumu")
DISTRIBUTION: Final = "mumu-camera"
#: What a release installs: the agent with its device dependencies.
REQUIREMENT: Final = "mumu-camera[device]"
METADATA: Final = "mumu-release.json"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")


class ReleaseError(RuntimeError):
    """A release cannot be installed or switched to; the message is one line."""


def releases_dir(root: Path = ROOT) -> Path:
    return root / "releases"


def release_dir(version: str, root: Path = ROOT) -> Path:
    check_version(version)
    return releases_dir(root) / version


def check_version(version: str) -> str:
    if not _VERSION.match(version) or version in {".", ".."}:
        raise ReleaseError(f"not a release version: {version!r}")
    return version


def wheel_version(wheelhouse: Path) -> str:
    """The version of the ``mumu-camera`` wheel in ``wheelhouse`` (there must be exactly one)."""
    found = sorted(wheelhouse.glob("mumu_camera-*.whl"))
    if len(found) != 1:
        raise ReleaseError(f"{wheelhouse}: expected one mumu_camera wheel, found {len(found)}")
    return found[0].name.split("-")[1]


def install_release(
    wheelhouse: Path,
    version: str | None = None,
    *,
    root: Path = ROOT,
    python: str = "/usr/bin/python3",
    system_site_packages: bool = True,
    replace: bool = False,
) -> Path:
    """Build ``root/releases/<version>`` from ``wheelhouse`` without the network; its path.
    ``version`` names the release (default: the agent wheel's version, which is what pip
    installs either way).  The current release is never rebuilt in place.

    Venvs hard-code their own path (``#!`` lines, ``pyvenv.cfg``), so the release is built at
    its final path; a ``.<version>.partial`` marker beside it says it is unfinished until the
    end (:func:`list_releases` and :func:`switch_current` refuse such a release, and the next
    install of that version replaces it).  ``replace``: rebuild a complete release."""
    wheelhouse = wheelhouse.resolve()
    pin = wheel_version(wheelhouse)
    version = check_version(version or pin)
    target = release_dir(version, root)
    marker = target.with_name(f".{version}.partial")
    if target.exists():
        if not replace and not marker.exists():
            raise ReleaseError(f"{target} already exists")
        if version == current_version(root) and not marker.exists():
            raise ReleaseError(f"{version} is the current release: install under another name")
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        venv = [python, "-m", "venv", "--without-pip"]
        if system_site_packages:
            venv.append("--system-site-packages")
        _run([*venv, str(target)])
        pip = _pip_wheel(wheelhouse)
        _run(
            [
                str(target / "bin" / "python"),
                str(pip / "pip"),
                "install",
                "--no-index",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--quiet",
                "--find-links",
                str(wheelhouse),
                f"{REQUIREMENT}=={pin}",
            ],
        )
        _write_metadata(target, version, wheelhouse, system_site_packages)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        marker.unlink(missing_ok=True)
        raise
    os.sync()  # the release is on disk before the marker goes and anything points at it
    marker.unlink()
    return target


def _pip_wheel(wheelhouse: Path) -> Path:
    """pip itself, run from its wheel (``python pip-X.whl/pip install ...``): the venv needs no
    pip of its own and the network is never asked for one.  The wheelhouse carries it; else the
    one that ``ensurepip`` bundles with this Python."""
    found = sorted(wheelhouse.glob("pip-*.whl"))
    if found:
        return found[-1]
    import ensurepip

    bundled = Path(ensurepip.__file__).parent / "_bundled"
    wheels = sorted(bundled.glob("pip-*.whl"))
    if not wheels:
        raise ReleaseError(f"no pip wheel in {wheelhouse} and none bundled with {sys.executable}")
    return wheels[-1]


def _run(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        output = result.stdout.decode(errors="replace").strip()
        raise ReleaseError(f"{' '.join(command[:3])} ... failed ({result.returncode}):\n{output}")


def _write_metadata(
    target: Path, version: str, wheelhouse: Path, system_site_packages: bool
) -> None:
    python = target / "bin" / "python"
    frozen = subprocess.run(
        [str(python), "-c", _FREEZE], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    metadata = {
        "version": version,
        "installed_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout.strip(),
        "machine": os.uname().machine,
        "system_site_packages": system_site_packages,
        "wheelhouse": str(wheelhouse),
        "packages": json.loads(frozen),
    }
    (target / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


#: The venv's own distributions (not the system's), name -> version.
_FREEZE = """
import importlib.metadata as m, json, sys, os
prefix = os.path.realpath(sys.prefix)
own = {}
for d in m.distributions():
    where = os.path.realpath(str(d.locate_file("")))
    if where.startswith(prefix):
        own[d.metadata["Name"]] = d.version
print(json.dumps(own, sort_keys=True))
"""


def switch_current(version: str, root: Path = ROOT) -> Path:
    """Point ``root/current`` at ``releases/<version>`` atomically (one rename); the link."""
    target = release_dir(version, root)
    if not (target / "bin" / "mumu-agent").exists():
        raise ReleaseError(f"{target} is not an installed release")
    if target.with_name(f".{version}.partial").exists():
        raise ReleaseError(f"{target} is only partly installed")
    link = root / "current"
    with tempfile.TemporaryDirectory(dir=root, prefix=".current-") as tmp:
        staged = Path(tmp) / "current"
        staged.symlink_to(Path("releases") / version)
        os.replace(staged, link)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return link


def current_version(root: Path = ROOT) -> str | None:
    """The version ``current`` points at (None if there is no link)."""
    link = root / "current"
    try:
        return Path(os.readlink(link)).name
    except FileNotFoundError:
        return None


def list_releases(root: Path = ROOT) -> list[str]:
    """Installed (complete) releases, oldest name first."""
    base = releases_dir(root)
    if not base.is_dir():
        return []
    return sorted(
        p.name
        for p in base.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not (base / f".{p.name}.partial").exists()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m device.releases", description="Install and switch agent releases."
    )
    parser.add_argument("--root", type=Path, default=ROOT, help=f"default {ROOT}")
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="build releases/<version> from a wheelhouse")
    install.add_argument("--wheelhouse", type=Path, required=True)
    install.add_argument("--version", help="the release's name (default: the wheel's version)")
    install.add_argument("--python", default="/usr/bin/python3")
    install.add_argument(
        "--no-system-site-packages", dest="system_site_packages", action="store_false"
    )
    install.add_argument("--replace", action="store_true", help="rebuild an existing release")
    install.add_argument("--activate", action="store_true", help="then point current at it")
    switch = sub.add_parser("switch", help="point current at releases/<version>")
    switch.add_argument("version")
    sub.add_parser("list", help="installed releases; * marks current")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            path = install_release(
                args.wheelhouse,
                args.version,
                root=args.root,
                python=args.python,
                system_site_packages=args.system_site_packages,
                replace=args.replace,
            )
            print(path)
            if args.activate:
                switch_current(path.name, args.root)
        elif args.command == "switch":
            switch_current(args.version, args.root)
        else:
            current = current_version(args.root)
            for version in list_releases(args.root):
                print(("* " if version == current else "  ") + version)
    except ReleaseError as exc:
        print(f"mumu releases: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
