"""The whole system on one machine, for the end-to-end browser tests (``tests/test_e2e_*.py``).

Everything is real and runs as in production, only on loopback:

* coturn with the repository's config (``tests.browser.coturn_server``: loopback overrides);
* PostgreSQL + Redis (the suite's session-wide servers; a fresh database per stack);
* two ``mumu-cloud serve`` processes sharing them (``MUMU_TRUSTED_PROXIES=127.0.0.1``,
  ``MUMU_PUBLIC_URL`` = the nginx URL, TURN settings pointing at the test coturn);
* nginx with the repository's config in front of both (round robin, no sticky sessions);
* the device agent, ``mumu-agent run --camera synthetic --display console``, connected to the
  cloud *through nginx*, its pairing code read from its console output.

:func:`start_stack` builds it (a context manager, used by module-scoped fixtures).  The page
helpers at the end drive the web app in Chromium through its ``data-testid`` attributes and its
test hook ``window.__mumu``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.agent_process import CODE, AgentProcess
from tests.browser import Coturn, Nginx, coturn_server, nginx_server
from tests.cloud_fixtures import RELAXED, backend_env
from tests.cloud_process import Account, CloudProcess
from tests.services import free_port

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

TURN_SECRET = "e2e-turn-secret-shared-with-coturn"
WRONG_TURN_SECRET = "e2e-turn-secret-coturn-does-not-know"
#: The agent's camera in the tests: small and cheap on a 2-core machine, wide enough for the
#: timecode stamp (608 px).
AGENT_CONFIG: dict[str, Any] = {
    "name": "E2E camera",
    "camera": {"width": 640, "height": 360, "fps": 15, "bitrate": 600_000},
    "reconnect": {"base": 0.1, "cap": 1.0},
}
#: The agent's log line when the cloud tells it it has an owner.
PAIRED = r"the cloud says: paired"
#: ... and when it has none (then it shows a fresh code).
UNPAIRED = r"device is not paired: showing a pairing code"


def cloud_env(coturn: Coturn, public_url: str, turn_secret: str) -> dict[str, str]:
    """What every cloud of the stack gets on top of a backend (database + Redis)."""
    return {
        **RELAXED,
        "MUMU_TURN_SECRET": turn_secret,
        "MUMU_TURN_URLS": ",".join(coturn.urls),
        "MUMU_STUN_URLS": f"stun:127.0.0.1:{coturn.port}",
        "MUMU_TRUSTED_PROXIES": "127.0.0.1",
        "MUMU_PUBLIC_URL": public_url,
        # The production default (RELAXED shortens it for socket tests): a viewer whose socket
        # died with its cloud process resumes its session on the other one.
        "MUMU_RESUME_GRACE": "20",
    }


@dataclass
class Stack:
    coturn: Coturn
    nginx: Nginx
    clouds: list[CloudProcess]
    agent: AgentProcess
    backend: Mapping[str, str]
    tmp: Path

    @property
    def url(self) -> str:
        return self.nginx.url

    # --- the agent's pairing code ------------------------------------------------------------

    async def pairing_code(self, after_line: int = 0, timeout: float = 30.0) -> str:
        """The latest pairing code the agent printed after its output line ``after_line``."""
        deadline = time.monotonic() + timeout
        while True:
            codes = CODE.findall("\n".join(self.agent.lines[after_line:]))
            if codes:
                first, second = codes[-1]
                return str(first + second)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no pairing code within {timeout}s:\n{self.agent.tail()}")
            await asyncio.sleep(0.05)

    async def agent_says(self, pattern: str, after_line: int = 0, timeout: float = 30.0) -> None:
        """Waits for ``pattern`` in the agent's output after line ``after_line``."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while not regex.search("\n".join(self.agent.lines[after_line:])):
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent never said {pattern!r}:\n{self.agent.tail()}")
            await asyncio.sleep(0.05)

    def diagnostics(self, lines: int = 40) -> str:
        """The tails of the agent's output, the clouds' logs and nginx's error log."""
        parts = [f"--- agent ---\n{self.agent.tail(lines)}"]
        parts += [f"--- cloud :{c.port} ---\n{c.log()[-2000:]}" for c in self.clouds]
        parts.append(f"--- nginx ---\n{self.nginx.error_log()[-2000:]}")
        return "\n".join(parts)

    # --- the clouds ---------------------------------------------------------------------------

    def sockets(self, role: str = "viewer") -> list[int]:
        """Open WebSockets of ``role`` (viewer/device) on each cloud, from its ``/metrics``
        (-1 for a cloud that does not answer)."""
        return [open_sockets(cloud, role) for cloud in self.clouds]

    @contextlib.contextmanager
    def other_cloud(self, turn_secret: str) -> Iterator[tuple[CloudProcess, Nginx]]:
        """One more cloud on the same database and Redis (so the same accounts and the same
        online camera), with its own TURN secret, behind its own nginx."""
        port = free_port()
        with nginx_server([port]) as nginx:
            env = {**cloud_env(self.coturn, nginx.url, turn_secret), **self.backend}
            cloud = CloudProcess(self.tmp / f"cloud-{port}", env=env, port=port)
            with cloud:
                yield cloud, nginx


