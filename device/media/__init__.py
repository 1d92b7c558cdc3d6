"""The WebRTC sender: one camera's H.264 fanned out to aiortc peer connections.

::

    hub = MediaHub(functools.partial(open_camera, None), CameraConfig())
    track = hub.subscribe()                      # starts the camera on the first viewer
    answer_sdp = await answer(pc, offer, track)  # H.264 CB only, PLI/FIR -> keyframe
    ...
    track.stop()                                 # unsubscribe; the last one stops the camera
    await hub.close()
"""

from device.media.hub import CameraFactory, HubState, HubTrack, MediaHub, TrackStats
from device.media.late_relay import LateRelay, candidate_line, defer_relays
from device.media.peer import (
    H264_PARAMETERS,
    answer,
    attach_to_peer,
    can_play,
    h264_preferences,
    offered_video_codecs,
    prepare_sender,
)

__all__ = [
    "H264_PARAMETERS",
    "CameraFactory",
    "HubState",
    "HubTrack",
    "LateRelay",
    "MediaHub",
    "TrackStats",
    "answer",
    "attach_to_peer",
    "can_play",
    "candidate_line",
    "defer_relays",
    "h264_preferences",
    "offered_video_codecs",
    "prepare_sender",
]
