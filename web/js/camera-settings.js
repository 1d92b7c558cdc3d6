// Camera settings from the app (docs/protocol.md, "Camera settings"): the owner's panel to see
// and change a camera's picture size, frame rate, flips and rotation (from what the camera
// says it offers), restart it, and read its agent's version, architecture and update state.
//
// Over signaling: `device_settings_request` {get | set | restart} to the camera through the
// cloud (which checks ownership in its database); the camera answers `device_settings` (its
// settings as they now are, or a refusal with a reason), the cloud answers `error`
// (`forbidden`, `device_offline`...) when the request cannot reach it.
//
// The one hook into the rest of the app is `settingsButton(card, device, ctx)` (the camera
// list): it adds "Settings" to an owner's camera card.  The panel is a modal <dialog> of its
// own, kept outside the card (the list redraws its cards), closed when the page changes.

import { h, replace } from "./dom.js";
import { describeError } from "./errors.js";
import { MSG } from "./protocol.js";
import { describe as describeUpdate } from "./updates.js";

/** How long the camera may take to answer before the panel says it did not. */
export const ANSWER_TIMEOUT_MS = 20_000;
/** How long a restarting camera may take to come back before the panel says so. */
export const RESTART_TIMEOUT_MS = 120_000;

const FPS_LADDER = [1, 2, 5, 10, 12, 15, 20, 24, 25, 30, 50, 60, 90, 120, 240];

/** Each refusal (the camera's `refusal`, or the cloud's `error` code): words and one next step. */
export const REFUSAL_WORDS = {
  not_supported: "The camera cannot do that. Choose another size or frame rate from the lists.",
  invalid: "The camera did not understand that change. Close the settings, open them again and retry.",
  camera_failed: "The camera did not work with those settings, so it went back to the ones it had. Try another size or frame rate.",
  in_progress: "The camera is still applying another change. Try again in a few seconds.",
  forbidden: "Only this camera's owner can see or change its settings. Ask the owner to change them.",
  device_offline: "The camera is offline, so its settings cannot be read or changed. Check that it has power and network; this panel continues when it is back.",
};

const ARCH_WORDS = {
  aarch64: "64-bit ARM (aarch64)",
  armv7l: "32-bit ARM (armv7l)",
  armv6l: "32-bit ARM (armv6l)",
  x86_64: "64-bit PC (x86_64)",
};