def open_sockets(cloud: CloudProcess, role: str = "viewer") -> int:
    """``mumu_websocket_connections{role=...}`` of one cloud (read on its own port, not through
    nginx); -1 when it does not answer."""
    try:
        text = httpx.get(f"{cloud.url}/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return -1
    pattern = rf'^mumu_websocket_connections\{{role="{role}"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return int(float(found[1])) if found else 0


@contextlib.contextmanager
def start_stack(
    request: pytest.FixtureRequest,
    tmp: Path,
    *,
    clouds: int = 2,
    agent_config: Mapping[str, Any] = AGENT_CONFIG,
) -> Iterator[Stack]:
    """coturn, ``clouds`` cloud processes on PostgreSQL + Redis, nginx in front, the agent."""
    backend = backend_env("scaled", request)
    ports = [free_port() for _ in range(clouds)]
    with contextlib.ExitStack() as stack:
        coturn = stack.enter_context(coturn_server(TURN_SECRET))
        # nginx first: the clouds need its URL (claim links); it needs only their ports.
        nginx = stack.enter_context(nginx_server(ports))
        env = {**cloud_env(coturn, nginx.url, TURN_SECRET), **backend}
        processes = [
            stack.enter_context(CloudProcess(tmp / f"cloud-{i}", env=env, port=port))
            for i, port in enumerate(ports)
        ]
        agent = stack.enter_context(
            AgentProcess(nginx.url, tmp / "agent-state", config=dict(agent_config))
        )
        yield Stack(coturn, nginx, processes, agent, backend, tmp)


# --- the web app in Chromium ---------------------------------------------------------------------


async def open_app(
    browser: Browser, url: str, account: Account | None = None, **options: Any
) -> tuple[BrowserContext, Page]:
    """A fresh browser context on the app at ``url``; signed in as ``account`` if given (its
    token put where the app keeps it, as after signing in)."""
    context = await browser.new_context(**options)
    page = await context.new_page()
    await page.goto(url + "/")
    if account is not None:
        await page.evaluate(
            "([t, e]) => { localStorage.setItem('mumu.token', t);"
            " localStorage.setItem('mumu.email', e); }",
            [account.token, account.email],
        )
        await page.goto(url + "/#/devices")
        await page.wait_for_selector("[data-testid=page-title]:has-text('Your cameras')")
    return context, page


_PLAYBACK = """() => {
  const v = document.querySelector("[data-testid=video]");
  if (!v) return null;
  const q = v.getVideoPlaybackQuality();
  return { width: v.videoWidth, height: v.videoHeight, frames: q.totalVideoFrames,
           dropped: q.droppedVideoFrames, time: v.currentTime, paused: v.paused };
}"""


async def playback(page: Page) -> dict[str, Any]:
    """The ``<video>``'s size, frames shown so far (``getVideoPlaybackQuality``), time."""
    state: dict[str, Any] | None = await page.evaluate(_PLAYBACK)
    assert state is not None, "no video element on the page"
    return state


async def frames_flow(page: Page, seconds: int = 3, timeout_ms: int = 15_000) -> list[int]:
    """Asserts that the video shows new frames in each of ``seconds`` one-second steps; the
    frame counts seen."""
    counts = [int((await playback(page))["frames"])]
    for _ in range(seconds):
        await page.wait_for_function(
            f"() => document.querySelector('[data-testid=video]')"
            f".getVideoPlaybackQuality().totalVideoFrames > {counts[-1]}",
            timeout=timeout_ms,
        )
        await asyncio.sleep(1.0)
        counts.append(int((await playback(page))["frames"]))
    assert all(b > a for a, b in itertools.pairwise(counts)), counts
    return counts


async def wait_playing(page: Page, timeout_ms: int = 30_000) -> dict[str, Any]:
    """Waits until the watch page is live and the video has a picture; its playback state."""
    await page.wait_for_selector(
        "[data-testid=watch-state][data-state=connected]", timeout=timeout_ms
    )
    await page.wait_for_function(
        """() => { const v = document.querySelector("[data-testid=video]");
                   return v && v.videoWidth > 0 && !v.paused
                       && v.getVideoPlaybackQuality().totalVideoFrames > 0; }""",
        timeout=timeout_ms,
    )
    return await playback(page)


_SELECTED_PAIR = """async () => {
  const pc = window.__mumu.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = report.get(s.selectedCandidatePairId);
    }
  });
  if (!pair) return null;
  const local = report.get(pair.localCandidateId);
  const remote = report.get(pair.remoteCandidateId);
  return { state: pair.state, local: local.candidateType, remote: remote.candidateType,
           protocol: local.protocol, relayProtocol: local.relayProtocol ?? null,
           localAddress: local.address, localPort: local.port, url: local.url ?? null,
           remoteAddress: remote.address, remotePort: remote.port,
           bytesReceived: pair.bytesReceived };
}"""


async def selected_pair(page: Page) -> dict[str, Any] | None:
    """The selected ICE candidate pair of the page's peer connection, from ``getStats()``."""
    pair: dict[str, Any] | None = await page.evaluate(_SELECTED_PAIR)
    return pair


async def text_of(page: Page, testid: str) -> str:
    return (await page.text_content(f"[data-testid={testid}]")) or ""
