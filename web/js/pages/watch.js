// The watch page (#/watch/<device_id>): live video, and beside it the connection in plain words
// (Good / Fair / Poor, direct or relayed), the controls, and the raw numbers one click away.
// `?relay=1` in the URL forces the TURN relay (iceTransportPolicy "relay").
//
// One state model: `view()` turns the watch's state, the signaling connection and whether video
// really plays into exactly one state the person sees, with one sentence and one action.

import * as api from "../api.js";
import { h } from "../dom.js";
import { MSG } from "../protocol.js";
import { Watch } from "../watch.js";
import { forgetThumbnail, snapshotButton } from "../snapshots.js";
import { ownerSettingsButton } from "../camera-settings.js";

export function forceRelay() {
  return new URLSearchParams(window.location.search).get("relay") === "1";
}

const PATH_WORDS = {
  direct: "Direct (P2P)",
  relay: "Relayed (TURN)",
};

const QUALITY_WORDS = { good: "Good", fair: "Fair", poor: "Poor" };

function kbps(value) {
  if (value === null || value === undefined) return "—";
  return value >= 1000 ? `${(value / 1000).toFixed(1)} Mbit/s` : `${value} kbit/s`;
}

/**
 * What the person sees: {key, pill, sentence, action, note}.  `action` is one of "stop",
 * "retry", "back", "reconnect" or null (live: the controls beside the video are the actions).
 * Inputs: the Watch's (shown) state and message, the signaling state ("open", "connecting",
 * "reconnecting", "closed"), whether video plays (frames on screen now) and whether this
 * connection has put a picture on screen yet (`pictured`; also true when the browser refused to
 * autoplay it, so that "Tap to play" can be offered).  "Live" waits for that first picture: a
 * connection over which nothing plays is still "Starting the video…".
 */
export function view({ state, message, signaling, playing, pictured = true }) {
  const cloudDown = signaling !== "open";
  if (state === "connected" && !pictured) {
    return { key: "connecting", pill: "Connecting", sentence: "Starting the video…", action: "stop" };
  }
  if (state === "connected") {
    return {
      key: "live",
      pill: "Live",
      sentence: "",
      action: null,
      note: cloudDown ? "Reconnecting to the MuMu cloud. The video keeps playing." : "",
    };
  }
  const waiting = ["requesting", "connecting", "recovering", "interrupted", "waiting_device", "busy"];
  if (cloudDown && !playing && waiting.includes(state)) {
    return {
      key: "cloud_unreachable",
      pill: "No connection",
      sentence: "Cannot reach the MuMu cloud. Watching starts by itself when the connection is back.",
      action: "reconnect",
    };
  }
  switch (state) {
    case "requesting":
    case "connecting":
      return { key: "connecting", pill: "Connecting", sentence: "Connecting to the camera…", action: "stop" };
    case "recovering":
    case "interrupted":
      return {
        key: "reconnecting",
        pill: "Reconnecting",
        sentence: message && message !== "Live" ? message : "Reconnecting to the camera…",
        action: "stop",
      };
    case "waiting_device":
      return {
        key: "offline",
        pill: "Camera offline",
        sentence: "The camera is offline. Watching starts by itself when it is back.",
        action: "back",
      };
    case "busy":
      return { key: "busy", pill: "Camera busy", sentence: message, action: "retry" };
    case "camera_failed":
      return { key: "camera_failed", pill: "Camera not working", sentence: message, action: "retry" };
    case "not_yours":
      return { key: "not_yours", pill: "Not on your account", sentence: message, action: "back" };
    case "unsupported":
      return { key: "unsupported", pill: "Cannot play", sentence: message, action: "back" };
    case "ended":
      return { key: "ended", pill: "Stopped", sentence: "You stopped watching.", action: "retry" };
    default:
      return { key: "failed", pill: "Could not watch", sentence: message || "Could not watch this camera.", action: "retry" };
  }
}

const RETRY_WORDS = { busy: "Try now", ended: "Watch again" };

