"""A real ``mumu-cloud serve`` in a subprocess, for tests and benchmarks.

``CloudProcess`` starts the console script on a free port with its own data dir and environment,
waits for ``/readyz``, and can be killed (SIGKILL, as a crash) and started again on the same port
and data dir.  ``ApiClient`` holds the few HTTP calls tests make over and over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services import free_port

BIN = Path(sys.executable).parent

#: Every test cloud lets a password job wait a minute for a worker (production: 10 s).  argon2
#: runs at the lowest CPU priority by design, and a CI machine's other jobs beside the suite (or
#: MUMU_TEST_WORKERS=2) can keep both cores busy for seconds on end; a test about something else
#: must not fail on a 503 ``busy`` then.  The overflow itself is tested with its own limits.
PATIENT = {"MUMU_PASSWORD_TIMEOUT": "60"}


@dataclass
class CloudProcess:
    data_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def __post_init__(self) -> None:
        # In the suite every cloud mails the suite's real SMTP server (tests/mail_server.py),
        # however it was started, so a test can read what it sent.
        from tests.mail_server import running_url

        url = running_url()
        if url is not None and "MUMU_SMTP_URL" not in self.env:
            self.env = {"MUMU_SMTP_URL": url, **self.env}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> CloudProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **PATIENT, "MUMU_DATA_DIR": str(self.data_dir), **self.env}
        self.log_path = self.data_dir / f"cloud-{self.port}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(BIN / "mumu-cloud"),
                "serve",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mumu-cloud exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"mumu-cloud was not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """Crash it: SIGKILL, no clean-up runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self, timeout: float = 30.0) -> CloudProcess:
        """Start again on the same port and data dir (after :meth:`kill` or :meth:`stop`)."""
        self.kill()
        return self.start(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> CloudProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Account:
    email: str
    password: str
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


@dataclass
class Camera:
    device_id: str
    device_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.device_token}"}

    def hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "payload": {"device_id": self.device_id, "device_token": self.device_token},
        }


class ApiClient:
    """The HTTP calls tests repeat: sign up, log in, register a camera, pair it."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=90.0)  # > PATIENT's minute
        self._n = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    async def account(self, email: str | None = None, password: str = "correct horse 1") -> Account:
        self._n += 1
        email = email or f"user{self._n}-{time.monotonic_ns()}@example.com"
        r = await self.http.post("/api/auth/register", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        r = await self.http.post("/api/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        r = await self.http.get("/api/account", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return Account(email, password, r.json()["user_id"], token)

    async def camera(self, name: str = "Test camera") -> Camera:
        r = await self.http.post("/api/devices/register", json={"name": name, "model": "test"})
        assert r.status_code == 201, r.text
        body = r.json()
        return Camera(body["device_id"], body["device_token"])

    async def code(self, camera: Camera) -> dict[str, Any]:
        r = await self.http.post(
            "/api/pairing/generate", params={"device_id": camera.device_id}, headers=camera.auth
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def pair(self, account: Account, camera: Camera) -> None:
        code = (await self.code(camera))["code"]
        r = await self.http.post("/api/devices/pair", json={"code": code}, headers=account.auth)
        assert r.status_code == 200, r.text

    async def pair_code(self, account: Account, code: str) -> dict[str, Any]:
        """Claim a camera with the code it shows; the paired device."""
        r = await self.http.post("/api/devices/pair", json={"code": code}, headers=account.auth)
        assert r.status_code == 200, r.text
        device: dict[str, Any] = r.json()["device"]
        return device

    async def owned_camera(self, account: Account, name: str = "Test camera") -> Camera:
        camera = await self.camera(name)
        await self.pair(account, camera)
        return camera
