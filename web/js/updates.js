// A camera's version and update state in one sentence, and the owner's update window.

import * as api from "./api.js";
import { h, replace } from "./dom.js";

const WINDOW_RE = /^([01]\d|2[0-3]):[0-5]\d$/;

/** One sentence for a camera's update state (empty when there is nothing to say). */
export function describe(update) {
  if (!update) return "";
  const target = update.target || "a new version";
  switch (update.state) {
    case "waiting":
      return `Update to ${target} is waiting: ${update.reason || "not now"}.`;
    case "downloading":
      return update.progress != null
        ? `Downloading update ${target} (${Math.round(update.progress * 100)} %).`
        : `Downloading update ${target}.`;
    case "installed":
      return `Update ${target} is installed; it starts when nobody is watching.`;
    case "healthy":
      return `Running ${target}; checking it works before keeping it.`;
    case "committed":
      return "";
    case "rolled_back":
      return `Update ${target} did not work and was undone: ${update.reason || "no reason given"}.`;
    case "failed":
      return `Update ${target} could not be installed: ${update.reason || "no reason given"}.`;
    default:
      return "";
  }
}

const minutes = (hhmm) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/** "02:00" in the person's way of writing times ("2:00 AM", "02:00"). */
function clock(hhmm) {
  const at = new Date(2000, 0, 1, Number(hhmm.slice(0, 2)), Number(hhmm.slice(3, 5)));
  return at.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" });
}

/**
 * Which update window is in force, in one sentence: "Updates install between 2:00 AM and
 * 5:00 AM — now." / "— next from 2:00 AM." / "Updates install any time nobody is watching."
 * The camera keeps the window in its own clock; the cloud does not know the camera's time
 * zone, so "now" is this browser's clock, right when the camera is where the person is.
 */
export function windowWords(window, now = new Date()) {
  if (!window || !/^\d\d:\d\d-\d\d:\d\d$/.test(window)) return "Updates install any time nobody is watching.";
  const [from, to] = window.split("-");
  const [start, end, at] = [minutes(from), minutes(to), now.getHours() * 60 + now.getMinutes()];
  const inside = start <= end ? start <= at && at < end : at >= start || at < end; // may cross midnight
  return `Updates install between ${clock(from)} and ${clock(to)} — ${inside ? "now" : `next from ${clock(from)}`}.`;
}

/** The version line and the update sentence of a camera card; `set(update)` redraws them. */
export function cardLine() {
  const version = h("span", { class: "muted small", "data-testid": "device-version" });
  const state = h("p", { class: "update-state small", "data-testid": "update-state", hidden: true });
  const node = h("div", { class: "device-update" }, version, state);
  let current = {};
  node.set = (update) => {
    current = { ...current, ...Object.fromEntries(Object.entries(update).filter(([, v]) => v !== undefined)) };
    version.textContent = current.version ? `Version ${current.version}` : "";
    const words = describe(current);
    state.textContent = words;
    state.hidden = !words;
    state.dataset.state = current.state || "";
  };
  node.current = () => current;
  return node;
}

/** The inline form that sets when a camera may switch to a new version. */
export function windowForm(deviceId, current, onDone) {
  const [from, to] = (current || "").split("-");
  const fromInput = h("input", { type: "time", value: from || "02:00", "aria-label": "From", "data-testid": "window-from" });
  const toInput = h("input", { type: "time", value: to || "05:00", "aria-label": "To", "data-testid": "window-to" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const save = async (window) => {
    try {
      await api.setUpdateWindow(deviceId, window);
      onDone(window);
    } catch (failure) {
      error.textContent = `Could not save: ${failure.message}`;
      error.hidden = false;
    }
  };
  return h("form", {
    class: "stack",
    "data-testid": "window-form",
    onsubmit: (event) => {
      event.preventDefault();
      if (!WINDOW_RE.test(fromInput.value) || !WINDOW_RE.test(toInput.value)) {
        error.textContent = "Choose a start and an end time.";
        error.hidden = false;
        return;
      }
      save(`${fromInput.value}-${toInput.value}`);
    },
  },
  h("p", { "data-testid": "window-now" }, windowWords(current)),
  h("p", { class: "small" }, "Updates never interrupt someone watching. You can also keep them to a time of day (the camera's local time)."),
  h("div", { class: "row" }, fromInput, h("span", {}, "to"), toInput,
    h("button", { class: "button primary", type: "submit", "data-testid": "window-save" }, "Only then"),
    h("button", { class: "button", type: "button", "data-testid": "window-any", onclick: () => save(null) }, "Any time")),
  error);
}

export { replace };
