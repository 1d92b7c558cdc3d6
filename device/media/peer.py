"""Putting a hub track on an aiortc peer connection, and answering a browser's offer.

Three things aiortc does not do on its own for pre-encoded H.264:

* **Codec.**  Only H.264, constrained baseline (``profile-level-id=42e01f``),
  ``packetization-mode=1`` is negotiated, with its RTX.  aiortc applies codec preferences when
  it *reads* a description, so the transceiver must exist with its preferences before
  ``setRemoteDescription(offer)``: aiortc then matches the offer's video section to it.
  :func:`answer` does it in that order.  (:func:`attach_to_peer` on a peer connection that
  already read the offer narrows the negotiated codecs itself instead.)
* **Keyframes on PLI/FIR.**  ``RTCRtpSender`` answers a PLI or FIR by calling its own
  ``_send_keyframe()``, which only sets a flag for aiortc's encoder: on the pre-encoded path no
  encoder exists, so nothing would happen.  We wrap that method on the sender instance (an
  instance attribute shadowing the class's method; the original still runs), so every PLI/FIR
  reaches the track's :meth:`~device.media.hub.HubTrack.request_keyframe`.  This relies on
  aiortc's ``_handle_rtcp_packet`` calling ``self._send_keyframe()`` (aiortc 1.x up to 1.16 at
  least); ``tests/test_media_peer.py`` checks it with a real PLI.
* **Direction.**  The device only sends: ``sendonly``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from device.media.hub import HubTrack
from device.media.late_relay import LateRelay, defer_relays

if TYPE_CHECKING:
    from aiortc import RTCRtpTransceiver

log = logging.getLogger(__name__)

H264_PARAMETERS: Final = {
    "level-asymmetry-allowed": "1",
    "packetization-mode": "1",
    "profile-level-id": "42e01f",
}


def h264_preferences() -> list[RTCRtpCodecCapability]:
    """aiortc's capability for constrained-baseline H.264, packetization mode 1, and RTX."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    h264 = [
        c
        for c in codecs
        if c.mimeType.lower() == "video/h264" and dict(c.parameters) == H264_PARAMETERS
    ]
    if not h264:
        raise RuntimeError("this aiortc offers no constrained-baseline H.264 (42e01f, mode 1)")
    rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    return h264 + rtx


def offered_video_codecs(sdp: str) -> list[tuple[str, dict[str, str]]]:
    """The video codecs of an offer, in its order: ``(name, fmtp parameters)``.  Read by
    aiortc's own SDP parser (Firefox writes every ``a=fmtp`` before the ``a=rtpmap`` lines)."""
    from aiortc.sdp import SessionDescription

    codecs: list[tuple[str, dict[str, str]]] = []
    for media in SessionDescription.parse(sdp).media:
        if media.kind != "video":
            continue
        for codec in media.rtp.codecs:
            name = codec.mimeType.split("/", 1)[-1]
            params = {str(k).lower(): str(v) for k, v in codec.parameters.items()}
            codecs.append((name, params))
    return codecs


def can_play(sdp: str) -> bool:
    """Whether an offer can receive what the camera sends: H.264 constrained baseline with
    packetization mode 1, matched the way aiortc matches it (a missing ``profile-level-id``
    means constrained baseline).  Firefox without H.264 offers only VP8, VP9 and AV1."""
    from aiortc.sdp import parse_h264_profile_level_id

    wanted = parse_h264_profile_level_id(H264_PARAMETERS["profile-level-id"])[0]
    for name, params in offered_video_codecs(sdp):
        if name.lower() != "h264" or params.get("packetization-mode", "0") != "1":
            continue
        try:
            profile = parse_h264_profile_level_id(params.get("profile-level-id", "42E01F"))[0]
        except ValueError:
            continue
        if profile == wanted:
            return True
    return False


