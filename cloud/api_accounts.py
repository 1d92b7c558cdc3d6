"""The HTTP API of accounts: sign-up, sign-in, token refresh, sign-out, the account itself.

A sign-in gives a short-lived access token (JWT, ``MUMU_JWT_TTL``, naming its sign-in) in the
body and a refresh token in an ``HttpOnly; SameSite=Strict`` cookie scoped to ``/api/auth``
(page scripts cannot read it, other sites cannot send it; a sibling subdomain, which is the same
site, is refused by its ``Origin``: see ``_same_origin``).  ``POST /api/auth/refresh`` rotates
the refresh token and returns a new access token, so a browser stays signed in for
``MUMU_REFRESH_TTL`` after its last use.  Rotation rules (``cloud.store.SqlStore.rotate_refresh``
is a compare-and-swap):

- the current token: rotated, a new access token;
- the token it replaced, within ``MUMU_REFRESH_GRACE`` of the rotation (two tabs refreshing at
  once): a new access token, the cookie left alone (the other tab's rotation set it);
- any other genuine token of the sign-in (a copy replayed after it was rotated): the sign-in is
  revoked and its sockets closed; whoever holds the newer token must sign in again too.

Sign-out, sign-out everywhere, signing one browser out from another, a password change, a
password reset and deleting the account revoke sign-ins; ``cloud.identity`` refuses their access
tokens from that moment, and their viewer sockets close.  Whenever the account's sign-ins change
its other viewer sockets hear ``sign_ins_changed`` (the account page reads its list again).

Addresses are proven by one-time links mailed to them (``cloud.account_links``): at sign-up, on
"Send again", before a new address replaces the old one, and by a password reset.  Nothing here
tells a stranger whether an address has an account: signing up with a taken address answers
like a new one (after hashing the password all the same) and mails the owner instead; asking
for a reset answers the same for any address; a new address that has an account is recorded as
pending like any other, but no link is mailed to it.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie, State
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from cloud import auth
from cloud.account_links import AccountLink, LinkOutcome, LinkResult, Purpose, new_token, token_hash
from cloud.api import BEARER, _bearer, _client, _iso, _limit, checked_text, current_identity
from cloud.api import services as services_of
from cloud.errors import ApiError
from cloud.identity import Identity
from cloud.link_origin import link_origin
from cloud.mail import templates
from cloud.mail.message import Mail
from cloud.services import Services
from cloud.store import DuplicateError, SignIn, User

REFRESH_COOKIE = "mumu_refresh"
COOKIE_PATH = "/api/auth"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]
AnyPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]

#: Why a sign-in ended, in words for the person whose browser it was.
REVOKED_WORDS = {
    "signed_out": "you signed out",
    "signed_out_everywhere": "you signed out everywhere",
    "password_changed": "the password of this account was changed, which signs out every browser",
    "refresh_reused": "this sign-in was used from two places, so it was ended to keep the "
    "account safe",
    "too_many": "this account signed in on too many browsers, so the oldest sign-in ended",
    "password_reset": "the password of this account was reset, which signs out every browser",
    "revoked": "this browser was signed out from another browser of this account",
}
#: What could be a sign-in id (``auth.new_sign_in_id`` makes 22 of A-Z a-z 0-9 - _); anything
#: else is not looked up.
_SIGN_IN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password


class EmailOut(msgspec.Struct):
    email: str


class Address(msgspec.Struct, forbid_unknown_fields=True):
    email: Email


LinkToken = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class LinkIn(msgspec.Struct, forbid_unknown_fields=True):
    token: LinkToken


class ResetIn(msgspec.Struct, forbid_unknown_fields=True):
    token: LinkToken
    password: Password


class EmailChange(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: AnyPassword


class PendingOut(msgspec.Struct):
    pending_email: str


class TokenOut(msgspec.Struct):
    access_token: str
    token_type: str
    #: Seconds the access token is valid.
    expires_in: int
    #: Seconds the sign-in lasts without being used (the refresh cookie's lifetime).
    refresh_expires_in: int


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: AnyPassword
    new_password: Password


class PasswordConfirmation(msgspec.Struct, forbid_unknown_fields=True):
    password: AnyPassword


class SignInOut(msgspec.Struct):
    #: Names it for ``DELETE /api/account/sign-ins/{id}`` (not a secret: a refresh token is
    #: this id, 256 random bits and a MAC; only the owner's account page sees it).
    id: str
    created_at: str
    last_used_at: str
    user_agent: str | None
    #: The sign-in of the access token that asked.
    current: bool


class AccountOut(msgspec.Struct):
    user_id: str
    email: str
    created_at: str
    sign_ins: list[SignInOut]
    #: Whether the person proved the address (opened a link mailed to it).
    email_verified: bool
    #: A new address waiting for its link to be opened (the old one stays until then).
    pending_email: str | None


# --- helpers -----------------------------------------------------------------------------------


def _email(value: str) -> str:
    email = checked_text("email", value).lower()
    if not _EMAIL.match(email):
        raise ApiError(422, "invalid_input", "email: not an e-mail address")
    return email


def _new_password(value: str) -> str:
    if "\x00" in value:
        raise ApiError(422, "invalid_input", "password: must not contain NUL characters")
    if len(set(value)) < 4:
        raise ApiError(422, "invalid_input", "password: too weak (use more different characters)")
    return value


def _secure(svc: Services, request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https" or (svc.settings.public_url or "").startswith("https:")


def _origin(url: str) -> str:
    """``scheme://host[:port]`` in lower case, without the scheme's default port."""
    parts = urlsplit(url.strip().lower())
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def app_origins(svc: Services, request: Request[Any, Any, Any]) -> set[str]:
    """The origins of the web app's own pages: ``MUMU_PUBLIC_URL`` when set, and the origin
    this request was sent to (its scheme and ``Host``; behind a trusted proxy, its
    ``X-Forwarded-Proto``).  A page elsewhere cannot make a browser send another ``Host``
    with this cloud's cookie, so the second is as safe and keeps a LAN address working."""
    own = _origin(f"{request.url.scheme}://{request.url.netloc}")
    public = _origin(svc.settings.public_url) if svc.settings.public_url else ""
    return {o for o in (own, public) if o}


