// Watching one camera: the viewer's side of a watch session and its RTCPeerConnection.
//
// watch_request {request_id} -> watch_ready {session_id, request_id, ice_servers} -> peer
// connection with a recvonly video transceiver -> signal_offer -> signal_answer, signal_ice both
// ways -> media flows peer-to-peer (or through the TURN relay).  Recovery, so that nobody has to
// reload:
//   * ICE "disconnected" is often transient (Wi-Fi roaming): wait it out for a while;
//   * ICE "failed", or "disconnected" for too long: a fresh watch (new session, new peer
//     connection; the camera agent (aiortc) cannot do an ICE restart), retried with backoff;
//   * signaling socket dropped: Signaling reconnects; then watch_resume {session_id, device_id}.
//     A peer connection that carries video is never closed because signaling was lost: if the
//     cloud does not know the session (it restarted), the resume is retried for a while (the
//     camera may not be back yet to claim it), then a fresh session is set up *beside* the one
//     still playing and takes over once it shows pictures ("standby");
//   * a late watch_ready for a request given up on (its request_id is not the current one):
//     watch_end at once, so that the camera does not keep a peer connection for nothing;
//   * camera offline: wait for its device_status "online" (or retry slowly) and watch again;
//   * the camera's sensor failed, or it has as many viewers as it can serve: say so in words.
//
// Events (EventTarget): "state" detail {state, message}; "stats" detail summary (stats.js);
// "track" detail MediaStream.
// States: requesting, connecting, connected, interrupted, recovering, waiting_device, busy,
// camera_failed, not_yours (not on this account, or unpaired), unsupported (this browser cannot
// play the camera's video: no H.264, the camera refused the codec, or packets arrive and no
// frame is ever decoded), ended, failed.  pages/watch.js turns them (with the signaling state)
// into what the person sees: one sentence and one action.

import { MSG } from "./protocol.js";
import { backoffDelay } from "./signaling.js";
import { describeEnd, describeError } from "./errors.js";
import { noH264Words } from "./words.js";
import { summarize } from "./stats.js";
import { openSnapshotChannel } from "./snapshots.js";

const READY_TIMEOUT_MS = 15_000; // watch_request -> watch_ready
const CONNECT_TIMEOUT_MS = 30_000; // watch_ready -> peer connection "connected"
const DISCONNECTED_GRACE_MS = 8_000; // ICE "disconnected" before giving up on this session
const RESUME_TIMEOUT_MS = 8_000; // watch_resume -> watch_resumed or an error
const RESUME_RETRIES_MS = [1_000, 2_000, 4_000]; // the cloud does not know the session (yet)
const DEVICE_RETRY_MS = 20_000; // camera offline or busy: try again this often even without news
const STATS_EVERY_MS = 1_000;
const FIRST_PICTURE_POLL_MS = 200; // a standby's successor: has it decoded a picture yet?
const NO_PICTURE_MS = 5_000; // packets arriving this long and not one frame decoded: cannot play
const NO_PICTURE_BYTES = 20_000; // ... at least this much of them (not a trickle of padding)
const ENDED_BY_CAMERA_LIMIT = 3; // the camera ended this many attempts in a row: stop asking

const STATE_WORDS = {
  requesting: "Asking the camera…",
  connecting: "Connecting to the camera…",
  connected: "Live",
  interrupted: "Connection interrupted. Waiting for it to come back…",
  recovering: "Reconnecting to the camera…",
  waiting_device: "The camera is offline. Watching resumes when it is back.",
  busy: "This camera already has as many viewers as it can serve. Watching starts when a place frees up.",
  camera_failed: "The camera is online, but its image sensor is not working. Check the camera's cable, or restart the camera.",
  not_yours: "This camera is not on your account.",
  unsupported: "This browser cannot play this camera's video. Open it in Chrome, Edge or Safari, or enable H.264 in this browser.",
  no_webrtc: "This browser cannot play live video (it has no WebRTC). Open MuMu Camera in Chrome, Edge, Firefox or Safari.",
  ended: "Stopped watching.",
  failed: "Could not watch this camera.",
};

