"""The signed repository's files as the cloud serves them (``MUMU_UPDATE_REPO_DIR``).

The cloud only passes the files on: it holds no signing key (the online key lives with
``mumu-release renew``, which may run on this host) and devices verify everything.  Byte ranges
are honoured so that an interrupted download resumes.  Behind nginx, serve the directory from
nginx instead (it does ranges itself); see docs/updates.md.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio

CHUNK = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)\Z")


class NotServed(Exception):
    """404: no such file (or not one we serve)."""


class BadRange(Exception):
    """416: the range is outside the file."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def resolve(repo_dir: Path, path: str) -> Path:
    """The file under ``metadata/`` or ``targets/`` that ``path`` names, or NotServed.

    Only a regular file that lies in the resolved directory itself is served: a symbolic link
    (to a file or a directory, relative or absolute), a FIFO, a device or a socket is not, so a
    link placed in the repository cannot serve the database or the stored secrets.  The file is
    opened again without following links when it is read (:func:`read_range`)."""
    parts = path.strip("/").split("/")
    if len(parts) != 2 or parts[0] not in ("metadata", "targets"):
        raise NotServed(path)
    name = parts[1]
    if not name or name.startswith(".") or "\\" in name or name in ("..", "."):
        raise NotServed(path)
    try:
        base = (repo_dir / parts[0]).resolve(strict=True)
        file = base / name
        if not stat.S_ISREG(os.lstat(file).st_mode):
            raise NotServed(path)
    except OSError:
        raise NotServed(path) from None
    return file


def _open_regular(file: Path) -> int:
    """A descriptor of ``file`` if it is (still) a regular file and not a link, else OSError."""
    fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{file.name}: not a regular file")
    return fd


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single ``bytes=`` range; None for the whole file."""
    if not header:
        return None
    found = _RANGE.match(header.strip())
    if found is None:
        return None  # multi-range or another unit: answer with the whole file
    first, last = found.groups()
    if first == "":
        if last == "":
            return None
        length = min(int(last), size)
        if length == 0:
            raise BadRange(size)
        return size - length, size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise BadRange(size)
    return start, end


async def read_range(file: Path, start: int, end: int) -> AsyncGenerator[bytes, None]:
    """Bytes ``start..end`` of ``file``; nothing if it was swapped for a link meanwhile."""
    try:
        fd = _open_regular(file)
    except OSError:
        return
    async with anyio.wrap_file(os.fdopen(fd, "rb")) as f:
        await f.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = await f.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def signed_versions(repo_dir: Path) -> dict[str, set[str]]:
    """version -> architectures, as the repository's current targets metadata lists them."""
    meta = repo_dir / "metadata"
    timestamp = json.loads((meta / "timestamp.json").read_text())["signed"]
    snapshot_version = timestamp["meta"]["snapshot.json"]["version"]
    snapshot = json.loads((meta / f"{snapshot_version}.snapshot.json").read_text())["signed"]
    targets_version = snapshot["meta"]["targets.json"]["version"]
    targets = json.loads((meta / f"{targets_version}.targets.json").read_text())["signed"]
    out: dict[str, set[str]] = {}
    for info in targets["targets"].values():
        custom = info.get("custom") or {}
        if "version" in custom and "arch" in custom:
            out.setdefault(str(custom["version"]), set()).add(str(custom["arch"]))
    return out
