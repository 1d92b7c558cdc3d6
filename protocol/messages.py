"""The signaling protocol, defined once for the cloud, the device agent and the web client.

Every WebSocket message is a JSON object ``{"type": "<name>", "payload": {...}}``. Each message
type is a ``msgspec.Struct`` tagged by ``type``; each direction (device -> cloud, viewer -> cloud,
cloud -> device, cloud -> viewer) is a union of the structs that may travel that way, so decoding
against a direction both parses and validates.  ``docs/protocol.md`` documents every message and
``tests/test_protocol.py`` checks that the document and ``web/js/protocol.js`` agree with this
module.
"""

from __future__ import annotations

import functools
from typing import Annotated, Final, Literal

import msgspec

#: Largest WebSocket message the cloud accepts (bytes of UTF-8 text).
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Deepest nesting of JSON arrays and objects the cloud accepts in a message (the deepest real
#: message nests 4 levels; the limit keeps a decoder's recursion far from Python's).
MAX_JSON_DEPTH: Final = 32
#: How often devices (and, while watching, viewers) send ``heartbeat``.
HEARTBEAT_INTERVAL_S: Final = 30.0
#: Presence expires this long after the last heartbeat: a camera that stops heartbeating is
#: shown offline within two missed heartbeats.
PRESENCE_TTL_S: Final = 65.0

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
#: A client's name for one of its requests, echoed in the answer (letters, digits, ``-``, ``_``).
RequestId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")]
#: Most sessions a device lists in its ``hello`` (the agent caps its sessions well below this).
MAX_CLAIMED_SESSIONS: Final = 64
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]
SdpText = Annotated[str, msgspec.Meta(max_length=60_000)]
Version = Annotated[str, msgspec.Meta(pattern=r"^[0-9][0-9A-Za-z.+-]{0,63}\Z")]
Arch = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{1,32}\Z")]
Window = Annotated[
    str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]\Z")
]


