"""Cloud servers for the HTTP and signaling tests: embedded (SQLite, in-process) and scaled
(PostgreSQL + Redis), each a real ``mumu-cloud serve`` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cloud_process import CloudProcess
from tests.services import create_database

JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
TURN_SECRET = "test-turn-secret"
#: Generous limits: the suite makes many accounts from one address. Rate-limit tests set their own.
RELAXED = {
    "MUMU_JWT_SECRET": JWT_SECRET,
    "MUMU_TURN_SECRET": TURN_SECRET,
    "MUMU_TURN_URLS": "turn:127.0.0.1:3478?transport=udp,turn:127.0.0.1:3478?transport=tcp",
    "MUMU_STUN_URLS": "stun:127.0.0.1:3478",
    "MUMU_REGISTER_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_LOGIN_RATE": "100000/minute",
    "MUMU_LOGIN_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_PAIR_RATE": "100000/minute",
    "MUMU_PAIR_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_PAIR_CODE_BUDGET": "100000/minute",
    "MUMU_DEVICE_REGISTER_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_REFRESH_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_FORGOT_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_LINK_RATE_PER_ADDRESS": "100000/minute",
    "MUMU_RESUME_GRACE": "1",
}

BACKENDS = ["embedded", "scaled"]


def backend_env(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of a backend: nothing for embedded; a fresh database + Redis for scaled."""
    if kind == "embedded":
        return {}
    pg_server: str = request.getfixturevalue("pg_server")
    redis_url: str = request.getfixturevalue("redis_server_url")
    database_url = create_database(pg_server)
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    return {
        "MUMU_DATABASE_URL": database_url,
        "MUMU_REDIS_URL": redis_url,
    }


def start_cloud(
    request: pytest.FixtureRequest, tmp: Path, kind: str, **extra: str
) -> Iterator[CloudProcess]:
    # Every test cloud sends its mail to the suite's real SMTP server (tests/mail_server.py).
    mail_url: str = request.getfixturevalue("mail_server").url
    env = {**RELAXED, "MUMU_SMTP_URL": mail_url, **backend_env(kind, request), **extra}
    with CloudProcess(tmp, env=env) as cloud:
        yield cloud
