"""Camera settings between a camera's owner and the camera: the cloud only checks and relays.

* ``device_settings_request`` from a viewer goes to the device only when that viewer's account
  owns it, read from the database for every request (never a cache held by a connection);
  otherwise ``error`` ``forbidden``; a device that is not connected: ``device_offline``.
* ``device_settings`` from a device goes to the account that owns it *now* (database), on every
  socket of that account, with ``device_id`` set from the device's authenticated socket.  A
  device nobody owns tells nobody.

Settings are words (sizes, flips, versions), never pictures.
"""

from __future__ import annotations

import msgspec

from cloud.live import LiveState
from cloud.store import Store
from protocol import ProtocolError, encode
from protocol.messages import (
    DeviceSettings,
    DeviceSettingsPayload,
    DeviceSettingsRequest,
    DeviceSettingsRequestPayload,
)

REF = "device_settings_request"


class DeviceSettingsRelay:
    def __init__(self, store: Store, live: LiveState) -> None:
        self.store = store
        self.live = live

    async def from_viewer(self, user_id: str, payload: DeviceSettingsRequestPayload) -> None:
        """Pass an owner's request on to the device; ``ProtocolError`` if it may not."""
        device = await self.store.device(payload.device_id)
        if device is None or device.owner_id is None or device.owner_id != user_id:
            raise ProtocolError(
                "forbidden",
                "only the camera's owner may see or change its settings",
                REF,
                payload.request_id,
            )
        text = encode(DeviceSettingsRequest(payload=payload))
        if not await self.live.publish(f"device:{device.id}", text):
            raise ProtocolError("device_offline", "the camera is offline", REF, payload.request_id)

    async def from_device(self, device_id: str, payload: DeviceSettingsPayload) -> None:
        """Pass a device's answer on to its owner (every socket of the account)."""
        device = await self.store.device(device_id)
        if device is None or device.owner_id is None:
            return
        answer = msgspec.structs.replace(payload, device_id=device_id)
        await self.live.publish(f"user:{device.owner_id}", encode(DeviceSettings(payload=answer)))