def _hook_keyframe_requests(sender: RTCRtpSender) -> None:
    original = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        track = sender.track
        if isinstance(track, HubTrack):
            track.request_keyframe()

    # An instance attribute shadows RTCRtpSender._send_keyframe, which PLI/FIR handling calls.
    setattr(sender, "_send_keyframe", send_keyframe)  # noqa: B010


async def attach_to_peer(pc: RTCPeerConnection, track: HubTrack) -> RTCRtpSender:
    """Send ``track`` on ``pc`` as constrained-baseline H.264 and pass PLI/FIR to the camera.

    Before ``setRemoteDescription`` (the recommended order, see :func:`answer`) this adds a
    ``sendonly`` video transceiver that the browser's offer will be matched to.  After it, the
    track goes on the offer's video transceiver and the negotiated codecs are narrowed to H.264
    constrained baseline; ``ValueError`` if the offer has none.
    """
    transceiver = _offered_transceiver(pc)
    preferences = h264_preferences()
    if transceiver is None:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(preferences)
    else:
        transceiver.sender.replaceTrack(track)
        transceiver.direction = "sendonly"
        transceiver.setCodecPreferences(preferences)
        _narrow_negotiated_codecs(transceiver)
    _hook_keyframe_requests(transceiver.sender)
    return transceiver.sender


def _offered_transceiver(pc: RTCPeerConnection) -> RTCRtpTransceiver | None:
    """The video transceiver a remote offer created, still without a track to send."""
    if pc.remoteDescription is None:
        return None
    for transceiver in pc.getTransceivers():
        if (
            transceiver.kind == "video"
            and transceiver.sender.track is None
            and transceiver.currentDirection is None
        ):
            return transceiver
    return None


def _narrow_negotiated_codecs(transceiver: RTCRtpTransceiver) -> None:
    # aiortc fixed the transceiver's codecs (``_codecs``) while reading the offer, before any
    # preference existed: apply the preference to them the way aiortc would have.
    from aiortc.rtcpeerconnection import filter_preferred_codecs

    narrowed = filter_preferred_codecs(transceiver._codecs, transceiver._preferred_codecs)
    if not narrowed:
        raise ValueError("the offer has no constrained-baseline H.264 with packetization-mode=1")
    transceiver._codecs = narrowed


def prepare_sender(pc: RTCPeerConnection) -> RTCRtpTransceiver:
    """Before the viewer's offer: the ``sendonly`` constrained-baseline H.264 transceiver the
    offer will be matched to, still without a track.  Its ICE agent exists from now on, so a
    TURN allocation can start before the offer arrives (see :mod:`device.media.late_relay`);
    :func:`answer` with ``transceiver=`` puts the track on it."""
    transceiver = pc.addTransceiver("video", direction="sendonly")
    transceiver.setCodecPreferences(h264_preferences())
    return transceiver


async def answer(
    pc: RTCPeerConnection,
    offer: RTCSessionDescription,
    track: HubTrack,
    *,
    transceiver: RTCRtpTransceiver | None = None,
    late_relays: list[LateRelay] | None = None,
) -> RTCSessionDescription:
    """Answer a viewer's offer with ``track``: attach, read the offer, answer; the local answer.

    ``transceiver``: one :func:`prepare_sender` made (else one is made now).  ``late_relays``:
    when given, the TURN allocation does not hold up the answer; the deferred allocations are
    appended to it (see :mod:`device.media.late_relay`).  Raises ``ValueError`` when the offer
    has no H.264 constrained baseline in mode 1 (aiortc says so as an ``OperationError``, a
    subclass of nothing we catch: it propagates).
    """
    if transceiver is None:
        await attach_to_peer(pc, track)
    else:
        transceiver.sender.replaceTrack(track)
        _hook_keyframe_requests(transceiver.sender)
    await pc.setRemoteDescription(offer)
    if late_relays is not None:
        late_relays.extend(defer_relays(pc))
    await pc.setLocalDescription(await pc.createAnswer())
    description = pc.localDescription
    assert description is not None
    return description
