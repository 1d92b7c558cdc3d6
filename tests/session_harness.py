"""Driving :class:`device.sessions.SessionManager` in-process, as the cloud would, with real aiortc
viewers (``tests.media_peers.Viewer``) on the other end of each session.

``Wire`` is the manager's ``send``: it keeps what the manager sends, and tests wait on it (an
event per message, no polling).  ``watch(manager, wire)`` plays one viewer through the protocol:
``watch_request``, its offer (candidates trickled after it, as a browser does), the answer, the
device's trickled candidates.  Session ids are ``secrets.token_urlsafe`` as the cloud's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from device.media import candidate_line, defer_relays
from device.sessions import parse_candidate
from protocol import decode, encode
from protocol.messages import (
    DeviceHello,
    DeviceToCloud,
    DeviceWatchRequest,
    DeviceWatchRequestPayload,
    Heartbeat,
    HeartbeatAck,
    HelloAck,
    HelloAckPayload,
    IceCandidate,
    IceServer,
    SessionDescription,
    SignalAnswer,
    SignalIce,
    SignalIcePayload,
    SignalOffer,
    SignalSdpPayload,
    WatchEnd,
    WatchEnded,
    WatchEndedPayload,
)
from protocol.snapshot import SNAPSHOT_CHANNEL
from tests.media_peers import Viewer

ROOT = Path(__file__).resolve().parent.parent


class Wire:
    """Everything the manager sent, in order."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, message: Any) -> None:
        self.messages.append(message)
        self._changed.set()

    def of(self, session_id: str, kind: type | None = None) -> list[Any]:
        return [
            m
            for m in self.messages
            if m.payload.session_id == session_id and (kind is None or isinstance(m, kind))
        ]

    def ends(self, session_id: str) -> list[WatchEnd]:
        return self.of(session_id, WatchEnd)

    async def until(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``check()`` is truthy (re-checked on every message); its value."""
        async with asyncio.timeout(timeout):
            while not (found := check()):
                self._changed.clear()
                await self._changed.wait()
        return found

    async def first(self, session_id: str, kind: type, timeout: float = 10.0) -> Any:
        found = await self.until(lambda: self.of(session_id, kind), timeout)
        return found[0]


def session_id() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Watch:
    session_id: str
    viewer: Viewer
    wire: Wire
    applied: int = 0
    _pump: asyncio.Task[None] | None = None
    _relays: asyncio.Task[None] | None = None
    trickled: list[IceCandidate] = field(default_factory=list)
    #: The viewer's ``snapshot`` data channel (``watch(..., snapshot_channel=True)``).
    channel: Any = None

    async def pump(self) -> None:
        """Apply the device's trickled candidates to the viewer, as a browser does."""
        seen = 0
        while True:
            ices = await self.wire.until(
                lambda n=seen: self.wire.of(self.session_id, SignalIce)[n:] or None, timeout=3600
            )
            for ice in ices:
                seen += 1
                if ice.payload.candidate is None:
                    continue
                self.trickled.append(ice.payload.candidate)
                candidate = parse_candidate(ice.payload.candidate)
                if candidate is not None:
                    with contextlib.suppress(Exception):
                        await self.viewer.pc.addIceCandidate(candidate)
                        self.applied += 1

    async def vanish(self) -> None:
        """The viewer disappears without a word (a killed tab, a phone asleep): its ICE stops
        answering and it never says goodbye over DTLS."""
        for transceiver in self.viewer.pc.getTransceivers():
            await transceiver.receiver.transport.transport.stop()

    async def close(self) -> None:
        for task in (self._pump, self._relays):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.viewer.close()


class Device(Protocol):
    """What ``watch`` needs of the device side: a ``SessionManager``, or a ``ChildDevice``."""

    def watch_request(self, payload: DeviceWatchRequestPayload) -> None: ...
    def offer(self, message: SignalOffer) -> None: ...
    def ice(self, payload: SignalIcePayload) -> None: ...
    def ended(self, session_id: str, reason: str) -> None: ...


async def watch(
    manager: Device,
    wire: Wire,
    *,
    ice_servers: list[IceServer] | None = None,
    viewer_relay_only: bool = False,
    withhold_device_host_candidates: bool = False,
    read_timecodes: bool = False,
    snapshot_channel: bool = False,
) -> Watch:
    """One viewer's watch through ``manager`` (see the module doc); frames arrive later."""
    sid = session_id()
    servers = list(ice_servers or [])
    manager.watch_request(DeviceWatchRequestPayload(session_id=sid, ice_servers=servers))
    config = RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers
        ],
        iceTransportPolicy=(
            RTCIceTransportPolicy.RELAY if viewer_relay_only else RTCIceTransportPolicy.ALL
        ),
    )
    viewer = Viewer(pc=RTCPeerConnection(config), read_timecodes=read_timecodes)
    # A browser never waits for TURN before offering; an aiortc viewer can do the same, except
    # relay-only (aiortc starts ICE only if it had a local candidate when the answer came).
    relays = [] if viewer_relay_only else defer_relays(viewer.pc)
    # As the web app does: the video transceiver first, then the data channel.
    channel = viewer.pc.createDataChannel(SNAPSHOT_CHANNEL) if snapshot_channel else None
    offer = await viewer.offer()
    # A browser trickles: its offer never says end-of-candidates (that comes as signal_ice).
    sdp = "".join(f"{line}\r\n" for line in offer.sdp.splitlines() if line != "a=end-of-candidates")
    manager.offer(
        SignalOffer(
            payload=SignalSdpPayload(session_id=sid, sdp=SessionDescription(type="offer", sdp=sdp))
        )
    )
    result = Watch(sid, viewer, wire, channel=channel)

    async def trickle_relays() -> None:  # the viewer's relay candidate, when it has one
        for relay in relays:
            for candidate in await relay.allocate(5.0):
                init = IceCandidate(candidate=candidate_line(candidate), sdpMid=candidate.sdpMid)
                manager.ice(SignalIcePayload(session_id=sid, candidate=init))
        manager.ice(SignalIcePayload(session_id=sid, candidate=IceCandidate(candidate="")))

    result._relays = asyncio.create_task(trickle_relays())
    answer = await wire.first(sid, SignalAnswer)
    text = answer.payload.sdp.sdp
    if withhold_device_host_candidates:  # as if the device were behind a NAT: host unusable
        text = "".join(
            f"{line}\r\n"
            for line in text.splitlines()
            if not (line.startswith("a=candidate:") and " typ relay " not in line)
        )
    await viewer.accept(RTCSessionDescription(sdp=text, type="answer"))
    result._pump = asyncio.create_task(result.pump())
    return result


