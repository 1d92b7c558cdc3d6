"""The cloud's pairing-code endpoint, as the device calls it.

``POST /api/pairing/generate?device_id=X`` with ``Authorization: Bearer <device_token>``:

- 201 ``{"code": "123456", "expires_at": <unix s>, "claim_url": "https://.../#/claim/<token>"}``
- 409 ``{"error": {"code": "already_paired", "message": ...}}`` when an account owns the device
- 401/403 (same error shape) when the device's credentials are wrong
"""

from __future__ import annotations

import email.utils
import socket
import time
from dataclasses import dataclass
from typing import Annotated, Final

import httpx
import msgspec

from device.provisioning.screen import PairingCode

PATH: Final = "/api/pairing/generate"
#: A Date header further than this from the device's clock means the device's clock is wrong
#: (a Pi has no real-time clock): then the code's lifetime is measured on the cloud's clock.
CLOCK_SKEW_TOLERANCE_S: Final = 5.0
#: The longest a code is taken to be valid, whatever the clocks say.
MAX_VALID_S: Final = 3600.0


class PairingApiError(Exception):
    """The cloud did not issue a code."""


class AlreadyPaired(PairingApiError):
    """409: an account owns this device (the WebSocket will say so too)."""


class CredentialsRejected(PairingApiError):
    """401/403: the cloud does not accept this device's id and token."""


class PairingUnavailable(PairingApiError):
    """The cloud could not be reached or gave an unusable answer; worth retrying."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: PairingCode
    #: Seconds the code stays valid from when the answer arrived (clock-skew corrected).
    valid_for_s: float


class _CodeBody(msgspec.Struct):
    code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}\Z")]
    expires_at: float
    claim_url: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


class _ErrorDetail(msgspec.Struct):
    code: str
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


async def request_pairing_code(
    client: httpx.AsyncClient, base_url: str, device_id: str, device_token: str
) -> IssuedCode:
    """Ask the cloud at ``base_url`` (``https://host[/prefix]``) for a new pairing code."""
    try:
        response = await client.post(
            base_url.rstrip("/") + PATH,
            params={"device_id": device_id},
            headers={"Authorization": f"Bearer {device_token}"},
        )
    except httpx.HTTPError as exc:
        raise PairingUnavailable(_describe(exc)) from exc
    received = time.time()
    status = response.status_code
    if status in (200, 201):
        try:
            body = msgspec.json.decode(response.content, type=_CodeBody)
        except msgspec.DecodeError as exc:
            raise PairingUnavailable(f"unexpected answer from the cloud: {exc}") from None
        code = PairingCode(body.code, body.expires_at, body.claim_url or None)
        return IssuedCode(code, _valid_for(body.expires_at, received, response))
    reason = _error_message(response)
    if status == 409:
        raise AlreadyPaired(reason)
    if status in (401, 403):
        raise CredentialsRejected(reason)
    retry_after = _retry_after(response) if status in (429, 503) else None
    raise PairingUnavailable(f"cloud answered {status}: {reason}", retry_after)


def _valid_for(expires_at: float, received: float, response: httpx.Response) -> float:
    now = received
    server_now = _date_header(response)
    if server_now is not None and abs(server_now - received) > CLOCK_SKEW_TOLERANCE_S:
        now = server_now
    return min(max(expires_at - now, 0.0), MAX_VALID_S)


def _date_header(response: httpx.Response) -> float | None:
    value = response.headers.get("date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        body = msgspec.json.decode(response.content, type=_ErrorBody)
    except msgspec.DecodeError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    return f"{body.error.code}: {body.error.message}" if body.error.message else body.error.code


def _describe(exc: httpx.HTTPError) -> str:
    """A short reason for a failed request: the kind of failure, not a traceback."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ConnectionRefusedError):
                return "connection refused"
            if isinstance(cause, socket.gaierror):
                return "name not found"
            cause = cause.__cause__ or cause.__context__
        return "cannot connect"
    return type(exc).__name__
