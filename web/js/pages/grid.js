// The live grid (#/grid): every camera at once, 2x2 on a desktop, stacked on a phone.  Each tile
// is its own peer-to-peer session (its own Watch); a tile that is off screen, or the whole page
// in a hidden tab, has none (the camera's uplink and CPU are spent only on what someone sees).
// Tapping a tile opens that camera's watch page.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { Watch } from "../watch.js";
import { view } from "./watch.js";

const MAX_TILES = 8;

function tile(ctx, device) {
  const video = h("video", { playsinline: true, muted: true, autoplay: true, "aria-hidden": "true" });
  video.muted = true;
  const state = h("span", { class: "pill", "data-testid": "tile-state", "data-state": "idle" }, "Paused");
  const link = h("a", {
    class: "tile",
    href: `#/watch/${encodeURIComponent(device.device_id)}`,
    "data-testid": "tile",
    "data-device-id": device.device_id,
  },
  h("div", { class: "tile-stage" }, video),
  h("div", { class: "tile-caption" }, h("strong", {}, device.name), state));

  let watch = null;
  const draw = (detail) => {
    const v = view({ state: detail.state, message: detail.message, signaling: ctx.signaling.state, playing: false });
    state.dataset.state = detail.state;
    state.textContent = v.pill;
  };
  return {
    element: link,
    get watching() {
      return watch !== null;
    },
    start() {
      if (watch) return;
      watch = new Watch({ signaling: ctx.signaling, deviceId: device.device_id });
      watch.addEventListener("track", (event) => {
        video.srcObject = event.detail;
        video.play().catch(() => {}); // muted: autoplay is allowed; a refusal leaves the still
      });
      watch.addEventListener("state", (event) => draw(event.detail));
      watch.start();
    },
    stop() {
      if (!watch) return;
      watch.dispose(); // ends the session on both sides
      watch = null;
      video.srcObject = null;
      state.dataset.state = "idle";
      state.textContent = "Paused";
    },
  };
}

export function render(ctx) {
  const grid = h("div", { class: "live-grid", "data-testid": "live-grid", "aria-busy": "true" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  ctx.show(
    h("section", { class: "stack" },
      h("div", { class: "page-head" },
        h("h1", { "data-testid": "page-title" }, "Live grid"),
        h("a", { class: "button", href: "#/devices" }, "‹ Cameras"),
      ),
      error,
      grid,
    ),
  );

  const tiles = [];
  const visible = new Set();
  let live = true;

  function apply() {
    const shown = document.visibilityState === "visible";
    for (const t of tiles) {
      if (shown && visible.has(t)) t.start();
      else t.stop();
    }
  }
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const t = tiles.find((x) => x.element === entry.target);
      if (!t) continue;
      if (entry.isIntersecting) visible.add(t);
      else visible.delete(t);
    }
    apply();
  }, { threshold: 0.25 });
  const onVisibility = () => apply();
  document.addEventListener("visibilitychange", onVisibility);

  api.listDevices().then((devices) => {
    if (!live) return;
    grid.removeAttribute("aria-busy");
    if (devices.length === 0) {
      replace(grid, h("p", { class: "muted", "data-testid": "grid-empty" }, "No cameras yet. Add one first."));
      return;
    }
    for (const device of devices.slice(0, MAX_TILES)) {
      const t = tile(ctx, device);
      tiles.push(t);
      grid.append(t.element);
      observer.observe(t.element);
    }
  }, (failure) => {
    if (!live || failure.status === 401) return;
    error.textContent = `Could not load your cameras: ${failure.message}`;
    error.hidden = false;
  });

  window.__mumu_grid = tiles; // tests: which tiles have a session
  return () => {
    live = false;
    observer.disconnect();
    document.removeEventListener("visibilitychange", onVisibility);
    for (const t of tiles) t.stop();
    delete window.__mumu_grid;
  };
}
