"""The HTTP API of sharing: an owner invites other accounts to watch a camera, as *viewers*.

A viewer may watch the camera and nothing else: it cannot rename, unpair or share it, nor see
who else views it.  Two ways in, both single use, both expiring (``MUMU_INVITE_TTL``), both
bounded per camera (``MUMU_MAX_INVITES_PER_CAMERA`` open at once) and counted towards
``MUMU_MAX_VIEWERS_PER_CAMERA`` when accepted:

- **by e-mail**: an invitation addressed to an e-mail address, and a mail to it naming the
  camera and who invites (an inviter whose own address is verified: the mail names it).  The
  account with that address sees it (``GET /api/invites``) once it has *verified* the address —
  at once if it exists, or once it signs up and confirms — and accepts or declines it: the
  invitation is bound to whoever reads that mailbox, not to whoever typed the address.
  Nothing is added to anyone's account without their say (a camera planted in a stranger's
  list would learn their addresses when they watch it), and the answer is the same whether
  the address has an account or not (no probing for accounts; only the mail's words differ).
- **by link**: a one-time link ``/#/share/<token>`` the owner sends however they like; the
  token is kept only as a keyed hash; whoever opens it signed in sees the camera and its
  owner, and accepts.

The owner lists viewers and open invitations, cancels invitations and revokes viewers; a viewer
may leave.  Revoking commits first, then ends that viewer's live sessions on every process
(``cloud.watch``).  Unpairing, pairing by another account, a factory reset and deleting the
owner's account drop every share of the camera.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from cloud.api import (
    BEARER,
    DeviceOut,
    PairedOut,
    _client,
    _device_id,
    _device_out,
    _iso,
    _limit,
    _owned_device,
    current_user,
    services,
)
from cloud.api_accounts import _email
from cloud.errors import ApiError
from cloud.link_origin import link_origin
from cloud.mail import templates
from cloud.services import Services
from cloud.sharing_store import AcceptOutcome, AcceptResult, Invite, InviteOutcome
from cloud.store import User

# --- bodies ------------------------------------------------------------------------------------


class InviteRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of: ``email`` (invite that address) or ``link: true`` (a one-time link)."""

    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)] | None = None
    link: bool = False


class InviteOut(msgspec.Struct):
    invite_id: str
    #: "email" or "link".
    kind: str
    email: str | None
    created_at: str
    expires_at: str
    #: The link to send (only in the answer that created it: the cloud keeps only its hash).
    url: str | None = None


class ViewerOut(msgspec.Struct):
    user_id: str
    email: str
    added_at: str
    #: "email" or "link": how the viewer came.
    via: str


class SharingOut(msgspec.Struct):
    """Who a camera is shared with, for its owner."""

    viewers: list[ViewerOut]
    invites: list[InviteOut]
    max_viewers: int
    max_invites: int


class ReceivedInvite(msgspec.Struct):
    """An invitation as its invitee sees it."""

    invite_id: str
    name: str
    model: str
    owner_email: str
    expires_at: str


class ReceivedInvites(msgspec.Struct):
    invites: list[ReceivedInvite]


