"""The HTTP API: accounts, devices, pairing, health and metrics."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from cloud import auth
from cloud.errors import ApiError
from cloud.services import Services
from cloud.store import ClaimOutcome, Device, DuplicateError

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PAIRING_TTL_S = 300.0


# --- bodies ------------------------------------------------------------------------------------


class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password


class UserOut(msgspec.Struct):
    user_id: str
    email: str


class TokenOut(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int


class DeviceRegistration(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    model: Name | None = None


class DeviceCredentials(msgspec.Struct):
    device_id: str
    device_token: str


class PairingCode(msgspec.Struct):
    code: str
    expires_at: float
    claim_url: str


class PairRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    claim_token: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class DeviceOut(msgspec.Struct):
    device_id: str
    name: str
    model: str
    online: bool
    last_seen: str | None
    paired_at: str | None


class PairedOut(msgspec.Struct):
    device: DeviceOut


class DeviceList(msgspec.Struct):
    devices: list[DeviceOut]


class Rename(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class SessionOut(msgspec.Struct):
    session_id: str
    viewer_id: str
    started_at: str
    ended_at: str | None
    end_reason: str | None


class SessionList(msgspec.Struct):
    sessions: list[SessionOut]


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)


# --- helpers -----------------------------------------------------------------------------------


def services(state: State) -> Services:
    svc: Services = state.services
    return svc


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def _client(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def _bearer(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "sign in first (Authorization: Bearer <token>)")
    return token.strip()


async def current_user(request: Request[Any, Any, Any], svc: Services) -> str:
    try:
        identity = await svc.hub.authenticate(_bearer(request))
    except auth.TokenError as exc:
        raise ApiError(401, "unauthorized", str(exc)) from None
    return identity.user_id


async def _limit(svc: Services, *checks: tuple[str, str, str]) -> None:
    verdict = await svc.limits.hit(*checks)
    if not verdict.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many attempts; try again in {verdict.retry_after_s} s",
            headers={"Retry-After": str(verdict.retry_after_s)},
        )


async def _device_out(svc: Services, devices: list[Device]) -> list[DeviceOut]:
    """With live presence: an online camera was last seen at its last heartbeat (accurate to
    one heartbeat, without a database write per heartbeat); an offline one when it went."""
    presence = await svc.live.presence([d.id for d in devices])
    out = []
    for d in devices:
        live = presence.get(d.id)
        out.append(
            DeviceOut(
                device_id=d.id,
                name=d.name,
                model=d.model,
                online=live is not None,
                last_seen=_iso(live.heard_at if live is not None else d.last_seen),
                paired_at=_iso(d.paired_at),
            )
        )
    return out


async def _owned_device(svc: Services, device_id: str, user_id: str) -> Device:
    device = await svc.store.device(device_id)
    if device is None or device.owner_id != user_id:
        # The same answer whether it does not exist or is someone else's: ids are not probed.
        raise ApiError(404, "not_found", "no such camera on your account")
    return device


# --- accounts ----------------------------------------------------------------------------------


@post("/api/auth/register", status_code=HTTP_201_CREATED, tags=["auth"])
async def register(request: Request[Any, Any, Any], state: State, data: Credentials) -> UserOut:
    """Create an account. Passwords are kept as argon2id hashes."""
    svc = services(state)
    email = data.email.strip().lower()
    if not _EMAIL.match(email):
        raise ApiError(422, "invalid_input", "email: not an e-mail address")
    if len(set(data.password)) < 4:
        raise ApiError(422, "invalid_input", "password: too weak (use more different characters)")
    await _limit(svc, (svc.settings.register_rate_per_address, "register-addr", _client(request)))
    user_id = uuid.uuid4().hex
    try:
        await svc.store.create_user(user_id, email, auth.hash_password(data.password), time.time())
    except DuplicateError:
        raise ApiError(409, "email_taken", "an account with that e-mail exists already") from None
    return UserOut(user_id=user_id, email=email)


@post("/api/auth/login", status_code=200, tags=["auth"])
async def login(request: Request[Any, Any, Any], state: State, data: Credentials) -> TokenOut:
    """Exchange e-mail and password for a bearer access token (rate-limited)."""
    svc = services(state)
    email = data.email.strip().lower()
    s = svc.settings
    await _limit(
        svc,
        (s.login_rate, "login-account", email),
        (s.login_rate_per_address, "login-addr", _client(request)),
    )
    user = await svc.store.user_by_email(email)
    if not auth.verify_password(user.password_hash if user else None, data.password) or not user:
        raise ApiError(401, "bad_credentials", "wrong e-mail or password")
    await svc.store.record_login(user.id, time.time())
    return TokenOut(
        access_token=svc.tokens.issue(user.id), token_type="bearer", expires_in=s.jwt_ttl_s
    )


# --- devices -----------------------------------------------------------------------------------


@post("/api/devices/register", status_code=HTTP_201_CREATED, tags=["devices"])
async def register_device(
    state: State, data: DeviceRegistration | None = None
) -> DeviceCredentials:
    """A camera registers itself. The token is shown once and kept only as a hash."""
    svc = services(state)
    body = data or DeviceRegistration()
    device_id = uuid.uuid4().hex
    token = auth.new_device_token()
    await svc.store.create_device(
        device_id,
        (body.name or f"Camera {device_id[:6]}").strip() or f"Camera {device_id[:6]}",
        (body.model or "unknown").strip() or "unknown",
        auth.hash_device_token(token),
        time.time(),
    )
    return DeviceCredentials(device_id=device_id, device_token=token)


@get("/api/devices", tags=["devices"], security=BEARER)
async def list_devices(request: Request[Any, Any, Any], state: State) -> DeviceList:
    """The caller's cameras with live presence."""
    svc = services(state)
    user_id = await current_user(request, svc)
    return DeviceList(devices=await _device_out(svc, await svc.store.devices_of(user_id)))