/** Whether this browser can receive H.264 (null: it cannot say). */
export function canReceiveH264() {
  if (typeof RTCRtpReceiver === "undefined" || typeof RTCRtpReceiver.getCapabilities !== "function") return null;
  const codecs = RTCRtpReceiver.getCapabilities("video")?.codecs || [];
  return codecs.some((codec) => codec.mimeType.toLowerCase() === "video/h264");
}

/** Why this browser cannot play the video, and what to do: the steps for its platform when it
 *  has no H.264 at all, the general sentence when it has (but could not decode it). */
export function unsupportedWords() {
  return canReceiveH264() === false ? noH264Words(globalThis.navigator?.userAgent) : STATE_WORDS.unsupported;
}

/** A request id: 16 characters of [A-Za-z0-9_-] (the protocol's alphabet). */
function newRequestId() {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => alphabet[b & 63]).join("");
}

/** Puts H.264 (constrained baseline first) ahead of other codecs: the camera sends H.264. */
function preferH264(transceiver) {
  if (typeof RTCRtpReceiver.getCapabilities !== "function" || !transceiver.setCodecPreferences) return;
  const codecs = RTCRtpReceiver.getCapabilities("video")?.codecs || [];
  const rank = (codec) => {
    if (codec.mimeType.toLowerCase() !== "video/h264") return 2;
    return /profile-level-id=42e0/i.test(codec.sdpFmtpLine || "") ? 0 : 1;
  };
  const sorted = [...codecs].sort((a, b) => rank(a) - rank(b));
  try {
    transceiver.setCodecPreferences(sorted);
  } catch {
    // Some browsers refuse a list that contains rtx/red entries; the default order works too.
  }
}

/** Frames decoded so far by `pc`'s video receiver (0 if unknown). */
async function framesDecoded(pc) {
  let count = 0;
  try {
    (await pc.getStats()).forEach((stat) => {
      if (stat.type === "inbound-rtp" && stat.kind === "video") count = stat.framesDecoded || 0;
    });
  } catch {
    // a closing connection: nothing decoded
  }
  return count;
}

export class Watch extends EventTarget {
  /**
   * @param {object} options
   * @param {import("./signaling.js").Signaling} options.signaling
   * @param {string} options.deviceId
   * @param {boolean} [options.forceRelay] iceTransportPolicy "relay" (TURN only)
   */
  constructor({ signaling, deviceId, forceRelay = false }) {
    super();
    this.signaling = signaling;
    this.deviceId = deviceId;
    this.forceRelay = forceRelay;
    this.state = "idle";
    this.message = "";
    this.sessionId = null;
    this.requestId = null;
    this.pc = null;
    this.stream = null;
    this.shownStream = null;
    this.stats = null;
    this.standby = null; // {pc, sessionId, stream}: still playing while a fresh session takes over
    this.attempt = 0; // consecutive failed attempts (for the retry backoff)
    this.resumeAttempt = 0;
    this.awaiting = null; // "ready" | "resume" | null
    this.remoteCandidates = [];
    this.timers = {};
    this.statsTimer = null;
    this.stopped = false;
    this.deviceOnline = null; // from device_status (and the page's device list): null = unknown
    this.endedByCamera = 0; // consecutive attempts the camera ended before any picture
    /** Counters for tests and diagnostics. */
    this.counts = { lateReadyEnded: 0, resumed: 0, resumeRefused: 0, standbyTakeovers: 0 };
    this.onMessage = (event) => this.handle(event.detail);
    this.onReady = (event) => this.signalingReady(event.detail);
    signaling.addEventListener("message", this.onMessage);
    signaling.addEventListener("ready", this.onReady);
  }

  start() {
    this.request();
  }

  /** The person stops watching: end the session on both sides ("Watch again": retry()). */
  end() {
    this.endSession();
    this.clearTimers();
    this.closePeer();
    this.dropStandby();
    this.awaiting = null;
    this.setState("ended", STATE_WORDS.ended);
  }