export function render(ctx, { deviceId }) {
  const video = h("video", { playsinline: true, muted: true, autoplay: true, "data-testid": "video", "aria-label": "Live video" });
  video.muted = true; // the property, not only the attribute: required for autoplay on iOS
  const title = h("h1", { "data-testid": "watch-title" }, "Camera");
  const pill = h("span", { class: "pill", role: "status", "data-testid": "watch-state", "data-state": "requesting" }, "Connecting");
  const overlayText = h("p", { "data-testid": "watch-message" }, "Connecting to the camera…");
  const spinner = h("div", { class: "spinner light", "aria-hidden": "true" });

  // The overlay's one action (only one of these is shown at a time).
  const stopButton = h("button", { class: "button", type: "button", "data-testid": "watch-stop", onclick: () => watch.end() }, "Stop");
  const retryButton = h("button", { class: "button primary", type: "button", "data-testid": "retry", onclick: () => watch.retry() }, "Watch again");
  const backButton = h("a", { class: "button primary", href: "#/devices", "data-testid": "watch-back" }, "Back to cameras");
  const reconnectButton = h("button", { class: "button primary", type: "button", "data-testid": "reconnect-now", onclick: () => ctx.signaling.reconnectNow() }, "Retry now");
  const tapToPlay = h("button", { class: "button primary", type: "button", "data-testid": "tap-to-play", hidden: true, onclick: () => play() }, "Tap to play");
  const actions = { stop: stopButton, retry: retryButton, back: backButton, reconnect: reconnectButton };
  const overlay = h("div", { class: "stage-overlay", "data-testid": "watch-overlay" },
    spinner, overlayText, stopButton, retryButton, backButton, reconnectButton);
  const playOverlay = h("div", { class: "stage-overlay play", hidden: true }, tapToPlay);

  // Live controls: beside the video, and inside it in full screen (and on a phone held sideways).
  const endButton = h("button", { class: "button", type: "button", "data-testid": "end-watch", onclick: () => watch.end() }, "End");
  const fullButton = h("button", { class: "button", type: "button", "data-testid": "fullscreen", "aria-pressed": "false", onclick: () => fullscreen() }, "Full screen");
  const stageEnd = h("button", { class: "button", type: "button", "data-testid": "stage-end", onclick: () => watch.end() }, "End");
  const stageExit = h("button", { class: "button", type: "button", "data-testid": "exit-fullscreen", onclick: () => fullscreen() }, "Exit full screen");
  const stageBar = h("div", { class: "stage-bar", "data-testid": "stage-controls" },
    h("a", { class: "button", href: "#/devices", "data-testid": "stage-back" }, "‹ Cameras"), stageEnd, stageExit);

  const qualityValue = h("strong", { "data-testid": "quality", "data-quality": "" }, "—");
  const pathNote = h("span", { class: "muted", "data-testid": "path-note" }, "");
  const note = h("p", { class: "watch-note", role: "status", "data-testid": "watch-note", hidden: true });
  const stageQuality = h("span", { class: "stage-quality", "aria-hidden": "true" });

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
  const [lossBox, lossValue] = stat("Packet loss", "stat-loss");
  const statValues = [pathValue, bitrateValue, fpsValue, rttValue, sizeValue, codecValue, lossValue];

  const stage = h("div", { class: "stage", "data-state": "requesting", "data-view": "connecting" }, video, overlay, playOverlay,
    h("span", { class: "live-badge", "aria-hidden": "true" }, "LIVE"), stageQuality, stageBar);

  const controls = h("div", { class: "controls", "data-testid": "watch-controls" }, endButton, fullButton,
    forceRelay() ? h("span", { class: "tag", "data-testid": "relay-forced" }, "Relay only") : null);

  ctx.show(
    h("section", { class: "watch" },
      h("div", { class: "watch-head" },
        h("a", { class: "back", href: "#/devices", "data-testid": "back" }, "‹ Cameras"),
        title,
        pill,
      ),
      h("div", { class: "watch-body" },
        stage,
        h("aside", { class: "watch-side", "aria-label": "Connection" },
          h("div", { class: "card quality-card" },
            h("p", {}, "Connection: ", qualityValue),
            h("p", {}, pathNote),
            note,
          ),
          controls,
          h("div", { class: "watch-extra", "data-testid": "watch-extra" }), // other features hook in here
          h("details", { class: "raw-stats", "data-testid": "raw-stats" },
            h("summary", {}, "Connection details"),
            h("dl", { class: "stats", "data-testid": "stats" }, pathBox, bitrateBox, fpsBox, rttBox, sizeBox, codecBox, lossBox),
          ),
        ),
      ),
    ),
  );

  const watch = new Watch({ signaling: ctx.signaling, deviceId, forceRelay: forceRelay() });
  ctx.setWatch(watch);

  api.listDevices().then(
    (devices) => {
      const device = devices.find((d) => d.device_id === deviceId);
      title.textContent = device ? device.name || "Camera" : "Unknown camera";
      document.title = `${title.textContent} · MuMu Camera`;
      if (device && watch.deviceOnline === null) watch.deviceOnline = device.online;
      // The owner's camera settings, beside the video: a change shows in the picture at once.
      const settings = device && ownerSettingsButton(device, ctx, {
        current: () => ({ ...device, online: watch.deviceOnline ?? device.online }),
      });
      if (settings) controls.append(settings);
      if (!device && !watch.stopped) {
        // Not on this account (any more): say so rather than ask the cloud in a loop.
        watch.fail("This camera is not on your account.", "not_yours");
      }
    },
    () => {}, // the watch itself reports what matters
  );

  const shotButton = snapshotButton({ watch, video, cameraName: () => title.textContent });
  fullButton.before(shotButton);
  let shown = { state: "requesting", message: "" };
  let framesOnScreen = false; // frames presented recently (video really plays)
  let pictured = false; // a frame of this connection has been on screen
  let autoplayRefused = false;

  function play() {
    video.play().then(
      () => {
        autoplayRefused = false;
        draw();
      },
      (error) => {
        // Only a real refusal (power saving, browser policy) asks for a tap; an interrupted
        // play() (a new stream replaced the old one) is not one.
        if (error?.name === "NotAllowedError") autoplayRefused = true;
        draw();
      },
    );
  }

  async function fullscreen() {
    if (document.fullscreenElement) {
      await document.exitFullscreen().catch(() => {});
      return;
    }
    if (stage.requestFullscreen) {
      try {
        await stage.requestFullscreen({ navigationUI: "hide" });
        // Phones: sideways fills the screen with a 16:9 picture (refused on desktops: fine).
        await screen.orientation?.lock?.("landscape").catch(() => {});
      } catch {
        // refused (not allowed here): nothing changes
      }
    } else if (video.webkitEnterFullscreen) {
      video.webkitEnterFullscreen(); // iPhone: the system player, with its own controls
    }
  }
  const onFullscreen = () => {
    const on = document.fullscreenElement === stage;
    stage.classList.toggle("is-fullscreen", on);
    fullButton.setAttribute("aria-pressed", String(on));
    fullButton.textContent = on ? "Exit full screen" : "Full screen";
    if (!on) screen.orientation?.unlock?.();
  };
  document.addEventListener("fullscreenchange", onFullscreen);

  function draw() {
    const v = view({
      state: shown.state,
      message: shown.message,
      signaling: ctx.signaling?.state ?? "closed",
      playing: watch.playing && framesOnScreen,
      pictured: pictured || autoplayRefused,
    });
    const live = v.key === "live";
    stage.dataset.state = shown.state;
    stage.dataset.view = v.key;
    pill.dataset.state = shown.state;
    pill.dataset.view = v.key;
    pill.textContent = v.pill;
    overlayText.textContent = v.sentence;
    overlay.hidden = live;
    spinner.hidden = !["connecting", "reconnecting"].includes(v.key);
    for (const [name, button] of Object.entries(actions)) button.hidden = v.action !== name;
    if (v.action === "retry") retryButton.textContent = RETRY_WORDS[v.key] || "Try again";
    playOverlay.hidden = !(live && autoplayRefused);
    tapToPlay.hidden = playOverlay.hidden;
    controls.hidden = !live;
    stageBar.hidden = !live;
    note.textContent = v.note || "";
    note.hidden = !v.note;
    if (!live) {
      qualityValue.textContent = "—";
      qualityValue.dataset.quality = "";
      pathNote.textContent = v.key === "connecting" || v.key === "reconnecting" ? "Setting up…" : "Not connected.";
      stageQuality.textContent = "";
    }
  }

  watch.addEventListener("track", (event) => {
    video.srcObject = event.detail;
    play();
  });
  watch.addEventListener("state", (event) => {
    shown = event.detail;
    if (shown.state !== "connected") pictured = false;
    if (shown.state === "not_yours") forgetThumbnail(deviceId); // nor its picture, then
    if (["ended", "failed", "camera_failed", "not_yours", "unsupported"].includes(shown.state)) {
      video.srcObject = null;
      framesOnScreen = false;
      autoplayRefused = false;
      for (const v of statValues) v.textContent = "—";
      if (document.fullscreenElement === stage) document.exitFullscreen().catch(() => {});
    }
    draw();
  });

  // Frames on screen: the browser presents them (requestVideoFrameCallback where it exists,
  // else the play position moving).
  // The first picture of a connection turns "Starting the video…" into "Live" at once.
  let lastFrameAt = 0;
  const presented = () => {
    lastFrameAt = performance.now();
    if (!pictured && shown.state === "connected") {
      pictured = framesOnScreen = true;
      draw();
    }
  };
  if (video.requestVideoFrameCallback) {
    const onFrame = () => {
      presented();
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  } else {
    video.addEventListener("timeupdate", presented);
  }
  const frameWatch = setInterval(() => {
    const now = performance.now() - lastFrameAt < 2_000;
    if (now !== framesOnScreen) {
      framesOnScreen = now;
      draw();
    }
  }, 500);

  watch.addEventListener("stats", (event) => {
    const s = event.detail;
    pathValue.textContent = s.path ? PATH_WORDS[s.path] : "—";
    pathValue.dataset.path = s.path || "";
    bitrateValue.textContent = kbps(s.bitrateKbps);
    fpsValue.textContent = s.fps === null ? "—" : `${s.fps} fps`;
    rttValue.textContent = s.rttMs === null ? "—" : `${s.rttMs} ms`;
    sizeValue.textContent = s.width && s.height ? `${s.width}×${s.height}` : "—";
    codecValue.textContent = s.codec || "—";
    lossValue.textContent = s.lossPercent === null ? "—" : `${s.lossPercent} %`;
    if (shown.state !== "connected") return;
    qualityValue.textContent = QUALITY_WORDS[s.quality] || "—";
    qualityValue.dataset.quality = s.quality || "";
    stageQuality.textContent = s.quality ? QUALITY_WORDS[s.quality] : "";
    stageQuality.dataset.quality = s.quality || "";
    pathNote.textContent = s.path === "relay" ? "Relayed — may be slower." : s.path === "direct" ? "Direct from the camera." : "";
    pathNote.dataset.path = s.path || "";
  });

  const onSignaling = () => draw();
  const onMessage = (event) => {
    const message = event.detail;
    if (message.type === MSG.DEVICE_STATUS && message.payload.device_id === deviceId) draw();
  };
  ctx.signaling.addEventListener("state", onSignaling);
  ctx.signaling.addEventListener("message", onMessage);
  draw();
  watch.start();

  return () => {
    shotButton.dispose();
    clearInterval(frameWatch);
    ctx.signaling.removeEventListener("state", onSignaling);
    ctx.signaling.removeEventListener("message", onMessage);
    document.removeEventListener("fullscreenchange", onFullscreen);
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    watch.dispose();
    ctx.setWatch(null);
    video.srcObject = null;
  };
}
