"""The HTTP API: accounts, devices, pairing, health and metrics."""

from __future__ import annotations

import ipaddress
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
from cloud.identity import Identity
from cloud.live import KICK
from cloud.services import Services
from cloud.store import (
    ClaimOutcome,
    Device,
    DuplicateError,
    HistoryScope,
    WatchSession,
    unowned_name,
)

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
PAIRING_TTL_S = 300.0
#: Characters no stored text may hold: C0 and C1 controls (NUL among them: PostgreSQL cannot
#: store it), DEL, line and paragraph separators, and the bidirectional overrides and isolates
#: that make a name display as something else ("Trojan Source").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: Ids this cloud mints (uuid hex, URL-safe base64); anything else is no id of ours.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


# --- bodies ------------------------------------------------------------------------------------


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
    #: "owner", or "viewer" for a camera shared with the caller (watch only).
    role: str = "owner"
    #: A shared camera's owner (their e-mail address, the account's only name); None when owned.
    shared_by: str | None = None
    #: An owned camera: how many accounts it is shared with.  None for a viewer.
    viewers: int | None = None


class PairedOut(msgspec.Struct):
    device: DeviceOut


class ClaimPreviewRequest(msgspec.Struct, forbid_unknown_fields=True):
    claim_token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class ClaimPreview(msgspec.Struct, omit_defaults=True):
    """The camera a claim link would add, shown to the person before they agree.  A link its
    owner already used says so, with the camera's id (to watch it): ``already_yours``."""

    name: str
    model: str
    expires_at: float
    already_yours: bool = False
    device_id: str | None = None


class DeviceList(msgspec.Struct):
    devices: list[DeviceOut]


