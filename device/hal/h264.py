"""Just enough H.264 (Annex B) to hold the camera contract, whoever made the stream.

* every keyframe carries SPS and PPS in front of it (remembered from earlier ones if the source
  sent them only once, as many USB cameras and hardware encoders do);
* a baseline SPS advertises constrained baseline with constraint_set0..2 set
  (``profile-level-id`` ``42e0xx``), which is what browsers negotiate.  This is truthful for every
  encoder we use: none emits FMO, ASO or redundant slices, the three baseline tools that
  constrained baseline leaves out.
"""

from __future__ import annotations

from typing import Final

START_CODE: Final = b"\x00\x00\x00\x01"

NAL_SLICE: Final = 1
NAL_IDR: Final = 5
NAL_SEI: Final = 6
NAL_SPS: Final = 7
NAL_PPS: Final = 8
NAL_AUD: Final = 9

PROFILE_BASELINE: Final = 66
#: constraint_set0, 1 and 2 flags: constrained baseline, decodable by main-profile decoders.
CONSTRAINED_BASELINE_FLAGS: Final = 0xE0


def split_nals(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B buffer, without start codes (trailing zero bytes dropped)."""
    nals: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        begin = start + 3
        nxt = data.find(b"\x00\x00\x01", begin)
        end = len(data) if nxt == -1 else nxt
        nal = data[begin:end].rstrip(b"\x00")  # a NAL unit never ends in 0x00: padding
        if nal:
            nals.append(nal)
        start = nxt
    return nals


def join_nals(nals: list[bytes]) -> bytes:
    return b"".join(START_CODE + nal for nal in nals)


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def is_keyframe(data: bytes) -> bool:
    return any(nal_type(nal) == NAL_IDR for nal in split_nals(data))


def profile_level_id(sps: bytes) -> str:
    """``profile-level-id`` (six hex digits) of an SPS NAL unit."""
    return sps[1:4].hex()


def constrain_baseline(sps: bytes) -> bytes:
    """A baseline SPS with constraint_set0..2 set; any other SPS unchanged."""
    if len(sps) < 4 or sps[1] != PROFILE_BASELINE:
        return sps
    flags = sps[2] | CONSTRAINED_BASELINE_FLAGS
    return sps[:2] + bytes([flags]) + sps[3:]


def parameter_sets_from_extradata(extradata: bytes | None) -> list[bytes]:
    """SPS and PPS from an encoder's Annex B extradata (empty if it has none or is avcC)."""
    if not extradata or not extradata.startswith((b"\x00\x00\x01", START_CODE)):
        return []
    return [n for n in split_nals(extradata) if nal_type(n) in (NAL_SPS, NAL_PPS)]


class StreamNormalizer:
    """Rewrites a stream's access units so they keep the camera contract (see module doc).

    Not thread-safe: one per stream, used by the thread that produces it.
    """

    def __init__(self, parameter_sets: list[bytes] | None = None) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        for nal in parameter_sets or []:
            self._remember(nal)

    def _remember(self, nal: bytes) -> bytes:
        kind = nal_type(nal)
        if kind == NAL_SPS:
            nal = constrain_baseline(nal)
            self.sps = nal
        elif kind == NAL_PPS:
            self.pps = nal
        return nal

    @property
    def profile_level_id(self) -> str | None:
        return profile_level_id(self.sps) if self.sps else None

    def normalize(self, data: bytes) -> tuple[bytes, bool]:
        """``(annex_b, keyframe)`` for one access unit of the source."""
        nals = [self._remember(n) for n in split_nals(data)]
        kinds = [nal_type(n) for n in nals]
        keyframe = NAL_IDR in kinds
        if keyframe:
            front: list[bytes] = []
            if NAL_SPS not in kinds and self.sps is not None:
                front.append(self.sps)
            if NAL_PPS not in kinds and self.pps is not None:
                front.append(self.pps)
            nals = front + nals
        return join_nals(nals), keyframe
