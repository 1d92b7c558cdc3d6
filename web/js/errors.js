// Human words for the signaling protocol's error codes and session end reasons (protocol.js
// lists them).  The cloud's own message is never shown: it is written for developers.

const ERROR_WORDS = {
  device_offline: "This camera is offline right now.",
  forbidden: "This camera is not on your account.",
  not_found: "This camera was not found. It may have been unpaired.",
  rate_limited: "Too many requests. Please wait a moment.",
  device_busy: "This camera already has as many viewers as it can serve.",
  session_not_found: "The viewing session has ended.",
  not_session_party: "This viewing session belongs to another window.",
  not_authenticated: "Your session has expired. Please sign in again.",
  internal: "The MuMu cloud had a problem. Please try again.",
  unavailable: "The MuMu cloud is restarting or busy. Watching starts when it is back.",
  too_many_connections: "The MuMu cloud has too many connections open right now. It tries again on its own.",
  unsupported_codec: "This browser cannot play this camera's video.",
};

const END_WORDS = {
  viewer_ended: "You stopped watching.",
  device_ended: "The camera stopped the stream.",
  viewer_disconnected: "The connection to the MuMu cloud was lost.",
  device_disconnected: "The camera went offline.",
  device_unpaired: "This camera was unpaired from your account.",
  access_revoked: "The camera's owner stopped sharing it with you.",
  expired: "The viewing session expired.",
  error: "The stream stopped because of an error.",
  camera_failed: "The camera is online, but its image sensor is not working.",
  device_busy: "This camera already has as many viewers as it can serve.",
  stream_stalled: "The picture froze.",
  codec_unsupported:
    "This browser cannot play this camera's video (it has no H.264 decoder) — try Chrome, Edge or Safari.",
};

// too_many_connections, by the bound that refused the socket (the payload's cause).
const CONNECTIONS_WORDS = {
  account: "This account has too many windows open. Close some, then try again.",
  address: "Too many connections from your network are waiting for the MuMu cloud. It tries again on its own.",
  everyone: "The MuMu cloud is very busy right now. It tries again on its own.",
};

/** Words for an `error` payload {code, message, ref, cause}. */
export function describeError(payload) {
  if (payload?.code === "too_many_connections" && CONNECTIONS_WORDS[payload.cause]) {
    return CONNECTIONS_WORDS[payload.cause];
  }
  const words = ERROR_WORDS[payload?.code];
  if (words) return words;
  return `The MuMu cloud refused this (${payload?.code || "unknown error"}). Please try again.`;
}

/** Words for a `watch_ended` reason. */
export function describeEnd(reason) {
  return END_WORDS[reason] || "The stream ended.";
}
