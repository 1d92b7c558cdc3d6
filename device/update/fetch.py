"""Downloads that resume where they stopped (HTTP ``Range``) and never exceed a signed length.

The bundle goes to ``<name>.part`` beside its final name; an interrupted download keeps its part
and the next attempt asks only for the rest.  A server that ignores ``Range`` (200) restarts the
file; more bytes than the signed length are refused at once (an endless-data attack cannot fill
the disk).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import httpx


class TransientError(Exception):
    """Try again later: the server was unreachable, or the transfer stopped early."""


class RefusedError(Exception):
    """The server sent what the signed metadata does not allow (more bytes than signed)."""


class DiskFullError(Exception):
    """The disk filled up while downloading (the partial file was removed)."""


def download(
    client: httpx.Client,
    url: str,
    part: Path,
    length: int,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Fetch ``url`` into ``part`` until it holds ``length`` bytes; return ``part``."""
    have = part.stat().st_size if part.exists() else 0
    if have > length:
        part.unlink()
        have = 0
    if have == length:
        return part
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 206 and _range_start(response) == have:
                mode = "ab"
            elif response.status_code == 200:
                have, mode = 0, "wb"
            elif response.status_code == 416:
                part.unlink(missing_ok=True)
                raise TransientError("the server refused the resume range; starting over")
            else:
                raise TransientError(f"the repository answered HTTP {response.status_code}")
            try:
                with open(part, mode) as out:
                    for chunk in response.iter_bytes():  # as it arrives: a break keeps it
                        if have + len(chunk) > length:
                            out.close()
                            part.unlink(missing_ok=True)
                            raise RefusedError(
                                f"the server sent more than the signed {length} bytes"
                            )
                        out.write(chunk)
                        have += len(chunk)
                        if progress is not None:
                            progress(have)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    part.unlink(missing_ok=True)
                    raise DiskFullError(f"the disk filled up after {have} bytes") from None
                raise
    except httpx.HTTPError as exc:
        raise TransientError(f"download interrupted after {have} bytes: {exc}") from None
    if have < length:
        raise TransientError(f"download stopped after {have} of {length} bytes")
    return part


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a ``Content-Range: bytes A-B/N`` answer."""
    value = response.headers.get("content-range", "")
    unit, _, rest = value.partition(" ")
    if unit != "bytes" or "-" not in rest:
        return None
    try:
        return int(rest.split("-", 1)[0])
    except ValueError:
        return None
