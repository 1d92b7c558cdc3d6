// Watch history (#/history for every camera, #/history/<device_id> for one): who watched, when,
// for how long, direct or relayed, and how it ended, from the sessions the cloud records (since
// the current pairing; the path as each viewer's browser reported it).

import * as api from "../api.js";
import { h, replace } from "../dom.js";

const HOW_ENDED = {
  viewer_ended: "Stopped watching",
  device_ended: "Camera stopped the stream",
  viewer_disconnected: "Viewer's connection lost",
  device_disconnected: "Camera went offline",
  device_unpaired: "Camera unpaired",
  expired: "Session expired",
  error: "Ended by an error",
  camera_failed: "Camera's sensor failed",
  device_busy: "Camera busy",
  stream_stalled: "Picture froze",
};

const HOW_CARRIED = {
  direct: "Direct",
  relay: "Relayed",
};

/** "4 min 12 s", "1 h 3 min", "8 s". */
export function durationWords(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function when(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function render(ctx, { deviceId = null } = {}) {
  const title = h("h1", { "data-testid": "page-title" }, deviceId ? "Camera history" : "Watch history");
  const body = h("div", { class: "card", "data-testid": "history", "aria-busy": "true" },
    h("p", { class: "muted" }, "Loading the history…"));
  ctx.show(
    h("section", { class: "stack" },
      h("div", { class: "page-head" },
        title,
        h("a", { class: "button", href: "#/devices", "data-testid": "back" }, "‹ Cameras"),
      ),
      h("p", { class: "muted" }, "Who watched, when, for how long and how the video travelled, since each camera was added to your account."),
      body,
    ),
  );

  let live = true;
  (async () => {
    const [account, devices] = await Promise.all([api.account(), api.listDevices()]);
    const cameras = deviceId ? devices.filter((d) => d.device_id === deviceId) : devices;
    if (deviceId && cameras.length === 0) throw new api.ApiError(404, "not_found", "This camera is not on your account.");
    if (deviceId) {
      title.textContent = `${cameras[0].name} · history`;
      document.title = `${cameras[0].name} history · MuMu Camera`;
    }
    const lists = await Promise.all(cameras.map(async (camera) =>
      (await api.listSessions(camera.device_id)).map((s) => ({ ...s, camera }))));
    return { me: account.user_id, rows: lists.flat().sort((a, b) => b.started_at.localeCompare(a.started_at)) };
  })().then(({ me, rows }) => {
    if (!live) return;
    body.removeAttribute("aria-busy");
    if (rows.length === 0) {
      replace(body, h("p", { class: "muted", "data-testid": "history-empty" }, "Nobody has watched yet."));
      return;
    }
    replace(body, h("div", { class: "table-scroll", tabindex: 0, role: "region", "aria-label": "Watch sessions" }, h("table", { class: "table", "data-testid": "history-table" },
      h("caption", { class: "visually-hidden" }, "Watch sessions, newest first"),
      h("thead", {}, h("tr", {},
        deviceId ? null : h("th", { scope: "col" }, "Camera"),
        h("th", { scope: "col" }, "Who"),
        h("th", { scope: "col" }, "Started"),
        h("th", { scope: "col" }, "How long"),
        h("th", { scope: "col" }, "Video"),
        h("th", { scope: "col" }, "How it ended"))),
      h("tbody", {}, rows.map((r) => {
        const seconds = ((r.ended_at ? Date.parse(r.ended_at) : Date.now()) - Date.parse(r.started_at)) / 1000;
        return h("tr", { "data-testid": "history-row" },
          deviceId ? null : h("td", {}, r.camera.name),
          h("td", { "data-testid": "history-who" }, r.viewer_id === me ? "You" : r.viewer_email || "A deleted account"),
          h("td", {}, when(r.started_at)),
          h("td", {}, r.ended_at ? durationWords(seconds) : `${durationWords(seconds)} so far`),
          h("td", { "data-testid": "history-path", "data-path": r.media_path || "" },
            HOW_CARRIED[r.media_path] || "—"),
          h("td", { "data-testid": "history-end" }, r.ended_at ? HOW_ENDED[r.end_reason] || "Ended" : "Watching now"));
      })),
    )));
  }, (failure) => {
    if (!live || failure.status === 401) return;
    body.removeAttribute("aria-busy");
    replace(body, h("p", { class: "form-error", role: "alert", "data-testid": "history-error" },
      `Could not load the history: ${failure.message}`));
  });
  return () => {
    live = false;
  };
}
