"""Passwords (argon2id), access tokens (JWT, HS256 pinned), refresh tokens (random, MACed,
stored hashed) and device tokens (random, hashed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, memory-hard (64 MiB, 3 passes)
#: Verified against when the account does not exist, so timing does not reveal which e-mails exist.
_DUMMY_HASH = _hasher.hash("not a real password, only a timing stand-in")
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class TokenError(Exception):
    """The access token is missing, malformed, tampered with, of another algorithm or expired,
    or its sign-in was revoked."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    #: The sign-in the token was issued for (``sid``); ``None`` in tokens from before sign-ins.
    sign_in: str | None


@dataclass(frozen=True)
class TokenIssuer:
    secret: str
    ttl_s: int

    def issue(self, user_id: str, sign_in: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": user_id,
            "sid": sign_in,
            "iat": issued,
            "exp": issued + self.ttl_s,
            "typ": "access",
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> AccessClaims:
        """The account and sign-in of a valid token; raises ``TokenError`` otherwise."""
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("your session has expired; sign in again") from None
        except jwt.PyJWTError:
            raise TokenError("invalid access token") from None
        if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
            raise TokenError("invalid access token")
        sign_in = claims.get("sid")
        if sign_in is not None and not isinstance(sign_in, str):
            raise TokenError("invalid access token")
        return AccessClaims(str(claims["sub"]), sign_in)


def new_sign_in_id() -> str:
    return secrets.token_urlsafe(16)


class RefreshTokens:
    """Refresh tokens ``<sign-in id>.<random>.<mac>``.

    The random part (256 bits) is what makes a token valid; the database keeps only its SHA-256
    (``hash``).  The MAC, keyed with a server secret, proves a token was issued by this cloud,
    so that presenting an *old* genuine token (a stolen copy being replayed, or the owner's copy
    after a thief rotated it) can revoke the sign-in, while a made-up token naming somebody's
    sign-in id (which access tokens carry openly) is merely refused.
    """

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"mumu refresh tokens", hashlib.sha256).digest()

    def _mac(self, sign_in: str, nonce: str) -> str:
        digest = hmac.new(self._key, f"{sign_in}.{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def mint(self, sign_in: str) -> str:
        nonce = secrets.token_urlsafe(32)
        return f"{sign_in}.{nonce}.{self._mac(sign_in, nonce)}"

    def sign_in_of(self, token: str) -> str | None:
        """The sign-in id of a genuine token, or ``None`` for anything this cloud did not mint."""
        parts = token.split(".")
        if len(parts) != 3 or not all(parts) or len(token) > 256:
            return None
        sign_in, nonce, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac(sign_in, nonce).encode()):
            return None
        return sign_in

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()


def new_device_token() -> str:
    return secrets.token_urlsafe(32)


def hash_device_token(token: str) -> str:
    """Device tokens are 256 random bits, so a plain SHA-256 is enough (no guessing to slow)."""
    return hashlib.sha256(token.encode()).hexdigest()


def device_token_matches(stored_hash: str, token: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_device_token(token))


class PairingHasher:
    """Keyed hashes of pairing codes and claim tokens: looked up by hash, compared in constant time.

    A 6-digit code has too little entropy to store as a plain hash; keying it with a server
    secret means a leaked table does not reveal live codes.
    """

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"mumu pairing codes", hashlib.sha256).digest()

    def hash(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()


def new_pairing_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def new_claim_token() -> str:
    return secrets.token_urlsafe(32)
