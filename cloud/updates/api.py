"""HTTP for updates: the signed repository's files, each owner's cameras' update state and
window, and the operators' releases and rollouts (``cloud.updates.operators``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, patch, post, put
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.response import Stream
from litestar.status_codes import HTTP_201_CREATED

from cloud.api import BEARER, _client, _owned_device, current_user, services
from cloud.errors import ApiError
from cloud.services import Services
from cloud.updates import repo as repo_files
from cloud.updates.service import DEFAULT_MIN_SAMPLE, DEFAULT_THRESHOLD
from cloud.updates.store import DuplicateRelease, Rollout
from protocol.messages import Version, Window

Channel = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,32}\Z")]
Percentage = Annotated[float, msgspec.Meta(ge=0, le=100)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
ArchName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{1,32}\Z")]


class CameraUpdate(msgspec.Struct):
    device_id: str
    version: str | None
    state: str | None
    target: str | None
    reason: str | None
    progress: float | None
    window: str | None
    channel: str


class CameraUpdates(msgspec.Struct):
    cameras: list[CameraUpdate]


class UpdateSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: ``HH:MM-HH:MM`` in the camera's local time; null: any time nobody watches.
    window: Window | None = None


class ReleaseIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Version
    arches: list[ArchName] | None = None
    notes: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class ReleaseOut(msgspec.Struct):
    version: str
    arches: list[str]
    notes: str
    created_at: float


class RolloutIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Version
    percentage: Percentage
    channel: Channel = "stable"
    failure_threshold: Fraction = DEFAULT_THRESHOLD
    min_sample: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = DEFAULT_MIN_SAMPLE


class RolloutChange(msgspec.Struct, forbid_unknown_fields=True):
    percentage: Percentage | None = None
    state: Literal["active", "paused", "cancelled"] | None = None


class RolloutOut(msgspec.Struct):
    id: int
    version: str
    channel: str
    percentage: float
    state: str
    failure_threshold: float
    min_sample: int
    paused_reason: str | None
    created_at: float
    updated_at: float
    offered: int
    tried: int
    failed: int
    committed: int
    reasons: dict[str, int]


class FleetOut(msgspec.Struct):
    releases: list[ReleaseOut]
    rollouts: list[RolloutOut]
    #: version -> devices reporting it
    versions: dict[str, int]


# --- the repository's files ---------------------------------------------------------------------


@get("/updates/{path:path}", tags=["updates"], include_in_schema=False)
async def repository_file(
    request: Request[Any, Any, Any], state: State, path: str
) -> Response[Any]:
    """A file of the signed update repository (TUF metadata or a bundle), with byte ranges;
    a bounded number of transfers at a time per address and in all (cloud/updates/downloads.py)."""
    svc = services(state)
    repo_dir = svc.settings.update_repo_dir
    if repo_dir is None:
        raise ApiError(404, "not_found", "this cloud serves no update repository")
    try:
        file = repo_files.resolve(repo_dir, path)
        size = file.stat().st_size
        wanted = repo_files.byte_range(request.headers.get("range"), size)
    except (repo_files.NotServed, OSError):
        raise ApiError(404, "not_found", "no such file in the update repository") from None
    except repo_files.BadRange as exc:
        raise ApiError(
            416,
            "range_not_satisfiable",
            "the range is outside the file",
            headers={"Content-Range": f"bytes */{exc.size}"},
        ) from None
    kind = "application/json" if file.suffix == ".json" else "application/x-tar"
    # Metadata changes under the same name (timestamp.json): never cached; bundles are
    # content-addressed (their name holds their hash) and never change.
    cache = (
        "no-cache"
        if path.lstrip("/").startswith("metadata/")
        else "public, max-age=31536000, immutable"
    )
    start, end = wanted if wanted is not None else (0, size - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "Cache-Control": cache,
    }
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    body = svc.downloads.hold(_client(request), repo_files.read_range(file, start, end))
    return Stream(
        body,
        status_code=206 if wanted is not None else 200,
        media_type=kind,
        headers=headers,
        background=BackgroundTask(body.aclose),
    )


# --- owners -------------------------------------------------------------------------------------


@get("/api/devices/updates", tags=["updates"], security=BEARER)
async def camera_updates(request: Request[Any, Any, Any], state: State) -> CameraUpdates:
    """Each of your cameras' agent version and update state."""
    svc = services(state)
    user_id = await current_user(request, svc)
    devices = await svc.store.devices_of(user_id)
    rows = await svc.updates.store.devices([d.id for d in devices])
    out = []
    for device in devices:
        row = rows.get(device.id)
        out.append(
            CameraUpdate(
                device_id=device.id,
                version=row.agent_version if row else None,
                state=row.state if row else None,
                target=row.target_version if row else None,
                reason=row.reason if row else None,
                progress=row.progress if row else None,
                window=row.window if row else None,
                channel=row.channel if row else "stable",
            )
        )
    return CameraUpdates(cameras=out)


