"""The cloud's settings: environment variables (``MUMU_*``), optionally a YAML file beneath them.

An invalid setting raises ``ConfigError`` whose text is one line naming the setting, which the
CLI prints before exiting.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from limits import parse as parse_rate_limit


class ConfigError(ValueError):
    """One setting is invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    jwt_secret: str
    jwt_ttl_s: int = 900
    turn_secret: str | None = None
    turn_urls: tuple[str, ...] = ()
    stun_urls: tuple[str, ...] = ()
    turn_ttl_s: int = 600
    public_url: str | None = None
    login_rate: str = "10/minute"
    login_rate_per_address: str = "30/minute"
    register_rate_per_address: str = "30/hour"
    pair_rate: str = "5/minute"
    pair_rate_per_address: str = "20/minute"
    session_ttl_s: float = 120.0
    presence_ttl_s: float = 65.0
    resume_grace_s: float = 20.0
    reconnect_rate: int = 1000
    trusted_proxies: tuple[str, ...] = ()
    max_sessions_per_device: int = 8
    max_viewer_sockets_per_account: int = 20
    max_pending_sockets_per_address: int = 256
    max_pending_sockets: int = 2048
    ws_queue_messages: int = 1000
    ws_queue_bytes: int = 2 * 1024 * 1024
    ws_message_rate: float = 50.0
    ws_message_burst: float = 200.0
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_connections_per_address: int = 256
    # accounts, passwords, input and faults (docs/security.md has a row for each)
    refresh_ttl_s: int = 30 * 86400
    refresh_grace_s: int = 30
    max_sign_ins: int = 50
    refresh_rate_per_address: str = "60/minute"
    password_workers: int = 1
    password_queue: int = 8
    password_timeout_s: int = 10
    device_register_rate_per_address: str = "20/hour"
    pair_code_budget: str = "10/minute"
    max_body_bytes: int = 64 * 1024
    max_json_depth: int = 32
    db_pool_size: int = 10
    db_pool_timeout_s: int = 5
    retry_after_s: int = 5
    # sharing a camera with viewers (cloud/api_sharing.py)
    max_viewers_per_device: int = 10
    max_invites_per_device: int = 10
    invite_ttl_s: int = 3 * 86400
    invite_rate: str = "30/hour"
    # password confirmations (change, deletion) per sign-in (issue 18: strangers cannot spend it)
    confirm_rate: str = "10/minute"
    web_dir: Path | None = None
    # over-the-air updates (cloud/updates/)
    update_repo_dir: Path | None = None
    update_downloads_per_address: int = 4
    update_downloads: int = 64
    operators: tuple[str, ...] = ()
    rollout_poll_s: float = 5.0
    # e-mail (cloud/mail/): without an SMTP server each mail goes to the log
    smtp_url: str | None = None
    mail_from: str = "MuMu Camera <noreply@localhost>"
    mail_queue: int = 1000
    mail_attempts: int = 6
    # one-time account links: verify an address, change it, reset a password (cloud/account_links)
    verify_link_ttl_s: int = 48 * 3600
    reset_link_ttl_s: int = 30 * 60
    mail_rate_per_account: str = "5/hour"
    forgot_rate_per_address: str = "10/hour"
    link_rate_per_address: str = "30/minute"
    smtp_ca_file: str | None = None
    mail_log: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))


