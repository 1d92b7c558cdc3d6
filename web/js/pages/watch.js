// The watch page (#/watch/<device_id>): live video, connection state, path, bitrate, frame rate,
// round-trip time.  `?relay=1` in the URL forces the TURN relay (iceTransportPolicy "relay").

import * as api from "../api.js";
import { h } from "../dom.js";
import { Watch } from "../watch.js";
import { snapshotButton } from "../snapshots.js";

export function forceRelay() {
  return new URLSearchParams(window.location.search).get("relay") === "1";
}

const PATH_WORDS = {
  direct: "Direct (P2P)",
  relay: "Relayed (TURN)",
};

function kbps(value) {
  if (value === null || value === undefined) return "—";
  return value >= 1000 ? `${(value / 1000).toFixed(1)} Mbit/s` : `${value} kbit/s`;
}

export function render(ctx, { deviceId }) {
  const video = h("video", { playsinline: true, muted: true, autoplay: true, "data-testid": "video" });
  video.muted = true; // the property, not only the attribute: required for autoplay on iOS
  const title = h("h1", { "data-testid": "watch-title" }, "Camera");
  const pill = h("span", { class: "pill", "data-testid": "watch-state", "data-state": "requesting" }, "Starting");
  const overlayText = h("p", { "data-testid": "watch-message" }, "Asking the camera…");
  const spinner = h("div", { class: "spinner light", "aria-hidden": "true" });
  const tapToPlay = h("button", { class: "button primary", type: "button", hidden: true, onclick: () => play() }, "Tap to play");
  const overlay = h("div", { class: "stage-overlay", "data-testid": "watch-overlay" }, spinner, overlayText, tapToPlay);
  const endButton = h("button", { class: "button danger", type: "button", "data-testid": "end-watch", onclick: () => watch.end() }, "End");
  const retryButton = h("button", { class: "button primary", type: "button", "data-testid": "retry", hidden: true, onclick: () => watch.retry() }, "Watch again");
  const fullButton = h("button", { class: "button", type: "button", "data-testid": "fullscreen", onclick: () => fullscreen() }, "Full screen");

  const stat = (label, testid) => {
    const value = h("dd", { "data-testid": testid }, "—");
    return [h("div", { class: "stat" }, h("dt", {}, label), value), value];
  };
  const [pathBox, pathValue] = stat("Path", "stat-path");
  const [bitrateBox, bitrateValue] = stat("Bitrate", "stat-bitrate");
  const [fpsBox, fpsValue] = stat("Frame rate", "stat-fps");
  const [rttBox, rttValue] = stat("Round trip", "stat-rtt");
  const [sizeBox, sizeValue] = stat("Resolution", "stat-resolution");
  const [codecBox, codecValue] = stat("Codec", "stat-codec");

  const stage = h("div", { class: "stage", "data-state": "requesting" }, video, overlay,
    h("span", { class: "live-badge", "aria-hidden": "true" }, "LIVE"));

  ctx.show(
    h("section", { class: "watch" },
      h("div", { class: "watch-head" },
        h("a", { class: "back", href: "#/devices", "data-testid": "back" }, "‹ Cameras"),
        title,
        pill,
      ),
      stage,
      h("div", { class: "controls" }, endButton, retryButton, fullButton,
        forceRelay() ? h("span", { class: "tag", "data-testid": "relay-forced" }, "Relay only") : null),
      h("dl", { class: "stats", "data-testid": "stats" }, pathBox, bitrateBox, fpsBox, rttBox, sizeBox, codecBox),
    ),
  );

  api.listDevices().then(
    (devices) => {
      const device = devices.find((d) => d.device_id === deviceId);
      title.textContent = device ? device.name || "Camera" : "Unknown camera";
      document.title = `${title.textContent} · MuMu Camera`;
    },
    () => {}, // the watch itself reports what matters
  );

  const watch = new Watch({ signaling: ctx.signaling, deviceId, forceRelay: forceRelay() });
  ctx.setWatch(watch);
  const shotButton = snapshotButton({ watch, video, cameraName: () => title.textContent });
  fullButton.before(shotButton);

  function play() {
    video.play().then(
      () => (tapToPlay.hidden = true),
      () => (tapToPlay.hidden = false), // autoplay refused (power saving, browser policy)
    );
  }

  function fullscreen() {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (stage.requestFullscreen) stage.requestFullscreen().catch(() => {});
    else if (video.webkitEnterFullscreen) video.webkitEnterFullscreen(); // iPhone
  }

  watch.addEventListener("track", (event) => {
    video.srcObject = event.detail;
    play();
  });
  watch.addEventListener("state", (event) => {
    const { state, message } = event.detail;
    const live = state === "connected";
    stage.dataset.state = state;
    pill.dataset.state = state;
    pill.textContent = {
      requesting: "Starting",
      connecting: "Connecting",
      connected: "Live",
      interrupted: "Interrupted",
      recovering: "Reconnecting",
      waiting_device: "Camera offline",
      busy: "Camera busy",
      camera_failed: "Camera not working",
      ended: "Ended",
      failed: "Failed",
    }[state] || state;
    const over = state === "ended" || state === "failed" || state === "camera_failed";
    overlayText.textContent = message;
    overlay.hidden = live;
    spinner.hidden = over || state === "waiting_device" || state === "busy";
    endButton.hidden = over;
    retryButton.hidden = !(over || state === "busy");
    retryButton.textContent = { camera_failed: "Try again", busy: "Try now" }[state] || "Watch again";
    if (over) {
      video.srcObject = null;
      for (const v of [pathValue, bitrateValue, fpsValue, rttValue, sizeValue, codecValue]) v.textContent = "—";
    }
  });
  watch.addEventListener("stats", (event) => {
    const s = event.detail;
    pathValue.textContent = s.path ? PATH_WORDS[s.path] : "—";
    pathValue.dataset.path = s.path || "";
    bitrateValue.textContent = kbps(s.bitrateKbps);
    fpsValue.textContent = s.fps === null ? "—" : `${s.fps} fps`;
    rttValue.textContent = s.rttMs === null ? "—" : `${s.rttMs} ms`;
    sizeValue.textContent = s.width && s.height ? `${s.width}×${s.height}` : "—";
    codecValue.textContent = s.codec || "—";
  });
  watch.start();

  return () => {
    shotButton.dispose();
    watch.dispose();
    ctx.setWatch(null);
    video.srcObject = null;
  };
}
