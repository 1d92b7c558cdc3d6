"""The floor for bench/cloud_signaling.py: a bare ``websockets`` relay with no checks at all.

Every connection's first frame registers it (devices by id, viewers as "viewer"); every later
frame is either answered (heartbeat) or forwarded as is to the device "bare" session's device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cloud.gc_policy import steward

devices: dict[str, ServerConnection] = {}
first_device: list[str] = []


async def handler(ws: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        await relay(ws)


async def relay(ws: ServerConnection) -> None:
    hello = json.loads(await ws.recv())
    device_id = hello["payload"].get("device_id")
    if device_id:
        devices[device_id] = ws
        first_device.append(device_id)
    await ws.send('{"type":"hello_ack","payload":{}}')
    async for frame in ws:
        if '"heartbeat"' in frame[:30]:
            await ws.send('{"type":"heartbeat_ack","payload":{}}')
        elif '"signal_ice"' in frame[:30]:
            # the latency probe's device connects last
            await devices[first_device[-1]].send(frame)
    if device_id:
        devices.pop(device_id, None)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, ping_interval=None):
        await steward()  # the cloud's collector policy, so that the floor is fair


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
