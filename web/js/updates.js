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
  h("p", { class: "small" }, "Updates never interrupt someone watching. You can also keep them to a time of day (the camera's local time)."),
  h("div", { class: "row" }, fromInput, h("span", {}, "to"), toInput,
    h("button", { class: "button primary", type: "submit", "data-testid": "window-save" }, "Only then"),
    h("button", { class: "button", type: "button", "data-testid": "window-any", onclick: () => save(null) }, "Any time")),
  error);
}

export { replace };