  /** Leaving the page: end the session and stop listening for good. */
  dispose() {
    this.teardown();
  }

  /** "Try again" after a failure. */
  retry() {
    if (this.stopped) return;
    this.attempt = 0;
    this.request();
  }

  /** Whether video is on screen (the current session's, or a standby's). */
  get playing() {
    const live = (pc) => pc && pc.connectionState === "connected";
    return live(this.standby?.pc) || (this.state === "connected" && live(this.pc));
  }

  // --- session lifecycle -----------------------------------------------------------------------

  request() {
    if (typeof RTCPeerConnection === "undefined") {
      // No WebRTC at all (e.g. WebKitGTK, some embedded browsers): nothing to ask the camera.
      this.fail(STATE_WORDS.no_webrtc, "unsupported");
      return;
    }
    this.clearTimers();
    this.closePeer();
    this.sessionId = null;
    this.awaiting = "ready";
    this.requestId = newRequestId();
    this.setState("requesting", STATE_WORDS.requesting);
    if (!this.signaling.send(MSG.WATCH_REQUEST, { device_id: this.deviceId, request_id: this.requestId })) {
      return; // not connected: signalingReady() sends it
    }
    this.timers.ready = setTimeout(() => this.recover("The camera did not answer."), READY_TIMEOUT_MS);
  }

  /** Gives up on the current session and starts a fresh one after a backoff. */
  recover(reason) {
    if (this.stopped) return;
    this.endSession();
    this.clearTimers();
    this.closePeer();
    const delay = backoffDelay(this.attempt, { baseMs: 1_000, maxMs: 15_000 });
    this.attempt += 1;
    this.setState("recovering", reason ? `${reason} Reconnecting…` : STATE_WORDS.recovering);
    this.timers.retry = setTimeout(() => this.request(), delay);
  }

  /** Waits (camera offline, or busy) and asks again later, or when it comes back online. */
  waitForDevice(words, state = "waiting_device") {
    this.endSession();
    this.clearTimers();
    this.closePeer();
    this.awaiting = null;
    this.setState(state, words || STATE_WORDS[state]);
    this.timers.retry = setTimeout(() => this.request(), DEVICE_RETRY_MS);
  }

  fail(words, state = "failed") {
    this.endSession();
    this.clearTimers();
    this.closePeer();
    this.dropStandby();
    this.awaiting = null;
    this.setState(state, words);
  }

  endSession() {
    if (this.sessionId) {
      this.signaling.send(MSG.WATCH_END, { session_id: this.sessionId });
      this.sessionId = null;
    }
  }

  teardown() {
    if (this.stopped) return;
    this.stopped = true;
    this.endSession();
    this.clearTimers();
    this.closePeer();
    this.dropStandby();
    this.signaling.removeEventListener("message", this.onMessage);
    this.signaling.removeEventListener("ready", this.onReady);
  }

  /** After every (re)connect of the signaling socket. */
  signalingReady() {
    if (this.stopped) return;
    if (this.awaiting === "ready" && !this.sessionId) {
      this.request();
      return;
    }
    if (!this.sessionId || !this.pc) return;
    const pcState = this.pc.connectionState;
    if (pcState === "connected" || pcState === "disconnected") {
      this.resumeAttempt = 0;
      this.resume();
    } else {
      // Offer/answer or candidates may have been lost with the old socket.
      this.recover();
    }
  }

  /** Re-attaches the session to the new socket; media keeps flowing meanwhile. */
  resume() {
    this.awaiting = "resume";
    this.signaling.send(MSG.WATCH_RESUME, { session_id: this.sessionId, device_id: this.deviceId });
    clearTimeout(this.timers.resume);
    this.timers.resume = setTimeout(() => {
      if (this.awaiting === "resume") this.resumeRefused();
    }, RESUME_TIMEOUT_MS);
  }

