// Snapshots and thumbnails, peer to peer: no picture ever goes to the cloud.
//
// * The watch session's peer connection carries a data channel labelled SNAPSHOT.CHANNEL
//   (opened before the offer, after the video transceiver): the camera answers a
//   snapshot_request with a JPEG of its current picture (protocol/snapshot.py). Without it (the
//   channel did not open) the picture on screen is taken from the <video> element instead.
// * "Snapshot" saves the JPEG as "MuMu <camera> <date> <time>.jpg".
// * The camera list shows each camera's latest picture, kept only in this browser (IndexedDB):
//   taken when a watch starts showing pictures and every minute while it does. An offline
//   camera shows it greyed, with when it was taken ("Last picture 3 min ago").
// * Those pictures belong to the signed-in account: every sign-out forgets them all, and a
//   camera that leaves the account's list (unpaired, no longer shared) loses its own at once.

import { SNAPSHOT } from "./protocol.js";
import { h } from "./dom.js";
import { ago } from "./time.js";
import * as session from "./session.js";

const REQUEST_TIMEOUT_MS = 10_000;
const THUMBNAIL_WIDTH = 320;
const THUMBNAIL_EVERY_MS = 60_000;
const DB_NAME = "mumu-pictures";
const STORE = "thumbnails";

function newId() {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  return Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => alphabet[b & 63]).join("");
}

/** The camera's end of a watch: asks for JPEGs over the session's data channel. */
export class SnapshotChannel {
  constructor(channel) {
    this.channel = channel;
    this.channel.binaryType = "arraybuffer";
    this.pending = new Map(); // id -> {resolve, reject, header, parts, received, timer}
    this.receiving = null; // the id whose JPEG is arriving
    channel.onmessage = (event) => this.message(event.data);
    channel.onclose = () => {
      for (const [id, waiting] of this.pending) this.settle(id, null, new Error("The camera's connection closed."));
    };
  }

  get open() {
    return this.channel.readyState === "open";
  }

  /** The camera's current picture: {blob, width, height, takenAt (Date)}. */
  request({ maxWidth } = {}) {
    if (!this.open) return Promise.reject(new Error("The camera's picture channel is not open."));
    const id = newId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.settle(id, null, new Error("The camera did not answer in time.")), REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, header: null, parts: [], received: 0, timer });
      const request = { type: "snapshot_request", id };
      if (maxWidth) request.max_width = Math.round(maxWidth);
      this.channel.send(JSON.stringify(request));
    });
  }

  message(data) {
    if (typeof data === "string") {
      let reply;
      try {
        reply = JSON.parse(data);
      } catch {
        return;
      }
      if (reply.type === "snapshot_error") {
        this.settle(reply.id, null, new Error(reply.message || "The camera could not take a picture."));
      } else if (reply.type === "snapshot" && this.pending.has(reply.id)) {
        this.pending.get(reply.id).header = reply;
        this.receiving = reply.id;
      }
      return;
    }
    const waiting = this.pending.get(this.receiving);
    if (!waiting || !waiting.header) return;
    waiting.parts.push(data);
    waiting.received += data.byteLength;
    if (waiting.received >= waiting.header.bytes) {
      const { header, parts } = waiting;
      const picture = {
        blob: new Blob(parts, { type: header.mime || "image/jpeg" }),
        width: header.width,
        height: header.height,
        takenAt: new Date(header.taken_at * 1000),
      };
      this.receiving = null;
      this.settle(header.id, picture, null);
    }
  }

  settle(id, picture, error) {
    const waiting = this.pending.get(id);
    if (!waiting) return;
    clearTimeout(waiting.timer);
    this.pending.delete(id);
    if (error) waiting.reject(error);
    else waiting.resolve(picture);
  }
}

/** Opens the snapshot channel on `pc` (call before createOffer, after the video transceiver). */
export function openSnapshotChannel(pc) {
  try {
    return new SnapshotChannel(pc.createDataChannel(SNAPSHOT.CHANNEL, { ordered: true }));
  } catch {
    return null; // no data channels here: the picture on screen is used instead
  }
}

/** The picture on screen in `video`, as a JPEG Blob at most `maxWidth` wide (null: none yet). */
export function captureVideo(video, maxWidth = 0) {
  const { videoWidth: w, videoHeight: hgt } = video;
  if (!w || !hgt) return Promise.resolve(null);
  const scale = maxWidth && w > maxWidth ? maxWidth / w : 1;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(hgt * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob((blob) => resolve(blob), "image/jpeg", 0.85));
}

/** "MuMu Front door 2025-06-01 14-03-22.jpg" (characters file systems refuse are dropped). */
export function snapshotFileName(cameraName, date = new Date()) {
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const time = `${pad(date.getHours())}-${pad(date.getMinutes())}-${pad(date.getSeconds())}`;
  const name = (cameraName || "Camera").replace(/[\\/:*?"<>|\u0000-\u001f]+/g, " ").trim().slice(0, 80) || "Camera";
  return `MuMu ${name} ${day} ${time}.jpg`;
}

export function saveBlob(blob, fileName) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: fileName, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// --- thumbnails, kept in this browser only ----------------------------------------------------

let dbPromise = null;

function db() {
  if (!("indexedDB" in globalThis)) return Promise.resolve(null);
  dbPromise ||= new Promise((resolve) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => resolve(null); // private mode and the like: no thumbnails
  });
  return dbPromise;
}

async function withStore(mode, work) {
  const database = await db();
  if (!database) return null;
  return new Promise((resolve) => {
    const tx = database.transaction(STORE, mode);
    const request = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request?.result ?? null);
    tx.onerror = () => resolve(null);
    tx.onabort = () => resolve(null);
  });
}

