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

from tests.browser import FIREFOX_USER_AGENTS, NO_H264, Nginx, launch_chromium, nginx_server
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
        ("codec_unsupported", "unsupported", "cannot play this camera's video"),
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


async def test_a_restarting_cloud_is_rejoined_within_its_window(page: Page) -> None:
    got = await page.evaluate(
        """async () => {
          const { Signaling, restartDelay } = await import("/js/signaling.js");
          const { CLOSE } = await import("/js/protocol.js");
          class FakeSocket extends EventTarget {
            static OPEN = 1;
            constructor() { super(); FakeSocket.last = this; this.readyState = 1; }
            send() {}
            close() {}
          }
          const real = window.WebSocket;
          window.WebSocket = FakeSocket;
          const retries = [];
          try {
            const s = new Signaling({ getToken: () => "t", url: "ws://x/ws/viewer",
                                      random: () => 0.5 });
            s.addEventListener("state", (e) => {
              if (e.detail.state === "reconnecting") retries.push(e.detail.retryInMs);
            });
            const opened = async () => {
              FakeSocket.last = undefined;
              for (let i = 0; i < 100 && !FakeSocket.last; i++) await Promise.resolve();
              return FakeSocket.last;
            };
            s.start();
            let ws = await opened();
            s.attempt = 6; // as if earlier drops had grown the backoff
            ws.onclose({ code: CLOSE.RESTART, reason: "restarting; reconnect_within=8" });
            const attemptAfterRestart = s.attempt;
            s.reconnectNow();
            ws = await opened();
            ws.onclose({ code: CLOSE.RESTART, reason: "restarting" });
            s.close();
            return { retries, attemptAfterRestart,
                     parsed: [restartDelay("restarting; reconnect_within=3", () => 1),
                              restartDelay("restarting; reconnect_within=99999", () => 1),
                              restartDelay("going away", () => 1)] };
          } finally {
            window.WebSocket = real;
          }
        }"""
    )
    # Half of the hinted 8 s with the backoff started over; without a window, its first step.
    assert got["retries"] == [4000, 375]
    assert got["attemptAfterRestart"] == 0
    assert got["parsed"] == [3000, 120_000, None]


async def test_one_state_for_each_situation_with_one_action(page: Page) -> None:
    """pages/watch.js view(): the watch's state, the signaling state and whether frames are on
    screen make exactly one state, one sentence and one action; never two at once."""
    got = await page.evaluate(
        """async () => {
          const { view } = await import("/js/pages/watch.js");
          const cases = {
            live: { state: "connected", signaling: "open", playing: true, pictured: true },
            starting: { state: "connected", signaling: "open", playing: false, pictured: false },
            tapToPlay: { state: "connected", signaling: "open", playing: false, pictured: true },
            liveCloudLost: { state: "connected", signaling: "reconnecting", playing: true },
            connecting: { state: "connecting", signaling: "open", playing: false },
            cloudDown: { state: "requesting", signaling: "reconnecting", playing: false },
            cloudDownOffline: { state: "waiting_device", signaling: "reconnecting" },
            offline: { state: "waiting_device", signaling: "open", playing: false },
            notYours: { state: "not_yours", message: "This camera is not on your account.",
                        signaling: "open", playing: false },
            unsupported: { state: "unsupported", message: "This browser cannot play …",
                           signaling: "open", playing: false },
            cameraFailed: { state: "camera_failed", message: "sensor", signaling: "open" },
            ended: { state: "ended", signaling: "open", playing: false },
            busy: { state: "busy", message: "busy", signaling: "open", playing: false },
          };
          return Object.fromEntries(Object.entries(cases).map(([k, c]) => [k, view(c)]));
        }"""
    )
    assert got["live"]["key"] == "live" and got["live"]["action"] is None
    assert not got["live"]["note"]
    assert got["liveCloudLost"]["key"] == "live"
    # connected, but no picture yet: not "Live" until one is on screen (or autoplay was refused
    # and the person is asked to tap)
    assert (got["starting"]["key"], got["starting"]["action"]) == ("connecting", "stop")
    assert got["tapToPlay"]["key"] == "live"
    assert "keeps playing" in got["liveCloudLost"]["note"]
    assert got["cloudDown"]["key"] == got["cloudDownOffline"]["key"] == "cloud_unreachable"
    assert got["cloudDown"]["action"] == "reconnect"
    assert "Cannot reach the MuMu cloud" in got["cloudDown"]["sentence"]
    assert (got["offline"]["key"], got["offline"]["action"]) == ("offline", "back")
    assert (got["notYours"]["key"], got["notYours"]["action"]) == ("not_yours", "back")
    assert (got["unsupported"]["key"], got["unsupported"]["action"]) == ("unsupported", "back")
    assert got["connecting"]["action"] == "stop"
    assert (got["ended"]["action"], got["busy"]["action"]) == ("retry", "retry")
    assert got["cameraFailed"]["action"] == "retry"
    for key, v in got.items():
        assert v["sentence"] or v["key"] == "live", key
        assert v["sentence"].count(". ") <= 1, v  # one sentence (and perhaps what happens next)


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("forbidden", "not_yours"),
        ("not_found", "not_yours"),
        ("unsupported_codec", "unsupported"),
        ("device_offline", "waiting_device"),
    ],
)
async def test_refusals_become_states_without_useless_actions(
    page: Page, code: str, state: str
) -> None:
    got = await js(
        page,
        f"""watch.start();
           const id = signaling.sent.at(-1).payload.request_id;
           signaling.deliver("error", {{ code: "{code}", message: "raw server words",
                                        ref: "watch_request", request_id: id }});
           return {{ state: watch.state, message: watch.message }};""",
    )
    assert got["state"] == state
    assert "raw server words" not in got["message"]


