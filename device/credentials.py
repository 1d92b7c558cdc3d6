"""The device's identity: ``device_id`` + ``device_token``, from the cloud, kept in the state dir.

``credentials.json`` (mode 0600) is written atomically: a temporary file in the same directory,
fsync, rename, fsync of the directory; a power cut leaves the old file or the new one, never
half of one.  :func:`register` asks the cloud for a new identity
(``POST /api/devices/register``).

A factory reset (:func:`begin_factory_reset`) moves the identity into ``retire-pending.json``
before forgetting it; :func:`retire_pending` then tells the cloud with those old credentials
(``POST /api/devices/retire``: the camera leaves its previous owner's account, its sessions end,
the old token is refused), retrying with backoff while the cloud is unreachable, and deletes
them once the cloud has heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final

import httpx
import msgspec

log = logging.getLogger(__name__)

FILE_NAME: Final = "credentials.json"
PENDING_FILE_NAME: Final = "retire-pending.json"
REGISTER_PATH: Final = "/api/devices/register"
RETIRE_PATH: Final = "/api/devices/retire"


class CredentialsError(RuntimeError):
    """The credentials file cannot be read or written (one-line message)."""


class RegistrationError(Exception):
    """The cloud did not register the device.  ``retry_after_s``: when the cloud said so."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Credentials(msgspec.Struct, frozen=True):
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    device_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    #: The cloud that issued them (for people reading the file; not used to decide anything).
    cloud: str = ""

    def __repr__(self) -> str:  # never log the token
        return f"Credentials(device_id={self.device_id!r})"


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def load(state_dir: Path) -> Credentials | None:
    """The saved credentials, or ``None`` if there are none (or they are unreadable junk)."""
    path = path_in(state_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return msgspec.json.decode(data, type=Credentials)
    except msgspec.DecodeError as exc:
        log.warning("%s is damaged (%s): registering anew", path, exc)
        return None


def save(state_dir: Path, credentials: Credentials) -> Path:
    """Write the credentials atomically with mode 0600; the path written."""
    return _write(state_dir, path_in(state_dir), msgspec.json.encode(credentials))


def _write(state_dir: Path, path: Path, data: bytes) -> Path:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".credentials-", suffix=".tmp")
    except OSError as exc:
        raise CredentialsError(f"{state_dir}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(state_dir)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CredentialsError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path


def forget(state_dir: Path) -> None:
    """Delete the saved credentials (factory reset, or the cloud no longer knows them)."""
    path = path_in(state_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot delete: {exc.strerror or exc}") from None
    _fsync_dir(state_dir)


def pending_retirements(state_dir: Path) -> list[Credentials]:
    """Old identities a factory reset left for the cloud to retire."""
    try:
        data = (state_dir / PENDING_FILE_NAME).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CredentialsError(f"{state_dir / PENDING_FILE_NAME}: cannot read: {exc}") from None
    try:
        return msgspec.json.decode(data, type=list[Credentials])
    except msgspec.DecodeError as exc:
        log.warning("%s is damaged (%s): dropping it", state_dir / PENDING_FILE_NAME, exc)
        return []


def _save_pending(state_dir: Path, pending: list[Credentials]) -> None:
    path = state_dir / PENDING_FILE_NAME
    if pending:
        _write(state_dir, path, msgspec.json.encode(pending))
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        _fsync_dir(state_dir)


def begin_factory_reset(state_dir: Path) -> Credentials | None:
    """Forget the identity, keeping it only until the cloud has retired it; the old identity."""
    old = load(state_dir)
    if old is not None:
        pending = [c for c in pending_retirements(state_dir) if c.device_id != old.device_id]
        _save_pending(state_dir, [*pending, old])  # written before the credentials go
    forget(state_dir)
    return old


class RetirementError(Exception):
    """The cloud could not be told (unreachable, 5xx, 429): try again later."""


async def retire(client: httpx.AsyncClient, cloud: str, old: Credentials) -> None:
    """Tell the cloud that ``old`` is retired.  Done also when the cloud no longer knows it
    (403/404: its database was reset, or another retirement got there first)."""
    url = cloud.rstrip("/") + RETIRE_PATH
    try:
        response = await client.post(
            url,
            params={"device_id": old.device_id},
            headers={"authorization": f"Bearer {old.device_token}"},
        )
    except httpx.HTTPError as exc:
        raise RetirementError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if response.status_code in (204, 403, 404):
        return
    raise RetirementError(f"{url} answered {response.status_code}: {response.text[:200]}")


async def retire_pending(
    client: httpx.AsyncClient,
    cloud: str,
    state_dir: Path,
    next_delay: Callable[[], float],
) -> None:
    """Retire every identity a factory reset left, until none is left (run as a task)."""
    try:
        await _retire_pending(client, cloud, state_dir, next_delay)
    except CredentialsError as exc:
        log.error("cannot retire the old device identity: %s", exc)


async def _retire_pending(
    client: httpx.AsyncClient, cloud: str, state_dir: Path, next_delay: Callable[[], float]
) -> None:
    while pending := pending_retirements(state_dir):
        old = pending[0]
        try:
            await retire(client, cloud, old)
        except RetirementError as exc:
            delay = next_delay()
            log.warning(
                "cannot retire old device %s yet: %s; retrying in %.0f s", old.device_id, exc, delay
            )
            await asyncio.sleep(delay)
            continue
        log.info("the cloud retired the old device %s (factory reset)", old.device_id)
        _save_pending(
            state_dir, [c for c in pending_retirements(state_dir) if c.device_id != old.device_id]
        )


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Registered(msgspec.Struct):
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    device_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


async def register(
    client: httpx.AsyncClient, cloud: str, name: str | None = None, model: str | None = None
) -> Credentials:
    """Ask the cloud for a new identity.

    Raises :class:`RegistrationError` for anything that is worth retrying later: the cloud
    unreachable (refused, reset, DNS, timeout), 5xx, 429, or an answer that makes no sense.
    """
    body = {k: v for k, v in (("name", name), ("model", model)) if v}
    url = cloud.rstrip("/") + REGISTER_PATH
    try:
        response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise RegistrationError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    if response.status_code != 201:
        retry_after = None
        with contextlib.suppress(ValueError):
            retry_after = float(response.headers.get("retry-after", ""))
        raise RegistrationError(
            f"{url} answered {response.status_code}: {response.text[:200]}", retry_after
        )
    try:
        got = msgspec.json.decode(response.content, type=_Registered)
    except msgspec.DecodeError as exc:
        raise RegistrationError(f"{url} answered nonsense: {exc}") from None
    return Credentials(device_id=got.device_id, device_token=got.device_token, cloud=cloud)


def device_model() -> str:
    """What the device is, for the cloud's device list (the Pi's model string when known)."""
    with contextlib.suppress(OSError):
        text = Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace")
        if text:
            return text[:128]
    import platform

    return f"{platform.system()} {platform.machine()}"[:128] or "unknown"