  /**
   * The cloud does not know the session (it restarted and the camera has not claimed it yet,
   * or it never will).  While its video plays: ask again a few times, then set up a fresh
   * session beside it.  Without video: start over.
   */
  resumeRefused() {
    this.counts.resumeRefused += 1;
    clearTimeout(this.timers.resume);
    const pc = this.pc;
    if (!pc || pc.connectionState !== "connected") {
      this.sessionId = null;
      this.recover("");
      return;
    }
    if (this.resumeAttempt < RESUME_RETRIES_MS.length) {
      const delay = RESUME_RETRIES_MS[this.resumeAttempt];
      this.resumeAttempt += 1;
      this.awaiting = "resume-wait";
      this.timers.resumeRetry = setTimeout(() => this.resume(), delay);
      return;
    }
    this.holdVideo();
    this.request();
  }

  /** Keeps the current peer connection playing as the standby; the next session replaces it. */
  holdVideo() {
    this.dropStandby();
    const pc = this.pc;
    this.standby = { pc, sessionId: this.sessionId, stream: this.stream };
    pc.onconnectionstatechange = () => {
      if (this.standby?.pc !== pc) return;
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        // Its video stopped after all: what the current attempt shows is the truth now.
        this.dropStandby();
        this.setState(this.state, this.message);
      }
    };
    this.pc = null; // not closed: it keeps playing
    this.sessionId = null;
    this.awaiting = null;
    clearInterval(this.statsTimer);
    this.statsTimer = null;
  }

  dropStandby() {
    const standby = this.standby;
    if (!standby) return;
    this.standby = null;
    standby.pc.onconnectionstatechange = standby.pc.ontrack = standby.pc.onicecandidate = null;
    standby.pc.close(); // the camera sees the DTLS close and ends its side
    if (standby.sessionId) this.signaling.send(MSG.WATCH_END, { session_id: standby.sessionId });
  }

  /** Puts `stream` on screen (once per stream). */
  show(stream) {
    if (!stream || stream === this.shownStream) return;
    this.shownStream = stream;
    this.dispatchEvent(new CustomEvent("track", { detail: stream }));
  }

  /** The fresh session shows pictures: it replaces the standby on screen. */
  async takeOver(pc) {
    while (pc === this.pc && this.standby && pc.connectionState === "connected") {
      if ((await framesDecoded(pc)) > 0) {
        if (pc !== this.pc || !this.standby) return;
        this.counts.standbyTakeovers += 1;
        this.show(this.stream);
        this.dropStandby();
        this.setState("connected", STATE_WORDS.connected);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, FIRST_PICTURE_POLL_MS));
    }
  }

  // --- messages from the cloud ----------------------------------------------------------------

  handle(message) {
    if (this.stopped) return;
    const payload = message.payload || {};
    switch (message.type) {
      case MSG.WATCH_READY:
        this.watchReady(payload);
        break;
      case MSG.SIGNAL_ANSWER:
        if (payload.session_id === this.sessionId) this.answer(payload.sdp);
        break;
      case MSG.SIGNAL_OFFER:
        if (payload.session_id === this.sessionId) this.offer(payload.sdp);
        break;
      case MSG.SIGNAL_ICE:
        if (payload.session_id === this.sessionId) this.remoteCandidate(payload.candidate ?? null);
        break;
      case MSG.WATCH_RESUMED:
        if (payload.session_id === this.sessionId && this.awaiting === "resume") {
          this.awaiting = null;
          this.counts.resumed += 1;
          clearTimeout(this.timers.resume);
        }
        break;
      case MSG.WATCH_ENDED:
        if (payload.session_id === this.sessionId) this.ended(payload.reason);
        else if (this.standby && payload.session_id === this.standby.sessionId) this.dropStandby();
        break;
      case MSG.DEVICE_STATUS:
        if (payload.device_id !== this.deviceId) break;
        this.deviceOnline = Boolean(payload.online);
        if (payload.online && (this.state === "waiting_device" || this.state === "busy")) {
          this.attempt = 0;
          this.request();
        } else if (!payload.online && !this.playing &&
                   ["requesting", "connecting", "recovering", "interrupted"].includes(this.state)) {
          this.waitForDevice(); // the cloud knows it vanished: say so now, not at a timeout
        }
        break;
      case MSG.ERROR:
        this.refused(payload);
        break;
      default:
        break;
    }
  }

  watchReady(payload) {
    const ours = payload.request_id
      ? payload.request_id === this.requestId
      : payload.device_id === this.deviceId; // a cloud that does not echo request ids
    if (ours && this.awaiting === "ready") {
      this.ready(payload);
    } else if (payload.device_id === this.deviceId && payload.session_id !== this.sessionId) {
      // The answer to a request given up on (a retry went out meanwhile): end it now rather
      // than leave a peer connection waiting on the camera for its offer.
      this.counts.lateReadyEnded += 1;
      this.signaling.send(MSG.WATCH_END, { session_id: payload.session_id });
    }
  }

  ended(reason) {
    this.sessionId = null; // already gone at the cloud: no watch_end
    const neverLive = this.state !== "connected";
    if (reason === "device_disconnected" || (reason === "device_ended" && this.deviceOnline === false)) {
      this.deviceOnline = false;
      this.waitForDevice();
    } else if (reason === "device_ended" && neverLive && this.endedBeforePicture()) {
      // said (cannot play, or gave up)
    } else if (reason === "device_ended" || reason === "expired") {
      this.recover("");
    } else if (reason === "device_unpaired" || reason === "access_revoked") {
      this.fail(describeEnd(reason), "not_yours");
    } else if (/codec/.test(reason || "")) {
      // The camera cannot send this browser a codec it plays ("codec_unsupported").
      this.fail(unsupportedWords(), "unsupported");
    } else if (reason === "device_busy") {
      this.waitForDevice(STATE_WORDS.busy, "busy");
    } else if (reason === "camera_failed") {
      this.fail(STATE_WORDS.camera_failed, "camera_failed");
    } else if (reason === "viewer_disconnected" || reason === "error" || reason === "stream_stalled") {
      this.recover(describeEnd(reason));
    } else {
      this.fail(describeEnd(reason));
    }
  }

  /**
   * The camera ended a session before its first picture (refused the offer, or the session was
   * gone by the time our candidates arrived).  Without H.264 this browser cannot be served;
   * with it, a few attempts in a row are enough: asking again forever helps nobody.
   * True when that was said (the watch stopped).
   */
  endedBeforePicture() {
    if (canReceiveH264() === false) {
      this.fail(unsupportedWords(), "unsupported");
      return true;
    }
    if (++this.endedByCamera >= ENDED_BY_CAMERA_LIMIT) {
      this.fail("The camera could not start the video for this browser. Restart the camera, or try another browser.");
      return true;
    }
    return false;
  }

  refused(payload) {
    const ref = payload.ref || "";
    const aboutRequest = payload.request_id
      ? payload.request_id === this.requestId && this.awaiting === "ready"
      : ref === MSG.WATCH_REQUEST && this.awaiting === "ready";
    const aboutSession = Boolean(this.sessionId) && ref.includes(this.sessionId);
    if (!aboutRequest && !aboutSession) return;
    if (aboutSession && payload.code === "session_not_found" && this.awaiting === "resume") {
      this.resumeRefused();
      return;
    }
    if (this.standby) {
      // The fresh session could not be set up; the old one still plays: try again later.
      this.recover("");
      return;
    }
    const words = describeError(payload);
    if (/codec/.test(payload.code || "")) {
      // The camera cannot send a codec this browser plays (e.g. "unsupported_codec").
      this.fail(unsupportedWords(), "unsupported");
      return;
    }
    switch (payload.code) {
      case "forbidden":
      case "not_found":
        this.fail(words, "not_yours");
        break;
      case "device_offline":
        this.waitForDevice(`${words} Watching starts when it comes online.`);
        break;
      case "device_busy":
        this.waitForDevice(STATE_WORDS.busy, "busy");
        break;
      case "session_not_found":
        // During setup: the camera ended it (its watch_ended may come later, or through
        // another cloud process).
        this.sessionId = null;
        if (this.state !== "connected" && this.endedBeforePicture()) break;
        this.recover(words);
        break;
      case "rate_limited":
      case "internal":
      case "not_session_party":
        this.recover(words);
        break;
      default:
        this.fail(words);
    }
  }

  // --- the peer connection --------------------------------------------------------------------

  async ready({ session_id: sessionId, ice_servers: iceServers }) {
    clearTimeout(this.timers.ready);
    this.awaiting = null;
    this.sessionId = sessionId;
    this.remoteCandidates = [];
    this.setState("connecting", STATE_WORDS.connecting);
    const pc = new RTCPeerConnection({
      iceServers: iceServers || [],
      iceTransportPolicy: this.forceRelay ? "relay" : "all",
      bundlePolicy: "max-bundle",
    });
    this.pc = pc;
    preferH264(pc.addTransceiver("video", { direction: "recvonly" }));
    this.snapshots = openSnapshotChannel(pc); // JPEGs peer to peer (snapshots.js)
    pc.ontrack = (event) => {
      if (pc !== this.pc) return;
      this.stream = event.streams[0] || new MediaStream([event.track]);
      // While a standby plays, the new picture goes on screen when it has one (takeOver).
      if (!this.standby) this.show(this.stream);
    };
    // Candidates go out as they come (trickle): the offer never waits for a TURN allocation.
    pc.onicecandidate = (event) => {
      if (pc !== this.pc) return;
      const c = event.candidate;
      const candidate = c && c.candidate ? c.toJSON() : null;
      this.signaling.send(MSG.SIGNAL_ICE, { session_id: sessionId, candidate });
    };
    pc.onconnectionstatechange = () => this.peerState(pc);
    // A relay-only watch whose TURN server refuses or cannot be reached will never connect:
    // say so as soon as candidate gathering ends instead of waiting for the connect timeout.
    const turnErrors = [];
    let relayCandidates = 0;
    pc.addEventListener("icecandidate", (event) => {
      if (event.candidate && event.candidate.type === "relay") relayCandidates += 1;
    });
    pc.onicecandidateerror = (event) => {
      if (/^turns?:/.test(event.url || "")) turnErrors.push(event.errorCode);
    };
    pc.onicegatheringstatechange = () => {
      if (pc !== this.pc || pc.iceGatheringState !== "complete") return;
      if (this.forceRelay && relayCandidates === 0) {
        const why = turnErrors.includes(401)
          ? "the relay (TURN) server refused the credentials"
          : "no relay (TURN) server could be reached";
        this.recover(`The connection to the camera could not be set up: ${why}.`);
      }
    };
    this.timers.connect = setTimeout(() => {
      if (pc === this.pc && pc.connectionState !== "connected") {
        this.recover("The connection to the camera could not be set up.");
      }
    }, CONNECT_TIMEOUT_MS);
    this.startStats(pc);
    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      if (pc !== this.pc) return;
      this.signaling.send(MSG.SIGNAL_OFFER, {
        session_id: sessionId,
        sdp: { type: pc.localDescription.type, sdp: pc.localDescription.sdp },
      });
    } catch (error) {
      if (pc === this.pc) this.fail(`This browser could not start the video connection (${error.message}).`);
    }
  }

  async answer(sdp) {
    const pc = this.pc;
    if (!pc || pc.signalingState !== "have-local-offer") return;
    try {
      await pc.setRemoteDescription(sdp);
      await this.flushCandidates(pc);
    } catch (error) {
      if (pc === this.pc) this.recover(`The camera's answer was not usable (${error.message}).`);
    }
  }

  /** The camera renegotiates (not done today, but answered correctly if it does). */
  async offer(sdp) {
    const pc = this.pc;
    if (!pc) return;
    try {
      await pc.setRemoteDescription(sdp);
      await this.flushCandidates(pc);
      await pc.setLocalDescription(await pc.createAnswer());
      if (pc !== this.pc) return;
      this.signaling.send(MSG.SIGNAL_ANSWER, {
        session_id: this.sessionId,
        sdp: { type: pc.localDescription.type, sdp: pc.localDescription.sdp },
      });
    } catch (error) {
      if (pc === this.pc) this.recover(`The camera's offer was not usable (${error.message}).`);
    }
  }

  async remoteCandidate(candidate) {
    const pc = this.pc;
    if (!pc) return;
    if (!pc.remoteDescription) {
      this.remoteCandidates.push(candidate);
      return;
    }
    await this.addCandidate(pc, candidate);
  }

  async flushCandidates(pc) {
    const queued = this.remoteCandidates;
    this.remoteCandidates = [];
    for (const candidate of queued) await this.addCandidate(pc, candidate);
  }

  async addCandidate(pc, candidate) {
    try {
      // null = end of candidates
      await pc.addIceCandidate(candidate === null ? undefined : candidate);
    } catch {
      // One unusable candidate (e.g. an address family this browser lacks) is not fatal.
    }
  }

  peerState(pc) {
    if (pc !== this.pc) return;
    switch (pc.connectionState) {
      case "connected":
        this.attempt = 0;
        this.endedByCamera = 0;
        clearTimeout(this.timers.connect);
        clearTimeout(this.timers.disconnected);
        if (this.standby) {
          this.takeOver(pc);
        } else {
          this.show(this.stream); // if a standby that died was on screen until now
          this.setState("connected", STATE_WORDS.connected);
        }
        break;
      case "disconnected":
        this.setState("interrupted", STATE_WORDS.interrupted);
        clearTimeout(this.timers.disconnected);
        this.timers.disconnected = setTimeout(() => {
          if (pc === this.pc && pc.connectionState !== "connected") {
            this.recover("The connection did not come back.");
          }
        }, DISCONNECTED_GRACE_MS);
        break;
      case "failed":
      case "closed": // closed from the far side (we detach before closing our own)
        this.recover("The connection to the camera failed.");
        break;
      default:
        break;
    }
  }

  startStats(pc) {
    clearInterval(this.statsTimer);
    let previous = null;
    let firstBytesAt = null; // when packets started to arrive (for the no-picture check)
    let toldPath = null; // the media path the cloud last heard of (for the history)
    this.statsTimer = setInterval(async () => {
      if (pc !== this.pc) return;
      try {
        const summary = summarize(await pc.getStats(), previous);
        previous = summary;
        if (pc !== this.pc) return;
        this.stats = summary;
        this.dispatchEvent(new CustomEvent("stats", { detail: summary }));
        if (summary.path && summary.path !== toldPath && this.sessionId &&
            this.signaling.send(MSG.WATCH_PATH, { session_id: this.sessionId, path: summary.path })) {
          toldPath = summary.path;
        }
        if (summary.bytesReceived > 0 && firstBytesAt === null) firstBytesAt = Date.now();
        if (!summary.framesDecoded && firstBytesAt !== null && !this.standby &&
            Date.now() - firstBytesAt >= NO_PICTURE_MS && summary.bytesReceived >= NO_PICTURE_BYTES) {
          // Packets keep coming and not one frame was decoded: this browser cannot decode
          // them (H.264 negotiated without a decoder).  "Live" over a black picture is a lie.
          this.fail(unsupportedWords(), "unsupported");
        }
      } catch {
        // getStats on a closing connection: nothing to show
      }
    }, STATS_EVERY_MS);
  }

  closePeer() {
    clearInterval(this.statsTimer);
    this.statsTimer = null;
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = null;
      pc.close();
    }
    this.stats = null;
    this.remoteCandidates = [];
  }

  clearTimers() {
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.timers = {};
  }

  /**
   * Records the state; what people see stays "Live" while a standby's video plays and a fresh
   * session is being set up behind it (nothing alarming to say while the picture moves).
   */
  setState(state, message) {
    this.state = state;
    this.message = message || STATE_WORDS[state] || "";
    const shown = this.standby && ["requesting", "connecting", "recovering", "interrupted"].includes(state)
      ? { state: "connected", message: STATE_WORDS.connected }
      : { state, message: this.message };
    this.dispatchEvent(new CustomEvent("state", { detail: shown }));
  }
}