async def test_the_camera_vanishing_is_said_at_once_and_an_online_camera_is_not_offline(
    page: Page,
) -> None:
    got = await js(
        page,
        """watch.start();
           const id = signaling.sent.at(-1).payload.request_id;
           signaling.deliver("device_status", { device_id: "cam-1", online: false });
           const vanished = watch.state;
           watch.retry();
           watch.deviceOnline = true;
           const ends = [];
           for (let i = 0; i < 3; i++) {
             const rid = signaling.sent.filter((m) => m.type === "watch_request").at(-1)
               .payload.request_id;
             signaling.deliver("watch_ready", { session_id: `s-${i}`, device_id: "cam-1",
                                                ice_servers: [], request_id: rid });
             signaling.deliver("watch_ended", { session_id: `s-${i}`, reason: "device_ended" });
             ends.push(watch.state);
             if (watch.state === "recovering") watch.request();
           }
           watch.dispose();
           return { vanished, ends };""",
    )
    assert got["vanished"] == "waiting_device"
    # Online and ending every attempt before a picture: not "offline", and not forever.
    assert got["ends"] == ["recovering", "recovering", "failed"]


async def test_packets_without_a_decoded_frame_say_this_browser_cannot_play(page: Page) -> None:
    """H.264 negotiated, packets arriving, not one frame decoded (a browser without a decoder):
    within a few seconds the page says so instead of "Live" over a black picture.  Fed stats
    here; ``test_web_app.py`` shows it in Chromium receiving H.264 no decoder can read."""
    got = await js(
        page,
        """watch.start();
           const id = signaling.sent.at(-1).payload.request_id;
           signaling.deliver("watch_ready", { session_id: "s-1", device_id: "cam-1",
                                              ice_servers: [], request_id: id });
           let bytes = 0;
           watch.pc.getStats = async () => {
             bytes += 40000;
             return new Map([["V", { type: "inbound-rtp", kind: "video", bytesReceived: bytes,
                                     packetsReceived: bytes / 1000, framesDecoded: 0,
                                     timestamp: performance.now() }]]);
           };
           const started = performance.now();
           while (watch.state !== "unsupported" && performance.now() - started < 12000) {
             await new Promise((r) => setTimeout(r, 200));
           }
           return { state: watch.state, message: watch.message,
                    after: performance.now() - started, pc: watch.pc };""",
    )
    assert got["state"] == "unsupported", got
    assert got["message"].startswith("This browser cannot play this camera's video")
    assert got["after"] < 9000 and got["pc"] is None


