"""The cloud going away: streaming peers keep streaming, the agent reconnects with backoff, and
a cloud that forgot the device (reset) makes the agent register anew."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.agent_process import AgentProcess, CloudViewer, pair_agent
from tests.cloud_process import CloudProcess
from tests.test_agent_watch import CLOUD_ENV

FPS = 15
RECONNECT_CAP_S = 1.0
CONFIG = {
    "camera": {"width": 640, "height": 360, "fps": FPS},
    "reconnect": {"base": 0.1, "cap": RECONNECT_CAP_S},
}


async def _paired_agent(cloud: CloudProcess, state: Path) -> tuple[AgentProcess, str, str]:
    """A running agent paired to a new account: (agent, the account's token, device id)."""
    agent = AgentProcess(cloud.url, state, config=CONFIG).start()
    account, device = await pair_agent(cloud.url, agent)
    return agent, account.token, str(device["device_id"])


async def test_streaming_survives_a_cloud_crash_and_the_agent_reconnects(tmp_path: Path) -> None:
    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV).start()
    agent, token, device_id = await _paired_agent(cloud, tmp_path / "state")
    first = CloudViewer(cloud.ws_url, token)
    second: CloudViewer | None = None
    try:
        await first.watch(device_id)
        assert first.peer is not None
        await first.peer.wait_frames(FPS, timeout=30)

        cloud.kill()  # SIGKILL: no goodbye to anyone
        await agent.wait_for(r"signaling: connection closed|signaling: cannot reach")
        # The peer connection is direct to the agent: media does not notice.
        during = len(first.peer.frames)
        await first.peer.wait_frames(during + 2 * FPS, timeout=10)
        assert agent.count(r"session [\w-]+: closed") == 0, "the agent closed a streaming peer"

        cloud.start()  # same port, same data dir
        ready = time.monotonic()
        await agent.wait_for(r"(?s)signaling: connection closed.*signaling: connected", 30)
        # Functional bound: one backoff cap plus time to dial on a busy machine.
        assert time.monotonic() - ready < RECONNECT_CAP_S + 5
        # The old session still streams after the reconnection.
        after = len(first.peer.frames)
        await first.peer.wait_frames(after + FPS, timeout=10)

        second = CloudViewer(cloud.ws_url, token)
        await second.watch(device_id)
        assert second.peer is not None
        await second.peer.wait_frames(FPS, timeout=30)
        assert all(f.timecode is not None for f in second.peer.frames)
        assert agent.count(r"camera started") == 1, "one camera, never restarted"
    finally:
        for viewer in (first, second):
            if viewer is not None:
                await viewer.close()
        assert agent.terminate() == 0
        cloud.stop()


async def test_signals_wait_for_the_cloud_and_stale_ones_are_dropped(tmp_path: Path) -> None:
    """A viewer that leaves while the cloud is down: its session's ``watch_end`` waits in the
    outbox and reaches the restarted cloud (which no longer knows the session and says so)."""
    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV).start()
    agent, token, device_id = await _paired_agent(cloud, tmp_path / "state")
    viewer = CloudViewer(cloud.ws_url, token)
    try:
        session = await viewer.watch(device_id)
        assert viewer.peer is not None
        await viewer.peer.wait_frames(5, timeout=30)
        cloud.kill()
        await agent.wait_for(r"signaling: connection closed|signaling: cannot reach")
        await viewer.peer.pc.close()  # DTLS close: the agent's peer closes
        await agent.wait_for(rf"session {session[:8]}: closed")
        cloud.start()
        await agent.wait_for(rf"the cloud refused {session}: watch_end: no such live session")
    finally:
        await viewer.close()
        assert agent.terminate() == 0
        cloud.stop()


async def test_a_reset_cloud_makes_the_agent_register_anew(tmp_path: Path) -> None:
    data = tmp_path / "cloud"
    cloud = CloudProcess(data, env=CLOUD_ENV).start()
    state = tmp_path / "state"
    agent = AgentProcess(cloud.url, state, config=CONFIG).start()
    try:
        await agent.pairing_code()
        old = json.loads((state / "credentials.json").read_text())["device_id"]
        cloud.kill()
        shutil.rmtree(data)  # the cloud loses every device
        cloud.start()
        await agent.wait_for(rf"the cloud does not know device {old}")
        found = await agent.wait_for(r"registered as device (\w+)(?s:.*)registered as device (\w+)")
        new = found[2]
        assert new != old
        assert json.loads((state / "credentials.json").read_text())["device_id"] == new
        # And it shows a code for the new identity that a user can claim.
        await agent.wait_for(r"(?s)registered as device \w+.*registered as device.*\d{3} \d{3}")
    finally:
        assert agent.terminate() == 0
        cloud.stop()


async def test_cloud_down_or_failing_at_first_start_is_retried(tmp_path: Path) -> None:
    """Registration (HTTP) retries on refused connections and on 5xx until the cloud works."""
    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV)  # not started yet
    agent = AgentProcess(cloud.url, tmp_path / "state", config=CONFIG).start()
    try:
        await agent.wait_for(r"registration failed: cannot reach .*; retrying")
        with _failing_server(cloud.port):  # a proxy in front of a broken cloud, say
            await agent.wait_for(r"registration failed: \S+ answered 503")
            await asyncio.sleep(0.5)
        assert agent.count(r"registration failed") >= 3, "retried with backoff"
        cloud.start()
        await agent.pairing_code(timeout=30)
    finally:
        assert agent.terminate() == 0
        cloud.stop()


@contextlib.contextmanager
def _failing_server(port: int) -> Iterator[None]:
    """An HTTP server on ``port`` that answers every request with 503."""

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b'{"error": {"code": "unavailable", "message": "try later"}}'
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_a_dropped_socket_keeps_the_session_and_its_signaling(tmp_path: Path) -> None:
    """The agent's socket is kicked (another hello with its credentials: close 4409) while a
    viewer watches: the agent reconnects, the media never stops, and the session is still the
    cloud's (its grace period): the viewer's ``watch_end`` reaches the agent afterwards."""
    from tests import signaling_client

    cloud = CloudProcess(tmp_path / "cloud", env=CLOUD_ENV).start()
    agent, token, device_id = await _paired_agent(cloud, tmp_path / "state")
    viewer = CloudViewer(cloud.ws_url, token)
    try:
        session = await viewer.watch(device_id)
        assert viewer.peer is not None
        await viewer.peer.wait_frames(FPS, timeout=30)
        saved = json.loads((tmp_path / "state" / "credentials.json").read_text())
        intruder = await signaling_client.device(
            cloud.ws_url,
            {"type": "hello", "payload": {k: saved[k] for k in ("device_id", "device_token")}},
        )
        await agent.wait_for(r"signaling: connection closed \(code 4409")
        await agent.wait_for(r"(?s)code 4409.*signaling: connected")  # and it kicks the intruder
        assert await intruder.closed() == 4409
        frames = len(viewer.peer.frames)
        await viewer.peer.wait_frames(frames + FPS, timeout=10)
        await viewer.end()
        await agent.wait_for(rf"session {session[:8]}: ended by the cloud \(viewer_ended\)")
    finally:
        await viewer.close()
        assert agent.terminate() == 0
        cloud.stop()
