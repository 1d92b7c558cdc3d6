"""Encoding and validating protocol messages, with errors a person can read."""

from __future__ import annotations

import itertools
import re
from typing import Any, Final, TypeVar

import msgspec

from protocol.messages import (
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    CloudToDevice,
    CloudToViewer,
    ConnectionsCause,
    DeviceToCloud,
    Error,
    ErrorCode,
    ErrorPayload,
    ViewerToCloud,
    message_types,
)

T = TypeVar("T")

_encoder: Final = msgspec.json.Encoder()
_decoders: Final[dict[object, msgspec.json.Decoder[Any]]] = {
    DeviceToCloud: msgspec.json.Decoder(DeviceToCloud),
    ViewerToCloud: msgspec.json.Decoder(ViewerToCloud),
    CloudToDevice: msgspec.json.Decoder(CloudToDevice),
    CloudToViewer: msgspec.json.Decoder(CloudToViewer),
}
_raw: Final = msgspec.json.Decoder(dict[str, Any])


class ProtocolError(Exception):
    """A message that cannot be accepted; ``code`` and ``message`` go back in an ``error``."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        ref: str | None = None,
        request_id: str | None = None,
        cause: ConnectionsCause | None = None,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.ref = ref
        #: The ``request_id`` of the ``watch_request`` refused (set by whoever knows it).
        self.request_id = request_id
        #: ``too_many_connections``: which bound (to viewers only).
        self.cause: ConnectionsCause | None = cause

    def to_message(self) -> Error:
        return Error(
            payload=ErrorPayload(
                code=self.code,
                message=self.message[:1024],
                ref=self.ref,
                request_id=self.request_id,
                cause=self.cause,
            )
        )


def encode(message: msgspec.Struct) -> str:
    """One message as JSON text."""
    return _encoder.encode(message).decode()


def decode(data: str | bytes, direction: Any) -> Any:
    """Parse and validate one message sent in ``direction`` (one of the unions in ``messages``).

    Raises ``ProtocolError`` with a code that says what was wrong: ``too_large`` (also for
    nesting deeper than ``MAX_JSON_DEPTH``), ``invalid_json``, ``unknown_type`` or
    ``invalid_message``.
    """
    # A str of n characters is at most 4n UTF-8 bytes: encode only when it could be too large.
    size = len(data)
    if isinstance(data, str) and size * 4 > MAX_MESSAGE_BYTES:
        size = len(data.encode())
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            "too_large", f"message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    if nesting_exceeds(data, MAX_JSON_DEPTH):
        raise ProtocolError(
            "too_large", f"message nests deeper than {MAX_JSON_DEPTH} arrays or objects"
        )
    try:
        return _decoders[direction].decode(data)
    except msgspec.ValidationError as exc:
        raise _explain(data, exc, direction) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("invalid_json", f"not valid JSON: {exc}") from None


_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Opening brackets to +1, closing ones to -1 (as signed bytes), everything else deleted.
_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_exceeds(data: str | bytes, limit: int) -> bool:
    """Whether JSON ``data`` nests arrays and objects more than ``limit`` deep.

    Run before decoding: a decoder recurses once per level, and 100,000 levels exhaust Python's
    recursion limit (a ``RecursionError``, not a decoding error).  Cheap for the usual message:
    with at most ``limit`` opening brackets in all it cannot be too deep.  Otherwise strings are
    cut out and the running depth is summed over the brackets left, all in C (about 1 ms for
    64 KiB of brackets).
    """
    raw = data.encode(errors="surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    steps = _JSON_STRING.sub(b"", raw).translate(_STEPS, _NOT_BRACKETS)
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0) > limit


def _explain(data: str | bytes, exc: msgspec.ValidationError, direction: Any) -> ProtocolError:
    try:
        raw = _raw.decode(data)
    except msgspec.DecodeError:
        return ProtocolError(
            "invalid_message", 'a message must be a JSON object {"type": ..., "payload": ...}'
        )
    kind = raw.get("type")
    if not isinstance(kind, str):
        return ProtocolError("invalid_message", "a message needs a string field 'type'")
    if kind not in message_types(direction):
        return ProtocolError(
            "unknown_type", f"unknown message type {kind[:64]!r} here", ref=kind[:64]
        )
    return ProtocolError("invalid_message", f"invalid {kind}: {exc}", ref=kind)
