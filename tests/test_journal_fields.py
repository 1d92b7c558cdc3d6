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


class _Fields(logging.Handler):
    """What the journal would get for each record of the session manager: its fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(log_fields(record))


async def test_a_sessions_own_tasks_log_with_its_session_id() -> None:
    """Per-session records (its answer, ICE, supervision, close) carry ``SESSION_ID``, set
    where the session manager starts the session's tasks; two sessions never mix."""
    from device.hal import CameraConfig
    from device.hal.synthetic import SyntheticCamera
    from device.media import MediaHub
    from device.sessions import SessionManager
    from tests.session_harness import Wire, watch

    config = CameraConfig(width=320, height=180, fps=15, bitrate=300_000, keyframe_interval_s=30)
    hub = MediaHub(SyntheticCamera, config)
    wire = Wire()
    manager = SessionManager(hub, wire, max_sessions=3)
    manager.set_paired(True)
    handler = _Fields()
    logger = logging.getLogger("device.sessions")
    saved_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    watches = []
    try:
        for _ in range(2):
            w = await watch(manager, wire)
            watches.append(w)
            await w.viewer.wait_frames(3, timeout=30)
        for w in watches:
            manager.ended(w.session_id, "viewer_ended")
        await manager.idle()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        for w in watches:
            await w.close()
        await manager.close(notify=False)
        await hub.close()
    ids = {w.session_id for w in watches}
    tagged = [f["SESSION_ID"] for f in handler.seen if "SESSION_ID" in f]
    assert set(tagged) == ids, (tagged, ids)