class LinkToken(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class LinkPreview(msgspec.Struct):
    """The camera an invitation link would share, shown before the person accepts."""

    name: str
    model: str
    owner_email: str
    expires_at: str


# --- helpers -----------------------------------------------------------------------------------


def _invite_out(invite: Invite, url: str | None = None) -> InviteOut:
    return InviteOut(
        invite_id=invite.id,
        kind=invite.via,
        email=invite.email,
        created_at=_iso(invite.created_at) or "",
        expires_at=_iso(invite.expires_at) or "",
        url=url,
    )


def _refused(svc: Services, reason: str, status: int, code: str, message: str) -> ApiError:
    svc.metrics.share_refused.labels(reason).inc()
    return ApiError(status, code, message)


def _token_limits(svc: Services, request: Request[Any, Any, Any], user_id: str) -> Any:
    s = svc.settings
    return _limit(
        svc,
        (s.pair_rate, "share-accept-account", user_id),
        (s.pair_rate_per_address, "share-accept-addr", _client(request)),
    )


def _refusal(svc: Services, outcome: AcceptOutcome) -> ApiError | None:
    """Why an invitation cannot be accepted, in words; None when it can (or was)."""
    s = svc.settings
    if outcome is AcceptOutcome.INVALID:
        return _refused(
            svc,
            "invalid",
            404,
            "invite_invalid",
            "this invitation is not valid any more: it was used, cancelled, or the camera "
            "changed hands; ask its owner for a new one",
        )
    if outcome is AcceptOutcome.EXPIRED:
        return _refused(
            svc,
            "expired",
            410,
            "invite_expired",
            "this invitation has expired; ask the camera's owner for a new one",
        )
    if outcome is AcceptOutcome.OWN_CAMERA:
        return _refused(svc, "own_camera", 409, "own_camera", "this camera is yours already")
    if outcome is AcceptOutcome.EMAIL_UNVERIFIED:
        return _unverified(svc, "confirm your address first: open the link mailed to it")
    if outcome is AcceptOutcome.TOO_MANY_VIEWERS:
        return _refused(
            svc,
            "too_many_viewers",
            409,
            "too_many_viewers",
            f"this camera is shared with {s.max_viewers_per_device} accounts already; its "
            "owner must remove one first",
        )
    return None


def _unverified(svc: Services, message: str) -> ApiError:
    return _refused(svc, "email_unverified", 403, "email_unverified", message)


async def _mail_invitation(
    svc: Services, request: Request[Any, Any, Any], to: str, inviter: str, camera: str
) -> None:
    """The invitation's mail: to an account, a link to its camera list (where the invitation
    waits); to an address without one, a link to sign up with it (``#/signup?email=``).  Only
    the mail, in that mailbox, says which: the owner's answer is the same."""
    origin = link_origin(svc, request)
    invitee = await svc.store.user_by_email(to)
    if invitee is None:
        link, confirmed = f"{origin}/#/signup?email={quote(to, safe='@')}", False
    else:
        link, confirmed = f"{origin}/#/devices", await svc.sharing.email_verified(invitee.id, to)
    mail = templates.invitation(
        to, inviter, camera, link, has_account=invitee is not None, confirmed=confirmed
    )
    svc.mail.send(mail)


async def _accepting_user(svc: Services, request: Request[Any, Any, Any]) -> User:
    """The account accepting an invitation (within its token limits)."""
    user_id = await current_user(request, svc)
    await _token_limits(svc, request, user_id)
    me = await svc.store.user_by_id(user_id)
    if me is None:
        raise ApiError(401, "unauthorized", "that account no longer exists")
    return me


async def _accepted(svc: Services, result: AcceptResult, user_id: str) -> PairedOut:
    """The answer to an accepted invitation (the camera as the viewer's list shows it); the
    owner's lists (its viewer count) and the viewer's other tabs hear of it."""
    refusal = _refusal(svc, result.outcome)
    if refusal is not None:
        raise refusal
    device = result.device
    assert device is not None and device.owner_id is not None
    if result.outcome is AcceptOutcome.ACCEPTED:
        svc.metrics.share_events.labels("accepted").inc()
        await svc.hub.devices_changed([device.owner_id, user_id], device.id)
    owner = (await svc.sharing.emails_of([device.owner_id])).get(device.owner_id, "")
    return PairedOut(device=(await _device_out(svc, [device], shared={device.id: owner}))[0])


# --- the owner's side --------------------------------------------------------------------------


@get("/api/devices/{device_id:str}/sharing", tags=["sharing"], security=BEARER)
async def sharing(request: Request[Any, Any, Any], state: State, device_id: str) -> SharingOut:
    """Who the caller's camera is shared with, and its open invitations (owner only)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    device = await _owned_device(svc, device_id, user_id, "see who it is shared with")
    viewers = await svc.sharing.viewers_of_device(device.id)
    invites = await svc.sharing.invites_of_device(device.id, time.time())
    s = svc.settings
    return SharingOut(
        viewers=[
            ViewerOut(user_id=v.user_id, email=v.email, added_at=_iso(v.added_at) or "", via=v.via)
            for v in viewers
        ],
        invites=[_invite_out(i) for i in invites],
        max_viewers=s.max_viewers_per_device,
        max_invites=s.max_invites_per_device,
    )


@post(
    "/api/devices/{device_id:str}/invites",
    status_code=HTTP_201_CREATED,
    tags=["sharing"],
    security=BEARER,
)
async def invite(
    request: Request[Any, Any, Any], state: State, device_id: str, data: InviteRequest
) -> InviteOut:
    """Invite an account to watch the camera: ``{"email": ...}`` (the account with that address
    accepts it, now or once it signs up) or ``{"link": true}`` (a one-time link, shown once)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    if (data.email is None) == (not data.link):
        raise ApiError(422, "invalid_input", 'send exactly one of "email" or "link": true')
    device = await _owned_device(svc, device_id, user_id, "share it")
    s = svc.settings
    email = None
    me = await svc.store.user_by_id(user_id)
    if me is None:
        raise ApiError(401, "unauthorized", "that account no longer exists")
    if data.email is not None:
        email = _email(data.email)
        if me.email == email:
            raise ApiError(422, "invalid_input", "email: that is your own account")
        # The mail names the inviter: only an address its account has proven.
        if not await svc.sharing.email_verified(me.id, me.email):
            raise _unverified(svc, "confirm your address first, then invite by e-mail")
    await _limit(svc, (s.invite_rate, "invite-account", user_id))
    now = time.time()
    token = None if email is not None else secrets.token_urlsafe(32)
    new = Invite(
        id=uuid.uuid4().hex,
        device_id=device.id,
        owner_id=user_id,
        email=email,
        token_hash=None if token is None else svc.pairing.hash(token),
        created_at=now,
        expires_at=now + s.invite_ttl_s,
    )
    outcome = await svc.sharing.create_invite(
        new, s.max_invites_per_device, s.max_viewers_per_device
    )
    if outcome is InviteOutcome.NOT_OWNER:  # unpaired a moment ago
        raise ApiError(404, "not_found", "no such camera on your account")
    if outcome is InviteOutcome.ALREADY_VIEWER:
        raise ApiError(409, "already_viewer", "this camera is shared with that account already")
    if outcome is InviteOutcome.TOO_MANY_INVITES:
        raise _refused(
            svc,
            "too_many_invites",
            409,
            "too_many_invites",
            f"this camera has {s.max_invites_per_device} open invitations; cancel one first",
        )
    if outcome is InviteOutcome.TOO_MANY_VIEWERS:
        raise _refused(
            svc,
            "too_many_viewers",
            409,
            "too_many_viewers",
            f"this camera is shared with {s.max_viewers_per_device} accounts already; remove "
            "one first",
        )
    svc.metrics.share_events.labels("invited_email" if email else "invited_link").inc()
    url = None
    if token is not None:
        url = f"{link_origin(svc, request)}/#/share/{token}"
    if email is not None:
        await _mail_invitation(svc, request, email, me.email, device.name)
    return _invite_out(new, url)


@delete(
    "/api/devices/{device_id:str}/invites/{invite_id:str}",
    status_code=HTTP_204_NO_CONTENT,
    tags=["sharing"],
    security=BEARER,
)
async def cancel_invite(
    request: Request[Any, Any, Any], state: State, device_id: str, invite_id: str
) -> None:
    """Cancel an open invitation (owner only)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    device = await _owned_device(svc, device_id, user_id, "share it")
    if not await svc.sharing.cancel_invite(device.id, user_id, invite_id):
        raise ApiError(404, "not_found", "no such invitation")
    svc.metrics.share_events.labels("invite_cancelled").inc()


@delete(
    "/api/devices/{device_id:str}/viewers/{viewer_id:str}",
    status_code=HTTP_204_NO_CONTENT,
    tags=["sharing"],
    security=BEARER,
)
async def remove_viewer(
    request: Request[Any, Any, Any], state: State, device_id: str, viewer_id: str
) -> None:
    """The owner revokes a viewer, or a viewer leaves (``viewer_id``: its own id, or ``me``).
    Committed first; then the viewer's live sessions on the camera end at once, on every
    process (``watch_ended`` with ``access_revoked``)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    access = await svc.store.access(_device_id(device_id), user_id)
    if access is None or access.role is None:
        raise ApiError(404, "not_found", "no such camera on your account")
    if viewer_id in ("me", user_id):
        if access.role != "viewer":
            raise ApiError(409, "owner_cannot_leave", "you own this camera; unpair it instead")
        removed, target, event = (
            await svc.sharing.remove_viewer(access.device.id, user_id, owner_id=None),
            user_id,
            "left",
        )
    else:
        if access.role != "owner":
            raise ApiError(403, "owner_only", "only the camera's owner may remove its viewers")
        removed, target, event = (
            await svc.sharing.remove_viewer(access.device.id, viewer_id, owner_id=user_id),
            viewer_id,
            "revoked",
        )
    if not removed:
        raise ApiError(404, "not_found", "that account does not view this camera")
    svc.metrics.share_events.labels(event).inc()
    await svc.hub.watch.end_viewer_sessions(access.device.id, target, "access_revoked")
    await svc.hub.devices_changed([target, access.device.owner_id], access.device.id)


# --- the invitee's side ------------------------------------------------------------------------


@get("/api/invites", tags=["sharing"], security=BEARER)
async def received_invites(request: Request[Any, Any, Any], state: State) -> ReceivedInvites:
    """Open invitations to the caller's e-mail address (newest first, at most 50), once the
    account has verified it (none before)."""
    svc = services(state)
    user_id = await current_user(request, svc)
    me = await svc.store.user_by_id(user_id)
    if me is None:
        raise ApiError(401, "unauthorized", "that account no longer exists")
    if not await svc.sharing.email_verified(me.id, me.email):
        return ReceivedInvites(invites=[])  # bound to the address: proven first
    found = await svc.sharing.invites_for(me.email, time.time())
    return ReceivedInvites(
        invites=[
            ReceivedInvite(
                invite_id=t.invite.id,
                name=t.device.name,
                model=t.device.model,
                owner_email=t.owner_email,
                expires_at=_iso(t.invite.expires_at) or "",
            )
            for t in found
        ]
    )


@post("/api/invites/{invite_id:str}/accept", status_code=200, tags=["sharing"], security=BEARER)
async def accept_invite(request: Request[Any, Any, Any], state: State, invite_id: str) -> PairedOut:
    """Accept an invitation to the caller's e-mail address: the camera joins its list."""
    svc = services(state)
    me = await _accepting_user(svc, request)
    result = await svc.sharing.accept(
        invite_id=invite_id,
        user_id=me.id,
        email=me.email,
        now=time.time(),
        max_viewers=svc.settings.max_viewers_per_device,
    )
    return await _accepted(svc, result, me.id)


@post(
    "/api/invites/{invite_id:str}/decline",
    status_code=HTTP_204_NO_CONTENT,
    tags=["sharing"],
    security=BEARER,
)
async def decline_invite(request: Request[Any, Any, Any], state: State, invite_id: str) -> None:
    """Decline an invitation to the caller's (verified) e-mail address."""
    svc = services(state)
    user_id = await current_user(request, svc)
    me = await svc.store.user_by_id(user_id)
    if me is None:
        raise ApiError(401, "unauthorized", "that account no longer exists")
    # (Else whoever signs up first with an address could turn down what is sent to it.)
    if not await svc.sharing.email_verified(me.id, me.email):
        raise _unverified(svc, "confirm your address first: open the link mailed to it")
    if not await svc.sharing.decline(invite_id, me.email):
        raise ApiError(404, "not_found", "no such invitation")
    svc.metrics.share_events.labels("declined").inc()


@post("/api/invite-links/preview", status_code=200, tags=["sharing"], security=BEARER)
async def preview_link(
    request: Request[Any, Any, Any], state: State, data: LinkToken
) -> LinkPreview:
    """The camera an invitation link shares and whose it is, without accepting it."""
    svc = services(state)
    user_id = await current_user(request, svc)
    await _token_limits(svc, request, user_id)
    target = await svc.sharing.target(token_hash=svc.pairing.hash(data.token.strip()))
    now = time.time()
    outcome = None
    if target is None or target.device.owner_id != target.invite.owner_id:
        outcome = AcceptOutcome.INVALID
    elif target.invite.expires_at <= now:
        outcome = AcceptOutcome.EXPIRED
    elif target.invite.owner_id == user_id:
        outcome = AcceptOutcome.OWN_CAMERA
    refusal = None if outcome is None else _refusal(svc, outcome)
    if refusal is not None:
        raise refusal
    assert target is not None
    return LinkPreview(
        name=target.device.name,
        model=target.device.model,
        owner_email=target.owner_email,
        expires_at=_iso(target.invite.expires_at) or "",
    )


@post("/api/invite-links/accept", status_code=200, tags=["sharing"], security=BEARER)
async def accept_link(request: Request[Any, Any, Any], state: State, data: LinkToken) -> PairedOut:
    """Accept an invitation link (single use): the camera joins the caller's list."""
    svc = services(state)
    me = await _accepting_user(svc, request)
    result = await svc.sharing.accept(
        token_hash=svc.pairing.hash(data.token.strip()),
        user_id=me.id,
        email=me.email,
        now=time.time(),
        max_viewers=svc.settings.max_viewers_per_device,
    )
    return await _accepted(svc, result, me.id)


SHARING_ROUTES = [
    sharing,
    invite,
    cancel_invite,
    remove_viewer,
    received_invites,
    accept_invite,
    decline_invite,
    preview_link,
    accept_link,
]

__all__ = ["SHARING_ROUTES", "DeviceOut"]
