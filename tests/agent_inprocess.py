"""The real :class:`device.agent.Agent` inside the test's event loop, against a real cloud.

Its state is read directly (``agent.sessions``, ``agent.hub``, ``agent.client``,
``agent.controller``): no log parsing.  The subprocess form (``tests.agent_process``) stays for
what only a process shows: signals, systemd's notify socket, exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from device.agent import Agent
from device.config import load
from device.provisioning import DisplayGroup
from device.systemd import Notifier
from tests.cloud_process import Account, ApiClient


async def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Wait until ``check()`` is truthy (state read in this process); its value."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)
    return found


@contextlib.asynccontextmanager
async def running_agent(
    cloud_url: str, state_dir: Path, overrides: Mapping[str, Any] | None = None
) -> AsyncIterator[Agent]:
    """An agent with the synthetic camera (small), no display, quick reconnections."""
    settings = {
        "cloud": cloud_url,
        "state_dir": str(state_dir),
        "camera.backend": "synthetic",
        "camera.width": 640,
        "camera.height": 360,
        "camera.fps": 15,
        "camera.bitrate": 600_000,
        "reconnect.base": 0.1,
        "reconnect.cap": 1.0,
        **(overrides or {}),
    }
    agent = Agent(load(None, settings, env={}), display=DisplayGroup([]), notifier=Notifier({}))
    task = asyncio.create_task(agent.run(), name="agent")
    try:
        await until(lambda: agent.sessions is not None or task.done(), 10, "the agent to start")
        if task.done():
            task.result()  # raises what stopped it
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


def paired(agent: Agent) -> bool:
    return agent.controller is not None and agent.controller.paired is True


async def pair(agent: Agent, cloud_url: str, account: Account | None = None) -> tuple[Account, str]:
    """Pair ``agent`` with the code it shows, to ``account`` (a new one if not given)."""
    code = await until(
        lambda: agent.controller is not None and agent.controller.code, 30, "a pairing code"
    )
    api = ApiClient(cloud_url)
    try:
        account = account or await api.account()
        device = await api.pair_code(account, code.code)
    finally:
        await api.aclose()
    await until(lambda: paired(agent), 20, "the cloud to say paired")
    return account, str(device["device_id"])
