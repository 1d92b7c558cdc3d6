"""Real aiortc peers for tests: a browser-like viewer that decodes what a device sends.

``Viewer`` is the offerer (one ``recvonly`` video transceiver, as a browser watching a camera),
decodes every frame aiortc hands it, and reads the synthetic pattern's timecode from each
picture.  ``connect(viewer, hub)`` answers its offer with a hub track on a fresh device-side
peer connection.  Reused by the agent and cloud integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from device.hal.timecode import read_timecode_rgb24
from device.media import HubTrack, MediaHub, answer


@dataclass
class ReceivedFrame:
    arrival: float  # time.time()
    width: int
    height: int
    keyframe: bool
    timecode: int | None
    #: The decoded frame's timestamp: the RTP timestamp as aiortc's receiver unwrapped it.
    pts: int | None = None


def frame_timecode(frame: Any) -> int | None:
    """The synthetic timecode of a decoded ``av.VideoFrame`` (``None`` if it has none)."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    return read_timecode_rgb24(bytes(plane), rgb.width, rgb.height, plane.line_size)


@dataclass
class Viewer:
    """A receiving peer; ``slow_s`` makes its consumer sleep after each frame."""

    slow_s: float = 0.0
    read_timecodes: bool = True
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    frames: list[ReceivedFrame] = field(default_factory=list)
    track_ended: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.transceiver = self.pc.addTransceiver("video", direction="recvonly")
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._task = asyncio.ensure_future(self._consume(track))

    @property
    def receiver(self) -> RTCRtpReceiver:
        return self.transceiver.receiver

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                code = frame_timecode(frame) if self.read_timecodes else None
                self.frames.append(
                    ReceivedFrame(
                        time.time(),
                        frame.width,
                        frame.height,
                        bool(frame.key_frame),
                        code,
                        frame.pts,
                    )
                )
                self._first.set()
                if self.slow_s:
                    await asyncio.sleep(self.slow_s)
        except MediaStreamError:
            pass
        finally:
            self.track_ended.set()

    async def offer(self) -> RTCSessionDescription:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        description = self.pc.localDescription
        assert description is not None
        return description

    async def accept(self, description: RTCSessionDescription) -> None:
        await self.pc.setRemoteDescription(description)

    async def wait_frames(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.frames)} of {count} frames in {timeout}s")
            await asyncio.sleep(0.02)

    async def send_pli(self) -> None:
        """Send a real RTCP PLI to the sender, as a browser does when it lost a picture."""
        sources = self.receiver.getSynchronizationSources()
        assert sources, "no RTP received yet"
        await self.receiver._send_rtcp_pli(sources[0].source)

    async def close(self) -> None:
        await self.pc.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class DevicePeer:
    pc: RTCPeerConnection
    track: HubTrack

    async def close(self) -> None:
        self.track.stop()
        await self.pc.close()


async def connect(viewer: Viewer, hub: MediaHub) -> DevicePeer:
    """The device side of a session: subscribe, answer the viewer's offer, hand it the answer."""
    pc = RTCPeerConnection()
    track = hub.subscribe()
    description = await answer(pc, await viewer.offer(), track)
    await viewer.accept(description)
    return DevicePeer(pc, track)