@put("/api/devices/{device_id:str}/update-settings", tags=["updates"], security=BEARER)
async def set_update_settings(
    request: Request[Any, Any, Any], state: State, device_id: str, data: UpdateSettings
) -> UpdateSettings:
    """When this camera may switch to a new version (besides: only while nobody watches)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    await _owned_device(svc, device_id, user_id)
    if await svc.updates.store.device(device_id) is None:
        raise ApiError(409, "conflict", "the camera has not connected yet; try when it is online")
    await svc.updates.store.set_device(device_id, window=data.window)
    await svc.updates.settings_changed(device_id)
    return data


# --- operators ----------------------------------------------------------------------------------


async def _operator(request: Request[Any, Any, Any], svc: Services) -> str:
    """The caller, if it holds operator rights: granted on the server to its (verified)
    account with ``mumu-cloud operator add`` — never by the address it signed up with."""
    user_id = await current_user(request, svc)
    if not await svc.operators.is_operator(user_id):
        raise ApiError(
            403,
            "forbidden",
            "only the cloud's operators may do this (granted on the server with "
            "'mumu-cloud operator add <e-mail>' to an account with a verified address)",
        )
    return user_id


async def _rollout_out(svc: Services, rollout: Rollout) -> RolloutOut:
    counts = await svc.updates.store.counts(rollout.id)
    return RolloutOut(
        id=rollout.id,
        version=rollout.version,
        channel=rollout.channel,
        percentage=rollout.percentage,
        state=rollout.state,
        failure_threshold=rollout.failure_threshold,
        min_sample=rollout.min_sample,
        paused_reason=rollout.paused_reason,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        offered=counts.offered,
        tried=counts.tried,
        failed=counts.failed,
        committed=counts.committed,
        reasons=counts.reasons,
    )


@get("/api/operator/updates", tags=["operator"], security=BEARER)
async def fleet(request: Request[Any, Any, Any], state: State) -> FleetOut:
    """Releases, rollouts (with failures and their reasons) and the fleet's versions."""
    svc = services(state)
    await _operator(request, svc)
    store = svc.updates.store
    return FleetOut(
        releases=[
            ReleaseOut(r.version, list(r.arches), r.notes, r.created_at)
            for r in await store.releases()
        ],
        rollouts=[await _rollout_out(svc, r) for r in await store.rollouts()],
        versions=await store.version_counts(),
    )


@post("/api/operator/releases", tags=["operator"], security=BEARER, status_code=HTTP_201_CREATED)
async def add_release(request: Request[Any, Any, Any], state: State, data: ReleaseIn) -> ReleaseOut:
    """Make a signed release known to the cloud (it must be in the signed repository when this
    cloud serves one)."""
    svc = services(state)
    await _operator(request, svc)
    arches = release_arches(svc, data.version, data.arches)
    try:
        release = await svc.updates.store.add_release(data.version, arches, data.notes)
    except DuplicateRelease:
        raise ApiError(409, "conflict", f"release {data.version} exists already") from None
    return ReleaseOut(release.version, list(release.arches), release.notes, release.created_at)


def release_arches(svc: Services, version: str, arches: list[str] | None) -> list[str]:
    repo_dir = svc.settings.update_repo_dir
    if repo_dir is None:
        if not arches:
            raise ApiError(422, "invalid_input", "name the release's architectures (arches)")
        return sorted(set(arches))
    signed = repo_files.signed_versions(repo_dir).get(version)
    if not signed:
        raise ApiError(
            422,
            "invalid_input",
            f"{version} is not in the signed repository: mumu-release publish it",
        )
    if arches and not set(arches) <= signed:
        raise ApiError(
            422, "invalid_input", f"{version} is signed for {', '.join(sorted(signed))} only"
        )
    return sorted(set(arches or signed))


@post("/api/operator/rollouts", tags=["operator"], security=BEARER, status_code=HTTP_201_CREATED)
async def start_rollout(
    request: Request[Any, Any, Any], state: State, data: RolloutIn
) -> RolloutOut:
    """Start a staged rollout (it replaces the channel's current one)."""
    svc = services(state)
    await _operator(request, svc)
    if await svc.updates.store.release(data.version) is None:
        raise ApiError(404, "not_found", f"no release {data.version}; add it first")
    rollout = await svc.updates.store.create_rollout(
        data.version, data.channel, data.percentage, data.failure_threshold, data.min_sample
    )
    await svc.updates.push(rollout)
    return await _rollout_out(svc, rollout)


@patch("/api/operator/rollouts/{rollout_id:int}", tags=["operator"], security=BEARER)
async def change_rollout(
    request: Request[Any, Any, Any], state: State, rollout_id: int, data: RolloutChange
) -> RolloutOut:
    """Raise (never lower) the percentage, pause, resume or cancel a rollout."""
    svc = services(state)
    await _operator(request, svc)
    try:
        rollout = await svc.updates.change(rollout_id, data.percentage, data.state)
    except LookupError:
        raise ApiError(404, "not_found", "no such rollout") from None
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return await _rollout_out(svc, rollout)


ROUTES = [
    repository_file,
    camera_updates,
    set_update_settings,
    fleet,
    add_release,
    start_rollout,
    change_rollout,
]