let sequence = 0;
function newRequestId() {
  const random = new Uint8Array(9);
  crypto.getRandomValues(random);
  sequence += 1;
  return `cs${sequence}-${Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const sizeKey = (width, height) => `${width}x${height}`;

/** Frame rates to offer up to `max` (and `current`, whatever it is). */
export function frameRates(max, current = null) {
  const rates = new Set(FPS_LADDER.filter((fps) => fps <= max));
  rates.add(max);
  if (current) rates.add(current);
  return [...rates].sort((a, b) => a - b);
}

/**
 * Adds "Settings" to an owner's camera card (`device` as the camera list API gives it).  A
 * viewer of a shared camera gets nothing: only the owner may see or change the settings.
 */
export function settingsButton(card, device, ctx) {
  const button = ownerSettingsButton(device, ctx, { className: "button link" });
  if (!button) return null;
  // Beside Rename and Updates, among the card's secondary actions; Unpair stays last.
  const more = card.querySelector(".device-more") || card.querySelector(".device-actions");
  if (more) more.insertBefore(button, more.querySelector("[data-testid=unpair]"));
  return button;
}

/**
 * "Settings" for the owner of `device` (null for a viewer), opening its panel; `current()`
 * gives the device as it is when clicked (e.g. with the online state the page knows now).
 */
export function ownerSettingsButton(device, ctx, { className = "button", current = () => device } = {}) {
  if (device.role === "viewer") return null;
  const button = h("button", {
    class: className,
    type: "button",
    "data-testid": "camera-settings",
    "data-owner-only": true,
    "aria-haspopup": "dialog",
    onclick: () => open(current(), ctx, button),
  }, "Settings");
  return button;
}

/** Opens the settings panel of `device`; returns it (a <dialog> with `close()`). */
export function open(device, ctx, opener = null) {
  document.querySelector("dialog.camera-settings")?.close();
  const panel = new SettingsPanel(device, ctx.signaling, opener);
  panel.show();
  return panel.dialog;
}

class SettingsPanel {
  constructor(device, signaling, opener) {
    this.deviceId = device.device_id;
    this.name = device.name || "Camera";
    this.online = Boolean(device.online);
    this.signaling = signaling;
    this.opener = opener;
    this.answer = null; // the camera's latest device_settings payload
    this.pending = null; // {id, action, timer}
    this.restarting = null; // {sawOffline, timer}
    this.build();
    this.onMessage = (event) => this.message(event.detail);
    // Signaling came back after a drop: ask again if the panel was waiting for it.
    this.onReady = () => {
      const waiting = !this.answer || this.error.dataset.refusal === "disconnected";
      if (waiting && this.online && !this.pending && !this.restarting) this.load();
    };
    this.onRoute = () => this.dialog.close();
  }

  // --- the dialog -------------------------------------------------------------------------------

  build() {
    const titleId = `camera-settings-title-${++sequence}`;
    const field = (label, control, hint = null) => {
      const id = `${titleId}-${control.dataset.testid}`;
      control.id = id;
      const hintNode = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
      if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
      return h("div", { class: "settings-field" }, h("label", { for: id }, label), control, hintNode);
    };

    this.size = h("select", { "data-testid": "settings-size", onchange: () => this.sizeChanged() });
    this.fps = h("select", { "data-testid": "settings-fps", onchange: () => this.changed() });
    this.rotation = h("select", { "data-testid": "settings-rotation", onchange: () => this.changed() },
      h("option", { value: "0" }, "Upright (0°)"),
      h("option", { value: "180" }, "Upside down (180°)"));
    this.hflip = h("input", { type: "checkbox", "data-testid": "settings-hflip", onchange: () => this.changed() });
    this.vflip = h("input", { type: "checkbox", "data-testid": "settings-vflip", onchange: () => this.changed() });
    this.flipBox = h("div", { class: "settings-flips" },
      field("Rotation", this.rotation),
      h("label", { class: "settings-check" }, this.hflip, "Mirror (flip left to right)"),
      h("label", { class: "settings-check" }, this.vflip, "Flip top to bottom"));
    this.noFlips = h("p", { class: "muted small", "data-testid": "settings-no-flips", hidden: true },
      "This camera cannot flip or turn its picture.");
    this.apply = h("button", { class: "button primary", type: "submit", "data-testid": "settings-apply", disabled: true }, "Apply");
    this.form = h("form", {
      class: "stack settings-form",
      "data-testid": "settings-form",
      hidden: true,
      onsubmit: (event) => {
        event.preventDefault();
        this.submit();
      },
    },
    h("fieldset", { class: "settings-group" },
      h("legend", {}, "Picture"),
      field("Size", this.size),
      field("Frame rate", this.fps, "Frames a second. Fewer use less network and power."),
      this.flipBox,
      this.noFlips),
    h("div", { class: "row" }, this.apply));

    this.status = h("p", { class: "settings-status", role: "status", "aria-live": "polite", "data-testid": "settings-status" });
    this.error = h("p", { class: "form-error", role: "alert", "data-testid": "settings-error", hidden: true });
    this.retry = h("button", { class: "button", type: "button", "data-testid": "settings-retry", hidden: true, onclick: () => this.load() }, "Ask the camera again");

    const info = (label, testid) => {
      const value = h("dd", { "data-testid": testid }, "—");
      return [h("div", {}, h("dt", {}, label), value), value];
    };
    const [versionRow, version] = info("Software version", "settings-version");
    const [archRow, arch] = info("Architecture", "settings-arch");
    const [updateRow, update] = info("Updates", "settings-update");
    Object.assign(this, { versionText: version, archText: arch, updateText: update });
    this.about = h("dl", { class: "settings-about", "data-testid": "settings-about", hidden: true }, versionRow, archRow, updateRow);

    this.restartButton = h("button", { class: "button", type: "button", "data-testid": "settings-restart", onclick: () => this.askRestart() }, "Restart camera");
    this.restartConfirm = h("div", { class: "stack settings-confirm", "data-testid": "settings-restart-confirm", hidden: true },
      h("p", {}, `Restart ${this.name}? Anyone watching loses the picture until it is back, usually within a minute.`),
      h("div", { class: "row" },
        h("button", { class: "button danger", type: "button", "data-testid": "settings-restart-yes", onclick: () => this.restart() }, "Restart"),
        h("button", { class: "button", type: "button", "data-testid": "settings-restart-no", onclick: () => this.cancelRestart() }, "Cancel")));
    this.restartBox = h("div", { class: "stack", hidden: true }, h("div", { class: "row" }, this.restartButton), this.restartConfirm);

    this.dialog = h("dialog", {
      class: "camera-settings card",
      "aria-labelledby": titleId,
      "data-testid": "settings-panel",
      "data-device-id": this.deviceId,
    },
    h("div", { class: "settings-head" },
      h("h2", { id: titleId }, `Settings · ${this.name}`),
      h("button", { class: "button", type: "button", "data-testid": "settings-close", "aria-label": "Close settings", onclick: () => this.dialog.close() }, "×")),
    this.status,
    this.error,
    this.retry,
    this.form,
    this.about,
    this.restartBox);
    this.dialog.addEventListener("close", () => this.dispose());
  }

  show() {
    document.body.append(this.dialog);
    this.signaling?.addEventListener("message", this.onMessage);
    this.signaling?.addEventListener("ready", this.onReady);
    window.addEventListener("hashchange", this.onRoute);
    this.dialog.showModal();
    if (this.online) this.load();
    else this.offline();
  }

  dispose() {
    this.clearPending();
    clearTimeout(this.restarting?.timer);
    this.restarting = null;
    this.signaling?.removeEventListener("message", this.onMessage);
    this.signaling?.removeEventListener("ready", this.onReady);
    window.removeEventListener("hashchange", this.onRoute);
    this.dialog.remove();
    if (this.opener?.isConnected) this.opener.focus();
  }

  // --- what the panel says ------------------------------------------------------------------

  say(state, text) {
    this.dialog.dataset.state = state;
    this.status.dataset.state = state;
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  fail(code, text = null) {
    this.error.dataset.refusal = code;
    this.error.textContent = text || REFUSAL_WORDS[code] || describeError({ code });
    this.error.hidden = false;
  }

  clearError() {
    this.error.hidden = true;
    delete this.error.dataset.refusal;
  }

  busy(on) {
    for (const control of [this.size, this.fps, this.rotation, this.hflip, this.vflip]) control.disabled = on;
    this.apply.disabled = on || !this.dirty();
    this.restartButton.disabled = on;
    this.form.setAttribute("aria-busy", on ? "true" : "false");
  }

  offline() {
    this.clearPending();
    this.form.hidden = true;
    this.restartBox.hidden = true;
    this.retry.hidden = true;
    this.clearError();
    this.say("offline", `${this.name} is offline, so its settings cannot be read or changed. Check that it has power and network; this panel continues by itself when it is back.`);
  }

  // --- requests -----------------------------------------------------------------------------

  /** Sends one request; false (and says why) when the cloud cannot be reached now. */
  send(action, settings = null) {
    this.clearPending();
    const id = newRequestId();
    const payload = { device_id: this.deviceId, request_id: id, action };
    if (settings) payload.settings = settings;
    if (!this.signaling || !this.signaling.send(MSG.DEVICE_SETTINGS_REQUEST, payload)) {
      this.say("error", "");
      this.fail("disconnected", "Not connected to the MuMu cloud right now. The panel asks the camera again when the connection is back.");
      this.busy(false);
      return false;
    }
    const timer = setTimeout(() => this.timedOut(), ANSWER_TIMEOUT_MS);
    this.pending = { id, action, timer };
    return true;
  }

  clearPending() {
    if (this.pending) clearTimeout(this.pending.timer);
    this.pending = null;
  }

  load() {
    this.clearError();
    this.retry.hidden = true;
    this.say("loading", "Asking the camera for its settings…");
    this.busy(true);
    this.send("get");
  }

  submit() {
    const change = this.change();
    if (!change) return;
    this.clearError();
    this.cancelRestart();
    this.say("applying", "Applying… the picture may pause for a moment.");
    this.busy(true);
    this.send("set", change);
  }

  askRestart() {
    this.restartConfirm.hidden = false;
    this.restartButton.hidden = true;
    this.restartConfirm.querySelector("[data-testid=settings-restart-no]").focus();
  }

  cancelRestart() {
    this.restartConfirm.hidden = true;
    this.restartButton.hidden = false;
  }

  restart() {
    this.cancelRestart();
    this.clearError();
    this.say("restart-asked", "Asking the camera to restart…");
    this.busy(true);
    this.send("restart");
  }

  timedOut() {
    const action = this.pending?.action;
    this.pending = null;
    this.busy(false);
    this.retry.hidden = false;
    const seconds = Math.round(ANSWER_TIMEOUT_MS / 1000);
    const what = {
      get: `${this.name} did not answer within ${seconds} seconds.`,
      set: `${this.name} did not answer within ${seconds} seconds, so the change may not have been applied.`,
      restart: `${this.name} did not answer within ${seconds} seconds; it may not restart.`,
    }[action];
    this.say("timeout", "");
    this.fail("timeout", `${what} Ask the camera again to see its settings as they are.`);
  }

  // --- answers ------------------------------------------------------------------------------

  message(message) {
    if (!this.dialog.isConnected) return;
    const payload = message.payload || {};
    if (message.type === MSG.DEVICE_STATUS && payload.device_id === this.deviceId) {
      this.statusChanged(Boolean(payload.online));
    } else if (message.type === MSG.DEVICE_SETTINGS && payload.device_id === this.deviceId) {
      this.answered(payload);
    } else if (message.type === MSG.ERROR && this.pending && payload.request_id === this.pending.id) {
      this.refusedByCloud(payload);
    }
  }

  statusChanged(online) {
    const was = this.online;
    this.online = online;
    if (this.restarting) {
      if (!online) {
        this.restarting.sawOffline = true;
        this.say("restarting", `${this.name} is restarting…`);
      } else if (this.restarting.sawOffline) {
        clearTimeout(this.restarting.timer);
        this.restarting = null;
        this.load();
        this.backAfterRestart = true;
      }
      return;
    }
    if (!online) this.offline();
    else if (!was) this.load();
  }

  refusedByCloud(error) {
    const action = this.pending.action;
    this.clearPending();
    this.busy(false);
    if (error.code === "device_offline") {
      this.online = false;
      this.offline();
      return;
    }
    this.say(this.answer ? "ready" : "error", "");
    if (!this.answer) this.retry.hidden = false;
    if (error.code === "forbidden") {
      this.form.hidden = true;
      this.restartBox.hidden = true;
      this.about.hidden = true;
      this.retry.hidden = true;
    } else if (action !== "get") {
      this.retry.hidden = false;
    }
    this.fail(error.code, REFUSAL_WORDS[error.code] || `${describeError(error)} Try again in a moment.`);
  }

  answered(answer) {
    const mine = this.pending && answer.request_id === this.pending.id ? this.pending : null;
    if (!mine && this.pending) return; // another tab's answer while ours is on its way
    this.clearPending();
    this.online = true;
    this.answer = answer;
    this.render(answer);
    this.busy(false);
    this.retry.hidden = true;
    if (!mine) return; // news from another tab: the values are now true, nothing else to say
    if (answer.ok && answer.restarting) {
      this.say("restarting", `${this.name} is restarting. It is usually back within a minute; this panel continues by itself.`);
      this.form.hidden = true;
      this.restartBox.hidden = true;
      this.busy(true);
      this.restarting = { sawOffline: !this.online, timer: setTimeout(() => this.notBack(), RESTART_TIMEOUT_MS) };
      return;
    }
    if (!answer.ok) {
      this.say("refused", "");
      this.fail(answer.refusal || "camera_failed");
      return;
    }
    this.clearError();
    if (mine.action === "set") {
      this.say("applied", `Applied: ${this.summary(answer.settings)}.`);
    } else if (this.backAfterRestart) {
      this.backAfterRestart = false;
      this.say("back", `${this.name} restarted and is back.`);
    } else {
      this.say("ready", "");
    }
  }

  notBack() {
    this.restarting = null;
    this.busy(false);
    this.say("not-back", "");
    this.fail("not_back", `${this.name} has not come back within ${Math.round(RESTART_TIMEOUT_MS / 60_000)} minutes. Check that it has power; if it stays offline, unplug it and plug it in again.`);
  }

  summary(settings) {
    const parts = [`${settings.width} × ${settings.height}`, `${settings.fps} frames a second`];
    if (settings.rotation) parts.push(`turned ${settings.rotation}°`);
    if (settings.hflip) parts.push("mirrored");
    if (settings.vflip) parts.push("flipped top to bottom");
    return parts.join(", ");
  }

  // --- the form -----------------------------------------------------------------------------

  /** Shows the camera's answer: its settings as they are, what it offers, its software. */
  render(answer) {
    const settings = answer.settings;
    const modes = [...(answer.modes || [])];
    if (!modes.some((m) => m.width === settings.width && m.height === settings.height)) {
      modes.unshift({ width: settings.width, height: settings.height, max_fps: settings.fps });
    }
    this.modes = new Map(modes.map((m) => [sizeKey(m.width, m.height), m]));
    replace(this.size, modes.map((m) =>
      h("option", { value: sizeKey(m.width, m.height) }, `${m.width} × ${m.height}`)));
    this.size.value = sizeKey(settings.width, settings.height);
    this.fillRates(settings.fps);
    this.rotation.value = String(settings.rotation === 180 ? 180 : 0);
    this.hflip.checked = Boolean(settings.hflip);
    this.vflip.checked = Boolean(settings.vflip);
    const canFlip = Boolean(answer.flips);
    this.flipBox.hidden = !canFlip;
    this.noFlips.hidden = canFlip;
    this.form.hidden = false;
    this.restartBox.hidden = false;

    this.versionText.textContent = answer.version || "Not known";
    this.archText.textContent = answer.arch ? ARCH_WORDS[answer.arch] || answer.arch : "Not known";
    const update = answer.update;
    const words = update ? describeUpdate({ state: update.state, target: update.version, reason: update.reason }) : "";
    this.updateText.textContent = words || "Up to date";
    this.updateText.dataset.state = update?.state || "";
    this.about.hidden = false;
  }

  fillRates(wanted) {
    const mode = this.modes.get(this.size.value);
    const current = this.answer?.settings;
    const sameSize = current && sizeKey(current.width, current.height) === this.size.value;
    const rates = frameRates(mode.max_fps, sameSize ? current.fps : null);
    replace(this.fps, rates.map((fps) => h("option", { value: String(fps) }, `${fps} fps`)));
    const pick = rates.includes(wanted) ? wanted : rates.filter((fps) => fps <= wanted).pop() || rates[0];
    this.fps.value = String(pick);
  }

  sizeChanged() {
    this.fillRates(Number(this.fps.value));
    this.changed();
  }

  changed() {
    this.apply.disabled = !this.dirty() || Boolean(this.pending);
  }

  dirty() {
    return this.change() !== null;
  }

  /** What the form changes (only what differs from the camera's settings), or null. */
  change() {
    const current = this.answer?.settings;
    if (!current) return null;
    const [width, height] = this.size.value.split("x").map(Number);
    const change = {};
    if (width !== current.width || height !== current.height) Object.assign(change, { width, height });
    const fps = Number(this.fps.value);
    if (fps !== current.fps) change.fps = fps;
    if (this.answer.flips) {
      const rotation = Number(this.rotation.value);
      if (rotation !== current.rotation) change.rotation = rotation;
      if (this.hflip.checked !== current.hflip) change.hflip = this.hflip.checked;
      if (this.vflip.checked !== current.vflip) change.vflip = this.vflip.checked;
    }
    return Object.keys(change).length ? change : null;
  }
}