def _same_origin(svc: Services, request: Request[Any, Any, Any], *, required: bool = True) -> None:
    """Refuse (403 ``cross_origin``) a request made by another origin's page.

    The refresh cookie is ``SameSite=Strict``, but a *sibling* subdomain is the same site, so
    its form post carries the cookie.  A browser names the page that made a POST in ``Origin``
    (always, also for same-origin ``fetch``) and, in current browsers, ``Sec-Fetch-Site``;
    pages cannot forge either.  Allowed: ``Origin`` equal to the app's origin
    (:func:`app_origins`), or ``Sec-Fetch-Site: same-origin``.  ``required``: a request with
    neither header is refused too (a cookie-authenticated change); otherwise (sign-in, which
    only sets the cookie) it is a script or a command-line client, and allowed."""
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.strip().lower() == "same-origin":
        return
    if origin is not None and _origin(origin) in app_origins(svc, request):
        return
    if origin is None and fetch_site is None and not required:
        return
    expected = " or ".join(sorted(app_origins(svc, request)))
    raise ApiError(
        403,
        "cross_origin",
        "this request must come from the web app's own pages (its Origin is "
        f"{(origin or 'missing')[:100]}; expected {expected})",
    )


def _refresh_cookie(svc: Services, request: Request[Any, Any, Any], token: str | None) -> Cookie:
    """The refresh cookie carrying ``token``, or one that deletes it."""
    return Cookie(
        key=REFRESH_COOKIE,
        value=token or "",
        path=COOKIE_PATH,
        max_age=svc.settings.refresh_ttl_s if token else 0,
        httponly=True,
        secure=_secure(svc, request),
        samesite="strict",
    )