class _Payload(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every payload: unknown fields are an error, not silently dropped."""


class _Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Base of every message: ``{"type": ..., "payload": ...}``."""


# --- payloads ---------------------------------------------------------------------------------


class DeviceHelloPayload(_Payload):
    device_id: Id
    device_token: Token
    #: The agent's release (``1.4.0``) and architecture (``aarch64``): the cloud's rollouts
    #: decide from them (absent from agents older than over-the-air updates).
    version: Version | None = None
    arch: Arch | None = None
    #: The sessions whose peer connection still carries video (after a reconnection): the cloud
    #: keeps or re-adopts them and says which in ``hello_ack``; the device ends the others.
    sessions: Annotated[list[Id], msgspec.Meta(max_length=MAX_CLAIMED_SESSIONS)] | None = None


class ViewerHelloPayload(_Payload):
    token: Token


class HelloAckPayload(_Payload):
    #: ``"device"`` or ``"viewer"``.
    role: Literal["device", "viewer"]
    #: The device id, or the viewer's user id.
    id: Id
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S
    #: Devices only: whether an account owns this device (if not, show a pairing code).
    paired: bool | None = None
    #: Devices only: of the sessions the ``hello`` listed (and any the cloud still holds for
    #: the device), those the cloud keeps.  The device ends every other session it has.
    #: ``None``: the cloud says nothing about them (the device keeps what it has).
    sessions: list[Id] | None = None


class EmptyPayload(_Payload):
    pass


class WatchRequestPayload(_Payload):
    """Viewer -> cloud: start watching a device."""

    device_id: Id
    #: Echoed in the ``watch_ready`` (or ``error``) that answers this request, so that a late
    #: answer to an older request is recognised.
    request_id: RequestId | None = None


class IceServer(_Payload, omit_defaults=True):
    """One entry of ``RTCConfiguration.iceServers`` (the browser's field names)."""

    urls: list[Annotated[str, msgspec.Meta(max_length=512)]]
    username: str | None = None
    credential: str | None = None


class DeviceWatchRequestPayload(_Payload):
    """Cloud -> device: a viewer wants to watch; wait for its ``signal_offer``."""

    session_id: Id
    ice_servers: list[IceServer]


class WatchReadyPayload(_Payload):
    """Cloud -> viewer: the session exists; create the peer connection and send an offer."""

    session_id: Id
    device_id: Id
    ice_servers: list[IceServer]
    #: The ``request_id`` of the ``watch_request`` this answers.
    request_id: RequestId | None = None


class SessionDescription(_Payload):
    type: Literal["offer", "answer"]
    sdp: SdpText


class IceCandidate(_Payload, omit_defaults=True):
    """An ``RTCIceCandidateInit`` (the browser's field names)."""

    candidate: Annotated[str, msgspec.Meta(max_length=2048)]
    sdpMid: str | None = None  # the browser's field names
    sdpMLineIndex: Annotated[int, msgspec.Meta(ge=0, le=255)] | None = None
    usernameFragment: str | None = None


class SignalSdpPayload(_Payload):
    session_id: Id
    sdp: SessionDescription


class SignalIcePayload(_Payload):
    session_id: Id
    #: ``None`` signals the end of candidates.
    candidate: IceCandidate | None = None


class SessionPayload(_Payload):
    session_id: Id


class WatchResumePayload(_Payload):
    session_id: Id
    #: The device the session watches: lets a cloud that lost the session (a restart of the
    #: embedded cloud) re-adopt it when the device claims it too and ownership still holds.
    device_id: Id | None = None


#: Why a device ends a session (``watch_end.reason``); passed on to the viewer in
#: ``watch_ended``.
DeviceEndReason = Literal[
    "device_ended",
    "device_unpaired",
    "camera_failed",
    "device_busy",
    "stream_stalled",
    "codec_unsupported",
]

EndReason = Literal[
    "viewer_ended",
    "device_ended",
    "viewer_disconnected",
    "device_disconnected",
    "device_unpaired",
    "access_revoked",
    "expired",
    "error",
    "camera_failed",
    "device_busy",
    "stream_stalled",
    "codec_unsupported",
]


class WatchEndPayload(_Payload):
    session_id: Id
    #: Devices may say why; the cloud ignores a viewer's reason (it is ``viewer_ended``).
    reason: DeviceEndReason | None = None


#: How a session's video travels: straight between the browser and the camera, or through
#: the TURN relay.
MediaPath = Literal["direct", "relay"]


class WatchPathPayload(_Payload):
    """Viewer -> cloud: the path its video takes (the browser's selected candidate pair), sent
    when first known and when it changes; recorded in the session's history."""

    session_id: Id
    path: MediaPath


class WatchEndedPayload(_Payload):
    session_id: Id
    reason: EndReason


class DeviceStatusPayload(_Payload):
    """Cloud -> viewer: a device of this user went online or offline."""

    device_id: Id
    online: bool


class DevicesChangedPayload(_Payload):
    """Cloud -> viewer: the account's camera list changed by somebody else's action or in
    another tab (sharing revoked or left, a viewer joined, the camera unpaired or reset)."""

    device_id: Id


class SignInsChangedPayload(_Payload):
    """Cloud -> viewer: the account's sign-ins changed (a browser signed in or out, one was
    signed out from another, the password was changed or reset): read the list again.  It
    carries nothing else; the list is read over HTTP, with the reader's own token."""


class PeerStatusPayload(_Payload):
    """Cloud -> the other party: the signaling socket of a session's peer dropped (it has the
    resume grace to come back; video may still be flowing peer to peer), or it is back."""

    session_id: Id
    peer: Literal["device", "viewer"]
    state: Literal["reconnecting", "connected"]


class PairingStatusPayload(_Payload):
    """Cloud -> device: the device was paired to an account, or unpaired."""

    paired: bool


# --- over-the-air updates (docs/updates.md) ----------------------------------------------------

UpdateState = Literal[
    "waiting",
    "downloading",
    "installed",
    "healthy",
    "committed",
    "rolled_back",
    "failed",
]


class UpdateOfferPayload(_Payload):
    """Cloud -> device: a rollout includes this device; fetch ``version`` from the signed
    repository (TUF decides whether it is genuine, the cloud only who gets it when)."""

    version: Version
    rollout_id: Annotated[int, msgspec.Meta(ge=1)]
    #: The owner's update window (device local time, ``HH:MM-HH:MM``); ``None``: any time no
    #: viewer is watching.
    window: Window | None = None


class UpdateStatusPayload(_Payload, omit_defaults=True):
    """Device -> cloud: where an update stands (sent on every change and after each hello)."""

    state: UpdateState
    version: Version
    #: Increases with every change on the device: a repeated or late status is ignored.
    seq: Annotated[int, msgspec.Meta(ge=0)]
    rollout_id: Annotated[int, msgspec.Meta(ge=1)] | None = None
    #: Why (waiting, failed, rolled_back), in one sentence a person can act on.
    reason: Text | None = None
    #: Downloading: the fraction done, 0..1.
    progress: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


class DeviceUpdatePayload(_Payload, omit_defaults=True):
    """Cloud -> viewer: one of the user's cameras changed version or update state."""

    device_id: Id
    version: Version | None = None
    state: UpdateState | None = None
    target: Version | None = None
    reason: Text | None = None
    progress: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


# --- camera settings (docs/protocol.md, "Camera settings") ---------------------------------------

Rotation = Literal[0, 90, 180, 270]
Pixels = Annotated[int, msgspec.Meta(ge=16, le=8192)]
Fps = Annotated[int, msgspec.Meta(ge=1, le=240)]
SettingsAction = Literal["get", "set", "restart"]
#: Why a device refused a settings request.
SettingsRefusal = Literal["not_supported", "invalid", "camera_failed", "in_progress"]


class CameraSettings(_Payload, omit_defaults=True):
    """How the camera is set up.  In a ``set`` request every field is optional (what is left
    out stays as it is); in a device's answer every field is present."""

    rotation: Rotation | None = None
    hflip: bool | None = None
    vflip: bool | None = None
    width: Pixels | None = None
    height: Pixels | None = None
    fps: Fps | None = None


class CameraMode(_Payload):
    """A picture size the camera offers, and the highest frame rate it has at that size."""

    width: Pixels
    height: Pixels
    max_fps: Fps


class DeviceSettingsRequestPayload(_Payload):
    """Owner -> cloud -> device: read the settings, change them, or restart the agent."""

    device_id: Id
    request_id: RequestId
    action: SettingsAction
    #: ``set`` only: what to change.
    settings: CameraSettings | None = None


class AgentUpdate(_Payload, omit_defaults=True):
    """Where the agent's over-the-air update stands (as in ``update_status``)."""

    state: UpdateState
    version: Version
    reason: Text | None = None


class DeviceSettingsPayload(_Payload, omit_defaults=True):
    """Device -> cloud -> the owner: the answer to a ``device_settings_request`` (or, without
    ``request_id``, news of a change).  The cloud fills ``device_id`` in from the device's
    socket, whatever the device wrote there."""

    ok: bool
    settings: CameraSettings
    request_id: RequestId | None = None
    device_id: Id | None = None
    #: The sizes the camera offers (empty: not known yet).
    modes: Annotated[list[CameraMode], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )
    #: Whether the camera can flip (and so rotate by 180 degrees) its picture.
    flips: bool = False
    version: Version | None = None
    arch: Arch | None = None
    update: AgentUpdate | None = None
    #: ``restart``: the agent is restarting now (back within seconds).
    restarting: bool = False
    #: A refused request: why, and one sentence a person can act on.
    refusal: SettingsRefusal | None = None
    message: Text | None = None


ErrorCode = Literal[
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "too_large",
    "binary_not_supported",
    "not_authenticated",
    "already_authenticated",
    "forbidden",
    "not_found",
    "device_offline",
    "session_not_found",
    "not_session_party",
    "rate_limited",
    "device_busy",
    "too_many_connections",
    "unavailable",
    "internal",
]


#: Which bound refused a socket (``too_many_connections``): sockets of ``address`` (the
#: client's address) or of ``everyone`` waiting for their ``hello``, or the viewer sockets of
#: the ``account``.
ConnectionsCause = Literal["address", "everyone", "account"]


class ErrorPayload(_Payload, omit_defaults=True):
    code: ErrorCode
    message: Text
    #: The ``type`` (and, when known, the ``session_id``) of the message that was refused.
    ref: Text | None = None
    #: The ``request_id`` of the refused ``watch_request``, when it had one.
    request_id: RequestId | None = None
    #: ``too_many_connections`` to a viewer: which bound it was.  Never sent to devices
    #: (agents older than this field refuse a payload with a field they do not know).
    cause: ConnectionsCause | None = None


# --- messages ---------------------------------------------------------------------------------


class DeviceHello(_Message, tag="hello"):
    payload: DeviceHelloPayload


class ViewerHello(_Message, tag="hello"):
    payload: ViewerHelloPayload


class HelloAck(_Message, tag="hello_ack"):
    payload: HelloAckPayload


class Heartbeat(_Message, tag="heartbeat"):
    payload: EmptyPayload = msgspec.field(default_factory=EmptyPayload)


class HeartbeatAck(_Message, tag="heartbeat_ack"):
    payload: EmptyPayload = msgspec.field(default_factory=EmptyPayload)


class WatchRequest(_Message, tag="watch_request"):
    """Viewer -> cloud."""

    payload: WatchRequestPayload


class DeviceWatchRequest(_Message, tag="watch_request"):
    """Cloud -> device."""

    payload: DeviceWatchRequestPayload


class WatchReady(_Message, tag="watch_ready"):
    payload: WatchReadyPayload


class WatchResume(_Message, tag="watch_resume"):
    """Viewer -> cloud after reconnecting: re-attach a session whose media is still flowing."""

    payload: WatchResumePayload


class WatchResumed(_Message, tag="watch_resumed"):
    payload: SessionPayload


class SignalOffer(_Message, tag="signal_offer"):
    payload: SignalSdpPayload


class SignalAnswer(_Message, tag="signal_answer"):
    payload: SignalSdpPayload


class SignalIce(_Message, tag="signal_ice"):
    payload: SignalIcePayload


class WatchEnd(_Message, tag="watch_end"):
    payload: WatchEndPayload


class WatchPath(_Message, tag="watch_path"):
    payload: WatchPathPayload


class WatchEnded(_Message, tag="watch_ended"):
    payload: WatchEndedPayload


class DeviceStatus(_Message, tag="device_status"):
    payload: DeviceStatusPayload


class DevicesChanged(_Message, tag="devices_changed"):
    payload: DevicesChangedPayload


class SignInsChanged(_Message, tag="sign_ins_changed"):
    payload: SignInsChangedPayload = msgspec.field(default_factory=SignInsChangedPayload)


class PeerStatus(_Message, tag="peer_status"):
    payload: PeerStatusPayload


class PairingStatus(_Message, tag="pairing_status"):
    payload: PairingStatusPayload


class UpdateOffer(_Message, tag="update_offer"):
    payload: UpdateOfferPayload


class UpdateStatus(_Message, tag="update_status"):
    payload: UpdateStatusPayload


class DeviceUpdate(_Message, tag="device_update"):
    payload: DeviceUpdatePayload


class DeviceSettingsRequest(_Message, tag="device_settings_request"):
    payload: DeviceSettingsRequestPayload


class DeviceSettings(_Message, tag="device_settings"):
    payload: DeviceSettingsPayload


class Error(_Message, tag="error"):
    payload: ErrorPayload


#: What a device may send to the cloud (``/ws/device``).
DeviceToCloud = (
    DeviceHello
    | Heartbeat
    | SignalOffer
    | SignalAnswer
    | SignalIce
    | WatchEnd
    | UpdateStatus
    | DeviceSettings
)
#: What a viewer may send to the cloud (``/ws/viewer``).
ViewerToCloud = (
    ViewerHello
    | Heartbeat
    | WatchRequest
    | WatchResume
    | SignalOffer
    | SignalAnswer
    | SignalIce
    | WatchEnd
    | WatchPath
    | DeviceSettingsRequest
)
#: What the cloud sends to a device.
CloudToDevice = (
    HelloAck
    | HeartbeatAck
    | DeviceWatchRequest
    | SignalOffer
    | SignalAnswer
    | SignalIce
    | WatchEnded
    | PeerStatus
    | PairingStatus
    | UpdateOffer
    | DeviceSettingsRequest
    | Error
)
#: What the cloud sends to a viewer.
CloudToViewer = (
    HelloAck
    | HeartbeatAck
    | WatchReady
    | WatchResumed
    | SignalOffer
    | SignalAnswer
    | SignalIce
    | WatchEnded
    | PeerStatus
    | DeviceStatus
    | DevicesChanged
    | SignInsChanged
    | DeviceUpdate
    | DeviceSettings
    | Error
)

#: Messages the cloud forwards from one party of a session to the other.
Signal = SignalOffer | SignalAnswer | SignalIce

#: The union of what may travel each way, by direction name.
DIRECTIONS: Final[dict[str, object]] = {
    "device_to_cloud": DeviceToCloud,
    "viewer_to_cloud": ViewerToCloud,
    "cloud_to_device": CloudToDevice,
    "cloud_to_viewer": CloudToViewer,
}


@functools.cache
def message_types(direction: object) -> tuple[str, ...]:
    """The ``type`` names of the messages in one direction's union, in declaration order."""
    names: list[str] = []
    for member in direction.__args__:  # type: ignore[attr-defined]
        info = msgspec.inspect.type_info(member)
        assert isinstance(info, msgspec.inspect.StructType)
        if info.tag not in names:
            names.append(str(info.tag))
    return tuple(names)


ERROR_CODES: Final[tuple[str, ...]] = ErrorCode.__args__  # type: ignore[attr-defined]
END_REASONS: Final[tuple[str, ...]] = EndReason.__args__  # type: ignore[attr-defined]
UPDATE_STATES: Final[tuple[str, ...]] = UpdateState.__args__  # type: ignore[attr-defined]
DEVICE_END_REASONS: Final[tuple[str, ...]] = DeviceEndReason.__args__  # type: ignore[attr-defined]
MEDIA_PATHS: Final[tuple[str, ...]] = MediaPath.__args__  # type: ignore[attr-defined]
SETTINGS_REFUSALS: Final[tuple[str, ...]] = SettingsRefusal.__args__  # type: ignore[attr-defined]
CONNECTIONS_CAUSES: Final[tuple[str, ...]] = ConnectionsCause.__args__  # type: ignore[attr-defined]