class Rename(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class SessionOut(msgspec.Struct):
    session_id: str
    viewer_id: str
    #: The viewer's e-mail address (None once that account was deleted).
    viewer_email: str | None
    device_id: str
    #: "owner" or "viewer": the viewer's role on the camera now (None: no longer allowed).
    viewer_role: str | None
    started_at: str
    ended_at: str | None
    end_reason: str | None
    #: "direct" (peer to peer) or "relay" (through TURN, for some or all of it), as the
    #: viewer's browser saw it; None when it never said (ended before the video flowed).
    media_path: str | None


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


async def current_identity(request: Request[Any, Any, Any], svc: Services) -> Identity:
    try:
        return await svc.hub.authenticate(_bearer(request))
    except auth.TokenError as exc:
        raise ApiError(401, "unauthorized", str(exc)) from None


async def current_user(request: Request[Any, Any, Any], svc: Services) -> str:
    return (await current_identity(request, svc)).user_id


def checked_text(field: str, value: str) -> str:
    """``value`` stripped, or a 422 if it holds a character no stored text may hold."""
    bad = _UNPRINTABLE.search(value)
    if bad is not None:
        raise ApiError(
            422,
            "invalid_input",
            f"{field}: must not contain control characters (found U+{ord(bad.group()):04X})",
        )
    return value.strip()


def _device_id(value: str) -> str:
    if not _ID.match(value):
        raise ApiError(404, "not_found", "no such camera on your account")
    return value


async def _limit(svc: Services, *checks: tuple[str, str, str]) -> None:
    verdict = await svc.limits.hit(*checks)
    if not verdict.allowed:
        for limit in verdict.refused:
            svc.metrics.rate_limited.labels(limit).inc()
        raise ApiError(
            429,
            "rate_limited",
            f"too many attempts; try again in {verdict.retry_after_s} s",
            headers={"Retry-After": str(verdict.retry_after_s)},
        )


async def _device_out(
    svc: Services,
    devices: list[Device],
    shared: dict[str, str] | None = None,
    viewer_counts: dict[str, int] | None = None,
) -> list[DeviceOut]:
    """With live presence: an online camera was last seen at its last heartbeat (accurate to
    one heartbeat, without a database write per heartbeat); an offline one when it went.
    ``shared``: the owner's e-mail of each camera the caller views (not owns)."""
    presence = await svc.live.presence([d.id for d in devices])
    shared = shared or {}
    out = []
    for d in devices:
        live = presence.get(d.id)
        viewer = d.id in shared
        out.append(
            DeviceOut(
                device_id=d.id,
                name=d.name,
                model=d.model,
                online=live is not None,
                last_seen=_iso(live.heard_at if live is not None else d.last_seen),
                paired_at=_iso(d.paired_at),
                role="viewer" if viewer else "owner",
                shared_by=shared.get(d.id),
                viewers=None if viewer else (viewer_counts or {}).get(d.id, 0),
            )
        )
    return out


async def _owned_device(svc: Services, device_id: str, user_id: str, action: str = "") -> Device:
    """The caller's own camera, or 404; a viewer of it gets 403 naming ``action`` (it knows the
    camera exists, and should hear that only its owner may do that)."""
    access = await svc.store.access(_device_id(device_id), user_id)
    if access is None or access.role is None:
        # The same answer whether it does not exist or is someone else's: ids are not probed.
        raise ApiError(404, "not_found", "no such camera on your account")
    if access.role != "owner":
        raise ApiError(403, "owner_only", f"only the camera's owner may {action or 'do that'}")
    return access.device


# --- devices -----------------------------------------------------------------------------------


@post("/api/devices/register", status_code=HTTP_201_CREATED, tags=["devices"])
async def register_device(
    request: Request[Any, Any, Any], state: State, data: DeviceRegistration | None = None
) -> DeviceCredentials:
    """A camera registers itself (rate-limited per address). The token is shown once and kept
    only as a hash."""
    svc = services(state)
    body = data or DeviceRegistration()
    name = checked_text("name", body.name or "")
    model = checked_text("model", body.model or "")
    await _limit(
        svc,
        (svc.settings.device_register_rate_per_address, "device-register-addr", _client(request)),
    )
    device_id = uuid.uuid4().hex
    token = auth.new_device_token()
    await svc.store.create_device(
        device_id,
        name or unowned_name(device_id),
        model or "unknown",
        auth.hash_device_token(token),
        time.time(),
    )
    return DeviceCredentials(device_id=device_id, device_token=token)


@post("/api/devices/retire", status_code=HTTP_204_NO_CONTENT, tags=["devices"], security=BEARER)
async def retire_device(request: Request[Any, Any, Any], state: State, device_id: str) -> None:
    """A camera being factory-reset retires its identity (its own device token as bearer): it
    leaves its owner's account, its sessions end, and its token is refused from then on."""
    svc = services(state)
    token = _bearer(request)
    device_id = _device_id(device_id)
    viewers = (await svc.store.viewers_of([device_id])).get(device_id, [])
    result = await svc.store.retire_device(device_id, auth.hash_device_token(token), time.time())
    if not result.retired:
        raise ApiError(403, "forbidden", "only the camera itself may retire its identity")
    if result.newly:
        svc.metrics.devices_retired.inc()
    await svc.hub.device_unpaired(device_id)
    if result.newly:
        await svc.hub.devices_changed([result.previous_owner, *viewers], device_id)
    await svc.live.publish(f"device:{device_id}", KICK)


@get("/api/devices", tags=["devices"], security=BEARER)
async def list_devices(request: Request[Any, Any, Any], state: State) -> DeviceList:
    """The caller's cameras with live presence: its own (``role: owner``), then those shared with
    it (``role: viewer``, ``shared_by``: the owner's e-mail)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    owned = await svc.store.devices_of(user_id)
    shared = await svc.sharing.shared_with(user_id)
    counts = await svc.sharing.viewer_counts([d.id for d in owned])
    return DeviceList(
        devices=await _device_out(
            svc,
            [*owned, *(s.device for s in shared)],
            shared={s.device.id: s.owner_email for s in shared},
            viewer_counts=counts,
        )
    )


@patch("/api/devices/{device_id:str}", tags=["devices"], security=BEARER)
async def rename_device(
    request: Request[Any, Any, Any], state: State, device_id: str, data: Rename
) -> DeviceOut:
    svc = services(state)
    user_id = await current_user(request, svc)
    name = checked_text("name", data.name)
    if not name:
        raise ApiError(422, "invalid_input", "name: must not be blank")
    await _owned_device(svc, device_id, user_id, "rename it")
    device = await svc.store.rename_device(_device_id(device_id), user_id, name)
    if device is None:
        raise ApiError(404, "not_found", "no such camera on your account")
    viewers = (await svc.store.viewers_of([device.id])).get(device.id, [])
    await svc.hub.devices_changed([user_id, *viewers], device.id)  # its new name, everywhere
    counts = await svc.sharing.viewer_counts([device.id])
    return (await _device_out(svc, [device], viewer_counts=counts))[0]


@delete(
    "/api/devices/{device_id:str}",
    status_code=HTTP_204_NO_CONTENT,
    tags=["devices"],
    security=BEARER,
)
async def unpair_device(request: Request[Any, Any, Any], state: State, device_id: str) -> None:
    """Unpair: the camera becomes claimable again, its shares are dropped, and every live
    session on it ends (its owner's and its viewers')."""
    svc = services(state)
    user_id = await current_user(request, svc)
    await _owned_device(svc, device_id, user_id, "unpair it")
    viewers = (await svc.store.viewers_of([device_id])).get(device_id, [])
    if not await svc.store.unpair(device_id, user_id):
        raise ApiError(404, "not_found", "no such camera on your account")
    await svc.hub.device_unpaired(device_id)
    await svc.hub.devices_changed([user_id, *viewers], device_id)


@get("/api/devices/{device_id:str}/sessions", tags=["devices"], security=BEARER)
async def device_sessions(
    request: Request[Any, Any, Any],
    state: State,
    device_id: str,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
) -> SessionList:
    """Watch-session history of one of the caller's cameras since they paired it, newest first
    (a camera's next owner does not learn who watched it before), with who watched: the owner
    and the accounts it is shared with.  A viewer of a shared camera sees only its own sessions
    since it was shared with it."""
    svc = services(state)
    user_id = await current_user(request, svc)
    access = await svc.store.access(_device_id(device_id), user_id)
    if access is None or access.role is None:
        raise ApiError(404, "not_found", "no such camera on your account")
    scope = await _history_scope(svc, access.device, access.role, user_id)
    rows = await svc.store.session_history([scope], limit)
    return SessionList(sessions=await _sessions_out(svc, rows))


@get("/api/sessions", tags=["devices"], security=BEARER)
async def account_sessions(
    request: Request[Any, Any, Any],
    state: State,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
) -> SessionList:
    """Watch-session history of the account, newest first: every session on its own cameras
    (since it paired each), and its own sessions on cameras shared with it."""
    svc = services(state)
    user_id = await current_user(request, svc)
    scopes = [
        await _history_scope(svc, d, "owner", user_id)
        for d in (await svc.store.devices_of(user_id))[:_HISTORY_CAMERAS]
    ]
    for shared in (await svc.sharing.shared_with(user_id))[:_HISTORY_CAMERAS]:
        scopes.append(HistoryScope(shared.device.id, shared.added_at, user_id))
    rows = await svc.store.session_history(scopes, limit)
    return SessionList(sessions=await _sessions_out(svc, rows))


#: Cameras of each kind (owned, shared) the account history looks at.
_HISTORY_CAMERAS = 200


async def _history_scope(svc: Services, device: Device, role: str, user_id: str) -> HistoryScope:
    if role == "owner":
        # Only this pairing's sessions: a previous owner's history is not the new owner's.
        return HistoryScope(device.id, device.paired_at, None)
    since = await svc.sharing.viewer_since(device.id, user_id)
    return HistoryScope(device.id, since, user_id)


async def _sessions_out(svc: Services, rows: list[WatchSession]) -> list[SessionOut]:
    emails = await svc.sharing.emails_of(sorted({r.viewer_id for r in rows}))
    roles: dict[tuple[str, str], str | None] = {}
    for key in {(r.device_id, r.viewer_id) for r in rows}:
        access = await svc.store.access(*key)
        roles[key] = None if access is None else access.role
    return [
        SessionOut(
            session_id=r.id,
            viewer_id=r.viewer_id,
            viewer_email=emails.get(r.viewer_id),
            device_id=r.device_id,
            viewer_role=roles.get((r.device_id, r.viewer_id)),
            started_at=_iso(r.started_at) or "",
            ended_at=_iso(r.ended_at),
            end_reason=r.end_reason,
            media_path=r.media_path,
        )
        for r in rows
    ]


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
        svc.metrics.pairing_codes_issued.inc()
        origin = svc.settings.public_url or str(request.base_url).rstrip("/")
        return PairingCode(code=code, expires_at=expires_at, claim_url=f"{origin}/#/claim/{claim}")
    raise ApiError(503, "busy", "could not allocate a pairing code; try again")


_CLAIM_ERRORS = {
    ClaimOutcome.NO_SUCH_CODE: (404, "invalid_code", "that code is wrong or was used already"),
    ClaimOutcome.ALREADY_YOURS: (409, "already_yours", "this camera is on your account already"),
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


_PAUSED_MESSAGE = (
    "too many pairing codes were tried recently, so for now a code is accepted only from the "
    "camera's own network: scan the QR code on the camera instead, or connect to the same "
    "network as the camera"
)


def same_network(a: str | None, b: str) -> bool:
    """Whether two client addresses are one network's: the same IPv4 address (a home's NAT) or
    the same IPv6 /64."""
    if not a:
        return False
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    x = x.ipv4_mapped or x if isinstance(x, ipaddress.IPv6Address) else x
    y = y.ipv4_mapped or y if isinstance(y, ipaddress.IPv6Address) else y
    if isinstance(x, ipaddress.IPv6Address) and isinstance(y, ipaddress.IPv6Address):
        return ipaddress.ip_network(f"{x}/64", strict=False) == ipaddress.ip_network(
            f"{y}/64", strict=False
        )
    return x == y


async def _code_accepted_here(svc: Services, code_hash: str, client: str) -> tuple[bool, int]:
    """The global budget of pairing codes tried from outside their camera's network.

    A code typed on the camera's own network (the person in front of it) is never counted and
    never refused.  Any other attempt, right or wrong, spends the budget *before* the code is
    looked at, so no more than ``MUMU_PAIR_CODE_BUDGET`` codes are ever tried from elsewhere,
    however many addresses and accounts an attacker has; once it is spent, codes from elsewhere
    get one answer whether right or wrong, after the same lookups (the QR code's claim link,
    with its unguessable token, still works from anywhere)."""
    target = await svc.store.pairing_target(code_hash=code_hash, claim_hash=None)
    camera = await svc.live.device_address(target.device.id if target else "-")
    if target is not None and same_network(camera, client):
        return True, 0
    verdict = await svc.limits.hit((svc.settings.pair_code_budget, "pair-code-budget", "global"))
    return verdict.allowed, verdict.retry_after_s


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
    client = _client(request)
    await _limit(
        svc,
        (s.pair_rate, "pair-account", user_id),
        (s.pair_rate_per_address, "pair-addr", client),
    )
    if data.code is not None:
        code = data.code.strip().replace(" ", "").replace("-", "")
        if not (len(code) == 6 and code.isascii() and code.isdigit()):
            svc.metrics.pairing_attempts.labels("malformed").inc()
            raise ApiError(422, "invalid_input", "code: six digits, as shown on the camera")
        code_hash = svc.pairing.hash(code)
        accepted, retry_after = await _code_accepted_here(svc, code_hash, client)
        if not accepted:
            svc.metrics.pairing_attempts.labels("paused").inc()
            raise ApiError(
                429,
                "code_pairing_paused",
                _PAUSED_MESSAGE,
                headers={"Retry-After": str(retry_after)},
            )
        result = await svc.store.claim(
            code_hash=code_hash, claim_hash=None, user_id=user_id, now=time.time()
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


@post("/api/pairing/preview", status_code=200, tags=["pairing"], security=BEARER)
async def preview_claim(
    request: Request[Any, Any, Any], state: State, data: ClaimPreviewRequest
) -> ClaimPreview:
    """The camera a claim link (QR code) would add, without adding it: the web app shows its
    name and model and asks first.  Codes cannot be previewed (that would test them for free)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    s = svc.settings
    await _limit(
        svc,
        (s.pair_rate, "preview-account", user_id),
        (s.pair_rate_per_address, "preview-addr", _client(request)),
    )
    target = await svc.store.pairing_target(
        code_hash=None, claim_hash=svc.pairing.hash(data.claim_token.strip())
    )
    owner = target.device.owner_id if target else None
    if target is not None and owner is not None and target.expires_at <= time.time():
        # A used link: its owner is told the camera is theirs; anybody else learns nothing.
        if owner == user_id:
            return ClaimPreview(
                name=target.device.name,
                model=target.device.model,
                expires_at=target.expires_at,
                already_yours=True,
                device_id=target.device.id,
            )
        target = None
    if target is None:
        status, code, message = _CLAIM_ERRORS[ClaimOutcome.NO_SUCH_CODE]
        raise ApiError(status, code, message)
    if target.expires_at <= time.time():
        status, code, message = _CLAIM_ERRORS[ClaimOutcome.EXPIRED]
        raise ApiError(status, code, message)
    if target.device.owner_id not in (None, user_id):
        status, code, message = _CLAIM_ERRORS[ClaimOutcome.OWNED_BY_OTHER]
        raise ApiError(status, code, message)
    return ClaimPreview(
        name=target.device.name, model=target.device.model, expires_at=target.expires_at
    )


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
    register_device,
    retire_device,
    list_devices,
    rename_device,
    unpair_device,
    device_sessions,
    account_sessions,
    generate_code,
    pair_device,
    preview_claim,
    healthz,
    readyz,
    metrics,
]
