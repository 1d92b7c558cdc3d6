// The camera list (#/devices): live online/offline state, rename, unpair.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { MSG } from "../protocol.js";
import { ago } from "../time.js";
import { modelWords, noH264Words } from "../words.js";
import { canReceiveH264 } from "../watch.js";
import { cardLine, windowForm } from "../updates.js";
import { cameraThumbnail, forgetThumbnail } from "../snapshots.js";
import * as sharing from "../sharing.js";
import { settingsButton } from "../camera-settings.js";

const REFRESH_MS = 30_000;

export function render(ctx) {
  const list = h("div", { class: "device-grid", "data-testid": "device-list", "aria-busy": "true" });
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "devices-error", hidden: true });
  const cards = new Map(); // device_id -> {device, card}
  let loaded = false;

  ctx.show(
    h("section", {},
      h("div", { class: "page-head" },
        h("h1", { "data-testid": "page-title" }, "Your cameras"),
        h("div", { class: "row" },
          h("a", { class: "button", href: "#/grid", "data-testid": "to-grid" }, "Live grid"),
          h("a", { class: "button primary", href: "#/pair", "data-testid": "add-camera" }, "+ Add camera")),
      ),
      error,
      // said before Watch, not after: this browser cannot play the cameras' H.264
      canReceiveH264() === false
        ? h("p", { class: "banner warning in-page", role: "note", "data-testid": "no-h264" }, noH264Words(navigator.userAgent))
        : null,
      sharing.invitations(() => refresh()),
      list,
    ),
  );
  replace(list, h("p", { class: "muted loading" }, "Loading your cameras…"));

  // The list is drawn anew on a refresh: not while the person is in the middle of something
  // in it (a panel open, typing, a dialog opened from it); the periodic refresh catches up.
  function busy() {
    const active = document.activeElement;
    const typing = active && list.contains(active) && active.matches("input, select, textarea");
    const panelOpen = [...list.querySelectorAll(".inline-panel")].some((panel) => !panel.hidden);
    return Boolean(typing || panelOpen || document.querySelector("dialog[open]"));
  }

  async function refresh() {
    try {
      const devices = await api.listDevices();
      error.hidden = true;
      if (loaded && busy()) return;
      draw(devices);
      showUpdates();
    } catch (failure) {
      if (failure.status === 401) return; // the app goes back to sign-in
      error.textContent = `Could not load your cameras: ${failure.message}`;
      error.hidden = false;
      if (!loaded) replace(list);
    }
  }

  function draw(devices) {
    loaded = true;
    list.removeAttribute("aria-busy");
    cards.clear();
    if (devices.length === 0) {
      replace(list, empty());
      return;
    }
    replace(list, devices.map((device) => {
      const card = deviceCard(device);
      cards.set(device.device_id, { device, card });
      return card;
    }));
  }

  // Versions and update states come from their own call: a failure there leaves the list.
  async function showUpdates() {
    try {
      for (const update of await api.cameraUpdates()) {
        cards.get(update.device_id)?.card.setUpdate(update);
      }
    } catch {
      // the next refresh tries again
    }
  }

  function empty() {
    return h("div", { class: "card empty", "data-testid": "devices-empty" },
      h("img", { src: "img/camera.svg", alt: "", width: 64, height: 64 }),
      h("h2", {}, "No cameras yet"),
      h("p", { class: "muted" }, "Power on your MuMu camera, then add it with the code on its screen or by scanning its QR code."),
      h("a", { class: "button primary", href: "#/pair" }, "Add your first camera"),
    );
  }

  function statusText(device) {
    if (device.online) return "Online";
    const seen = ago(device.last_seen);
    return seen ? `Offline · seen ${seen}` : "Offline";
  }

  function deviceCard(device) {
    const id = device.device_id;
    const status = h("span", { class: `status ${device.online ? "online" : "offline"}`, "data-testid": "device-status" },
      statusText(device));
    const name = h("h2", { class: "device-name", "data-testid": "device-name" }, device.name || "Camera");
    const cardError = h("p", { class: "form-error", role: "alert", "data-testid": "device-error", hidden: true });
    const panel = h("div", { class: "inline-panel", hidden: true });
    const update = cardLine();
    const watchHref = `#/watch/${encodeURIComponent(id)}`;
    // Offline: a Watch that does nothing is not offered as a link (it becomes one when the
    // camera comes online); the status line says when it was last seen.
    const watchLink = h("a", { class: "button primary", "data-testid": "watch" }, "Watch");
    function showWatch(online) {
      if (online) {
        watchLink.setAttribute("href", watchHref);
        watchLink.removeAttribute("aria-disabled");
        watchLink.classList.remove("disabled");
        watchLink.textContent = "Watch";
      } else {
        watchLink.removeAttribute("href");
        watchLink.setAttribute("aria-disabled", "true");
        watchLink.classList.add("disabled");
        watchLink.textContent = "Offline";
      }
    }
    showWatch(device.online);

    const thumb = cameraThumbnail(device); // its latest picture, kept in this browser only
    const card = h("article", { class: "card device-card", "data-testid": "device-card", "data-device-id": id },
      h("div", { class: "device-thumb" },
        thumb,
      ),
      h("div", { class: "device-body" },
        name,
        h("p", { class: "muted small", "data-testid": "device-model" }, modelWords(device.model)),
        status,
        update,
      ),
      h("div", { class: "device-actions" }, watchLink),
      // Everything else is secondary: small, and Unpair last (it asks first).
      h("div", { class: "device-more", role: "group", "aria-label": `More for ${device.name || "this camera"}` },
        h("button", { class: "button link", type: "button", "data-testid": "rename", "data-owner-only": true, onclick: () => openRename() }, "Rename"),
        h("button", { class: "button link", type: "button", "data-testid": "updates", "data-owner-only": true, onclick: () => openUpdates() }, "Updates"),
        h("a", { class: "button link", href: `#/history/${encodeURIComponent(id)}`, "data-testid": "history" }, "History"),
        h("button", { class: "button link subtle-danger", type: "button", "data-testid": "unpair", "data-owner-only": true, onclick: () => openUnpair() }, "Unpair"),
      ),
      panel,
      cardError,
    );

    function showError(message) {
      cardError.textContent = message;
      cardError.hidden = !message;
    }

    function openRename() {
      showError("");
      const input = h("input", { type: "text", value: device.name || "", maxlength: 64, required: true, "data-testid": "rename-input", "aria-label": "New name" });
      const save = h("button", { class: "button primary", type: "submit", "data-testid": "rename-save" }, "Save");
      replace(panel, h("form", {
        class: "row",
        onsubmit: async (event) => {
          event.preventDefault();
          const newName = input.value.trim();
          if (!newName) {
            showError("Please enter a name.");
            return;
          }
          save.disabled = true;
          try {
            const updated = await api.renameDevice(id, newName);
            device.name = updated?.name ?? newName;
            name.textContent = device.name;
            panel.hidden = true;
          } catch (failure) {
            showError(`Could not rename: ${failure.message}`);
            save.disabled = false;
          }
        },
      }, input, save, h("button", { class: "button", type: "button", onclick: () => (panel.hidden = true) }, "Cancel")));
      panel.hidden = false;
      input.focus();
      input.select();
    }

    function openUpdates() {
      showError("");
      replace(panel, windowForm(id, update.current().window, (window) => {
        update.set({ window });
        panel.hidden = true;
        ctx.flash(window ? `Updates for ${device.name || "the camera"} only between ${window.replace("-", " and ")}.` : `Updates for ${device.name || "the camera"} any time nobody is watching.`, "info");
      }));
      panel.hidden = false;
    }

    function openUnpair() {
      showError("");
      const confirmButton = h("button", { class: "button danger", type: "button", "data-testid": "unpair-confirm", onclick: async () => {
        confirmButton.disabled = true;
        try {
          await api.unpairDevice(id);
          forgetThumbnail(id); // no longer this account's camera: nor its picture
          cards.delete(id);
          card.remove();
          if (cards.size === 0) replace(list, empty());
          ctx.flash(`${device.name || "The camera"} was unpaired.`, "info");
        } catch (failure) {
          showError(`Could not unpair: ${failure.message}`);
          confirmButton.disabled = false;
        }
      } }, "Unpair");
      replace(panel,
        h("p", { "data-testid": "unpair-question" }, `Unpair ${device.name || "this camera"}? It leaves your account and shows a new pairing code.${device.viewers ? " Everyone you shared it with loses access." : ""} If you pair it again, it keeps its name.`),
        h("div", { class: "row" }, confirmButton,
          h("button", { class: "button", type: "button", onclick: () => (panel.hidden = true) }, "Cancel")),
      );
      panel.hidden = false;
    }

    sharing.decorateCard(card, device, {
      panel,
      actions: card.querySelector(".device-more"),
      showError,
      flash: ctx.flash,
      onGone: () => {
        forgetThumbnail(id);
        cards.delete(id);
        card.remove();
        if (cards.size === 0) replace(list, empty());
      },
    });
    settingsButton(card, device, ctx); // the owner's camera settings (camera-settings.js)
    card.setUpdate = (payload) => update.set(payload);
    card.setStatus = (online) => {
      device.online = online;
      if (!online) device.last_seen = new Date().toISOString();
      status.className = `status ${online ? "online" : "offline"}`;
      thumb.setOnline(online);
      status.textContent = statusText(device);
      showWatch(online);
    };
    return card;
  }

  // Live state: device_status and devices_changed messages, a periodic refresh, and a refresh
  // after reconnecting.
  const onMessage = (event) => {
    const message = event.detail;
    if (message.type === MSG.DEVICE_UPDATE) {
      cards.get(message.payload.device_id)?.card.setUpdate(message.payload);
      return;
    }
    if (message.type === MSG.DEVICES_CHANGED) {
      // shared, revoked, left, unpaired or reset by someone else (or another tab): an open
      // share panel reads its viewers again, the list is read again
      cards.get(message.payload.device_id)?.card.querySelector("[data-testid=share-panel]")?.reload?.();
      refresh();
      return;
    }
    if (message.type !== MSG.DEVICE_STATUS) return;
    const entry = cards.get(message.payload.device_id);
    if (entry) entry.card.setStatus(message.payload.online);
    else refresh(); // paired from another tab or window
  };
  const onReady = (event) => {
    if (event.detail.reconnected) refresh();
  };
  ctx.signaling.addEventListener("message", onMessage);
  ctx.signaling.addEventListener("ready", onReady);
  const timer = setInterval(refresh, REFRESH_MS);
  refresh();

  return () => {
    clearInterval(timer);
    ctx.signaling.removeEventListener("message", onMessage);
    ctx.signaling.removeEventListener("ready", onReady);
  };
}
