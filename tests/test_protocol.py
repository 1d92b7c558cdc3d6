"""The protocol is defined once: the docs and the web client's constants must agree with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from protocol import ProtocolError, decode, encode
from protocol.close_codes import CloseCode
from protocol.codec import nesting_exceeds
from protocol.messages import (
    DIRECTIONS,
    END_REASONS,
    ERROR_CODES,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    UPDATE_STATES,
    CloudToViewer,
    Heartbeat,
    ViewerToCloud,
    WatchRequest,
    message_types,
)
from protocol.webgen import render

ROOT = Path(__file__).resolve().parents[1]


def test_web_constants_are_generated_from_the_module() -> None:
    generated = (ROOT / "web/js/protocol.js").read_text()
    assert generated == render(), "run: python -m protocol.webgen > web/js/protocol.js"


def test_docs_describe_every_message_error_and_reason() -> None:
    doc = (ROOT / "docs/protocol.md").read_text()
    heading_lines = re.findall(r"^### (.*)$", doc, flags=re.MULTILINE)
    headings = {name for line in heading_lines for name in re.findall(r"`([a-z_]+)`", line)}
    every_type = {t for union in DIRECTIONS.values() for t in message_types(union)}
    assert every_type <= headings, f"undocumented: {sorted(every_type - headings)}"
    assert headings <= every_type, f"documented but gone: {sorted(headings - every_type)}"
    for code in ERROR_CODES:
        assert f"| `{code}` |" in doc, code
    for reason in END_REASONS:
        assert f"`{reason}`" in doc, reason
    for state in UPDATE_STATES:
        assert f"| `{state}` |" in doc, state


def test_docs_list_every_close_code_and_nothing_else() -> None:
    doc = (ROOT / "docs/protocol.md").read_text()
    rows = dict(re.findall(r"^\| (\d{4}) \| `([A-Z_]+)` \|", doc, flags=re.MULTILINE))
    assert rows == {str(int(c)): c.name for c in CloseCode}


def test_cloud_agent_and_web_use_the_one_definition_of_close_codes() -> None:
    """No close code written as a number anywhere else (they drifted once)."""
    for path in ("cloud/signaling.py", "device/signaling.py", "web/js/signaling.js"):
        text = (ROOT / path).read_text()
        for code in CloseCode:
            if code >= 4000:
                assert str(int(code)) not in text, f"{path} spells {code.name} as a number"


def test_request_id_is_echoed_field_by_field() -> None:
    from protocol.messages import WatchReadyPayload, WatchRequestPayload

    request = decode(
        '{"type":"watch_request","payload":{"device_id":"d","request_id":"r-1_x"}}',
        ViewerToCloud,
    )
    assert request.payload == WatchRequestPayload(device_id="d", request_id="r-1_x")
    assert "request_id" in WatchReadyPayload.__struct_fields__
    with pytest.raises(ProtocolError) as bad:  # the alphabet is checked: it reaches the page
        decode(
            '{"type":"watch_request","payload":{"device_id":"d","request_id":"<b>"}}',
            ViewerToCloud,
        )
    assert bad.value.code == "invalid_message"
    refused = ProtocolError("device_busy", "busy", ref="watch_request", request_id="r-1_x")
    assert '"request_id":"r-1_x"' in encode(refused.to_message())


def test_round_trip_and_clear_errors() -> None:
    text = encode(WatchRequest(payload={"device_id": "d1"}))  # type: ignore[arg-type]
    assert text == '{"type":"watch_request","payload":{"device_id":"d1"}}'
    assert isinstance(decode(text, ViewerToCloud), WatchRequest)
    assert decode('{"type":"heartbeat"}', ViewerToCloud) == Heartbeat()
    with pytest.raises(ProtocolError) as bad:
        decode('{"type":"watch_request","payload":{"device_id":1}}', ViewerToCloud)
    assert bad.value.code == "invalid_message" and "$.payload.device_id" in bad.value.message
    with pytest.raises(ProtocolError) as wrong_way:
        decode('{"type":"watch_ready","payload":{}}', ViewerToCloud)
    assert wrong_way.value.code == "unknown_type"
    with pytest.raises(ProtocolError) as big:
        decode(" " * (MAX_MESSAGE_BYTES + 1), CloudToViewer)
    assert big.value.code == "too_large"


def test_nesting_is_bounded_before_decoding() -> None:
    # 100,000 levels would exhaust the decoder's recursion (a RecursionError, not an error frame).
    for deep in ("[" * 30_000 + "]" * 30_000, '{"a":' * 10_000 + "1" + "}" * 10_000):
        with pytest.raises(ProtocolError) as refused:
            decode(deep, ViewerToCloud)
        assert refused.value.code == "too_large" and "nests deeper" in refused.value.message
    inner = MAX_JSON_DEPTH - 2  # the message object and its payload are two levels
    at_limit = "[" * inner + "]" * inner
    with pytest.raises(ProtocolError) as ordinary:
        decode(f'{{"type":"heartbeat","payload":{{"x":{at_limit}}}}}', ViewerToCloud)
    assert ordinary.value.code == "invalid_message", "at the limit it is decoded (and refused)"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a":[{"b":[]}]}', 4),
        (json.dumps(["[[[[", "\\", '\\"[[[[', "{"]), 1),  # brackets, escapes, quotes in strings
        ('[{"k[": {"}": [1, 2, {"x": "]]]"}]}}]', 5),
        ("[" * 40 + "]" * 40, 40),
        ("[[]," * 50 + "1" + "]" * 50, 51),
    ],
)
def test_nesting_depth_is_measured_outside_strings(text: str, depth: int) -> None:
    for data in (text, text.encode()):
        assert not nesting_exceeds(data, depth)
        assert depth == 0 or nesting_exceeds(data, depth - 1)


def test_every_message_type_is_a_tagged_struct() -> None:
    for union in DIRECTIONS.values():
        for member in union.__args__:  # type: ignore[attr-defined]
            info = msgspec.inspect.type_info(member)
            assert isinstance(info, msgspec.inspect.StructType) and info.tag_field == "type"


def _anchored_patterns() -> list[tuple[str, str]]:
    """Every ``pattern=r"^…"`` and ``re.compile(r"^…")`` in our code, where it is."""
    found = []
    for folder in ("protocol", "cloud", "device", "release"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for m in re.finditer(r'(?:pattern=|re\.compile\()r"(\^[^"]*)"', path.read_text()):
                found.append((f"{path.relative_to(ROOT)}", m.group(1)))
    return found


def test_no_anchored_pattern_accepts_a_trailing_newline() -> None:
    """Python's ``$`` also matches before a final newline: a signed version ``1.2.0\\n`` once
    passed the updater's check and crashed it.  Every whole-string pattern ends in ``\\Z``."""
    patterns = _anchored_patterns()
    assert len(patterns) > 10
    loose = [(where, p) for where, p in patterns if p.endswith("$")]
    assert loose == []


@pytest.mark.parametrize("value", ["1.2.0\n", "1.2.0\r\n", "\n1.2.0"])
def test_a_version_with_a_newline_is_refused(value: str) -> None:
    from device.update.install import VERSION_RE
    from protocol.messages import Version

    assert not VERSION_RE.match(value)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(value, Version)
    assert msgspec.convert(value.strip(), Version) == "1.2.0"
