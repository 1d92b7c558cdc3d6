"""The real :class:`device.agent.Agent` in a child process, its signaling over stdin/stdout.

For measurements that must be the agent's alone (RSS, descriptors, threads; the tests of
``tests/test_agent_memory.py`` and ``bench/agent_soak.py``): the viewers live in the parent,
which plays the cloud over the pipe (``tests.session_harness.ChildDevice``).  The agent is the
production one, given a connect factory (its seam) whose socket is the pipe, and credentials
saved beforehand (so it never registers over HTTP).

Lines on the pipe: protocol messages (JSON, ``{"type": ...}``) both ways, and control lines
from the parent: ``#state`` (answered ``#state {json}``: sessions, hub, counters, usage) and
``#quit`` (stop the agent and exit).

    python -m tests.agent_child STATE_DIR CONFIG_JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from device import credentials as creds
from device.agent import Agent
from device.config import load
from device.credentials import Credentials
from device.provisioning import DisplayGroup
from device.signaling import Socket, SocketClosed
from device.systemd import Notifier

DEVICE_ID = "child-device"


def usage() -> dict[str, Any]:
    import psutil

    process = psutil.Process()
    # The loop's default executor (to_thread) grows to as many threads as were ever busy at
    # once, up to its bound, and keeps them: counted apart from every other thread.
    executor = getattr(asyncio.get_running_loop(), "_default_executor", None)
    pool = len(getattr(executor, "_threads", ()))
    return {
        "rss_mib": round(process.memory_info().rss / 2**20, 1),
        "fds": process.num_fds(),
        "threads": process.num_threads() - pool,
        "executor_threads": pool,
        "tasks": len(asyncio.all_tasks()),
        "py_objects": len(gc.get_objects()),  # objects tracked by the collector
    }


def state(agent: Agent) -> dict[str, Any]:
    sessions, hub = agent.sessions, agent.hub
    assert sessions is not None and hub is not None
    return {
        "sessions": len(sessions.sessions),
        "viewers": sessions.viewers,
        "streaming": sessions.streaming(),
        "pending_tasks": sessions.pending_tasks,
        "hub": hub.state.value,
        "camera_running": hub.running,
        "camera_starts": hub.starts,
        "access_units": hub.access_units,
        "counters": {
            "accepted": sessions.counters.accepted,
            "closed": sessions.counters.closed,
            "connected": sessions.counters.connected,
            "refused_busy": sessions.counters.refused_busy,
            "memory_returned": sessions.counters.memory_returned,
            "ended": dict(sessions.counters.ended),
        },
        "delivered": sum(t.stats.delivered for t in hub.tracks),
        **usage(),
    }


class Pipe:
    """stdin/stdout as the agent's :class:`Socket`; control lines are answered here."""

    def __init__(self, reader: asyncio.StreamReader, agent_ref: list[Agent]) -> None:
        self._reader = reader
        self._agent = agent_ref
        self._out = sys.stdout
        self.eof = False

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    async def send(self, text: str) -> None:
        self._write(text)

    async def recv(self) -> str:
        while True:
            raw = await self._reader.readline()
            if not raw:
                self.eof = True
                raise SocketClosed(None)
            line = raw.decode().rstrip("\n")
            if line == "#state":
                self._write("#state " + json.dumps(state(self._agent[0])))
            elif line == "#collect":  # measure live objects, not garbage awaiting collection
                gc.collect()
                self._write("#state " + json.dumps(state(self._agent[0])))
            elif line == "#drop":  # the connection drops without a close frame
                raise SocketClosed(None)
            elif line == "#quit":
                self._agent[0].stop()
            elif line:
                return line

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None

    @contextlib.asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Socket]:
        if self.eof:  # the parent is gone: as a cloud that cannot be reached
            raise ConnectionRefusedError(111, "the parent closed the pipe")
        yield self


async def main(state_dir: Path, overrides: dict[str, Any]) -> None:
    creds.save(state_dir, Credentials(device_id=DEVICE_ID, device_token="child-token"))
    config = load(
        None,
        {"cloud": "http://127.0.0.1:9", "state_dir": str(state_dir), **overrides},
        env={},
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ref: list[Agent] = []
    pipe = Pipe(reader, ref)
    agent = Agent(config, display=DisplayGroup([]), notifier=Notifier({}), connect=pipe.connect)
    ref.append(agent)
    await agent.run()


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("MUMU_CHILD_LOG", "WARNING"),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )
    asyncio.run(main(Path(sys.argv[1]), json.loads(sys.argv[2])))