@patch("/api/devices/{device_id:str}", tags=["devices"], security=BEARER)
async def rename_device(
    request: Request[Any, Any, Any], state: State, device_id: str, data: Rename
) -> DeviceOut:
    svc = services(state)
    user_id = await current_user(request, svc)
    name = data.name.strip()
    if not name:
        raise ApiError(422, "invalid_input", "name: must not be blank")
    device = await svc.store.rename_device(device_id, user_id, name)
    if device is None:
        raise ApiError(404, "not_found", "no such camera on your account")
    return (await _device_out(svc, [device]))[0]


@delete(
    "/api/devices/{device_id:str}",
    status_code=HTTP_204_NO_CONTENT,
    tags=["devices"],
    security=BEARER,
)
async def unpair_device(request: Request[Any, Any, Any], state: State, device_id: str) -> None:
    """Unpair: the camera becomes claimable again and its owner's live sessions end."""
    svc = services(state)
    user_id = await current_user(request, svc)
    await _owned_device(svc, device_id, user_id)
    if not await svc.store.unpair(device_id, user_id):
        raise ApiError(404, "not_found", "no such camera on your account")
    await svc.hub.device_unpaired(device_id)


@get("/api/devices/{device_id:str}/sessions", tags=["devices"], security=BEARER)
async def device_sessions(
    request: Request[Any, Any, Any],
    state: State,
    device_id: str,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
) -> SessionList:
    """Watch-session history of one of the caller's cameras since they paired it, newest
    first (a camera's next owner does not learn who watched it before)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    device = await _owned_device(svc, device_id, user_id)
    rows = await svc.store.sessions_of_device(device_id, limit, since=device.paired_at)
    return SessionList(
        sessions=[
            SessionOut(
                session_id=r.id,
                viewer_id=r.viewer_id,
                started_at=_iso(r.started_at) or "",
                ended_at=_iso(r.ended_at),
                end_reason=r.end_reason,
            )
            for r in rows
        ]
    )


# --- pairing -----------------------------------------------------------------------------------


@post("/api/pairing/generate", status_code=HTTP_201_CREATED, tags=["pairing"], security=BEARER)
async def generate_code(
    request: Request[Any, Any, Any], state: State, device_id: str
) -> PairingCode:
    """A camera asks for a fresh pairing code (its own device token as bearer)."""
    svc = services(state)
    token = _bearer(request)
    device = await svc.store.device(device_id)
    if device is None or not auth.device_token_matches(device.token_hash, token):
        raise ApiError(403, "forbidden", "only the camera itself may ask for its pairing code")
    if device.owner_id is not None:
        raise ApiError(409, "already_paired", "this camera has an owner; unpair it first")
    now = time.time()
    expires_at = now + PAIRING_TTL_S
    for _ in range(20):  # a 6-digit code may collide with another camera's live one
        code, claim = auth.new_pairing_code(), auth.new_claim_token()
        try:
            await svc.store.replace_pairing_code(
                device_id, svc.pairing.hash(code), svc.pairing.hash(claim), expires_at, now
            )
        except DuplicateError:
            continue
        origin = svc.settings.public_url or str(request.base_url).rstrip("/")
        return PairingCode(code=code, expires_at=expires_at, claim_url=f"{origin}/#/claim/{claim}")
    raise ApiError(503, "busy", "could not allocate a pairing code; try again")


_CLAIM_ERRORS = {
    ClaimOutcome.NO_SUCH_CODE: (404, "invalid_code", "that code is wrong or was used already"),
    ClaimOutcome.EXPIRED: (
        410,
        "code_expired",
        "that code has expired; the camera shows a new one",
    ),
    ClaimOutcome.OWNED_BY_OTHER: (
        409,
        "owned_by_other",
        "this camera belongs to another account; its owner must unpair it first",
    ),
}


@post("/api/devices/pair", status_code=200, tags=["devices"], security=BEARER)
async def pair_device(
    request: Request[Any, Any, Any], state: State, data: PairRequest
) -> PairedOut:
    """Claim a camera with the 6-digit code it shows, or the claim token from its QR link."""
    svc = services(state)
    user_id = await current_user(request, svc)
    if (data.code is None) == (data.claim_token is None):
        raise ApiError(422, "invalid_input", "send exactly one of code or claim_token")
    s = svc.settings
    await _limit(
        svc,
        (s.pair_rate, "pair-account", user_id),
        (s.pair_rate_per_address, "pair-addr", _client(request)),
    )
    if data.code is not None:
        code = data.code.strip().replace(" ", "").replace("-", "")
        if not (len(code) == 6 and code.isdigit()):
            svc.metrics.pairing_attempts.labels("malformed").inc()
            raise ApiError(422, "invalid_input", "code: six digits, as shown on the camera")
        result = await svc.store.claim(
            code_hash=svc.pairing.hash(code), claim_hash=None, user_id=user_id, now=time.time()
        )
    else:
        assert data.claim_token is not None
        result = await svc.store.claim(
            code_hash=None,
            claim_hash=svc.pairing.hash(data.claim_token.strip()),
            user_id=user_id,
            now=time.time(),
        )
    svc.metrics.pairing_attempts.labels(result.outcome.value).inc()
    if result.outcome in _CLAIM_ERRORS:
        status, code_, message = _CLAIM_ERRORS[result.outcome]
        raise ApiError(status, code_, message)
    assert result.device is not None
    await svc.hub.device_paired(result.device.id, user_id)
    return PairedOut(device=(await _device_out(svc, [result.device]))[0])


# --- health ------------------------------------------------------------------------------------


@get("/healthz", tags=["health"])
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@get("/readyz", tags=["health"])
async def readyz(state: State) -> Response[Health]:
    """Ready when the database (and Redis, when configured) answer; 503 otherwise."""
    svc = services(state)
    checks: dict[str, str] = {}
    ok = True
    for name, probe in (("database", svc.store.ping), ("live_state", svc.live.ping)):
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:
            ok = False
            checks[name] = f"failed: {type(exc).__name__}"
    return Response(
        Health(status="ok" if ok else "unavailable", checks=checks), status_code=200 if ok else 503
    )


@get("/metrics", tags=["health"], media_type="text/plain; version=0.0.4")
async def metrics(state: State) -> bytes:
    """Prometheus metrics of this process."""
    return services(state).metrics.render()


ROUTES = [
    register,
    login,
    register_device,
    list_devices,
    rename_device,
    unpair_device,
    device_sessions,
    generate_code,
    pair_device,
    healthz,
    readyz,
    metrics,
]