class ChildDevice:
    """The agent in a child process (``tests.agent_child``), as a :class:`Device`: the parent
    plays the cloud over the pipe.  ``state()`` asks the child for its sessions and usage."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.wire = Wire()
        self.hellos: list[dict[str, Any]] = []
        self._states: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: The sessions the next ``hello_ack`` keeps (``None``: it says nothing about them).
        self.keep: list[str] | None = None
        self._reader = asyncio.create_task(self._read())
        self._hello = asyncio.Event()

    @classmethod
    async def start(cls, state_dir: Path, config: dict[str, Any]) -> ChildDevice:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.agent_child",
            str(state_dir),
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
            limit=2**20,
        )
        child = cls(proc)
        await asyncio.wait_for(child._hello.wait(), 60)
        return child

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := (await self.proc.stdout.readline()).decode():
            if line.startswith("#state "):
                self._states.put_nowait(json.loads(line[len("#state ") :]))
                continue
            message = decode(line, DeviceToCloud)
            if isinstance(message, DeviceHello):
                self.hellos.append(msgspec.to_builtins(message.payload))
                self.send(
                    HelloAck(
                        payload=HelloAckPayload(
                            role="device", id="child-device", paired=True, sessions=self.keep
                        )
                    )
                )
                self._hello.set()
            elif isinstance(message, Heartbeat):
                self.send(HeartbeatAck())
            else:
                self.wire(message)

    def send(self, message: msgspec.Struct) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode(message).encode() + b"\n")

    async def reconnect(self) -> dict[str, Any]:
        """The agent's connection drops and comes back: the payload of its new ``hello``."""
        assert self.proc.stdin is not None
        count = len(self.hellos)
        self._hello.clear()
        self.proc.stdin.write(b"#drop\n")
        async with asyncio.timeout(30):
            while len(self.hellos) == count:
                self._hello.clear()
                await self._hello.wait()
        return self.hellos[-1]

    async def state(self, *, collect: bool = False) -> dict[str, Any]:
        """The child's state; ``collect``: after a full garbage collection in the child."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"#collect\n" if collect else b"#state\n")
        return await asyncio.wait_for(self._states.get(), 30)

    async def until(self, check: Callable[[dict[str, Any]], bool], timeout: float = 60) -> Any:
        """Ask for the child's state until ``check(state)``: that state.  (Asking is the only
        way to see into another process; each answer is awaited, never slept for.)"""
        async with asyncio.timeout(timeout):
            while not check(found := await self.state()):
                await asyncio.sleep(0.05)
        return found

    # --- the Device protocol: the cloud's messages to the agent ---------------------------

    def watch_request(self, payload: DeviceWatchRequestPayload) -> None:
        self.send(DeviceWatchRequest(payload=payload))

    def offer(self, message: SignalOffer) -> None:
        self.send(message)

    def ice(self, payload: SignalIcePayload) -> None:
        self.send(SignalIce(payload=payload))

    def ended(self, session_id: str, reason: str) -> None:
        self.send(
            WatchEnded(payload=WatchEndedPayload(session_id=session_id, reason=reason))  # type: ignore[arg-type]
        )

    async def stop(self) -> int:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(Exception):
                self.proc.stdin.write(b"#quit\n")
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        return self.proc.returncode or 0
