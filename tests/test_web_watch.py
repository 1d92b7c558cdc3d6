"""The web app's watch and signaling state machines (``web/js/watch.js``, ``signaling.js``), driven
directly in headless Chromium: the real modules, as nginx serves them, given a stand-in for the
signaling socket (an EventTarget that records what is sent) or for ``WebSocket``.  Fast, and
each case is one message away from the state it checks; the whole path runs in
``test_web_app.py`` and ``test_e2e_browser.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from tests.browser import Nginx, launch_chromium, nginx_server
from tests.services import free_port

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


@pytest.fixture(scope="module")
def nginx() -> Iterator[Nginx]:
    with nginx_server([free_port()]) as server:  # the modules only: no cloud behind it
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def page(nginx: Nginx, browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(nginx.url + "/")
    await page.evaluate(SETUP)
    yield page
    await context.close()


pytestmark = pytest.mark.asyncio(loop_scope="module")


#: ``window.t``: a Watch of device "cam-1" over a fake signaling socket.
SETUP = """async () => {
  const { Watch } = await import("/js/watch.js");
  class FakeSignaling extends EventTarget {
    constructor() { super(); this.sent = []; }
    get ready() { return true; }
    send(type, payload) { this.sent.push({ type, payload }); return true; }
    deliver(type, payload) {
      this.dispatchEvent(new CustomEvent("message", { detail: { type, payload } }));
    }
  }
  const signaling = new FakeSignaling();
  const watch = new Watch({ signaling, deviceId: "cam-1" });
  const states = [];
  watch.addEventListener("state", (e) => states.push(e.detail));
  window.t = { watch, signaling, states };
}"""


async def js(page: Page, body: str) -> Any:
    return await page.evaluate(
        f"async () => {{ const {{ watch, signaling, states }} = window.t; {body} }}"
    )


async def test_each_request_has_its_id_and_a_late_answer_is_ended_at_once(page: Page) -> None:
    first = await js(page, "watch.start(); return signaling.sent.at(-1);")
    assert first["type"] == "watch_request"
    request_id = first["payload"]["request_id"]
    assert first["payload"]["device_id"] == "cam-1"
    assert len(request_id) == 16 and request_id.replace("-", "").replace("_", "").isalnum()
    # A retry: the first request's answer, arriving late, is not adopted but ended.
    second = await js(page, "watch.retry(); return signaling.sent.at(-1).payload.request_id;")
    assert second != request_id
    sent = await js(
        page,
        f"""signaling.deliver("watch_ready", {{ session_id: "late-session", device_id: "cam-1",
               ice_servers: [], request_id: "{request_id}" }});
           return {{ last: signaling.sent.at(-1), state: watch.state,
                     session: watch.sessionId, ended: watch.counts.lateReadyEnded }};""",
    )
    assert sent["last"] == {"type": "watch_end", "payload": {"session_id": "late-session"}}
    assert (sent["state"], sent["session"], sent["ended"]) == ("requesting", None, 1)
    adopted = await js(
        page,
        f"""signaling.deliver("watch_ready", {{ session_id: "s-2", device_id: "cam-1",
               ice_servers: [], request_id: "{second}" }});
           return {{ state: watch.state, session: watch.sessionId }};""",
    )
    assert adopted == {"state": "connecting", "session": "s-2"}


async def test_a_refusal_is_matched_to_its_request(page: Page) -> None:
    states = await js(
        page,
        """watch.start();
           const id = signaling.sent.at(-1).payload.request_id;
           signaling.deliver("error", { code: "device_busy", message: "busy",
                                        ref: "watch_request", request_id: "someone-else" });
           const before = watch.state;
           signaling.deliver("error", { code: "device_busy", message: "busy",
                                        ref: "watch_request", request_id: id });
           return [before, watch.state, watch.message];""",
    )
    assert states[0] == "requesting"
    assert states[1] == "busy" and "as many viewers" in states[2]


@pytest.mark.parametrize(
    ("reason", "state", "words"),
    [
        ("camera_failed", "camera_failed", "image sensor is not working"),
        ("device_busy", "busy", "as many viewers as it can serve"),
        ("stream_stalled", "recovering", "The picture froze"),
        ("device_unpaired", "not_yours", "unpaired"),
        ("device_disconnected", "waiting_device", "offline"),
    ],
)
async def test_end_reasons_are_said_in_words(
    page: Page, reason: str, state: str, words: str
) -> None:
    got = await js(
        page,
        f"""watch.start();
           const id = signaling.sent.at(-1).payload.request_id;
           signaling.deliver("watch_ready", {{ session_id: "s-1", device_id: "cam-1",
                                               ice_servers: [], request_id: id }});
           signaling.deliver("watch_ended", {{ session_id: "s-1", reason: "{reason}" }});
           return {{ state: watch.state, message: watch.message,
                     shown: states.at(-1).state, pc: watch.pc }};""",
    )
    assert (got["state"], got["shown"], got["pc"]) == (state, state, None)
    assert words in got["message"]


async def test_a_resume_carries_the_device_and_a_refusal_without_video_starts_over(
    page: Page,
) -> None:
    got = await js(
        page,
        """watch.start();
           const id = signaling.sent.at(-1).payload.request_id;
           signaling.deliver("watch_ready", { session_id: "s-1", device_id: "cam-1",
                                              ice_servers: [], request_id: id });
           // Pretend the connection came up, then the signaling socket came back.
           let pcState = "disconnected";
           Object.defineProperty(watch.pc, "connectionState", { get: () => pcState });
           watch.signalingReady();
           const resume = signaling.sent.at(-1);
           pcState = "failed";
           signaling.deliver("error", { code: "session_not_found", message: "gone", ref: "s-1" });
           return { resume, state: watch.state, refused: watch.counts.resumeRefused };""",
    )
    assert got["resume"] == {
        "type": "watch_resume",
        "payload": {"session_id": "s-1", "device_id": "cam-1"},
    }
    assert got["state"] == "recovering" and got["refused"] == 1


async def test_signed_out_and_unauthenticated_close_codes_are_told_apart(page: Page) -> None:
    got = await page.evaluate(
        """async () => {
          const { Signaling } = await import("/js/signaling.js");
          const { CLOSE } = await import("/js/protocol.js");
          const events = [];
          class FakeSocket extends EventTarget {
            static OPEN = 1;
            constructor() { super(); FakeSocket.last = this; this.readyState = 1; }
            send() {}
            close() {}
          }
          const real = window.WebSocket;
          window.WebSocket = FakeSocket;
          try {
            for (const code of [CLOSE.SIGNED_OUT, CLOSE.UNAUTHENTICATED]) {
              const s = new Signaling({ getToken: () => "t", url: "ws://x/ws/viewer" });
              s.addEventListener("signedout", () => events.push(["signedout", code]));
              s.addEventListener("unauthorized", () => events.push(["unauthorized", code]));
              FakeSocket.last = undefined;
              s.start();
              // connect() awaits getToken() before it opens the socket.
              for (let i = 0; i < 100 && !FakeSocket.last; i++) await Promise.resolve();
              FakeSocket.last.onclose({ code });
              events.push(["state", s.state]);
            }
          } finally {
            window.WebSocket = real;
          }
          return { events, codes: CLOSE };
        }"""
    )
    assert got["codes"]["SIGNED_OUT"] == 4403 and got["codes"]["TOO_SLOW"] == 4429
    assert got["events"] == [
        ["signedout", 4403],
        ["state", "closed"],
        ["unauthorized", 4401],
        ["state", "closed"],
    ]
