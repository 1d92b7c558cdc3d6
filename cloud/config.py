"""The cloud's settings: environment variables (``MUMU_*``), optionally a YAML file beneath them.

Each setting is declared once, as a field of ``Settings`` (its variable, parser, default, unit
and help: ``cloud/setting.py``); ``load`` reads them all the same way, ``mumu-cloud --help`` and
``docs/settings.md`` (``python -m cloud.settings_table``) are written from the same declarations.
A setting added here appears in all three; ``tests/test_settings.py`` fails while the docs lag.

An invalid setting raises ``ConfigError`` whose text is one line naming the setting, which the
CLI prints before exiting.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cloud.setting import (
    METADATA_KEY,
    ConfigError,
    Declared,
    addresses,
    derived_setting,
    directory,
    directory_holding,
    existing_file,
    file_path,
    mail_address,
    networks,
    origin,
    rate,
    redis_server,
    setting,
    smtp_server,
    sql_database,
    text,
    url_list,
    whole,
    whole_as_float,
)

__all__ = ["CONFIG_FILE", "SECTIONS", "ConfigError", "Settings", "declarations", "load"]

DAY = 86400


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("mumu-cloud", appauthor=False))


@dataclass(frozen=True)
class Settings:
    # --- storage and processes -----------------------------------------------------------------
    data_dir: Path = derived_setting(
        "MUMU_DATA_DIR",
        directory(),
        lambda _: default_data_dir().expanduser(),
        "directory for the SQLite database and generated secrets",
        default_doc="a per-user data directory",
    )
    database_url: str = derived_setting(
        "MUMU_DATABASE_URL",
        sql_database(),
        lambda loaded: f"sqlite:///{loaded['data_dir'] / 'mumu.db'}",
        "the database: SQLite for one process, PostgreSQL (asyncpg) for one or several",
        default_doc="`sqlite:///MUMU_DATA_DIR/mumu.db`",
    )
    jwt_secret: str = derived_setting(
        "MUMU_JWT_SECRET",
        text(),
        lambda loaded: _stored_secret(loaded["data_dir"], "jwt-secret"),
        "HS256 key for access tokens; set the same one in every process when running several",
        default_doc="generated into MUMU_DATA_DIR (mode 0600)",
    )
    redis_url: str | None = setting(
        "MUMU_REDIS_URL",
        redis_server(),
        None,
        "presence and signaling routing shared between processes",
        default_doc="unset: in-process",
    )
    db_pool_size: int = setting(
        "MUMU_DB_POOL_SIZE",
        whole(1, 1000),
        10,
        "PostgreSQL connections per process (and up to twice that more in bursts)",
    )
    db_pool_timeout_s: int = setting(
        "MUMU_DB_POOL_TIMEOUT",
        whole(1, 120),
        5,
        "how long a request waits for a database connection, then 503",
        unit="s",
    )
    retry_after_s: int = setting(
        "MUMU_RETRY_AFTER",
        whole(1, 3600),
        5,
        "`Retry-After` of a 503 when the database or Redis fails",
        unit="s",
    )
    public_url: str | None = setting(
        "MUMU_PUBLIC_URL",
        origin(),
        None,
        "the web app's origin, for the claim links in QR codes and the links in mails; with "
        "the origin a request is sent to, the only pages that may refresh or sign out with the "
        "refresh cookie (others get 403 `cross_origin`)",
        default_doc="the request's origin; for mails only a loopback one, else the cloud's own "
        "address (security.md)",
    )
    trusted_proxies: tuple[str, ...] = setting(
        "MUMU_TRUSTED_PROXIES",
        networks(),
        (),
        "addresses whose `X-Forwarded-For` is believed (behind nginx, set nginx's address, "
        "e.g. 127.0.0.1)",
        default_doc="none",
    )
    web_dir: Path | None = setting(
        "MUMU_WEB_DIR",
        directory_holding("index.html", is_dir=False),
        None,
        "serve the web app from this directory at / (the demo; nginx serves it in production)",
        default_doc="unset: not served",
    )
    # --- accounts and sign-ins -----------------------------------------------------------------
    jwt_ttl_s: int = setting("MUMU_JWT_TTL", whole(10, DAY), 900, "access-token lifetime", unit="s")
    refresh_ttl_s: int = setting(
        "MUMU_REFRESH_TTL",
        whole(300, 365 * DAY),
        30 * DAY,
        "a sign-in lasts this long after its last use",
        unit="s",
    )
    refresh_grace_s: int = setting(
        "MUMU_REFRESH_GRACE",
        whole(0, 300),
        30,
        "how long a just-replaced refresh token still gets an access token (two tabs "
        "refreshing at once)",
        unit="s",
    )
    max_sign_ins: int = setting(
        "MUMU_MAX_SIGN_INS",
        whole(1, 1000),
        50,
        "active sign-ins per account; the least recently used go first",
    )
    password_workers: int = setting(
        "MUMU_PASSWORD_WORKERS",
        whole(1, 64),
        1,
        "threads hashing passwords (argon2id, ~150 ms each)",
    )
    password_queue: int = setting(
        "MUMU_PASSWORD_QUEUE",
        whole(0, 10_000),
        8,
        "password jobs that may wait for a worker; more get 503",
    )
    password_timeout_s: int = setting(
        "MUMU_PASSWORD_TIMEOUT",
        whole(1, 300),
        10,
        "how long a password job may wait for a worker, then 503",
        unit="s",
    )
    # --- rate limits ----------------------------------------------------------------------------
    login_rate: str = setting("MUMU_LOGIN_RATE", rate(), "10/minute", "login attempts per account")
    login_rate_per_address: str = setting(
        "MUMU_LOGIN_RATE_PER_ADDRESS", rate(), "30/minute", "login attempts per client address"
    )
    register_rate_per_address: str = setting(
        "MUMU_REGISTER_RATE_PER_ADDRESS", rate(), "30/hour", "sign-ups per client address"
    )
    refresh_rate_per_address: str = setting(
        "MUMU_REFRESH_RATE_PER_ADDRESS", rate(), "60/minute", "token refreshes per client address"
    )
    confirm_rate: str = setting(
        "MUMU_CONFIRM_RATE",
        rate(),
        "10/minute",
        "password confirmations (password change, account deletion) per sign-in; strangers' "
        "wrong sign-ins do not spend it",
    )
    pair_rate: str = setting("MUMU_PAIR_RATE", rate(), "5/minute", "pairing attempts per account")
    pair_rate_per_address: str = setting(
        "MUMU_PAIR_RATE_PER_ADDRESS", rate(), "20/minute", "pairing attempts per client address"
    )
    pair_code_budget: str = setting(
        "MUMU_PAIR_CODE_BUDGET",
        rate(),
        "10/minute",
        "pairing codes tried from outside their camera's network, all accounts together; "
        "beyond it codes pair only on the camera's network, QR links always",
    )
    device_register_rate_per_address: str = setting(
        "MUMU_DEVICE_REGISTER_RATE_PER_ADDRESS",
        rate(),
        "20/hour",
        "camera registrations per client address",
    )
    # --- HTTP requests --------------------------------------------------------------------------
    max_body_bytes: int = setting(
        "MUMU_MAX_BODY_BYTES",
        whole(1024, 16 * 1024 * 1024),
        64 * 1024,
        "largest HTTP request body; larger get 413",
        unit="bytes",
    )
    max_json_depth: int = setting(
        "MUMU_MAX_JSON_DEPTH",
        whole(2, 256),
        32,
        "deepest nesting of arrays and objects in an HTTP body; deeper get 400",
    )
    http_header_timeout_s: float = setting(
        "MUMU_HTTP_HEADER_TIMEOUT",
        whole_as_float(1, 600),
        10.0,
        "how long a client has to send a request's headers",
        unit="s",
    )
    http_body_timeout_s: float = setting(
        "MUMU_HTTP_BODY_TIMEOUT",
        whole_as_float(1, 3600),
        30.0,
        "how long a client has to send a request's body",
        unit="s",
    )
    http_connections_per_address: int = setting(
        "MUMU_HTTP_CONNECTIONS_PER_ADDRESS",
        whole(1, 1_000_000),
        256,
        "HTTP connections per client address still sending their request head, counted from "
        "accept, per process",
    )
    # --- signaling sockets and watch sessions ---------------------------------------------------
    max_pending_sockets_per_address: int = setting(
        "MUMU_MAX_PENDING_SOCKETS_PER_ADDRESS",
        whole(1, 1_000_000),
        256,
        "signaling sockets one client address may hold open before their `hello` arrives, "
        "counted from accept, per process (the burst a NAT full of cameras coming back at once "
        "needs); more get 1013 `too_many_connections`",
    )
    max_pending_sockets: int = setting(
        "MUMU_MAX_PENDING_SOCKETS",
        whole(1, 1_000_000),
        2048,
        "signaling sockets before their `hello` arrives, every address together, per process; "
        "more get 1013 `too_many_connections`",
    )
    max_sessions_per_device: int = setting(
        "MUMU_MAX_SESSIONS_PER_DEVICE",
        whole(1, 1000),
        8,
        "live watch sessions one camera may have",
    )
    max_viewer_sockets_per_account: int = setting(
        "MUMU_MAX_VIEWER_SOCKETS",
        whole(1, 10_000),
        20,
        "viewer WebSockets one account may hold open",
    )
    ws_queue_messages: int = setting(
        "MUMU_WS_QUEUE_MESSAGES",
        whole(10, 1_000_000),
        1000,
        "frames queued for one slow socket before it is dropped",
    )
    ws_queue_bytes: int = setting(
        "MUMU_WS_QUEUE_BYTES",
        whole(65536, 1 << 30),
        2 * 1024 * 1024,
        "bytes queued for one slow socket before it is dropped",
        unit="bytes",
    )
    ws_message_rate: float = setting(
        "MUMU_WS_MESSAGE_RATE",
        whole_as_float(1, 100_000),
        50.0,
        "messages a second one socket may send on average",
    )
    ws_message_burst: float = setting(
        "MUMU_WS_MESSAGE_BURST",
        whole_as_float(1, 100_000),
        200.0,
        "messages one socket may send in a burst",
    )
    session_ttl_s: float = setting(
        "MUMU_SESSION_TTL",
        whole_as_float(10, 3600),
        120.0,
        "how long a watch session lives without any sign of its parties",
        unit="s",
    )
    presence_ttl_s: float = setting(
        "MUMU_PRESENCE_TTL",
        whole_as_float(5, 3600),
        65.0,
        "how long a camera stays online after its last heartbeat (65: two missed heartbeats)",
        unit="s",
    )
    resume_grace_s: float = setting(
        "MUMU_RESUME_GRACE",
        whole_as_float(0, 600),
        20.0,
        "how long a watch session outlives a party's dropped socket, waiting for it to come back",
        unit="s",
    )
    reconnect_rate: int = setting(
        "MUMU_RECONNECT_RATE",
        whole(1, 1_000_000),
        1000,
        "sockets a second a stopping process asks its clients to spread their return over",
    )
    # --- TURN and STUN --------------------------------------------------------------------------
    turn_secret: str | None = setting(
        "MUMU_TURN_SECRET",
        text(),
        None,
        "coturn `static-auth-secret` for TURN REST credentials; required with MUMU_TURN_URLS",
        default_doc="unset",
    )
    turn_urls: tuple[str, ...] = setting(
        "MUMU_TURN_URLS", url_list("turn:", "turns:"), (), "TURN servers given to peers"
    )
    stun_urls: tuple[str, ...] = setting(
        "MUMU_STUN_URLS", url_list("stun:", "stuns:"), (), "STUN servers given to peers"
    )
    turn_ttl_s: int = setting(
        "MUMU_TURN_TTL", whole(60, DAY), 600, "TURN credential lifetime", unit="s"
    )
    # --- sharing a camera with viewers (cloud/api_sharing.py) -----------------------------------
    max_viewers_per_device: int = setting(
        "MUMU_MAX_VIEWERS_PER_CAMERA",
        whole(1, 1000),
        10,
        "accounts one camera may be shared with as viewers",
    )
    max_invites_per_device: int = setting(
        "MUMU_MAX_INVITES_PER_CAMERA",
        whole(1, 1000),
        10,
        "open invitations (e-mail and link) one camera may have",
    )
    invite_ttl_s: int = setting(
        "MUMU_INVITE_TTL",
        whole(1, 30 * DAY),
        3 * DAY,
        "how long an invitation to watch a camera stays valid",
        unit="s",
    )
    invite_rate: str = setting(
        "MUMU_INVITE_RATE", rate(), "30/hour", "invitations one account may make"
    )
    # --- e-mail (cloud/mail/): without an SMTP server each mail goes to the log -----------------
    smtp_url: str | None = setting(
        "MUMU_SMTP_URL",
        smtp_server(),
        None,
        "the mail server: `smtp://[user:password@]host[:port][?starttls=auto|require|off]` "
        "(port 587; STARTTLS when offered, `require` refuses a server without it) or "
        "`smtps://…` (TLS from the first byte, port 465)",
        default_doc="unset: each mail is written to the log instead of sent",
    )
    smtp_ca_file: str | None = setting(
        "MUMU_SMTP_CA_FILE",
        existing_file(),
        None,
        "PEM file of the authority that signed the mail server's certificate (the certificate "
        "is always verified)",
        default_doc="the system's authorities",
    )
    mail_from: str = setting(
        "MUMU_MAIL_FROM", mail_address(), "MuMu Camera <noreply@localhost>", "the From of mail"
    )
    mail_queue: int = setting(
        "MUMU_MAIL_QUEUE",
        whole(1, 1_000_000),
        1000,
        "mails that may wait in a process's outbox; more are dropped and counted",
    )
    mail_attempts: int = setting(
        "MUMU_MAIL_ATTEMPTS",
        whole(1, 100),
        6,
        "tries per mail while the server fails, with backoff from 2 s doubling",
    )
    mail_log: Path | None = setting(
        "MUMU_MAIL_LOG",
        file_path(),
        None,
        "without MUMU_SMTP_URL: also append each mail as a JSON line to this file (the demo "
        "shows them on its terminal)",
        default_doc="unset",
    )
    # --- one-time account links: verify an address, change it, reset a password -----------------
    verify_link_ttl_s: int = setting(
        "MUMU_VERIFY_LINK_TTL",
        whole(1, 30 * DAY),
        48 * 3600,
        "how long a link proving an address (a new account's, a new address) works",
        unit="s",
    )
    reset_link_ttl_s: int = setting(
        "MUMU_RESET_LINK_TTL",
        whole(1, DAY),
        30 * 60,
        "how long a password-reset link works",
        unit="s",
    )
    mail_rate_per_account: str = setting(
        "MUMU_MAIL_RATE_PER_ACCOUNT",
        rate(),
        "5/hour",
        "account mail one account may ask for (confirm again, a new address), and in a bucket "
        "of its own the reset and already-registered mail others may cause it; beyond, "
        '"forgot" still answers 202 and mails nothing',
    )
    forgot_rate_per_address: str = setting(
        "MUMU_FORGOT_RATE_PER_ADDRESS",
        rate(),
        "10/hour",
        "password-reset requests per client address",
    )
    link_rate_per_address: str = setting(
        "MUMU_LINK_RATE_PER_ADDRESS",
        rate(),
        "30/minute",
        "verify and reset links tried per client address",
    )
    # --- over-the-air updates (cloud/updates/) --------------------------------------------------
    update_repo_dir: Path | None = setting(
        "MUMU_UPDATE_REPO_DIR",
        directory_holding("metadata", is_dir=True, hint="mumu-release init"),
        None,
        "serve this signed update repository (mumu-release) at /updates/",
        default_doc="unset: not served",
    )
    update_downloads_per_address: int = setting(
        "MUMU_UPDATE_DOWNLOADS_PER_ADDRESS",
        whole(1, 10_000),
        4,
        "update repository transfers at a time from one client address, per process; more get 429",
    )
    update_downloads: int = setting(
        "MUMU_UPDATE_DOWNLOADS",
        whole(1, 100_000),
        64,
        "update repository transfers at a time in all, per process; more get 503",
    )
    operators: tuple[str, ...] = setting(
        "MUMU_OPERATORS",
        addresses(),
        (),
        "grants nothing: operators are granted on the server with `mumu-cloud operator add "
        "<e-mail>` (an existing account with a verified address; docs/updates.md); each "
        "address listed here that holds no operator rights is reported at start-up",
        default_doc="none",
    )
    rollout_poll_s: float = setting(
        "MUMU_ROLLOUT_POLL",
        whole_as_float(1, 3600),
        5.0,
        "how often a process looks for rollout changes made by `mumu-cloud rollout`",
        unit="s",
    )

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))


#: The one variable that is not a setting: where the optional YAML file is.
CONFIG_FILE = Declared(
    "MUMU_CONFIG",
    file_path(),
    "optional YAML file with the same settings, in lower case without MUMU_ "
    "(the environment wins over it)",
    default_doc="unset",
)

#: Headings of the docs table: the first field of each group (in declaration order).
SECTIONS: dict[str, str] = {
    "data_dir": "Storage and processes",
    "jwt_ttl_s": "Accounts and sign-ins",
    "login_rate": "Rate limits",
    "max_body_bytes": "HTTP requests",
    "max_pending_sockets_per_address": "Signaling sockets and watch sessions",
    "turn_secret": "TURN and STUN",
    "max_viewers_per_device": "Sharing a camera",
    "smtp_url": "E-mail",
    "verify_link_ttl_s": "Account links (verify an address, reset a password)",
    "update_repo_dir": "Over-the-air updates",
}


def declarations() -> list[tuple[dataclasses.Field[Any], Declared]]:
    """Every field of ``Settings`` with its declaration, in declaration order."""
    return [(f, f.metadata[METADATA_KEY]) for f in dataclasses.fields(Settings)]


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: ``os.environ``) and the optional YAML file.

    A variable unset or empty takes its default."""
    env = dict(os.environ if env is None else env)
    merged: dict[str, str] = {}
    config_file = env.get(CONFIG_FILE.env)
    if config_file:
        merged.update(_read_yaml(Path(config_file)))
    merged.update({k: v for k, v in env.items() if k.startswith("MUMU_") and k != CONFIG_FILE.env})
    declared = declarations()
    unknown = sorted(set(merged) - {d.env for _, d in declared})
    if unknown and config_file:
        raise ConfigError(f"{unknown[0]}: unknown setting in {config_file}")

    values: dict[str, Any] = {}
    for each, decl in declared:
        raw = merged.get(decl.env, "")
        if raw:
            try:
                values[each.name] = decl.parser.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{decl.env}: {exc}".splitlines()[0]) from None
        elif decl.derive is not None:
            values[each.name] = decl.derive(values)
        else:
            values[each.name] = each.default
    if values["turn_urls"] and not values["turn_secret"]:
        raise ConfigError("MUMU_TURN_SECRET: required when MUMU_TURN_URLS is set")
    return Settings(**values)


def _read_yaml(path: Path) -> dict[str, str]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"MUMU_CONFIG: cannot read {path}: {exc}".splitlines()[0]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"MUMU_CONFIG: {path} must hold a mapping of settings")
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = f"MUMU_{str(key).upper()}"
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        out[name] = "" if value is None else str(value)
    return out


def _stored_secret(data_dir: Path, name: str) -> str:
    """A random secret kept in the data dir (mode 0600), created on first use."""
    path = data_dir / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        tmp = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}")  # one per process
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret)
        try:
            os.link(tmp, path)  # fails if another process won the race
        except FileExistsError:
            return path.read_text().strip()
        finally:
            tmp.unlink(missing_ok=True)
        return secret
    except OSError as exc:
        raise ConfigError(f"MUMU_DATA_DIR: cannot write {path}: {exc.strerror}") from None
