"""Real servers for the tests: each started by the test run itself, on a free port, in a temp dir.

Whatever the machine runs already (a PostgreSQL on 5432, a Redis on 6379) is left alone: the
suite starts its own so that it works on a machine with none of them running.  A missing binary
is a skip on a developer's machine and a failure in CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, what: str) -> None:
    """A missing component: skip off-CI, fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing; CI must have it (run scripts/test to install it)")
    pytest.skip(f"{what} is missing (scripts/test installs it)")


def _worker() -> tuple[int, int]:
    """(this pytest-xdist worker's index, how many workers); (0, 1) without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw")), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def free_port() -> int:
    """A free port for a server a test starts.  Each worker takes only ports of its own share,
    so that between our closing the port and the server binding it the other worker cannot pick
    it too for a server of its own (its test would then talk to ours).  The share is of
    ``port // 2``: Linux hands out even ports to ``bind(0)`` (odd ones to ``connect``)."""
    index, count = _worker()
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port // 2 % count == index:
            return port


def wait_for_port(
    port: int,
    timeout: float = 20.0,
    host: str = "127.0.0.1",
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pg_bindir() -> Path | None:
    for pattern in ("/usr/lib/postgresql/*/bin",):
        found = sorted(glob.glob(pattern), key=lambda p: int(p.split("/")[-2]))
        if found:
            return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    require(runuser is not None, "runuser (util-linux)")
    return [str(runuser), "-u", "postgres", "--"]


class PostgresServer:
    """A throwaway PostgreSQL cluster that a test may stop and start again (same port, same
    data): ``start()``, ``stop()``, ``url`` (of its ``mumu`` database), ``close()``."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        require(
            bindir is not None and (bindir / "initdb").exists(), "PostgreSQL server (postgresql)"
        )
        assert bindir is not None
        self.bindir = bindir
        self.prefix = _as_postgres_user()
        # Its own directory straight under /tmp: the postgres user must be able to reach it.
        self.tmp = Path(tempfile.mkdtemp(prefix="mumu-pg-"))
        self.data = self.tmp / "pgdata"
        self.data.mkdir()
        if self.prefix:
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                *self.prefix,
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/mumu"
        self.proc: subprocess.Popen[bytes] | None = None
        self._created = False

    def start(self) -> PostgresServer:
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.tmp}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)
        deadline = time.monotonic() + 20
        while True:  # accepting connections (not still starting up), and the database exists
            done = subprocess.run(
                [
                    str(self.bindir / ("psql" if self._created else "createdb")),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    *(["-d", "mumu", "-c", "SELECT 1"] if self._created else ["mumu"]),
                ],
                capture_output=True,
            )
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(done.stderr.decode())
            time.sleep(0.1)
        self._created = True
        return self

    def stop(self) -> None:
        """Shut it down at once ("fast": open connections are cut, as in an outage)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            pg_ctl = str(self.bindir / "pg_ctl")
            subprocess.run(
                [*self.prefix, pg_ctl, "stop", "-D", str(self.data), "-m", "fast", "-w"],
                capture_output=True,
            )
        stop(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a ``postgresql://`` URL of an empty database."""
    server = PostgresServer()
    try:
        yield server.start().url
    finally:
        server.close()


def create_database(server_url: str) -> str:
    """A fresh, empty database on a PostgreSQL server; its URL.  Callable from inside a running
    event loop too (the work runs on a thread of its own)."""
    import asyncio
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


class RedisServer:
    """A throwaway Redis that keeps nothing on disk and that a test may stop and start again on
    the same port: ``start()``, ``stop()``, ``url``."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        require(binary is not None, "Redis server (redis-server)")
        assert binary is not None
        self.binary = binary
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
                "--maxclients",
                "20000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A throwaway Redis that keeps nothing on disk; yields a ``redis://`` URL."""
    server = RedisServer(tmp)
    try:
        yield server.start().url
    finally:
        server.stop()
