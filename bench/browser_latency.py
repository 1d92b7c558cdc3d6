"""Time to first frame and glass-to-glass latency in a real browser.

Debian's Chromium (headless, through Playwright) runs the web app against a real
``mumu-cloud serve`` (embedded: SQLite, in-process presence; it serves the app itself with
``MUMU_WEB_DIR``), the real agent ``mumu-agent run --camera synthetic`` at 1280x720, 30 fps, and
a real coturn with the repository's config (loopback overrides) for the relayed path.  All on
loopback, one machine, one clock.

* **Time to first frame**: from the click on a camera's *Watch* button in the device list to
  the first decoded picture of the camera (``requestVideoFrameCallback`` with the camera's
  size), both timed with ``performance.now()`` inside the page.  Milestones on the way, from
  the watch page's state pill: ``connecting`` (the cloud answered ``watch_ready``) and
  ``connected`` (the peer connection is up).  Each run goes back to the list, waits until the
  agent has closed the session (its camera stops: ``keep_warm`` is off by default, so every
  run starts the camera, as a first viewer does), then clicks *Watch* again.
* **Glass to glass**: every picture the camera draws carries its capture time
  (``device/hal/timecode.py``).  For each frame the page presents (``requestVideoFrameCallback``)
  it reads the stamp with ``web/js/timecode.js`` from a canvas copy and compares it with
  ``Date.now()``.  Also shown, to split it: capture to the arrival of the frame's last packet
  (``receiveTime`` of the frame's metadata), i.e. encode + packetize + network; the rest is the
  browser's jitter buffer, decode and render.  (``receiveTime`` is Chrome's own conversion
  from its network clock and is off by a few ms now and then: its minimum can be negative.)

Paths: direct (host candidates), relayed (``?relay=1``: ``iceTransportPolicy`` relay,
through coturn), and ``turn-down``: direct, but with a cloud whose TURN server never answers (a
bound UDP socket nobody reads; its own cloud and agent, same run, its watches interleaved with
the direct path's), which must cost the viewer nothing (target: first frame within 1.5x of
direct).  Targets (direct, loopback): first frame under 500 ms median, glass to glass under
150 ms median.  Prints a table; ``--json`` prints JSON.

    .venv/bin/python bench/browser_latency.py [--runs 20] [--seconds 10]
        [--path direct|relay|turn-down|all]
        [--warm] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.agent_process import AgentProcess
from tests.browser import WEB_ROOT, coturn_server, launch_chromium
from tests.cloud_process import ApiClient, CloudProcess

if TYPE_CHECKING:
    from playwright.async_api import Page

WIDTH, HEIGHT, FPS = 1280, 720, 30
TTFF_TARGET_MS = 500.0
TURN_DOWN_RATIO = 1.5
G2G_TARGET_MS = 150.0
TURN_SECRET = "bench-turn-secret"

#: Installed in every document before the app runs: times a click on *Watch* to the first
#: picture of the camera, and the watch page's state changes on the way.
INSTRUMENT = """
(() => {
  window.__bench = { current: null };
  document.addEventListener("click", (event) => {
    if (!(event.target instanceof Element) || !event.target.closest("[data-testid=watch]")) return;
    const run = {
      click: performance.now(), states: {}, firstFrame: null, width: null, height: null,
    };
    const seen = { pill: false, video: false };
    window.__bench.current = run;
    const observer = new MutationObserver(() => {
      const pill = document.querySelector("[data-testid=watch-state]");
      const video = document.querySelector("[data-testid=video]");
      if (pill && !seen.pill) {
        seen.pill = true;
        new MutationObserver(() => {
          run.states[pill.dataset.state] ??= performance.now();
        }).observe(pill, { attributes: true, attributeFilter: ["data-state"] });
      }
      if (video && !seen.video) {
        seen.video = true;
        const onFrame = (now, meta) => {
          // Chrome may present a tiny placeholder before any media: wait for the camera's size.
          if (meta.width >= 64 && run.firstFrame === null) {
            run.firstFrame = performance.now();
            run.width = meta.width;
            run.height = meta.height;
          } else {
            video.requestVideoFrameCallback(onFrame);
          }
        };
        video.requestVideoFrameCallback(onFrame);
      }
      if (seen.pill && seen.video) observer.disconnect();
    });
    observer.observe(document.body, { childList: true, subtree: true });
  }, true);
})();
"""

#: Reads the capture stamp of every presented frame for ``durationMs``.
GLASS_TO_GLASS = """async (durationMs) => {
  const { readTimecode, latencyMs, WIDTH, BLOCK } = await import("/js/timecode.js");
  const video = document.querySelector("[data-testid=video]");
  const canvas = new OffscreenCanvas(WIDTH, BLOCK);
  const atCallback = [];
  const atReceive = [];
  let unreadable = 0;
  const end = performance.now() + durationMs;
  // latencyMs is modulo 2^32; a (clock-noise) negative comes out as a huge number: sign it.
  const signed = (ms) => (ms > 2 ** 31 ? ms - 2 ** 32 : ms);
  return await new Promise((resolve) => {
    const onFrame = (now, meta) => {
      const stamp = readTimecode(video, canvas);
      const wall = Date.now();
      if (stamp === null) {
        unreadable += 1;
      } else {
        atCallback.push(signed(latencyMs(stamp, wall)));
        // When its last packet arrived, on the wall clock: Date.now() shifted back by how long
        // ago that was (performance.now() and Date.now() need not share an origin).
        if (typeof meta.receiveTime === "number") {
          atReceive.push(signed(latencyMs(stamp, wall - (performance.now() - meta.receiveTime))));
        }
      }
      if (performance.now() < end) {
        video.requestVideoFrameCallback(onFrame);
      } else {
        resolve({ atCallback, atReceive, unreadable, width: meta.width, height: meta.height });
      }
    };
    video.requestVideoFrameCallback(onFrame);
  });
}"""


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 1),
        "p95_ms": round(p95(values), 1),
        "min_ms": round(min(values), 1),
        "max_ms": round(max(values), 1),
    }


class Bench:
    def __init__(self, page: Page, base: str, device_id: str, agent: AgentProcess) -> None:
        self.page = page
        self.base = base
        self.device_id = device_id
        self.agent = agent
        self.sessions_closed = 0

    async def open_list(self, relay: bool) -> None:
        query = "?relay=1" if relay else ""
        await self.page.goto(f"{self.base}/{query}#/devices")
        await self.online()

    async def online(self) -> None:
        card = self.page.locator(f"[data-device-id='{self.device_id}']")
        await (
            card.locator("[data-testid=device-status]")
            .filter(has_text="Online")
            .wait_for(timeout=20_000)
        )
        await self.page.wait_for_selector("[data-testid=signaling-state][data-state=open]")

    async def click_watch(self) -> dict[str, Any]:
        """Clicks *Watch*; the page's timings (ms since the click) once the first frame is in."""
        card = self.page.locator(f"[data-device-id='{self.device_id}']")
        await card.locator("[data-testid=watch]").click()
        await self.page.wait_for_function(
            "() => window.__bench.current && window.__bench.current.firstFrame !== null",
            timeout=30_000,
        )
        run: dict[str, Any] = await self.page.evaluate("window.__bench.current")
        click = run["click"]
        return {
            "first_frame": run["firstFrame"] - click,
            "watch_ready": run["states"].get("connecting", math.nan) - click,
            "connected": run["states"].get("connected", math.nan) - click,
            "size": (run["width"], run["height"]),
        }

    async def back_to_list(self) -> None:
        """Leaves the watch page (the app ends the session) and waits until the agent has
        closed the session, so that the next click starts from a camera at rest."""
        await self.page.click("[data-testid=back]")
        self.sessions_closed += 1
        async with asyncio.timeout(30):
            while self.agent.count(r"closed, 0 session\(s\) left") < self.sessions_closed:
                await asyncio.sleep(0.05)
        await self.online()
        await asyncio.sleep(0.3)

    async def one_watch(self, into: dict[str, Any]) -> None:
        """One click -> first frame, recorded into ``into``; then back to the list."""
        timing = await self.click_watch()
        for key in ("first_frame", "watch_ready", "connected"):
            into.setdefault(key, []).append(timing[key])
        into.setdefault("sizes", set()).add(timing["size"])
        await self.back_to_list()

    async def glass_to_glass(
        self, name: str, seconds: float, got: dict[str, Any]
    ) -> dict[str, Any]:
        """One longer watch for glass to glass; the path's whole result."""
        await self.click_watch()
        await asyncio.sleep(2.0)  # past the first keyframe and the jitter buffer's start
        stats = await self.page.evaluate("window.__mumu.stats")
        g2g: dict[str, Any] = await self.page.evaluate(GLASS_TO_GLASS, seconds * 1000)
        await self.back_to_list()
        return {
            "path": name,
            "selected_path": stats.get("path") if stats else None,
            "runs": len(got["first_frame"]),
            "sizes": sorted(f"{w}x{h}" for w, h in got["sizes"]),
            "watch_ready": summary(got["watch_ready"]),
            "connected": summary(got["connected"]),
            "first_frame": summary(got["first_frame"]),
            "glass_to_glass": summary(g2g["atCallback"]),
            "capture_to_receive": summary(g2g["atReceive"]),
            "frames_unreadable": g2g["unreadable"],
            "glass_to_glass_size": f"{g2g['width']}x{g2g['height']}",
        }


