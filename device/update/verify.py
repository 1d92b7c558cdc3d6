"""Is a release genuine?  The Update Framework's reference client (``tuf.ngclient``) decides.

The trust root (``root.json``, version 1, baked into the image) is the only thing trusted a
priori.  :meth:`SignedRepository.target` refreshes root -> timestamp -> snapshot -> targets from
the repository, checking signatures, thresholds, versions (no rollback of any role), expiry (no
freeze) and consistency (no mix-and-match), and returns the signed length and hashes of one
bundle.  The bundle itself is then checked against them before a byte of it is unpacked.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

log = logging.getLogger(__name__)


class VerifyError(Exception):
    """The repository's metadata or a bundle is not trustworthy (one sentence why)."""


class RepositoryUnreachable(Exception):
    """The repository could not be reached: try again later."""


def explain(exc: Exception, now: datetime.datetime) -> str:
    """One sentence for a person, from a python-tuf error."""
    text = str(exc)
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return (
            f"the signed update metadata has expired ({text}); either the repository was not "
            f"renewed (mumu-release renew) or this device's clock is wrong "
            f"(it says {now:%Y-%m-%d %H:%M} UTC)"
        )
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return (
            f"the repository served metadata older than this device has seen, or not the "
            f"version its snapshot names ({text}): a rollback or mix-and-match attack, or a "
            "broken mirror"
        )
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return f"update metadata is not signed by the trusted keys ({text})"
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return f"the bundle or metadata does not match its signed length and hash ({text})"
    return f"the update repository's metadata was refused ({type(exc).__name__}: {text})"


class SignedRepository:
    def __init__(
        self,
        repo_url: str,
        metadata_dir: Path,
        trust_root: Path,
        *,
        now: Callable[[], datetime.datetime] | None = None,
        fetcher: FetcherInterface | None = None,
    ) -> None:
        """``now``: the reference time for expiry (default: the system clock); ``fetcher``:
        how metadata is fetched (the updater's, bounded in time)."""
        self.repo_url = repo_url.rstrip("/") + "/"
        self.metadata_dir = metadata_dir
        self.trust_root = trust_root
        self.now = now
        self.fetcher = fetcher

    def _updater(self) -> Updater:
        self.metadata_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        updater = Updater(
            metadata_dir=str(self.metadata_dir),
            metadata_base_url=f"{self.repo_url}metadata/",
            target_base_url=f"{self.repo_url}targets/",
            bootstrap=self.trust_root.read_bytes(),
            fetcher=self.fetcher,
        )
        if self.now is not None:
            # ngclient reads the clock once, into its trusted set; tests pin it to their clock.
            trusted: Any = updater._trusted_set
            trusted.reference_time = self.now()
        return updater

    def target(self, name: str) -> tuple[TargetFile, str]:
        """The signed description of bundle ``name`` and the URL to fetch it from."""
        now = self.now() if self.now is not None else datetime.datetime.now(datetime.UTC)
        try:
            updater = self._updater()
            updater.refresh()
            info = updater.get_targetinfo(name)
        except tuf_errors.DownloadError as exc:
            raise RepositoryUnreachable(f"the update repository is unreachable: {exc}") from None
        except tuf_errors.RepositoryError as exc:
            raise VerifyError(explain(exc, now)) from None
        except OSError as exc:
            raise RepositoryUnreachable(f"the update repository is unreachable: {exc}") from None
        if info is None:
            raise VerifyError(f"{name} is not in the signed repository")
        digest = info.hashes.get("sha256")
        if digest is None:
            raise VerifyError(f"{name} has no sha256 in the signed metadata")
        return info, f"{self.repo_url}targets/{digest}.{name}"

    @staticmethod
    def check_file(info: TargetFile, path: Path) -> None:
        """Raise :class:`VerifyError` unless ``path`` has the signed length and hashes."""
        try:
            with open(path, "rb") as data:
                info.verify_length_and_hashes(data)
        except tuf_errors.LengthOrHashMismatchError as exc:
            raise VerifyError(
                f"the downloaded bundle does not match its signed length and hash ({exc}): "
                "refused, nothing was unpacked"
            ) from None
