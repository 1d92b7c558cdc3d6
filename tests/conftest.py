"""Fixtures shared by the whole suite: real PostgreSQL and Redis servers started for the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mail_server import mail_server  # noqa: F401  (a fixture for every module)
from tests.services import create_database, postgres_server, redis_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One throwaway PostgreSQL cluster for the run (URL of its ``mumu`` database)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_database(pg_server)


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The run's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    client.close()
    return redis_server_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mumu.db'}"


# --- pytest-xdist workers (scripts/test) ---------------------------------------------------------

_image_timings: dict[str, float] = {}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker hands the image figures it measured to the controller, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["image_timings"] = dict(_measured_image_timings())


def pytest_testnodedown(node: object, error: object) -> None:
    _image_timings.update(getattr(node, "workeroutput", {}).get("image_timings", {}))


def _measured_image_timings() -> dict[str, float]:
    import sys

    fixtures = sys.modules.get("tests.image_fixtures")
    return dict(getattr(fixtures, "TIMINGS", None) or {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures the SD-image tests measured (build steps, boot to pairing code)."""
    timings = _measured_image_timings() | _image_timings
    if timings:
        terminalreporter.section("SD image: measured here")
        for name, value in timings.items():
            terminalreporter.write_line(f"{name:<50} {value}")
