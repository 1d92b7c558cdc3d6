"""The device agent as a real ``mumu-agent run`` subprocess, and a viewer that watches it through
the cloud.  Used by ``tests/test_agent_*.py`` and ``bench/agent_ttff.py``.

``AgentProcess`` starts the console script, collects its stdout (logs and the console display),
and reads the pairing code from it.  ``CloudViewer`` is a viewer as the web app is one: it says
hello on ``/ws/viewer`` with its JWT, asks to watch, offers ``recvonly`` video, trickles its ICE
candidates as ``signal_ice`` (and ``null`` at the end), and decodes what arrives with
:class:`tests.media_peers.Viewer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from device.media import candidate_line, defer_relays
from tests import signaling_client
from tests.cloud_process import Account, ApiClient
from tests.media_peers import Viewer

BIN = Path(sys.executable).parent
CODE = re.compile(r"^\s+(\d{3}) (\d{3})\s*$", re.MULTILINE)


@dataclass
class AgentProcess:
    cloud_url: str
    state_dir: Path
    camera: str = "synthetic"
    display: str = "console"
    #: Written to ``state_dir/../agent.yaml`` and passed with ``--config`` when given.
    config: Mapping[str, Any] | None = None
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def command(self) -> list[str]:
        cmd = [
            str(BIN / "mumu-agent"),
            "run",
            "--cloud",
            self.cloud_url,
            "--camera",
            self.camera,
            "--display",
            self.display,
            "--state-dir",
            str(self.state_dir),
        ]
        if self.config is not None:
            path = self.state_dir.parent / f"{self.state_dir.name}-agent.yaml"
            path.write_text(yaml.safe_dump(dict(self.config)))
            cmd += ["--config", str(path)]
        return [*cmd, *self.extra_args]

    def start(self) -> AgentProcess:
        self.lines = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "MUMU_AGENT_CONFIG"):
            env.pop(inherited, None)
        env.update(self.env)
        self.proc = subprocess.Popen(
            self.command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = 20.0
    ) -> re.Match[str]:
        """The first match of ``pattern`` in the output (waiting for it, without blocking the
        event loop)."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.output)
            if found:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                await asyncio.sleep(0.1)  # let the reader catch the last lines
                found = regex.search(self.output)
                if found:
                    return found
                raise AssertionError(
                    f"agent exited ({self.proc.returncode}) before {regex.pattern!r}:\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {regex.pattern!r} within {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.output, re.MULTILINE))

    async def pairing_code(self, timeout: float = 20.0) -> str:
        """The pairing code the console display shows (``123 456`` -> ``"123456"``)."""
        found = await self.wait_for(CODE, timeout)
        return found[1] + found[2]

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM; the exit status (SIGKILL and an AssertionError if it hangs)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not stop within {timeout}s:\n{self.tail()}") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                self.terminate()
        if self._reader is not None:
            self._reader.join(5)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def pair_agent(cloud_url: str, agent: AgentProcess) -> tuple[Account, dict[str, Any]]:
    """Pair a running agent to a new account with the code it prints: (account, device)."""
    code = await agent.pairing_code()
    api = ApiClient(cloud_url)
    try:
        account = await api.account()
        device = await api.pair_code(account, code)
    finally:
        await api.aclose()
    await agent.wait_for(r"the cloud says: paired")
    return account, device


def strip_candidates(sdp: str) -> tuple[str, list[str]]:
    """An SDP without its ``a=candidate`` lines (and ``a=end-of-candidates``), and those
    candidate lines: a browser-like offer whose candidates go by trickle."""
    kept, candidates = [], []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidates.append(line[2:])
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", candidates


class CloudViewer:
    """A viewer watching a device through the cloud (see the module doc)."""

    def __init__(
        self, ws_base: str, token: str, *, trickle: bool = True, read_timecodes: bool = True
    ) -> None:
        """``trickle``: as a browser, send candidates after the offer and never wait for the
        TURN allocation before offering (the relay candidate follows when there is one)."""
        self.ws_base = ws_base
        self.token = token
        self.trickle = trickle
        self.read_timecodes = read_timecodes
        self.client: signaling_client.Client | None = None
        self.peer: Viewer | None = None
        self.session_id: str | None = None
        self.ended: dict[str, Any] | None = None
        self._ended = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._relays: asyncio.Task[None] | None = None
        self.ready: dict[str, Any] = {}
        #: ``time.time()`` when ``watch_request`` was sent, ``watch_ready`` and the answer came.
        self.requested_at = 0.0
        self.ready_at = 0.0
        self.answered_at = 0.0

    async def connect(self) -> CloudViewer:
        self.client = await signaling_client.viewer(self.ws_base, self.token)
        return self

    async def watch(
        self, device_id: str, timeout: float = 15.0, request_id: str | None = None
    ) -> str:
        """Ask to watch, offer, apply the answer; the session id.  Frames arrive later."""
        if self.client is None:
            await self.connect()
        client = self.client
        assert client is not None
        self.requested_at = time.time()
        request: dict[str, Any] = {"device_id": device_id}
        if request_id is not None:
            request["request_id"] = request_id
        await client.send("watch_request", request)
        ready = (await client.recv("watch_ready", timeout))["payload"]
        self.ready = ready
        self.ready_at = time.time()
        session_id = str(ready["session_id"])
        self.session_id = session_id
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in ready["ice_servers"]
        ]
        self.peer = Viewer(
            pc=RTCPeerConnection(RTCConfiguration(iceServers=servers)),
            read_timecodes=self.read_timecodes,
        )
        relays = defer_relays(self.peer.pc) if self.trickle else []
        offer = await self.peer.offer()
        sdp, candidates = strip_candidates(offer.sdp) if self.trickle else (offer.sdp, [])
        await client.send(
            "signal_offer", {"session_id": session_id, "sdp": {"type": "offer", "sdp": sdp}}
        )
        for candidate in candidates:
            await client.send(
                "signal_ice",
                {
                    "session_id": session_id,
                    "candidate": {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0},
                },
            )
        if relays:
            self._relays = asyncio.create_task(self._trickle_relays(session_id, relays))
        elif self.trickle:
            await client.send("signal_ice", {"session_id": session_id, "candidate": None})
        answer = (await client.recv("signal_answer", timeout))["payload"]
        self.answered_at = time.time()
        assert answer["session_id"] == session_id
        await self.peer.accept(RTCSessionDescription(sdp=answer["sdp"]["sdp"], type="answer"))
        self._pump = asyncio.create_task(self._messages())
        return session_id

    async def _trickle_relays(self, session_id: str, relays: list[Any]) -> None:
        client = self.client
        assert client is not None
        for relay in relays:
            for candidate in await relay.allocate(10.0):
                await client.send(
                    "signal_ice",
                    {
                        "session_id": session_id,
                        "candidate": {
                            "candidate": candidate_line(candidate),
                            "sdpMid": candidate.sdpMid,
                            "sdpMLineIndex": candidate.sdpMLineIndex,
                        },
                    },
                )
        await client.send("signal_ice", {"session_id": session_id, "candidate": None})

    async def _messages(self) -> None:
        """Apply the device's trickled candidates (it sends only ``null``); note the end."""
        client = self.client
        assert client is not None and self.peer is not None
        with contextlib.suppress(Exception):
            while True:
                message = await client.recv(timeout=3600)
                if message["type"] == "watch_ended":
                    self.ended = message["payload"]
                    self._ended.set()
                elif message["type"] == "signal_ice" and message["payload"].get("candidate"):
                    from device.sessions import parse_candidate
                    from protocol.messages import IceCandidate

                    candidate = parse_candidate(IceCandidate(**message["payload"]["candidate"]))
                    if candidate is not None:
                        await self.peer.pc.addIceCandidate(candidate)

    async def wait_ended(self, timeout: float = 15.0) -> dict[str, Any]:
        """The payload of ``watch_ended`` (waiting for it)."""
        await asyncio.wait_for(self._ended.wait(), timeout)
        assert self.ended is not None
        return self.ended

    async def end(self) -> None:
        """``watch_end`` (if still connected to the cloud)."""
        if self.client is not None and self.session_id is not None:
            with contextlib.suppress(Exception):
                await self.client.send("watch_end", {"session_id": self.session_id})

    async def close(self) -> None:
        for task in (self._pump, self._relays):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.peer is not None:
            await self.peer.close()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
