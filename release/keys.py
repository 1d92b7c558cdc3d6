"""Signing keys on disk: ed25519, PKCS#8 PEM, encrypted when ``MUMU_KEY_PASSWORD`` is set.

Each key is ``<name>.key`` (private, mode 0600) beside ``<name>.pub.json`` (the public key as
TUF writes it into ``root.json``: what a key holder hands to whoever assembles root).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

PASSWORD_ENV = "MUMU_KEY_PASSWORD"


class KeyError_(Exception):
    """A key cannot be read or written (one-line message)."""


def _password(env: Mapping[str, str] | None = None) -> bytes | None:
    value = (os.environ if env is None else env).get(PASSWORD_ENV)
    return value.encode() if value else None


def generate(directory: Path, name: str) -> CryptoSigner:
    """A new ed25519 key saved as ``<directory>/<name>.key`` (+ ``.pub.json``)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{name}.key"
    if path.exists():
        raise KeyError_(f"{path} exists already: refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    signer = CryptoSigner(private)
    password = _password()
    pem = private.private_bytes(
        Encoding.PEM,
        PrivateFormat.PKCS8,
        BestAvailableEncryption(password) if password else NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = directory / f"{name}.pub.json"
    public.write_text(json.dumps(public_dict(signer.public_key), indent=2) + "\n")
    return signer


def public_dict(key: Key) -> dict[str, object]:
    return {"keyid": key.keyid, **key.to_dict()}


def load_public(path: Path) -> Key:
    raw = json.loads(path.read_text())
    keyid = raw.pop("keyid")
    return SSlibKey.from_dict(keyid, raw)


def load(path: Path) -> CryptoSigner:
    """The signer in a ``.key`` file."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        private = load_pem_private_key(pem, _password())
    except (ValueError, TypeError) as exc:
        hint = f" (is {PASSWORD_ENV} right?)" if b"ENCRYPTED" in pem else ""
        raise KeyError_(f"{path}: not a usable private key{hint}: {exc}") from None
    return CryptoSigner(private)
