// The cloud's HTTP API (same origin: nginx proxies /api to the cloud).  Every failure becomes an
// ApiError whose `message` can be shown to the person as it is.

import * as session from "./session.js";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status; // HTTP status, 0 when the cloud could not be reached
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from Retry-After on 429
  }
}

/**
 * Fired on `window` when the sign-in is over (expired, signed out elsewhere, password changed);
 * `event.detail.message` says why in a sentence for the person.
 */
export const UNAUTHORIZED_EVENT = "mumu:unauthorized";

function signedOut(message) {
  window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT, { detail: { message } }));
}

const FALLBACK_MESSAGES = {
  400: "The request was not accepted.",
  401: "Your session has expired. Please sign in again.",
  403: "You are not allowed to do that.",
  404: "Not found.",
  409: "That conflicts with something that already exists.",
  410: "That has expired.",
  422: "Please check what you entered.",
  429: "Too many attempts. Please wait a moment and try again.",
  500: "The MuMu cloud had a problem. Please try again.",
  502: "The MuMu cloud is not reachable right now. Please try again shortly.",
  503: "The MuMu cloud is busy or restarting. Please try again shortly.",
  504: "The MuMu cloud took too long to answer. Please try again.",
};

/** The bearer token for a request; signs out (and throws) when the sign-in is over. */
async function bearerToken(force) {
  try {
    const value = force ? await session.refresh({ force: true }) : await session.freshToken();
    if (value) return value;
  } catch (error) {
    if (!(error instanceof session.RefreshRefused)) {
      throw new ApiError(0, "network", "Cannot reach the MuMu cloud. Check your connection and try again.");
    }
    signedOut(error.message);
    throw new ApiError(401, error.code || "signed_out", error.message);
  }
  signedOut(FALLBACK_MESSAGES[401]);
  throw new ApiError(401, "not_authenticated", FALLBACK_MESSAGES[401]);
}

async function request(method, path, body = undefined, { auth = true, retried = false, bearer = null } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) headers.Authorization = `Bearer ${await bearerToken(retried)}`;
  else if (bearer) headers.Authorization = `Bearer ${bearer}`;

  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the MuMu cloud. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  if (response.status === 401 && auth && !retried && session.canRefresh()) {
    // The token was refused (revoked, or expired in flight): once more with a new one.
    return request(method, path, body, { auth, retried: true });
  }

  const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  const error = data?.error;
  let message = error?.message || data?.detail || FALLBACK_MESSAGES[response.status] ||
    `The request failed (HTTP ${response.status}).`;
  if ((response.status === 429 || response.status === 503) && Number.isFinite(retryAfter)) {
    message = `${message.replace(/\.?$/, ".")} Try again in ${waitWords(retryAfter)}.`;
  }
  const apiError = new ApiError(
    response.status,
    error?.code || `http_${response.status}`,
    message,
    Number.isFinite(retryAfter) ? retryAfter : null,
  );
  if (response.status === 401 && auth) {
    // The token was refused and no new one could be had (a refused refresh says why itself).
    signedOut(FALLBACK_MESSAGES[401]);
  }
  throw apiError;
}

/** Any call of the cloud's API (for modules with their own endpoints: sharing.js). */
export function call(method, path, body = undefined) {
  return request(method, path, body);
}

function waitWords(seconds) {
  if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minutes`;
}

export function register(email, password) {
  return request("POST", "/api/auth/register", { email, password }, { auth: false });
}

/** Signs in: the access token in the answer, the refresh token in an HttpOnly cookie. */
export function login(email, password) {
  return request("POST", "/api/auth/login", { email, password }, { auth: false });
}

/** Ends this browser's sign-in on the cloud (the refresh cookie, or else the access token). */
export function logout() {
  return request("POST", "/api/auth/logout", undefined, { auth: false, bearer: session.token() });
}

/** Ends every sign-in of the account, this one included. */
export function logoutEverywhere() {
  return request("POST", "/api/auth/logout-all");
}

/** The account: {user_id, email, created_at, sign_ins: [{created_at, last_used_at, user_agent, current}]} */
export function account() {
  return request("GET", "/api/account");
}

/** Resolves to new tokens ({access_token, ...}): every other sign-in ends. */
export function changePassword(currentPassword, newPassword) {
  return request("POST", "/api/account/password", {
    current_password: currentPassword,
    new_password: newPassword,
  });
}

export function deleteAccount(password) {
  return request("POST", "/api/account/delete", { password });
}

/** The camera a claim link would add ({name, model, expires_at}), without adding it. */
export function previewClaim(claimToken) {
  return request("POST", "/api/pairing/preview", { claim_token: claimToken });
}

export async function listDevices() {
  return (await request("GET", "/api/devices")).devices;
}

export function renameDevice(deviceId, name) {
  return request("PATCH", `/api/devices/${encodeURIComponent(deviceId)}`, { name });
}

export function unpairDevice(deviceId) {
  return request("DELETE", `/api/devices/${encodeURIComponent(deviceId)}`);
}

/** Pair by the 6-digit code shown on the camera. Resolves to the device. */
export async function pairWithCode(code) {
  return (await request("POST", "/api/devices/pair", { code })).device;
}

/** Pair by the claim token of the camera's QR link. Resolves to the device. */
export async function pairWithClaim(claimToken) {
  return (await request("POST", "/api/devices/pair", { claim_token: claimToken })).device;
}

export async function listSessions(deviceId) {
  return (await request("GET", `/api/devices/${encodeURIComponent(deviceId)}/sessions`)).sessions;
}

// --- over-the-air updates (docs/updates.md) ---------------------------------------------------

/** Each of the account's cameras: version, update state, window. */
export async function cameraUpdates() {
  return (await request("GET", "/api/devices/updates")).cameras;
}

export function setUpdateWindow(deviceId, window) {
  return request("PUT", `/api/devices/${encodeURIComponent(deviceId)}/update-settings`, { window });
}

/** Operators only (403 for everybody else): releases, rollouts, the fleet's versions. */
export function fleet() {
  return request("GET", "/api/operator/updates");
}

export function addRelease(version, notes = "") {
  return request("POST", "/api/operator/releases", { version, notes });
}

export function startRollout(version, percentage, channel = "stable") {
  return request("POST", "/api/operator/rollouts", { version, percentage, channel });
}

export function changeRollout(rolloutId, change) {
  return request("PATCH", `/api/operator/rollouts/${rolloutId}`, change);
}
