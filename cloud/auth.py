"""Passwords (argon2id), access tokens (JWT, HS256 pinned) and device tokens (random, hashed)."""

from __future__ import annotations

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
    """The access token is missing, malformed, tampered with, of another algorithm or expired."""


@dataclass(frozen=True)
class TokenIssuer:
    secret: str
    ttl_s: int

    def issue(self, user_id: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {"sub": user_id, "iat": issued, "exp": issued + self.ttl_s, "typ": "access"}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> str:
        """The user id in a valid token; raises ``TokenError`` otherwise."""
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
        return str(claims["sub"])


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
