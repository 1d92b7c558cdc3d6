"""The structured fields the agent's journal records carry (device id, session id, phase): where
each comes from and which wins.  The image test reads them back from a real journal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from device import systemd
from device.systemd import log_context, log_fields, set_log_field, set_log_field_source


def record(**extra: object) -> logging.LogRecord:
    r = logging.LogRecord("device.sessions", logging.INFO, __file__, 1, "m", (), None)
    for key, value in extra.items():
        setattr(r, key, value)
    return r


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    systemd._process_fields.clear()
    systemd._process_sources.clear()


def test_fields_from_process_context_and_extra() -> None:
    set_log_field("phase", "pairing")
    assert log_fields(record()) == {"PHASE": "pairing"}
    with log_context(session_id="s-1", phase="online"):
        assert log_fields(record()) == {"PHASE": "online", "SESSION_ID": "s-1"}
        assert log_fields(record(session_id="s-2"))["SESSION_ID"] == "s-2"
    assert log_fields(record()) == {"PHASE": "pairing"}
    set_log_field("phase", None)
    assert log_fields(record()) == {}


async def test_tasks_created_inside_a_context_keep_its_fields() -> None:
    async def inner() -> dict[str, str]:
        await asyncio.sleep(0)
        return log_fields(record())

    with log_context(session_id="abc"):
        task = asyncio.create_task(inner())
    assert (await task)["SESSION_ID"] == "abc"


def test_a_source_is_asked_until_it_answers() -> None:
    answers = iter([None, "dev-1", "dev-2"])
    set_log_field_source("device_id", lambda: next(answers))
    assert "DEVICE_ID" not in log_fields(record())
    assert log_fields(record())["DEVICE_ID"] == "dev-1"
    assert log_fields(record())["DEVICE_ID"] == "dev-1"  # kept, not asked again


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError), log_context(colour="blue"):
        pass
    with pytest.raises(ValueError):
        set_log_field("colour", "blue")


def test_without_systemd_python_logs_go_to_stdout() -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        systemd.configure_logging("info", env={"JOURNAL_STREAM": "8:1"})
        handler = root.handlers[0]
        if systemd._systemd_module("journal") is None:
            assert isinstance(handler.formatter, systemd.JournalFormatter)
        else:
            assert isinstance(handler, systemd.JournalHandler)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