#: Every recognised variable, its YAML key and a one-line description (used by ``--help``).
VARIABLES: dict[str, str] = {
    "MUMU_DATA_DIR": "directory for the SQLite database and generated secrets",
    "MUMU_DATABASE_URL": "sqlite:///PATH (default: MUMU_DATA_DIR/mumu.db) or postgresql://...",
    "MUMU_REDIS_URL": "redis://... for shared presence and routing (unset: in-process)",
    "MUMU_JWT_SECRET": "HS256 key for access tokens (default: generated into MUMU_DATA_DIR)",
    "MUMU_JWT_TTL": "access-token lifetime in seconds (10..86400, default 900)",
    "MUMU_REFRESH_TTL": "a sign-in lasts this many seconds after its last use (default 30 days)",
    "MUMU_REFRESH_GRACE": "seconds a just-replaced refresh token still gets an access token (30)",
    "MUMU_MAX_SIGN_INS": "active sign-ins per account; the least recently used go first (50)",
    "MUMU_REFRESH_RATE_PER_ADDRESS": "token refreshes per client address (default 60/minute)",
    "MUMU_PASSWORD_WORKERS": "threads hashing passwords (argon2id, ~150 ms each; default 1)",
    "MUMU_PASSWORD_QUEUE": "password jobs that may wait for a worker; more get 503 (default 8)",
    "MUMU_PASSWORD_TIMEOUT": "seconds a password job may wait for a worker (default 10)",
    "MUMU_TURN_SECRET": "coturn static-auth-secret for TURN REST credentials",
    "MUMU_TURN_URLS": "comma-separated turn:/turns: URLs",
    "MUMU_STUN_URLS": "comma-separated stun: URLs",
    "MUMU_TURN_TTL": "TURN credential lifetime in seconds (60..86400, default 600)",
    "MUMU_PUBLIC_URL": "origin of the web app, for claim links and the links in mails "
    "(default: the request's origin; for mails only a loopback one, else the cloud's own)",
    "MUMU_LOGIN_RATE": "login attempts per account, e.g. 10/minute",
    "MUMU_LOGIN_RATE_PER_ADDRESS": "login attempts per client address",
    "MUMU_REGISTER_RATE_PER_ADDRESS": "sign-ups per client address",
    "MUMU_PAIR_RATE": "pairing attempts per account",
    "MUMU_PAIR_RATE_PER_ADDRESS": "pairing attempts per client address",
    "MUMU_PAIR_CODE_BUDGET": "pairing codes tried from outside their camera's network, all "
    "accounts together; beyond it only the camera's network and QR links pair (10/minute)",
    "MUMU_DEVICE_REGISTER_RATE_PER_ADDRESS": "camera registrations per client address (20/hour)",
    "MUMU_MAX_BODY_BYTES": "largest HTTP request body (default 65536)",
    "MUMU_MAX_JSON_DEPTH": "deepest nesting of arrays and objects in an HTTP body (default 32)",
    "MUMU_DB_POOL_SIZE": "PostgreSQL connections per process (and twice that in bursts; 10)",
    "MUMU_DB_POOL_TIMEOUT": "seconds a request waits for a database connection, then 503 (5)",
    "MUMU_RETRY_AFTER": "Retry-After seconds of a 503 when the database or Redis fails (5)",
    "MUMU_MAX_VIEWERS_PER_CAMERA": "accounts one camera may be shared with as viewers (10)",
    "MUMU_MAX_INVITES_PER_CAMERA": "open invitations (e-mail and link) one camera may have (10)",
    "MUMU_INVITE_TTL": "seconds an invitation to watch a camera stays valid (259200: 3 days)",
    "MUMU_INVITE_RATE": "invitations one account may make (default 30/hour)",
    "MUMU_CONFIRM_RATE": "password confirmations (password change, account deletion) per "
    "sign-in (default 10/minute)",
    "MUMU_SESSION_TTL": "seconds a watch session lives without any sign of its parties",
    "MUMU_PRESENCE_TTL": "seconds a device stays online after its last heartbeat (default 65: "
    "two missed heartbeats)",
    "MUMU_RECONNECT_RATE": "sockets a second a restarting process asks its clients to spread "
    "their return over (default 1000)",
    "MUMU_RESUME_GRACE": "seconds a session outlives its party's dropped socket (default 20)",
    "MUMU_TRUSTED_PROXIES": "comma-separated addresses whose X-Forwarded-For is believed "
    "(default: none; behind nginx set its address, e.g. 127.0.0.1)",
    "MUMU_MAX_SESSIONS_PER_DEVICE": "live watch sessions one camera may have (default 8)",
    "MUMU_MAX_VIEWER_SOCKETS": "viewer WebSockets one account may hold open (default 20)",
    "MUMU_MAX_PENDING_SOCKETS_PER_ADDRESS": "signaling sockets one client address may hold "
    "open before their hello arrives, counted from accept; more get 1013 (default 256, per "
    "process: a NAT's cameras coming back at once)",
    "MUMU_MAX_PENDING_SOCKETS": "signaling sockets before their hello arrives, every address "
    "together; more get 1013 (default 2048, per process)",
    "MUMU_WS_QUEUE_MESSAGES": "frames queued for one slow socket before it is dropped (1000)",
    "MUMU_WS_QUEUE_BYTES": "bytes queued for one slow socket before it is dropped (2097152)",
    "MUMU_WS_MESSAGE_RATE": "messages a second one socket may send on average (default 50)",
    "MUMU_WS_MESSAGE_BURST": "messages one socket may send in a burst (default 200)",
    "MUMU_HTTP_HEADER_TIMEOUT": "seconds a client has to send a request's headers (default 10)",
    "MUMU_HTTP_BODY_TIMEOUT": "seconds a client has to send a request's body (default 30)",
    "MUMU_HTTP_CONNECTIONS_PER_ADDRESS": "HTTP connections per client address still sending "
    "their request head, counted from accept (default 256, per process)",
    "MUMU_WEB_DIR": "serve the web app from this directory at / (the demo; nginx in production)",
    "MUMU_UPDATE_REPO_DIR": "serve this signed update repository (mumu-release) at /updates/",
    "MUMU_UPDATE_DOWNLOADS_PER_ADDRESS": "update repository transfers at a time from one client "
    "address; more get 429 (default 4, per process)",
    "MUMU_UPDATE_DOWNLOADS": "update repository transfers at a time in all; more get 503 "
    "(default 64, per process)",
    "MUMU_OPERATORS": "grants nothing (operators: mumu-cloud operator add); addresses listed "
    "here that hold no operator rights are reported at start-up",
    "MUMU_ROLLOUT_POLL": "seconds between looks for rollout changes made by mumu-cloud (5)",
    "MUMU_SMTP_URL": "smtp://[user:password@]host[:port][?starttls=auto|require|off] or "
    "smtps://... for the cloud's mail (unset: each mail is written to the log instead)",
    "MUMU_MAIL_FROM": "the From of the cloud's mail (default MuMu Camera <noreply@localhost>)",
    "MUMU_MAIL_QUEUE": "mails that may wait to be sent; more are dropped and counted (1000)",
    "MUMU_MAIL_ATTEMPTS": "tries per mail while the SMTP server fails, with backoff (6)",
    "MUMU_VERIFY_LINK_TTL": "seconds a link proving an address (new account, new address) "
    "works (default 172800: 48 h)",
    "MUMU_RESET_LINK_TTL": "seconds a password-reset link works (default 1800: 30 min)",
    "MUMU_MAIL_RATE_PER_ACCOUNT": "account mails (confirm again, new address) one account may "
    "ask for, and (in a bucket of their own) reset and already-registered mails others may "
    "cause it (default 5/hour each)",
    "MUMU_FORGOT_RATE_PER_ADDRESS": "password-reset requests per client address (10/hour)",
    "MUMU_LINK_RATE_PER_ADDRESS": "verify and reset links tried per client address (30/minute)",
    "MUMU_SMTP_CA_FILE": "PEM file of the authority that signed the SMTP server's certificate "
    "(default: the system's; the certificate is always verified)",
    "MUMU_MAIL_LOG": "without MUMU_SMTP_URL: also append each mail as a JSON line to this file "
    "(scripts/demo shows them)",
    "MUMU_CONFIG": "optional YAML file with the same settings in lower case without MUMU_",
}


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("mumu-cloud", appauthor=False))


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: ``os.environ``) and the optional YAML file."""
    env = dict(os.environ if env is None else env)
    merged: dict[str, str] = {}
    config_file = env.get("MUMU_CONFIG")
    if config_file:
        merged.update(_read_yaml(Path(config_file)))
    merged.update({k: v for k, v in env.items() if k.startswith("MUMU_") and k != "MUMU_CONFIG"})
    unknown = sorted(set(merged) - set(VARIABLES))
    if unknown and config_file:
        raise ConfigError(f"{unknown[0]}: unknown setting in {config_file}")

    data_dir = Path(merged.get("MUMU_DATA_DIR") or default_data_dir()).expanduser()
    database_url = merged.get("MUMU_DATABASE_URL") or f"sqlite:///{data_dir / 'mumu.db'}"
    _check_database_url(database_url)
    redis_url = merged.get("MUMU_REDIS_URL") or None
    if redis_url is not None and urlsplit(redis_url).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"MUMU_REDIS_URL: expected redis://host:port/db, got {redis_url!r}")

    turn_urls = _url_list(merged, "MUMU_TURN_URLS", ("turn:", "turns:"))
    stun_urls = _url_list(merged, "MUMU_STUN_URLS", ("stun:", "stuns:"))
    turn_secret = merged.get("MUMU_TURN_SECRET") or None
    if turn_urls and not turn_secret:
        raise ConfigError("MUMU_TURN_SECRET: required when MUMU_TURN_URLS is set")

    public_url = merged.get("MUMU_PUBLIC_URL") or None
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"MUMU_PUBLIC_URL: expected http(s)://host[:port], got {public_url!r}"
            )
        public_url = public_url.rstrip("/")

    rates: dict[str, Any] = {}
    for key in (
        "MUMU_LOGIN_RATE",
        "MUMU_LOGIN_RATE_PER_ADDRESS",
        "MUMU_REGISTER_RATE_PER_ADDRESS",
        "MUMU_PAIR_RATE",
        "MUMU_PAIR_RATE_PER_ADDRESS",
        "MUMU_PAIR_CODE_BUDGET",
        "MUMU_DEVICE_REGISTER_RATE_PER_ADDRESS",
        "MUMU_REFRESH_RATE_PER_ADDRESS",
        "MUMU_INVITE_RATE",
        "MUMU_CONFIRM_RATE",
        "MUMU_MAIL_RATE_PER_ACCOUNT",
        "MUMU_FORGOT_RATE_PER_ADDRESS",
        "MUMU_LINK_RATE_PER_ADDRESS",
    ):
        if key in merged:
            try:
                parse_rate_limit(merged[key])
            except ValueError:
                raise ConfigError(
                    f"{key}: expected a rate like 10/minute, got {merged[key]!r}"
                ) from None
            rates[key.removeprefix("MUMU_").lower()] = merged[key]

    web_dir = None
    if merged.get("MUMU_WEB_DIR"):
        web_dir = Path(merged["MUMU_WEB_DIR"]).expanduser().resolve()
        if not (web_dir / "index.html").is_file():
            raise ConfigError(f"MUMU_WEB_DIR: no index.html in {web_dir}")

    update_repo_dir = None
    if merged.get("MUMU_UPDATE_REPO_DIR"):
        update_repo_dir = Path(merged["MUMU_UPDATE_REPO_DIR"]).expanduser().resolve()
        if not (update_repo_dir / "metadata").is_dir():
            raise ConfigError(
                f"MUMU_UPDATE_REPO_DIR: no metadata/ in {update_repo_dir} (mumu-release init)"
            )

    smtp_url = merged.get("MUMU_SMTP_URL") or None
    if smtp_url is not None:
        from cloud.mail.transport import SmtpSettings

        try:
            SmtpSettings.parse(smtp_url)
        except ValueError as exc:
            raise ConfigError(f"MUMU_SMTP_URL: {exc}") from None
    smtp_ca_file = merged.get("MUMU_SMTP_CA_FILE") or None
    if smtp_ca_file is not None and not Path(smtp_ca_file).is_file():
        raise ConfigError(f"MUMU_SMTP_CA_FILE: no such file {smtp_ca_file!r}")
    mail_log = Path(merged["MUMU_MAIL_LOG"]) if merged.get("MUMU_MAIL_LOG") else None
    mail_from = merged.get("MUMU_MAIL_FROM") or Settings.mail_from
    if "@" not in mail_from or "\n" in mail_from or "\r" in mail_from:
        raise ConfigError(
            f"MUMU_MAIL_FROM: expected an address like Name <a@b.org>, got {mail_from!r}"
        )

    return Settings(
        smtp_url=smtp_url,
        mail_from=mail_from,
        mail_queue=_int(merged, "MUMU_MAIL_QUEUE", 1000, 1, 1_000_000),
        mail_attempts=_int(merged, "MUMU_MAIL_ATTEMPTS", 6, 1, 100),
        verify_link_ttl_s=_int(merged, "MUMU_VERIFY_LINK_TTL", 48 * 3600, 1, 30 * 86400),
        reset_link_ttl_s=_int(merged, "MUMU_RESET_LINK_TTL", 30 * 60, 1, 86400),
        smtp_ca_file=smtp_ca_file,
        mail_log=mail_log,
        web_dir=web_dir,
        update_repo_dir=update_repo_dir,
        update_downloads_per_address=_int(
            merged, "MUMU_UPDATE_DOWNLOADS_PER_ADDRESS", 4, 1, 10_000
        ),
        update_downloads=_int(merged, "MUMU_UPDATE_DOWNLOADS", 64, 1, 100_000),
        operators=tuple(
            e.strip().lower() for e in merged.get("MUMU_OPERATORS", "").split(",") if e.strip()
        ),
        rollout_poll_s=float(_int(merged, "MUMU_ROLLOUT_POLL", 5, 1, 3600)),
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        jwt_secret=merged.get("MUMU_JWT_SECRET") or _stored_secret(data_dir, "jwt-secret"),
        jwt_ttl_s=_int(merged, "MUMU_JWT_TTL", 900, 10, 86400),
        refresh_ttl_s=_int(merged, "MUMU_REFRESH_TTL", 30 * 86400, 300, 365 * 86400),
        refresh_grace_s=_int(merged, "MUMU_REFRESH_GRACE", 30, 0, 300),
        max_sign_ins=_int(merged, "MUMU_MAX_SIGN_INS", 50, 1, 1000),
        password_workers=_int(merged, "MUMU_PASSWORD_WORKERS", 1, 1, 64),
        password_queue=_int(merged, "MUMU_PASSWORD_QUEUE", 8, 0, 10_000),
        password_timeout_s=_int(merged, "MUMU_PASSWORD_TIMEOUT", 10, 1, 300),
        max_body_bytes=_int(merged, "MUMU_MAX_BODY_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024),
        max_json_depth=_int(merged, "MUMU_MAX_JSON_DEPTH", 32, 2, 256),
        db_pool_size=_int(merged, "MUMU_DB_POOL_SIZE", 10, 1, 1000),
        db_pool_timeout_s=_int(merged, "MUMU_DB_POOL_TIMEOUT", 5, 1, 120),
        retry_after_s=_int(merged, "MUMU_RETRY_AFTER", 5, 1, 3600),
        max_viewers_per_device=_int(merged, "MUMU_MAX_VIEWERS_PER_CAMERA", 10, 1, 1000),
        max_invites_per_device=_int(merged, "MUMU_MAX_INVITES_PER_CAMERA", 10, 1, 1000),
        invite_ttl_s=_int(merged, "MUMU_INVITE_TTL", 3 * 86400, 1, 30 * 86400),
        turn_secret=turn_secret,
        turn_urls=turn_urls,
        stun_urls=stun_urls,
        turn_ttl_s=_int(merged, "MUMU_TURN_TTL", 600, 60, 86400),
        public_url=public_url,
        session_ttl_s=float(_int(merged, "MUMU_SESSION_TTL", 120, 10, 3600)),
        presence_ttl_s=float(_int(merged, "MUMU_PRESENCE_TTL", 65, 5, 3600)),
        reconnect_rate=_int(merged, "MUMU_RECONNECT_RATE", 1000, 1, 1_000_000),
        resume_grace_s=float(_int(merged, "MUMU_RESUME_GRACE", 20, 0, 600)),
        trusted_proxies=_proxies(merged.get("MUMU_TRUSTED_PROXIES", "")),
        max_sessions_per_device=_int(merged, "MUMU_MAX_SESSIONS_PER_DEVICE", 8, 1, 1000),
        max_viewer_sockets_per_account=_int(merged, "MUMU_MAX_VIEWER_SOCKETS", 20, 1, 10000),
        max_pending_sockets_per_address=_int(
            merged, "MUMU_MAX_PENDING_SOCKETS_PER_ADDRESS", 256, 1, 1_000_000
        ),
        max_pending_sockets=_int(merged, "MUMU_MAX_PENDING_SOCKETS", 2048, 1, 1_000_000),
        ws_queue_messages=_int(merged, "MUMU_WS_QUEUE_MESSAGES", 1000, 10, 1_000_000),
        ws_queue_bytes=_int(merged, "MUMU_WS_QUEUE_BYTES", 2 * 1024 * 1024, 65536, 1 << 30),
        ws_message_rate=float(_int(merged, "MUMU_WS_MESSAGE_RATE", 50, 1, 100000)),
        ws_message_burst=float(_int(merged, "MUMU_WS_MESSAGE_BURST", 200, 1, 100000)),
        http_header_timeout_s=float(_int(merged, "MUMU_HTTP_HEADER_TIMEOUT", 10, 1, 600)),
        http_body_timeout_s=float(_int(merged, "MUMU_HTTP_BODY_TIMEOUT", 30, 1, 3600)),
        http_connections_per_address=_int(
            merged, "MUMU_HTTP_CONNECTIONS_PER_ADDRESS", 256, 1, 1_000_000
        ),
        **rates,
    )


def _proxies(value: str) -> tuple[str, ...]:
    import ipaddress

    proxies = tuple(p.strip() for p in value.split(",") if p.strip())
    for proxy in proxies:
        if proxy == "*":
            continue
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"MUMU_TRUSTED_PROXIES: {proxy!r} is not an IP address or network"
            ) from None
    return proxies


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


def _check_database_url(url: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        if not url.startswith("sqlite:///"):
            raise ConfigError(f"MUMU_DATABASE_URL: expected sqlite:///path, got {url!r}")
        return
    if scheme in {"postgresql", "postgres"}:
        if not urlsplit(url).hostname and "host=" not in url:
            raise ConfigError(f"MUMU_DATABASE_URL: no host in {url!r}")
        return
    raise ConfigError(
        f"MUMU_DATABASE_URL: expected sqlite:///path or postgresql://..., got {url!r}"
    )


def _url_list(merged: Mapping[str, str], key: str, schemes: tuple[str, ...]) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in merged.get(key, "").split(",") if u.strip())
    for url in urls:
        if not url.startswith(schemes):
            raise ConfigError(f"{key}: {url!r} does not start with {' or '.join(schemes)}")
    return urls


def _int(merged: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    if key not in merged or merged[key] == "":
        return default
    try:
        value = int(merged[key])
    except ValueError:
        raise ConfigError(f"{key}: expected a whole number, got {merged[key]!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value} is outside {low}..{high}")
    return value


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
