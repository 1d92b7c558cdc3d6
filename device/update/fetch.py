"""Downloads that resume where they stopped (HTTP ``Range``) and never exceed a signed length.

The bundle goes to ``<name>.part`` beside its final name; an interrupted download keeps its part
and the next attempt asks only for the rest.  A server that ignores ``Range`` (200) restarts the
file; more bytes than the signed length are refused at once (an endless-data attack cannot fill
the disk).

Every transfer of one updater run, metadata and bundle alike, is held to a :class:`Pace`: at
least ``min_rate`` bytes/s on average over each ``window`` seconds, and all of them done by the
run's deadline.  A trickling mirror is given up (the part is kept, the next run resumes it):
one slow server cannot hold the updater, and its lock, for ever.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface


class TransientError(Exception):
    """Try again later: the server was unreachable, or the transfer stopped early."""


class RefusedError(Exception):
    """The server sent what the signed metadata does not allow (more bytes than signed)."""


class DiskFullError(Exception):
    """The disk filled up while downloading (the partial file was removed)."""


class SlowError(TransientError):
    """A transfer was slower than the minimum rate, or the run's deadline passed."""


class Pace:
    """The time the transfers of one run may take (``clock``: monotonic seconds)."""

    def __init__(
        self, clock: Callable[[], float], *, min_rate: float, window: float, deadline: float
    ) -> None:
        self.clock = clock
        self.min_rate = min_rate
        self.window = window
        self.deadline = deadline
        self._since = clock()
        self._bytes = 0

    def start(self) -> None:
        """A new transfer: its rate is measured from now."""
        self._since, self._bytes = self.clock(), 0
        self.check(0)

    def check(self, received: int) -> None:
        """``received`` more bytes arrived; raise :class:`SlowError` if that is too slow."""
        now = self.clock()
        if now >= self.deadline:
            raise SlowError("the time this run may spend on transfers is used up")
        self._bytes += received
        elapsed = now - self._since
        if elapsed >= self.window:
            rate = self._bytes / elapsed
            if rate < self.min_rate:
                raise SlowError(
                    f"the transfer ran at {rate:.0f} bytes/s over {elapsed:.0f} s, below the "
                    f"minimum {self.min_rate:.0f}"
                )
            self._since, self._bytes = now, 0

    def timeout(self) -> httpx.Timeout:
        """Per read: no longer than a window, nor past the deadline."""
        left = max(0.1, min(self.window, self.deadline - self.clock()))
        return httpx.Timeout(left, connect=min(10.0, left))


class PacedFetcher(FetcherInterface):
    """python-tuf's network seam for the metadata, on the updater's client and its pace."""

    def __init__(self, client: httpx.Client, pace: Pace) -> None:
        self.client = client
        self.pace = pace

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.pace.start()
        try:
            request = self.client.build_request("GET", url, timeout=self.pace.timeout())
            response = self.client.send(request, stream=True)
        except (httpx.HTTPError, SlowError) as exc:
            raise tuf_errors.DownloadError(f"{url}: {exc}") from None
        if response.status_code != 200:
            response.close()
            raise tuf_errors.DownloadHTTPError(
                f"{url}: HTTP {response.status_code}", response.status_code
            )
        return self._chunks(url, response)

    def _chunks(self, url: str, response: httpx.Response) -> Iterator[bytes]:
        try:
            for chunk in response.iter_bytes():
                self.pace.check(len(chunk))
                yield chunk
        except (httpx.HTTPError, SlowError) as exc:
            raise tuf_errors.DownloadError(f"{url}: {exc}") from None
        finally:
            response.close()


def download(
    client: httpx.Client,
    url: str,
    part: Path,
    length: int,
    progress: Callable[[int], None] | None = None,
    pace: Pace | None = None,
) -> Path:
    """Fetch ``url`` into ``part`` until it holds ``length`` bytes; return ``part``.  Given up
    (:class:`SlowError`, the part kept) when it falls below ``pace``."""
    have = part.stat().st_size if part.exists() else 0
    if have > length:
        part.unlink()
        have = 0
    if have == length:
        return part
    headers = {"Range": f"bytes={have}-"} if have else {}
    timeout: httpx.Timeout | httpx._client.UseClientDefault = httpx.USE_CLIENT_DEFAULT
    if pace is not None:
        pace.start()
        timeout = pace.timeout()
    try:
        with client.stream("GET", url, headers=headers, timeout=timeout) as response:
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
                        if pace is not None:
                            try:
                                pace.check(len(chunk))
                            except SlowError as exc:
                                raise SlowError(f"{exc}, after {have} bytes") from None
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