@contextlib.contextmanager
def silent_turn_server() -> Iterator[str]:
    """A TURN URL whose server never answers: a bound UDP socket that is never read."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"turn:127.0.0.1:{sock.getsockname()[1]}?transport=udp"


@contextlib.asynccontextmanager
async def stack(tmp: Path, env: dict[str, str], browser: Any, warm: bool) -> AsyncIterator[Bench]:
    """One cloud, one paired agent, one page of the app signed in: a :class:`Bench`."""
    config = {
        "camera": {"width": WIDTH, "height": HEIGHT, "fps": FPS},
        "keep_warm": warm,
        "log_level": "info",
    }
    with (
        CloudProcess(tmp / "cloud", env=env) as cloud,
        AgentProcess(cloud.url, tmp / "agent", config=config) as agent,
    ):
        api = ApiClient(cloud.url)
        try:
            account = await api.account()
            device = await api.pair_code(account, await agent.pairing_code())
        finally:
            await api.aclose()
        await agent.wait_for(r"the cloud says: paired")
        if warm:
            await agent.wait_for(r"camera started")
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            await context.add_init_script(INSTRUMENT)
            page = await context.new_page()
            await page.goto(cloud.url + "/")
            await page.evaluate(
                "([t, e]) => { localStorage.setItem('mumu.token', t);"
                " localStorage.setItem('mumu.email', e); }",
                [account.token, account.email],
            )
            yield Bench(page, cloud.url, device["device_id"], agent)
        finally:
            await context.close()


async def run(runs: int, seconds: float, paths: list[str], warm: bool) -> dict[str, Any]:
    """Direct and turn-down are measured interleaved, watch by watch, each on its own cloud and
    agent (so that a machine busy with other work weighs on both alike); relay after them."""
    base = {
        "MUMU_WEB_DIR": str(WEB_ROOT),
        "MUMU_REGISTER_RATE_PER_ADDRESS": "100000/minute",
        "MUMU_LOGIN_RATE_PER_ADDRESS": "100000/minute",
        "MUMU_PAIR_RATE_PER_ADDRESS": "100000/minute",
        "MUMU_DEVICE_REGISTER_RATE_PER_ADDRESS": "100000/minute",
    }
    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="mumu-browser-bench-") as tmp_dir,
        coturn_server(TURN_SECRET) as coturn,
        silent_turn_server() as dead,
    ):
        tmp = Path(tmp_dir)
        ok_env = base | {
            "MUMU_TURN_SECRET": TURN_SECRET,
            "MUMU_TURN_URLS": ",".join(coturn.urls),
            "MUMU_STUN_URLS": f"stun:127.0.0.1:{coturn.port}",
        }
        down_env = base | {"MUMU_TURN_SECRET": TURN_SECRET, "MUMU_TURN_URLS": dead}
        async with (
            launch_chromium() as browser,
            stack(tmp / "ok", ok_env, browser, warm) as ok,
            stack(tmp / "down", down_env, browser, warm) as down,
        ):
            benches = {"direct": ok, "turn-down": down}
            interleaved = [p for p in ("direct", "turn-down") if p in paths]
            got: dict[str, dict[str, Any]] = {name: {} for name in paths}
            for name in interleaved:
                await benches[name].open_list(relay=False)
            for _ in range(runs):
                for name in interleaved:
                    await benches[name].one_watch(got[name])
            for name in interleaved:
                results[name] = await benches[name].glass_to_glass(name, seconds, got[name])
            if "relay" in paths:
                await ok.open_list(relay=True)
                for _ in range(runs):
                    await ok.one_watch(got["relay"])
                results["relay"] = await ok.glass_to_glass("relay", seconds, got["relay"])
    ordered = [results[p] for p in ("direct", "relay", "turn-down") if p in results]
    return {
        "camera": f"{WIDTH}x{HEIGHT}@{FPS}",
        "camera_start": "warm (keep_warm)" if warm else "cold (starts for the viewer)",
        "browser": "Debian Chromium, headless",
        "paths": ordered,
        "targets": {
            "first_frame_median_ms": TTFF_TARGET_MS,
            "glass_to_glass_median_ms": G2G_TARGET_MS,
        },
    }


def table(result: dict[str, Any]) -> str:
    head = (
        f"{'path':9} {'measure':34} {'n':>4} {'median ms':>10} {'p95 ms':>8} "
        f"{'min ms':>8} {'max ms':>8}"
    )
    lines = [
        f"Chromium watching the synthetic camera {result['camera']} on loopback; camera "
        f"{result['camera_start']}",
        head,
        "-" * len(head),
    ]
    labels = [
        ("watch_ready", "click -> watch_ready (connecting)"),
        ("connected", "click -> peer connected"),
        ("first_frame", "click -> first decoded frame"),
        ("glass_to_glass", "glass to glass (frame callback)"),
        ("capture_to_receive", "capture -> last packet received"),
    ]
    for r in result["paths"]:
        for key, label in labels:
            s = r[key]
            if not s.get("n"):
                lines.append(f"{r['path']:9} {label:34} {0:>4}")
                continue
            lines.append(
                f"{r['path']:9} {label:34} {s['n']:>4} {s['median_ms']:>10.1f} "
                f"{s['p95_ms']:>8.1f} {s['min_ms']:>8.1f} {s['max_ms']:>8.1f}"
            )
    lines.append("")
    for r in result["paths"]:
        lines.append(
            f"{r['path']}: selected path {r['selected_path']}, pictures {', '.join(r['sizes'])}, "
            f"{r['frames_unreadable']} presented frames without a readable stamp"
        )
    down = next((r for r in result["paths"] if r["path"] == "turn-down"), None)
    direct = next((r for r in result["paths"] if r["path"] == "direct"), None)
    if down is not None and direct is not None:
        ratio = down["first_frame"]["median_ms"] / direct["first_frame"]["median_ms"]
        lines.append(
            f"turn-down / direct first frame medians: {ratio:.2f}x: "
            f"{'meets' if ratio <= TURN_DOWN_RATIO else 'MISSES'} the {TURN_DOWN_RATIO}x target"
        )
    if direct is not None:
        ttff = direct["first_frame"]["median_ms"]
        g2g = direct["glass_to_glass"].get("median_ms", math.inf)
        lines.append(
            f"direct first frame median {ttff:.0f} ms: "
            f"{'meets' if ttff < TTFF_TARGET_MS else 'MISSES'} the {TTFF_TARGET_MS:.0f} ms target; "
            f"glass to glass median {g2g:.0f} ms: "
            f"{'meets' if g2g < G2G_TARGET_MS else 'MISSES'} the {G2G_TARGET_MS:.0f} ms target"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="first-frame runs per path")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="glass-to-glass sampling per path"
    )
    parser.add_argument("--path", choices=["direct", "relay", "turn-down", "all"], default="all")
    parser.add_argument(
        "--warm", action="store_true", help="keep the camera running with no viewer"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    paths = ["direct", "relay", "turn-down"] if args.path == "all" else [args.path]
    started = time.monotonic()
    result = asyncio.run(run(args.runs, args.seconds, paths, args.warm))
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