// Bumped by every sign-out: a picture asked for before it is not kept after it.
let epoch = 0;

/** The moment a picture is asked for: hand it to `storeThumbnail` with the picture. */
export function thumbnailEpoch() {
  return epoch;
}

/**
 * Keeps `blob` as the latest picture of `deviceId` (in this browser) and tells the list; not
 * when the sign-in ended since `since` (a `thumbnailEpoch()`), or there is none.
 */
export async function storeThumbnail(deviceId, blob, takenAt = new Date(), since = epoch) {
  if (!blob || since !== epoch || !(session.token() || session.hasExpiredToken())) return;
  await withStore("readwrite", (store) => store.put({ blob, takenAt: takenAt.toISOString() }, deviceId));
  if (since !== epoch) {
    await forgetThumbnail(deviceId); // signed out while it was being written
    return;
  }
  dispatchEvent(new CustomEvent("mumu-thumbnail", { detail: { deviceId } }));
}

/** {blob, takenAt (ISO)} or null. */
export function loadThumbnail(deviceId) {
  return withStore("readonly", (store) => store.get(deviceId));
}

export function forgetThumbnail(deviceId) {
  return withStore("readwrite", (store) => store.delete(deviceId));
}

/** Forgets every picture kept in this browser (signing out). */
export function forgetAllThumbnails() {
  epoch += 1;
  return withStore("readwrite", (store) => store.clear());
}

/** Forgets the picture of every camera not in `deviceIds` (the account's list as it is now). */
export async function keepThumbnailsOf(deviceIds) {
  const keep = new Set(deviceIds);
  const kept = (await withStore("readonly", (store) => store.getAllKeys())) || [];
  const gone = kept.filter((id) => !keep.has(id));
  if (gone.length) await withStore("readwrite", (store) => gone.forEach((id) => store.delete(id)));
}

session.onSignOut(forgetAllThumbnails);

/**
 * The camera's picture in the list: its latest one from this browser, else the camera icon.
 * Returns the element, with `setOnline(online)`.
 */
export function cameraThumbnail(device) {
  const img = h("img", { src: "img/camera.svg", alt: "", width: 48, height: 48, "data-testid": "device-thumbnail" });
  const caption = h("span", { class: "thumb-caption", "data-testid": "thumbnail-caption", hidden: true });
  const figure = h("span", { class: "thumb", "data-online": String(Boolean(device.online)) }, img, caption);
  let url = null;
  let takenAt = null;

  function describe() {
    caption.hidden = !takenAt || figure.dataset.online === "true";
    caption.textContent = takenAt ? `Last picture ${ago(takenAt)}` : "";
    img.alt = takenAt ? `Latest picture from ${device.name || "this camera"}, ${ago(takenAt)}` : "";
  }

  async function refresh() {
    const kept = await loadThumbnail(device.device_id);
    if (!kept || !kept.blob) return;
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(kept.blob);
    takenAt = kept.takenAt;
    img.src = url;
    img.removeAttribute("width");
    img.removeAttribute("height");
    figure.classList.add("has-picture");
    describe();
  }

  const onNews = (event) => {
    if (!figure.isConnected) removeEventListener("mumu-thumbnail", onNews);
    else if (event.detail.deviceId === device.device_id) refresh();
  };
  addEventListener("mumu-thumbnail", onNews);
  refresh();

  figure.setOnline = (online) => {
    figure.dataset.online = String(Boolean(online));
    describe();
  };
  return figure;
}

// --- the watch page ---------------------------------------------------------------------------

/**
 * A "Snapshot" button for the watch page, and the thumbnail kept while pictures show.
 * `watch` is the Watch (its `snapshots` is the SnapshotChannel of the current session),
 * `video` the <video>, `cameraName()` the camera's name now. Returns the button, with
 * `dispose()`.
 */
export function snapshotButton({ watch, video, cameraName }) {
  const button = h("button", { class: "button", type: "button", "data-testid": "snapshot", disabled: true }, "Snapshot");
  let timer = null;

  async function picture(maxWidth) {
    const channel = watch.snapshots;
    if (channel && channel.open) {
      try {
        return await channel.request({ maxWidth });
      } catch {
        // the camera refused or did not answer: the picture on screen will do
      }
    }
    const blob = await captureVideo(video, maxWidth);
    return blob ? { blob, takenAt: new Date() } : null;
  }

  async function keepThumbnail() {
    if (watch.state !== "connected") return;
    const since = thumbnailEpoch();
    const shot = await picture(THUMBNAIL_WIDTH);
    if (shot) await storeThumbnail(watch.deviceId, shot.blob, shot.takenAt, since);
  }

  button.onclick = async () => {
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "Taking…";
    try {
      const since = thumbnailEpoch();
      const shot = await picture(0);
      if (shot) {
        saveBlob(shot.blob, snapshotFileName(cameraName(), shot.takenAt));
        storeThumbnail(watch.deviceId, shot.blob, shot.takenAt, since);
      }
    } finally {
      button.textContent = label;
      button.disabled = watch.state !== "connected";
    }
  };

  const onState = (event) => {
    const live = event.detail.state === "connected";
    button.disabled = !live;
    button.hidden = ["ended", "failed", "camera_failed"].includes(event.detail.state);
    if (live && !timer) {
      setTimeout(keepThumbnail, 1_000); // the first pictures are on screen by then
      timer = setInterval(keepThumbnail, THUMBNAIL_EVERY_MS);
    } else if (!live && timer) {
      clearInterval(timer);
      timer = null;
    }
  };
  watch.addEventListener("state", onState);
  button.dispose = () => {
    watch.removeEventListener("state", onState);
    clearInterval(timer);
  };
  return button;
}
