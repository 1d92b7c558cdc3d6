"""The cloud going away: streaming peers keep streaming, the agent reconnects with backoff, and
a cloud that forgot the device (reset) makes the agent register anew.  The agent runs in this
process (its state read directly); the cloud is a real process, killed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from protocol.close_codes import CloseCode
from tests import signaling_client
from tests.agent_inprocess import pair, running_agent, until
from tests.agent_process import CloudViewer
from tests.cloud_process import CloudProcess
from tests.test_agent_watch import CLOUD_ENV

FPS = 15


async def test_streaming_survives_a_cloud_crash_and_the_agent_reconnects(tmp_path: Path) -> None:
    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV).start()
    first: CloudViewer | None = None
    second: CloudViewer | None = None
    try:
        async with running_agent(cloud.url, tmp_path / "state") as agent:
            assert agent.client is not None and agent.sessions is not None and agent.hub
            client, sessions, hub = agent.client, agent.sessions, agent.hub
            account, device_id = await pair(agent, cloud.url)
            first = CloudViewer(cloud.ws_url, account.token)
            await first.watch(device_id)
            assert first.peer is not None
            await first.peer.wait_frames(FPS, timeout=30)
            failures, connections = client.failures, client.connections

            cloud.kill()  # SIGKILL: no goodbye to anyone
            await until(lambda: client.failures > failures, 20, "the agent to notice")
            # The peer connection is direct to the agent: media does not notice.
            during = len(first.peer.frames)
            await first.peer.wait_frames(during + 2 * FPS, timeout=10)
            assert sessions.counters.closed == 0, "the agent closed a streaming peer"
            assert sessions.streaming() == [first.session_id]

            # Same port, same data dir; in a thread: the agent shares this event loop.
            await asyncio.to_thread(cloud.start)
            await until(lambda: client.connections > connections, 30, "a reconnection")
            # The old session still streams after the reconnection.
            after = len(first.peer.frames)
            await first.peer.wait_frames(after + FPS, timeout=10)

            second = CloudViewer(cloud.ws_url, account.token)
            await second.watch(device_id)
            assert second.peer is not None
            await second.peer.wait_frames(FPS, timeout=30)
            assert all(f.timecode is not None for f in second.peer.frames)
            assert hub.starts == 1, "one camera, never restarted"
    finally:
        for viewer in (first, second):
            if viewer is not None:
                await viewer.close()
        cloud.stop()


async def test_signals_wait_for_the_cloud_and_stale_ones_are_dropped(tmp_path: Path) -> None:
    """A viewer that leaves while the cloud is down: its session's ``watch_end`` waits in the
    outbox and reaches the restarted cloud (which no longer knows the session and says so)."""
    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV).start()
    viewer: CloudViewer | None = None
    try:
        async with running_agent(cloud.url, tmp_path / "state") as agent:
            assert agent.client is not None and agent.sessions is not None
            client, sessions = agent.client, agent.sessions
            account, device_id = await pair(agent, cloud.url)
            viewer = CloudViewer(cloud.ws_url, account.token)
            session = await viewer.watch(device_id)
            assert viewer.peer is not None
            await viewer.peer.wait_frames(5, timeout=30)
            failures = client.failures
            cloud.kill()
            await until(lambda: client.failures > failures, 20, "the agent to notice")
            await viewer.peer.pc.close()  # DTLS close: the agent's peer closes
            await until(lambda: not sessions.alive(session), 20, "the peer to close")
            sent, refusals = client.sent, client.refusals
            await asyncio.to_thread(cloud.start)
            # The watch_end went out after the reconnection; the cloud refused it (unknown).
            await until(lambda: client.refusals > refusals, 30, "the cloud's refusal")
            assert client.sent > sent
    finally:
        if viewer is not None:
            await viewer.close()
        cloud.stop()


async def test_a_reset_cloud_makes_the_agent_register_anew(tmp_path: Path) -> None:
    data = tmp_path / "cloud"
    cloud = CloudProcess(data, env=CLOUD_ENV).start()
    state = tmp_path / "state"
    try:
        async with running_agent(cloud.url, state) as agent:
            controller = await until(lambda: agent.controller, 30, "registration")
            await until(lambda: controller.code, 30, "a pairing code")
            old = json.loads((state / "credentials.json").read_text())["device_id"]
            cloud.kill()
            shutil.rmtree(data)  # the cloud loses every device
            await asyncio.to_thread(cloud.start)

            def new_identity() -> str | None:
                path = state / "credentials.json"  # forgotten, then saved anew
                saved = json.loads(path.read_text())["device_id"] if path.exists() else old
                return saved if saved != old else None

            await until(new_identity, 60, "registration with the reset cloud")
            # And it shows a code for the new identity that a user can claim.
            _, device_id = await pair(agent, cloud.url)
            assert device_id == new_identity()
    finally:
        cloud.stop()


async def test_cloud_down_or_failing_at_first_start_is_retried(tmp_path: Path) -> None:
    """Registration (HTTP) retries on refused connections and on 5xx until the cloud works."""
    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV)  # not started yet
    try:
        async with running_agent(cloud.url, tmp_path / "state") as agent:
            await until(lambda: agent.registration_failures >= 1, 20, "a refused registration")
            with _failing_server(cloud.port) as answered:  # a proxy in front of a broken cloud
                await until(lambda: answered, 20, "a 503 answer")
                failures = agent.registration_failures
                await until(lambda: agent.registration_failures >= failures + 2, 30)
            await asyncio.to_thread(cloud.start)
            await pair(agent, cloud.url)
            assert agent.controller is not None and agent.controller.paired
    finally:
        cloud.stop()


@contextlib.contextmanager
def _failing_server(port: int) -> Iterator[list[str]]:
    """An HTTP server on ``port`` that answers every request with 503; the paths it answered."""
    answered: list[str] = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b'{"error": {"code": "unavailable", "message": "try later"}}'
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            answered.append(self.path)

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield answered
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_a_dropped_socket_keeps_the_session_and_its_signaling(tmp_path: Path) -> None:
    """The agent's socket is kicked (another hello with its credentials: ``REPLACED``) while a
    viewer watches: the agent reconnects, the media never stops, and the session is still the
    cloud's (its grace period): the viewer's ``watch_end`` reaches the agent afterwards."""
    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV).start()
    viewer: CloudViewer | None = None
    try:
        async with running_agent(cloud.url, tmp_path / "state") as agent:
            assert agent.client is not None and agent.sessions is not None
            client, sessions = agent.client, agent.sessions
            account, device_id = await pair(agent, cloud.url)
            viewer = CloudViewer(cloud.ws_url, account.token)
            session = await viewer.watch(device_id)
            assert viewer.peer is not None
            await viewer.peer.wait_frames(FPS, timeout=30)
            saved = json.loads((tmp_path / "state" / "credentials.json").read_text())
            connections = client.connections
            intruder = await signaling_client.device(
                cloud.ws_url,
                {"type": "hello", "payload": {k: saved[k] for k in ("device_id", "device_token")}},
            )
            # (the close code it was kicked with lasts only until its next attempt, a random
            # 0-0.5 s later: that it is REPLACED is test_agent_signaling's to check)
            await until(lambda: client.connections > connections, 20, "the agent to come back")
            assert await intruder.closed() == CloseCode.REPLACED  # and it kicked the intruder
            frames = len(viewer.peer.frames)
            await viewer.peer.wait_frames(frames + FPS, timeout=10)
            assert sessions.alive(session)
            await viewer.end()
            await until(lambda: not sessions.alive(session), 20, "the cloud's watch_ended")
            assert sessions.counters.ended["viewer_ended"] == 1
    finally:
        if viewer is not None:
            await viewer.close()
        cloud.stop()