def _tokens(
    svc: Services,
    request: Request[Any, Any, Any],
    user_id: str,
    sign_in: str,
    refresh_token: str | None,
    status_code: int = 200,
) -> Response[TokenOut]:
    """An access token in the body; the refresh token (when there is a new one) in the cookie."""
    s = svc.settings
    body = TokenOut(
        access_token=svc.tokens.issue(user_id, sign_in),
        token_type="bearer",
        expires_in=s.jwt_ttl_s,
        refresh_expires_in=s.refresh_ttl_s,
    )
    cookies = [] if refresh_token is None else [_refresh_cookie(svc, request, refresh_token)]
    return Response(
        body, status_code=status_code, cookies=cookies, headers={"Cache-Control": "no-store"}
    )


def _signed_out(
    svc: Services,
    request: Request[Any, Any, Any],
    code: str,
    message: str,
    event: str,
) -> ApiError:
    svc.metrics.auth_events.labels(event).inc()
    cookie = _refresh_cookie(svc, request, None).to_header(header="")
    return ApiError(401, code, message, headers={"Set-Cookie": cookie.strip()})


async def _start_sign_in(
    svc: Services, request: Request[Any, Any, Any], user_id: str, *, announce: bool = True
) -> tuple[str, str]:
    """A new sign-in for this browser; its id and refresh token.  Sign-ins beyond the account's
    cap are revoked (least recently used first) and their sockets closed; the account's other
    sockets hear ``sign_ins_changed`` (unless ``announce`` is False: the caller tells them
    after it closed more)."""
    now = time.time()
    sign_in_id = auth.new_sign_in_id()
    refresh = svc.refresh.mint(sign_in_id)
    agent = re.sub(r"[^\x20-\x7e]", "", request.headers.get("user-agent", ""))[:256] or None
    dropped = await svc.store.create_sign_in(
        SignIn(
            id=sign_in_id,
            user_id=user_id,
            refresh_hash=svc.refresh.hash(refresh),
            previous_hash=None,
            rotated_at=None,
            created_at=now,
            last_used_at=now,
            expires_at=now + svc.settings.refresh_ttl_s,
            revoked_at=None,
            revoke_reason=None,
            user_agent=agent,
        ),
        svc.settings.max_sign_ins,
    )
    for old in dropped:
        await svc.hub.close_viewer_sockets(user_id, sign_in=old)
    if announce:
        await svc.hub.sign_ins_changed(user_id)
    return sign_in_id, refresh


async def _confirm_password(
    svc: Services, request: Request[Any, Any, Any], identity: Identity, password: str
) -> User:
    """The account, if ``password`` is its password.  Each try is a guess, bounded by a bucket
    of the caller's own sign-in (``MUMU_CONFIRM_RATE``), never by the account's sign-in bucket:
    strangers spend that one with wrong passwords, and must not stop the owner confirming."""
    user = await svc.store.user_by_id(identity.user_id)
    if user is None:
        raise ApiError(401, "unauthorized", "that account no longer exists")
    await _limit(
        svc, (svc.settings.confirm_rate, "confirm-sign-in", identity.sign_in or identity.user_id)
    )
    if not await svc.passwords.verify(user.password_hash, password):
        raise ApiError(403, "wrong_password", "that is not the password of this account")
    return user


# --- one-time links ----------------------------------------------------------------------------


async def _mail_allowed(svc: Services, scope: str, user_id: str, purpose: Purpose) -> bool:
    """Whether the account's mail bucket ``scope`` allows one more mail; when spent, nothing is
    mailed (counted) and the caller answers as if it had been: a stranger learns nothing."""
    verdict = await svc.limits.hit((svc.settings.mail_rate_per_account, scope, user_id))
    if not verdict.allowed:
        svc.metrics.rate_limited.labels(scope).inc()
        svc.metrics.account_links.labels(purpose, "not_sent").inc()
    return verdict.allowed


async def _new_link(svc: Services, user_id: str, purpose: Purpose, to: str, now: float) -> str:
    """Store a new link (its hash only); its token, for the mail."""
    token = new_token()
    ttl = svc.settings.reset_link_ttl_s if purpose == "reset" else svc.settings.verify_link_ttl_s
    hash_ = token_hash(token)
    assert hash_ is not None
    await svc.links.create(AccountLink(hash_, user_id, purpose, to, now, now + ttl))
    svc.metrics.account_links.labels(purpose, "created").inc()
    return token