async def test_words_for_refusals_codes_and_models(page: Page) -> None:
    got = await page.evaluate(
        """async () => {
          const w = await import("/js/words.js");
          const { quality } = await import("/js/stats.js");
          return {
            limited: w.refusalWords({ code: "rate_limited", status: 429, retryAfter: 56,
                                      serverMessage: "too many attempts; try again in 56 s" }),
            taken: w.refusalWords({ code: "email_taken", status: 409,
                                    serverMessage: "an account with that e-mail exists already" }),
            weak: w.refusalWords({ code: "invalid_input", status: 422,
                                   serverMessage: "password: too weak (use more different)" }),
            unknown: w.refusalWords({ code: "brand_new", status: 418, serverMessage: "raw" }),
            down: w.refusalWords({ code: "unavailable", status: 503, retryAfter: 5 }),
            digits: ["560176", " 560 176 ", "Code: 560 176", "560-176", "Code 1: 560 176",
                     "12", "1234567", "560 176 and 123 456"].map(w.pairingDigits),
            models: ["Linux x86_64", "Raspberry Pi 4 Model B Rev 1.4", "", "unknown", "test"]
              .map(w.modelWords),
            quality: [
              quality({ framesDecoded: 10, fps: 30, rttMs: 20, lossPercent: 0 }),
              quality({ framesDecoded: 10, fps: 30, rttMs: 200, lossPercent: 0 }),
              quality({ framesDecoded: 10, fps: 30, rttMs: 20, lossPercent: 8 }),
              quality({ framesDecoded: 0, fps: null, rttMs: null, lossPercent: null }),
            ],
          };
        }"""
    )
    assert got["limited"] == "Too many attempts. Try again in 56 seconds."
    assert got["taken"].endswith("Sign in instead.") and "exists already" not in got["taken"]
    assert got["weak"].startswith("Choose a stronger password")
    assert "raw" not in got["unknown"] and "418" in got["unknown"]
    assert got["down"].endswith("Try again in 5 seconds.")
    assert got["digits"] == [
        "560176",
        "560176",
        "560176",
        "560176",
        "560176",
        None,
        None,
        None,
    ]
    assert got["models"] == [
        "A computer (Linux, x86_64)",
        "Raspberry Pi 4 Model B",
        "MuMu camera",
        "MuMu camera",
        "test",
    ]
    assert got["quality"] == ["good", "fair", "poor", None]


async def test_a_browser_without_webrtc_is_told_so_and_nothing_is_asked(page: Page) -> None:
    got = await page.evaluate(
        """async () => {
          const { Watch } = await import("/js/watch.js");
          const sent = [];
          const signaling = Object.assign(new EventTarget(), {
            ready: true, send: (type, payload) => sent.push(type) });
          const real = window.RTCPeerConnection;
          delete window.RTCPeerConnection;
          try {
            const watch = new Watch({ signaling, deviceId: "cam-1" });
            watch.start();
            return { state: watch.state, message: watch.message, sent };
          } finally {
            window.RTCPeerConnection = real;
          }
        }"""
    )
    assert got["state"] == "unsupported" and got["sent"] == []
    assert "no WebRTC" in got["message"]


@pytest.mark.parametrize("platform", ["linux", "windows", "mac", "chromium"])
async def test_a_browser_without_h264_is_given_the_steps_for_its_platform(
    nginx: Nginx, browser: Browser, platform: str
) -> None:
    """Firefox as shipped without H.264 (simulated: its capabilities lack H.264) is told how to
    turn it on where it runs; another browser without it, which browsers play it."""
    agent = FIREFOX_USER_AGENTS.get(platform)
    context = await browser.new_context(**({"user_agent": agent} if agent else {}))
    await context.add_init_script(NO_H264)
    page = await context.new_page()
    await page.goto(nginx.url + "/")
    await page.evaluate(SETUP)
    try:
        got = await js(
            page,
            """watch.start();
               const id = signaling.sent.at(-1).payload.request_id;
               signaling.deliver("watch_ready", { session_id: "s-1", device_id: "cam-1",
                                                  ice_servers: [], request_id: id });
               signaling.deliver("watch_ended", { session_id: "s-1", reason: "device_ended" });
               return { state: watch.state, message: watch.message };""",
        )
    finally:
        await context.close()
    assert got["state"] == "unsupported", got
    words = got["message"]
    assert "cannot play this camera's video" in words
    expected = {
        "linux": ["about:config", "media.webrtc.hw.h264.enabled", "libavcodec-extra"],
        "windows": ["Add-ons and themes → Plugins", "OpenH264"],
        "mac": ["Add-ons and themes → Plugins", "OpenH264"],
        "chromium": ["Chrome, Edge or Safari"],
    }[platform]
    assert all(step in words for step in expected), words
    if platform != "linux":
        assert "about:config" not in words
