// The viewer's signaling connection (/ws/viewer): hello with the access token, heartbeats, and
// reconnection with capped exponential backoff plus jitter, the way mediamtx's WebRTC reader
// retries (internal/servers/webrtc/reader.js) but never giving up while the page is open.
//
// Events (EventTarget):
//   "state"        detail {state, retryInMs}; state is one of
//                  "connecting" | "open" | "reconnecting" | "closed"
//   "ready"        detail {id, reconnected}: hello_ack received (after every (re)connect)
//   "message"      detail: a message {type, payload} other than hello_ack / heartbeat_ack
//   "unauthorized" the cloud refused the token (close code CLOSE.UNAUTHENTICATED): sign in again
//   "signedout"    the sign-in was revoked (CLOSE.SIGNED_OUT: signed out here or elsewhere,
//                  password changed, account deleted): show the sign-in page
// Neither reconnects: the same token cannot help.

import { CLOSE, MSG, RESTART_WINDOW_KEY, RESTART_WINDOW_MAX_S } from "./protocol.js";
const HELLO_TIMEOUT_MS = 10_000;

export function viewerSocketUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws/viewer`;
}

/** Delay before reconnect attempt `attempt` (0-based): base * 2^attempt, capped, jittered. */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 30_000, random = Math.random } = {}) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 16));
  // "Equal jitter": half fixed, half random, so that many viewers dropped by one cloud restart
  // do not all come back in the same instant, yet nobody waits near zero in a loop.
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * After a RESTART close (a deploy), the delay before coming back: a random moment within the
 * window the reason gives ("restarting; reconnect_within=<seconds>"), so that every viewer of the
 * restarted process does not return in the same instant; null when the reason gives none.
 */
export function restartDelay(reason, random = Math.random) {
  const at = String(reason ?? "").indexOf(RESTART_WINDOW_KEY);
  if (at < 0) return null;
  const seconds = Number.parseInt(String(reason).slice(at + RESTART_WINDOW_KEY.length), 10);
  if (!Number.isFinite(seconds) || seconds < 0) return null;
  return Math.round(random() * Math.min(seconds, RESTART_WINDOW_MAX_S) * 1000);
}

export class Signaling extends EventTarget {
  /**
   * @param {object} options
   * @param {() => string|null|Promise<string|null>} options.getToken a valid access token
   * @param {string} [options.url]
   * @param {() => number} [options.random] jitter source (tests pass their own)
   */
  constructor({
    getToken,
    url = viewerSocketUrl(),
    baseMs = 500,
    maxMs = 30_000,
    random = Math.random,
  }) {
    super();
    this.random = random;
    this.url = url;
    this.getToken = getToken;
    this.baseMs = baseMs;
    this.maxMs = maxMs;
    this.state = "closed";
    this.userId = null;
    this.attempt = 0;
    this.wasReady = false; // a hello_ack was ever received: later ones are reconnects
    this.ws = null;
    this.timers = {};
    this.heartbeatMs = 30_000;
    this.closedByUs = true;
    this.onOnline = () => {
      if (this.state === "reconnecting") this.reconnectNow();
    };
  }

  start() {
    if (!this.closedByUs) return;
    this.closedByUs = false;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  /** Final close (sign-out, leaving the app). */
  close() {
    this.closedByUs = true;
    window.removeEventListener("online", this.onOnline);
    this.clearTimers();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "bye");
    }
    this.setState("closed");
  }

  /** Skips the backoff wait (the network came back, or the person pressed "retry"). */
  reconnectNow() {
    if (this.closedByUs) return;
    this.clearTimers();
    if (this.ws) {
      this.dropSocket();
    }
    this.connect();
  }

  get ready() {
    return this.state === "open";
  }

  /** Sends one message; false when not connected (the caller retries after "ready"). */
  send(type, payload = {}) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ type, payload }));
    return true;
  }

  // --- internals ------------------------------------------------------------------------------

  async connect() {
    // The token may need a refresh first (getToken may return a promise).
    const attempt = (this.connectSeq = (this.connectSeq || 0) + 1);
    let token = null;
    try {
      token = await this.getToken();
    } catch {
      token = null;
    }
    if (this.closedByUs || attempt !== this.connectSeq) return;
    if (!token) {
      this.closedByUs = true;
      this.setState("closed");
      this.dispatchEvent(new Event("unauthorized"));
      return;
    }
    this.setState(this.wasReady ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: MSG.HELLO, payload: { token } }));
      this.timers.hello = setTimeout(() => this.dropSocket(), HELLO_TIMEOUT_MS);
    };
    ws.onmessage = (event) => this.onMessage(ws, event);
    ws.onclose = (event) => this.onClose(ws, event);
    // onerror is always followed by onclose, which does the work.
  }

  onMessage(ws, event) {
    if (ws !== this.ws) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // the cloud only sends JSON; ignore anything else
    }
    this.armWatchdog();
    if (message.type === MSG.HELLO_ACK) {
      clearTimeout(this.timers.hello);
      const reconnected = this.wasReady;
      this.wasReady = true;
      this.attempt = 0;
      this.userId = message.payload?.id ?? null;
      const interval = Number(message.payload?.heartbeat_interval);
      this.heartbeatMs = Number.isFinite(interval) && interval > 0 ? interval * 1000 : 30_000;
      clearInterval(this.timers.heartbeat);
      this.timers.heartbeat = setInterval(() => this.send(MSG.HEARTBEAT, {}), this.heartbeatMs);
      this.setState("open");
      this.dispatchEvent(new CustomEvent("ready", { detail: { id: this.userId, reconnected } }));
      return;
    }
    if (message.type === MSG.HEARTBEAT_ACK) return;
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  onClose(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.clearTimers();
    if (this.closedByUs) return;
    if (event.code === CLOSE.UNAUTHENTICATED || event.code === CLOSE.SIGNED_OUT) {
      this.closedByUs = true;
      this.setState("closed");
      this.dispatchEvent(new Event(event.code === CLOSE.SIGNED_OUT ? "signedout" : "unauthorized"));
      return;
    }
    if (event.code === CLOSE.RESTART) {
      const delay = restartDelay(event.reason, this.random);
      if (delay !== null) {
        this.attempt = 0; // a deploy is not a failure: the backoff starts over
        this.scheduleReconnect(delay);
        return;
      }
    }
    this.scheduleReconnect();
  }

  /** No message for two heartbeats: the path is dead even if TCP has not noticed yet. */
  armWatchdog() {
    clearTimeout(this.timers.watchdog);
    this.timers.watchdog = setTimeout(() => this.dropSocket(), this.heartbeatMs * 2 + 5_000);
  }

  dropSocket() {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onclose = null;
    ws.onmessage = null;
    ws.close();
    this.clearTimers();
    if (!this.closedByUs) this.scheduleReconnect();
  }

  /** Reconnects after `delay` ms, or else after the next backoff step. */
  scheduleReconnect(delay = null) {
    if (delay === null) {
      delay = backoffDelay(this.attempt, {
        baseMs: this.baseMs,
        maxMs: this.maxMs,
        random: this.random,
      });
      this.attempt += 1;
    }
    this.setState("reconnecting", delay);
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = setTimeout(() => this.connect(), delay);
  }

  clearTimers() {
    clearTimeout(this.timers.hello);
    clearTimeout(this.timers.watchdog);
    clearTimeout(this.timers.reconnect);
    clearInterval(this.timers.heartbeat);
    this.timers = {};
  }

  setState(state, retryInMs = null) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, retryInMs } }));
  }
}
