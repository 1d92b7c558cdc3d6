"""Signing keys: ed25519 PKCS#8 PEM files, or keys that never leave a PKCS#11 token.

A PEM key is ``<name>.key`` (private, mode 0600, encrypted with ``MUMU_KEY_PASSWORD`` or a
password typed at the prompt) beside ``<name>.pub.json`` (the public key as TUF writes it into
``root.json``: what a key holder hands to whoever assembles root).

A token key is named by its URI, ``hsm:<key id>?label=<token label>`` (securesystemslib's
:class:`~securesystemslib.signer.HSMSigner`: an ECDSA P-256/P-384 key, the PKCS#11 module named
by ``PYKCS11LIB``, the user PIN from ``MUMU_PKCS11_PIN`` or the prompt).  Wherever a command takes
a private key (``--targets-key``, ``--online-key``, ``root sign --key``) it takes either.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib import parse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.exceptions import UnsupportedLibraryError
from securesystemslib.signer import (
    CryptoSigner,
    HSMSigner,
    Key,
    SecretsHandler,
    Signature,
    Signer,
    SSlibKey,
)

PASSWORD_ENV = "MUMU_KEY_PASSWORD"
PIN_ENV = "MUMU_PKCS11_PIN"
MODULE_ENV = "PYKCS11LIB"  # securesystemslib's name for the PKCS#11 module's path
TOKEN_SCHEME = HSMSigner.SCHEME


class KeyError_(Exception):
    """A key cannot be read or written (one-line message)."""


def _password(env: Mapping[str, str] | None = None) -> bytes | None:
    value = (os.environ if env is None else env).get(PASSWORD_ENV)
    return value.encode() if value else None


def _interactive() -> bool:
    return sys.stdin.isatty()


def new_password(name: str) -> bytes | None:
    """The password a new key is encrypted with: ``MUMU_KEY_PASSWORD``, else typed twice at
    the prompt (a terminal), else none."""
    password = _password()
    if password or not _interactive():
        return password
    first = getpass.getpass(f"password for the new key {name} (empty: none): ")
    if first and getpass.getpass("again: ") != first:
        raise KeyError_("the two passwords differ")
    return first.encode() or None


def generate(
    directory: Path, name: str, *, password: bytes | Literal["env"] | None = "env"
) -> CryptoSigner:
    """A new ed25519 key saved as ``<directory>/<name>.key`` (+ ``.pub.json``).

    ``password``: the bytes to encrypt it with, ``None`` for none, ``"env"`` (default) for
    ``MUMU_KEY_PASSWORD`` if set (never a prompt: the command line asks, :func:`new_password`)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{name}.key"
    if path.exists():
        raise KeyError_(f"{path} exists already: refusing to overwrite a key")
    secret = _password() if password == "env" else password
    private = Ed25519PrivateKey.generate()
    signer = CryptoSigner(private)
    pem = private.private_bytes(
        Encoding.PEM,
        PrivateFormat.PKCS8,
        BestAvailableEncryption(secret) if secret else NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    write_public(signer.public_key, directory / f"{name}.pub.json")
    return signer


def public_dict(key: Key) -> dict[str, object]:
    return {"keyid": key.keyid, **key.to_dict()}


def write_public(key: Key, path: Path) -> None:
    path.write_text(json.dumps(public_dict(key), indent=2) + "\n")


def load_public(path: Path) -> Key:
    try:
        raw = json.loads(path.read_text())
        keyid = raw.pop("keyid")
        return SSlibKey.from_dict(keyid, raw)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyError_(f"{path}: not a public key (.pub.json): {exc}") from None


def is_token_uri(spec: str | Path) -> bool:
    return str(spec).startswith(f"{TOKEN_SCHEME}:")


def _pin(_what: str) -> str:
    pin = os.environ.get(PIN_ENV)
    if pin:
        return pin
    if not _interactive():
        raise KeyError_(f"the token's user PIN: set {PIN_ENV} (or run at a terminal)")
    return getpass.getpass("token user PIN: ")


def token_public(uri: str) -> Key:
    """The public key of the token key ``uri`` (read from the token)."""
    if not os.environ.get(MODULE_ENV):
        raise KeyError_(f"{uri}: set {MODULE_ENV} to the token's PKCS#11 module (.so)")
    parsed = parse.urlparse(uri)
    try:
        keyid = int(parsed.path) if parsed.path else HSMSigner.SCHEME_KEYID
    except ValueError:
        raise KeyError_(f"{uri}: not hsm:<key id>?label=<token label>") from None
    label = dict(parse.parse_qsl(parsed.query)).get("label")
    try:
        _, public = HSMSigner.import_(keyid, label, _pin)
    except UnsupportedLibraryError as exc:
        raise KeyError_(
            f"{uri}: {exc} (pip install 'mumu-camera[release]': python-pkcs11)"
        ) from None
    except Exception as exc:  # the PKCS#11 library raises its own family of errors
        raise KeyError_(f"{uri}: {type(exc).__name__}: {exc}") from None
    return public


class _TokenSigner(Signer):
    """An :class:`HSMSigner` whose failures are one-line :class:`KeyError_`."""

    def __init__(self, uri: str, inner: HSMSigner) -> None:
        self.uri = uri
        self.inner = inner

    @property
    def public_key(self) -> Key:
        return self.inner.public_key

    def sign(self, payload: bytes) -> Signature:
        try:
            return self.inner.sign(payload)
        except KeyError_:
            raise
        except Exception as exc:
            raise KeyError_(f"{self.uri}: cannot sign: {type(exc).__name__}: {exc}") from None

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: Key, secrets_handler: SecretsHandler | None = None
    ) -> Signer:
        """The signer, once the PIN has opened a session on the token (so a missing or wrong
        PIN is said before anything is signed, not half-way)."""
        pin = (secrets_handler or _pin)(HSMSigner.SECRETS_HANDLER_MSG)
        inner = HSMSigner.from_priv_key_uri(priv_key_uri, public_key, lambda _what: pin)
        try:
            with HSMSigner._find_token(inner.token_label).open(user_pin=pin):
                pass
        except Exception as exc:  # pkcs11.exceptions.PinIncorrect, PinLocked, ...
            raise KeyError_(
                f"{priv_key_uri}: the token refused the PIN ({type(exc).__name__})"
            ) from None
        return cls(priv_key_uri, inner)


def public(spec: str | Path) -> Key:
    """A public key: a ``.pub.json`` file or a token key's URI."""
    if is_token_uri(spec):
        return token_public(str(spec))
    return load_public(Path(spec))


def load(spec: str | Path) -> Signer:
    """The signer for a ``.key`` file or a token key's URI."""
    if is_token_uri(spec):
        uri = str(spec)
        key = token_public(uri)
        return _TokenSigner.from_priv_key_uri(uri, key)
    path = Path(spec)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read: {exc.strerror or exc}") from None
    encrypted = b"ENCRYPTED" in pem
    # an unencrypted key (the server's online key) loads whatever password is set for others
    password = _password() if encrypted else None
    if password is None and encrypted and _interactive():
        password = getpass.getpass(f"password of {path}: ").encode()
    try:
        private = load_pem_private_key(pem, password)
    except (ValueError, TypeError) as exc:
        hint = f" (is {PASSWORD_ENV} right?)" if encrypted else ""
        raise KeyError_(f"{path}: not a usable private key{hint}: {exc}") from None
    return CryptoSigner(private)