async def _send_link(
    svc: Services,
    request: Request[Any, Any, Any],
    user_id: str,
    purpose: Purpose,
    to: str,
    now: float,
    *,
    kind: str | None = None,
    old: str = "",
) -> None:
    """Make a link and mail it to ``to`` (the outbox sends it; this never waits for SMTP)."""
    token = await _new_link(svc, user_id, purpose, to, now)
    s = svc.settings
    hours = max(1, s.verify_link_ttl_s // 3600)
    page = "reset" if purpose == "reset" else "verify"
    link = f"{link_origin(svc, request)}/#/{page}/{token}"
    mail: Mail
    if kind == "already_registered":
        mail = templates.already_registered(to, link)
    elif purpose == "reset":
        mail = templates.reset_password(to, link, max(1, s.reset_link_ttl_s // 60))
    elif purpose == "email":
        mail = templates.confirm_new_address(to, old, link, hours)
    else:
        mail = templates.verify_address(to, link, hours)
    svc.mail.send(mail)


_LINK_REFUSALS = {
    LinkOutcome.INVALID: (400, "link_invalid", "that link is not valid; ask for a new one"),
    LinkOutcome.EXPIRED: (410, "link_expired", "that link expired; ask for a new one"),
    LinkOutcome.USED: (410, "link_used", "that link was used already; ask for a new one"),
    LinkOutcome.EMAIL_TAKEN: (
        409,
        "email_taken",
        "another account has that address now, so it cannot become this account's",
    ),
}
_LINK_METRIC = {
    LinkOutcome.INVALID: "invalid",
    LinkOutcome.EXPIRED: "expired",
    LinkOutcome.USED: "used_again",
    LinkOutcome.EMAIL_TAKEN: "email_taken",
}


def _link_hash(svc: Services, token: str, purpose: Purpose) -> str:
    hash_ = token_hash(token)
    if hash_ is None:
        svc.metrics.account_links.labels(purpose, "invalid").inc()
        status, code, message = _LINK_REFUSALS[LinkOutcome.INVALID]
        raise ApiError(status, code, message)
    return hash_


def _used(svc: Services, result: LinkResult, purpose: Purpose, *, final: bool) -> AccountLink:
    """The link of a successful ``result``; else the refusal, counted."""
    if result.outcome is LinkOutcome.DONE and result.link is not None:
        if final:
            svc.metrics.account_links.labels(result.link.purpose, "used").inc()
        return result.link
    label = result.link.purpose if result.link is not None else purpose
    svc.metrics.account_links.labels(label, _LINK_METRIC[result.outcome]).inc()
    status, code, message = _LINK_REFUSALS[result.outcome]
    raise ApiError(status, code, message)


@post("/api/auth/verify", status_code=200, tags=["auth"])
async def verify(request: Request[Any, Any, Any], state: State, data: LinkIn) -> EmailOut:
    """Open a link that proves an address: the account's own, or a new one, which then replaces
    the old (and the old address is told).  No sign-in needed."""
    svc = services_of(state)
    await _limit(svc, (svc.settings.link_rate_per_address, "link-addr", _client(request)))
    hash_ = _link_hash(svc, data.token, "verify")
    now = time.time()
    result = await svc.links.verify(hash_, now)
    link = _used(svc, result, "verify", final=True)
    if link.purpose == "email" and result.old_email is not None:
        svc.mail.send(
            templates.address_changed(result.old_email, link.email, link_origin(svc, request))
        )
        svc.metrics.auth_events.labels("address_changed").inc()
    else:
        svc.metrics.auth_events.labels("address_verified").inc()
    return EmailOut(email=link.email)


@post("/api/auth/forgot", status_code=202, tags=["auth"])
async def forgot(request: Request[Any, Any, Any], state: State, data: Address) -> dict[str, str]:
    """Mail a password-reset link to the address if it has an account; the same answer whether
    or not it has (a reset link is the only thing that ever reaches the mailbox)."""
    svc = services_of(state)
    email = _email(data.email)
    await _limit(svc, (svc.settings.forgot_rate_per_address, "forgot-addr", _client(request)))
    user = await svc.store.user_by_email(email)
    if user is not None and await _mail_allowed(svc, "mail-others", user.id, "reset"):
        await _send_link(svc, request, user.id, "reset", email, time.time())
    svc.metrics.auth_events.labels("reset_asked").inc()
    return {}


@post("/api/auth/reset", status_code=200, tags=["auth"])
async def reset_password(request: Request[Any, Any, Any], state: State, data: ResetIn) -> EmailOut:
    """Choose a new password with a reset link: every sign-in of the account is revoked and its
    sockets closed, as a password change does (the browser then signs in); the address counts
    as proven."""
    svc = services_of(state)
    await _limit(svc, (svc.settings.link_rate_per_address, "link-addr", _client(request)))
    password = _new_password(data.password)
    hash_ = _link_hash(svc, data.token, "reset")
    # Only a link that works costs a password hash; using it is decided after, atomically.
    _used(svc, await svc.links.check(hash_, ("reset",), time.time()), "reset", final=False)
    password_hash = await svc.passwords.hash(password)
    result = await svc.links.reset_password(hash_, password_hash, "password_reset", time.time())
    link = _used(svc, result, "reset", final=True)
    await svc.hub.close_viewer_sockets(link.user_id)
    await svc.hub.sign_ins_changed(link.user_id)
    svc.metrics.auth_events.labels("password_reset").inc()
    return EmailOut(email=link.email)


# --- sign-up and sign-in -----------------------------------------------------------------------


@post("/api/auth/register", status_code=HTTP_201_CREATED, tags=["auth"])
async def register(request: Request[Any, Any, Any], state: State, data: Credentials) -> EmailOut:
    """Create an account (passwords are kept as argon2id hashes) and mail it a link proving its
    address.  An address that has an account answers the same (the password is hashed all the
    same, so it takes as long) and its owner gets a mail instead: nothing changes."""
    svc = services_of(state)
    email = _email(data.email)
    password = _new_password(data.password)
    await _limit(svc, (svc.settings.register_rate_per_address, "register-addr", _client(request)))
    user_id = uuid.uuid4().hex
    password_hash = await svc.passwords.hash(password)
    now = time.time()
    try:
        await svc.store.create_user(user_id, email, password_hash, now)
    except DuplicateError:
        owner = await svc.store.user_by_email(email)
        if owner is not None and await _mail_allowed(svc, "mail-others", owner.id, "reset"):
            await _send_link(svc, request, owner.id, "reset", email, now, kind="already_registered")
        svc.metrics.auth_events.labels("register_existing").inc()
    else:
        if await _mail_allowed(svc, "mail-account", user_id, "verify"):
            await _send_link(svc, request, user_id, "verify", email, now)
        svc.metrics.auth_events.labels("register").inc()
    return EmailOut(email=email)


@post("/api/auth/login", status_code=200, tags=["auth"])
async def login(
    request: Request[Any, Any, Any], state: State, data: Credentials
) -> Response[TokenOut]:
    """E-mail and password for an access token and a refresh cookie (a new sign-in)."""
    svc = services_of(state)
    _same_origin(svc, request, required=False)  # another page must not sign this browser in
    email = _email(data.email)
    s = svc.settings
    await _limit(
        svc,
        (s.login_rate, "login-account", email),
        (s.login_rate_per_address, "login-addr", _client(request)),
    )
    user = await svc.store.user_by_email(email)
    if not await svc.passwords.verify(user.password_hash if user else None, data.password):
        svc.metrics.auth_events.labels("login_failed").inc()
        raise ApiError(401, "bad_credentials", "wrong e-mail or password")
    assert user is not None
    sign_in, refresh = await _start_sign_in(svc, request, user.id)
    await svc.store.record_login(user.id, time.time())
    svc.metrics.auth_events.labels("login").inc()
    return _tokens(svc, request, user.id, sign_in, refresh)


@post("/api/auth/refresh", status_code=200, tags=["auth"])
async def refresh(request: Request[Any, Any, Any], state: State) -> Response[TokenOut]:
    """A new access token for the refresh cookie (which is rotated); see the module docs."""
    svc = services_of(state)
    _same_origin(svc, request)
    await _limit(svc, (svc.settings.refresh_rate_per_address, "refresh-addr", _client(request)))
    token = request.cookies.get(REFRESH_COOKIE, "")
    if not token:
        raise _signed_out(
            svc, request, "refresh_missing", "not signed in on this browser", "refresh_refused"
        )
    sign_in_id = svc.refresh.sign_in_of(token)
    if sign_in_id is None:
        raise _signed_out(
            svc, request, "refresh_invalid", "that sign-in is not valid", "refresh_refused"
        )
    now = time.time()
    presented = svc.refresh.hash(token)
    row = await svc.store.sign_in(sign_in_id)
    if row is not None and row.active(now) and presented == row.refresh_hash:
        rotated = svc.refresh.mint(sign_in_id)
        if await svc.store.rotate_refresh(
            sign_in_id, presented, svc.refresh.hash(rotated), now, now + svc.settings.refresh_ttl_s
        ):
            svc.metrics.auth_events.labels("refresh").inc()
            return _tokens(svc, request, row.user_id, sign_in_id, rotated)
        row = await svc.store.sign_in(sign_in_id)  # another request rotated it first
    if row is None:
        raise _signed_out(
            svc, request, "signed_out", "you were signed out; sign in again", "refresh_refused"
        )
    if row.revoked_at is not None:
        why = REVOKED_WORDS.get(row.revoke_reason or "", "you were signed out")
        raise _signed_out(svc, request, "signed_out", f"{why}; sign in again", "refresh_refused")
    if not row.active(now):
        raise _signed_out(
            svc,
            request,
            "sign_in_expired",
            "this sign-in expired after a long time unused; sign in again",
            "refresh_refused",
        )
    grace = svc.settings.refresh_grace_s
    if (
        presented == row.previous_hash
        and row.rotated_at is not None
        and now - row.rotated_at <= grace
    ):
        # Two tabs (or a retry) with the token that was current a moment ago.
        svc.metrics.auth_events.labels("refresh_grace").inc()
        await svc.store.touch_sign_in(sign_in_id, now)
        return _tokens(svc, request, row.user_id, sign_in_id, None)
    # A genuine token that was replaced a while ago: a copy of it is being replayed.
    await svc.store.revoke_sign_in(sign_in_id, "refresh_reused", now)
    await svc.hub.close_viewer_sockets(row.user_id, sign_in=sign_in_id)
    await svc.hub.sign_ins_changed(row.user_id)
    raise _signed_out(
        svc,
        request,
        "signed_out",
        f"{REVOKED_WORDS['refresh_reused']}; sign in again",
        "refresh_reused",
    )


@post("/api/auth/logout", status_code=HTTP_204_NO_CONTENT, tags=["auth"])
async def logout(request: Request[Any, Any, Any], state: State) -> Response[None]:
    """Sign this browser out: its sign-in is revoked on the server (every access token issued
    for it stops working, its viewer sockets close) and the cookie is deleted.  Works with the
    refresh cookie alone, so an expired access token does not stop anyone signing out; with the
    cookie, only from the app's own pages (``Origin``)."""
    svc = services_of(state)
    cookie = request.cookies.get(REFRESH_COOKIE, "")
    if cookie:
        _same_origin(svc, request)  # the cookie alone must not let another page sign us out
    sign_in_id = svc.refresh.sign_in_of(cookie)
    if sign_in_id is None and request.headers.get("authorization"):
        try:
            sign_in_id = (await svc.hub.authenticate(_bearer(request))).sign_in
        except auth.TokenError:
            sign_in_id = None
    if sign_in_id is not None:
        row = await svc.store.sign_in(sign_in_id)
        if row is not None and await svc.store.revoke_sign_in(
            sign_in_id, "signed_out", time.time()
        ):
            svc.metrics.auth_events.labels("sign_out").inc()
            await svc.hub.close_viewer_sockets(row.user_id, sign_in=sign_in_id)
            await svc.hub.sign_ins_changed(row.user_id)
    return Response(None, status_code=204, cookies=[_refresh_cookie(svc, request, None)])


@post("/api/auth/logout-all", status_code=HTTP_204_NO_CONTENT, tags=["auth"], security=BEARER)
async def logout_all(request: Request[Any, Any, Any], state: State) -> Response[None]:
    """Sign out every browser of the account, this one included."""
    svc = services_of(state)
    identity = await current_identity(request, svc)
    await svc.store.revoke_sign_ins(identity.user_id, "signed_out_everywhere", time.time())
    await svc.hub.close_viewer_sockets(identity.user_id)
    await svc.hub.sign_ins_changed(identity.user_id)  # for sockets opening meanwhile
    svc.metrics.auth_events.labels("sign_out_everywhere").inc()
    return Response(None, status_code=204, cookies=[_refresh_cookie(svc, request, None)])


# --- the account -------------------------------------------------------------------------------


@get("/api/account", tags=["account"], security=BEARER)
async def account(request: Request[Any, Any, Any], state: State) -> AccountOut:
    """The caller's account and the browsers signed in to it."""
    svc = services_of(state)
    identity = await current_identity(request, svc)
    user = await svc.store.user_by_id(identity.user_id)
    if user is None:
        raise ApiError(401, "unauthorized", "that account no longer exists")
    return AccountOut(
        user_id=user.id,
        email=user.email,
        email_verified=user.email_verified_at is not None,
        pending_email=await svc.links.pending_email(user.id, time.time()),
        created_at=_iso(user.created_at) or "",
        sign_ins=[
            SignInOut(
                id=s.id,
                created_at=_iso(s.created_at) or "",
                last_used_at=_iso(s.last_used_at) or "",
                user_agent=s.user_agent,
                current=s.id == identity.sign_in,
            )
            for s in await svc.store.active_sign_ins(user.id, time.time())
        ],
    )


@post("/api/account/password", status_code=200, tags=["account"], security=BEARER)
async def change_password(
    request: Request[Any, Any, Any], state: State, data: PasswordChange
) -> Response[TokenOut]:
    """Change the password: every sign-in of the account is revoked and every viewer socket
    of it closed; the caller gets a new sign-in (new tokens) and stays signed in."""
    svc = services_of(state)
    identity = await current_identity(request, svc)
    new_password = _new_password(data.new_password)
    user = await _confirm_password(svc, request, identity, data.current_password)
    if new_password == data.current_password:
        raise ApiError(422, "invalid_input", "new_password: choose a different password")
    password_hash = await svc.passwords.hash(new_password)
    if not await svc.store.change_password(user.id, password_hash, time.time(), "password_changed"):
        raise ApiError(401, "unauthorized", "that account no longer exists")
    sign_in, refresh_token = await _start_sign_in(svc, request, user.id, announce=False)
    await svc.hub.close_viewer_sockets(user.id, keep=sign_in)
    await svc.hub.sign_ins_changed(user.id)
    svc.metrics.auth_events.labels("password_changed").inc()
    return _tokens(svc, request, user.id, sign_in, refresh_token)


@delete(
    "/api/account/sign-ins/{sign_in_id:str}",
    status_code=HTTP_204_NO_CONTENT,
    tags=["account"],
    security=BEARER,
)
async def revoke_sign_in(request: Request[Any, Any, Any], state: State, sign_in_id: str) -> None:
    """Sign out one browser of the account from another ("Sign out" beside it on the account
    page): its access tokens are refused from now on, its refresh is refused saying why
    (``REVOKED_WORDS["revoked"]``), its viewer sockets close (``SIGNED_OUT``), and the
    account's other sockets hear ``sign_ins_changed``.  A sign-in of another account, or one
    that ended already, is 404 (the same answer as no such sign-in)."""
    svc = services_of(state)
    identity = await current_identity(request, svc)
    now = time.time()
    row = await svc.store.sign_in(sign_in_id) if _SIGN_IN_ID.match(sign_in_id) else None
    if row is None or row.user_id != identity.user_id or not row.active(now):
        raise ApiError(404, "not_found", "no such sign-in of this account")
    reason = "signed_out" if sign_in_id == identity.sign_in else "revoked"
    if not await svc.store.revoke_sign_in(sign_in_id, reason, now):
        raise ApiError(404, "not_found", "no such sign-in of this account")
    svc.metrics.auth_events.labels("sign_in_revoked").inc()
    await svc.hub.close_viewer_sockets(identity.user_id, sign_in=sign_in_id)
    await svc.hub.sign_ins_changed(identity.user_id)


@post("/api/account/verification", status_code=202, tags=["account"], security=BEARER)
async def send_verification(request: Request[Any, Any, Any], state: State) -> dict[str, str]:
    """Mail the link that proves the account's address again ("Send again")."""
    svc = services_of(state)
    identity = await current_identity(request, svc)
    user = await svc.store.user_by_id(identity.user_id)
    if user is None:
        raise ApiError(401, "unauthorized", "that account no longer exists")
    if user.email_verified_at is not None:
        raise ApiError(409, "already_verified", "this account's address is confirmed already")
    await _limit(svc, (svc.settings.mail_rate_per_account, "mail-account", user.id))
    await _send_link(svc, request, user.id, "verify", user.email, time.time())
    return {}


@post("/api/account/email", status_code=202, tags=["account"], security=BEARER)
async def change_email(
    request: Request[Any, Any, Any], state: State, data: EmailChange
) -> PendingOut:
    """Ask to use another address (the password confirms it): a link goes to the new address,
    and the old one stays until it is opened.  A new address that has an account gets no link
    (the answer is the same: nobody learns that it has one); the change just stays pending."""
    svc = services_of(state)
    identity = await current_identity(request, svc)
    new = _email(data.email)
    user = await _confirm_password(svc, request, identity, data.password)
    if new == user.email:
        raise ApiError(422, "invalid_input", "email: that is this account's address already")
    await _limit(svc, (svc.settings.mail_rate_per_account, "mail-account", user.id))
    now = time.time()
    if await svc.store.user_by_email(new) is None:
        await _send_link(svc, request, user.id, "email", new, now, old=user.email)
    else:
        await _new_link(svc, user.id, "email", new, now)
        svc.metrics.account_links.labels("email", "not_sent").inc()
    svc.metrics.auth_events.labels("address_change_asked").inc()
    return PendingOut(pending_email=new)


@post("/api/account/delete", status_code=HTTP_204_NO_CONTENT, tags=["account"], security=BEARER)
async def delete_account(
    request: Request[Any, Any, Any], state: State, data: PasswordConfirmation
) -> Response[None]:
    """Delete the account (its password confirms it): its cameras are unpaired and their
    sessions end (their viewers' too), it stops viewing cameras shared with it, every sign-in
    and socket of it is closed, its data is deleted."""
    svc = services_of(state)
    identity = await current_identity(request, svc)
    user = await _confirm_password(svc, request, identity, data.password)
    # who must hear that their list changed: the viewers of its cameras, the owners of the
    # cameras it viewed (read before the rows go)
    viewers = await svc.store.viewers_of([d.id for d in await svc.store.devices_of(user.id)])
    deleted = await svc.store.delete_user(user.id)
    if deleted is None:
        raise ApiError(401, "unauthorized", "that account no longer exists")
    owners = await svc.store.owners_of(deleted.viewed)
    for device_id in deleted.owned:
        await svc.hub.device_unpaired(device_id)
        await svc.hub.devices_changed(viewers.get(device_id, []), device_id)
    for device_id in deleted.viewed:
        await svc.hub.watch.end_viewer_sessions(device_id, user.id, "access_revoked")
        await svc.hub.devices_changed([owners.get(device_id)], device_id)
    await svc.hub.close_viewer_sockets(user.id)
    svc.metrics.auth_events.labels("account_deleted").inc()
    return Response(None, status_code=204, cookies=[_refresh_cookie(svc, request, None)])


ACCOUNT_ROUTES = [
    register,
    login,
    refresh,
    logout,
    logout_all,
    account,
    revoke_sign_in,
    change_password,
    delete_account,
    verify,
    forgot,
    reset_password,
    send_verification,
    change_email,
]
