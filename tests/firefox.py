"""Debian's Firefox ESR for the browser tests, driven over WebDriver BiDi (no geckodriver).

``launch_firefox()`` starts ``firefox-esr --headless --remote-debugging-port`` with a fresh
profile whose prefs let it receive our H.264 (Debian's build decodes it with the system's
libavcodec once ``media.webrtc.hw.h264.enabled`` and ``gfx.blacklist.webrtc.hw.acceleration.h264``
are set; without them it leaves H.264 out of its offers) and use loopback ICE candidates as
plain addresses (the agent cannot resolve mDNS names).  ``Firefox`` is a small BiDi client over
one WebSocket: navigate, evaluate.  A missing binary is a skip here and a failure in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from tests.services import free_port, require, stop

FIREFOX = "/usr/bin/firefox-esr"

PREFS = {
    # H.264 for WebRTC through libavcodec (see the module docstring).
    "media.webrtc.hw.h264.enabled": True,
    "gfx.blacklist.webrtc.hw.acceleration.h264": 1,
    # Host candidates as addresses, loopback included: the test's agent runs on this machine.
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.ice.loopback": True,
    "media.autoplay.default": 0,
    # A quiet first run.
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "browser.startup.homepage_override.mstone": "ignore",
}


class BidiError(RuntimeError):
    pass


class Firefox:
    """One WebDriver BiDi session and its first browsing context."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.context = ""

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self.ids)
        await self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if message.get("id") != command_id:
                continue  # an event
            if message.get("type") == "error":
                raise BidiError(f"{method}: {message.get('error')}: {message.get('message')}")
            result: dict[str, Any] = message["result"]
            return result

    async def navigate(self, url: str) -> None:
        await self.command(
            "browsingContext.navigate", context=self.context, url=url, wait="complete"
        )

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (awaited if it is a promise)."""
        result = await self.command(
            "script.evaluate",
            expression=f"(async () => JSON.stringify(await ({expression})))()",
            target={"context": self.context},
            awaitPromise=True,
            resultOwnership="none",
        )
        if result.get("type") == "exception":
            raise BidiError(f"{expression!r}: {result['exceptionDetails'].get('text')}")
        value = result["result"].get("value")
        return None if value is None else json.loads(value)

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Polls ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true within {timeout} s: {expression}")
            await asyncio.sleep(0.2)


def write_profile(directory: Path, *, h264: bool = True) -> None:
    prefs = dict(PREFS)
    if not h264:  # as Debian ships it: no H.264 in WebRTC offers
        del (
            prefs["media.webrtc.hw.h264.enabled"],
            prefs["gfx.blacklist.webrtc.hw.acceleration.h264"],
        )
    lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});" for k, v in prefs.items()]
    (directory / "user.js").write_text("\n".join(lines) + "\n")


def start(profile: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    argv = [FIREFOX, "--headless", "--no-remote", "--profile", str(profile)]
    return subprocess.Popen(
        [*argv, "--remote-debugging-port", str(port), "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


@contextlib.asynccontextmanager
async def launch_firefox(*, h264: bool = True) -> AsyncIterator[Firefox]:
    """``h264=False``: Firefox as Debian ships it (its offers have no H.264)."""
    require(shutil.which(FIREFOX) is not None, f"Firefox ESR ({FIREFOX})")
    import websockets

    profile = Path(tempfile.mkdtemp(prefix="mumu-firefox-"))
    write_profile(profile, h264=h264)
    port = free_port()
    log = (profile / "stderr.log").open("wb")
    proc = start(profile, port, log)
    try:
        deadline = time.monotonic() + 60
        while not re.search(rb"WebDriver BiDi listening", (profile / "stderr.log").read_bytes()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "Firefox did not start its BiDi server:\n"
                    + (profile / "stderr.log").read_text(errors="replace")[-2000:]
                )
            await asyncio.sleep(0.1)
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/session", max_size=64 * 1024 * 1024
        ) as ws:
            firefox = Firefox(ws)
            await firefox.command("session.new", capabilities={})
            tree = await firefox.command("browsingContext.getTree")
            firefox.context = tree["contexts"][0]["context"]
            yield firefox
            with contextlib.suppress(Exception):
                await firefox.command("session.end")
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
