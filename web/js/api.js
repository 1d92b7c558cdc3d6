// The cloud's HTTP API (same origin: nginx proxies /api to the cloud).  Every failure becomes an
// ApiError whose `message` can be shown to the person as it is: the app's own words for its
// `code` (words.js), never the server's sentence.

import * as session from "./session.js";
import { keepThumbnailsOf } from "./snapshots.js";
import { refusalWords } from "./words.js";

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

const SIGNED_OUT_WORDS = "Your session has expired. Please sign in again.";
const NETWORK_WORDS = refusalWords({ code: "network", status: 0 });

/** The bearer token for a request; signs out (and throws) when the sign-in is over. */
async function bearerToken(force) {
  try {
    const value = force ? await session.refresh({ force: true }) : await session.freshToken();
    if (value) return value;
  } catch (error) {
    if (!(error instanceof session.RefreshRefused)) {
      throw new ApiError(0, "network", NETWORK_WORDS);
    }
    signedOut(error.message);
    throw new ApiError(401, error.code || "signed_out", error.message);
  }
  signedOut(SIGNED_OUT_WORDS);
  throw new ApiError(401, "not_authenticated", SIGNED_OUT_WORDS);
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
    throw new ApiError(0, "network", NETWORK_WORDS);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  if (response.status === 401 && auth && !retried && session.canRefresh()) {
    // The token was refused (revoked, or expired in flight): once more with a new one.
    return request(method, path, body, { auth, retried: true });
  }

  const parsed = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  const retryAfter = Number.isFinite(parsed) ? parsed : null;
  const code = data?.error?.code || `http_${response.status}`;
  const message = refusalWords({
    code,
    status: response.status,
    serverMessage: data?.error?.message || "",
    retryAfter,
  });
  const apiError = new ApiError(response.status, code, message, retryAfter);
  if (response.status === 401 && auth) {
    // The token was refused and no new one could be had (a refused refresh says why itself).
    signedOut(SIGNED_OUT_WORDS);
  }
  throw apiError;
}

/** Any call of the cloud's API (for modules with their own endpoints: sharing.js). */
export function call(method, path, body = undefined) {
  return request(method, path, body);
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

/**
 * The account: {user_id, email, created_at, email_verified, pending_email,
 * sign_ins: [{id, created_at, last_used_at, user_agent, current}]}
 */
export function account() {
  return request("GET", "/api/account");
}

/** Signs out another browser of the account (404 not_found: it ended already). */
export function revokeSignIn(id) {
  return request("DELETE", `/api/account/sign-ins/${encodeURIComponent(id)}`);
}

// --- proving the address, a forgotten password (the links in the cloud's mails) -------------

/** Opens a link's token ("verify" or a new address): resolves to {email} (now verified). */
export function verifyEmail(token) {
  return request("POST", "/api/auth/verify", { token }, { auth: false });
}

/** The verification mail again (409 already_verified, 429 with retryAfter). */
export function resendVerification() {
  return request("POST", "/api/account/verification");
}

/** A reset link to `email` if an account uses it; the same answer either way. */
export function forgotPassword(email) {
  return request("POST", "/api/auth/forgot", { email }, { auth: false });
}

/** A new password from a reset link's token: resolves to {email}; every sign-in ends. */
export function resetPassword(token, password) {
  return request("POST", "/api/auth/reset", { token, password }, { auth: false });
}

/** Starts changing the address (the password confirms): resolves to {pending_email}. */
export function changeEmail(email, password) {
  return request("POST", "/api/account/email", { email, password });
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

/** The account's cameras; the pictures of any other camera are forgotten (it left the list). */
export async function listDevices() {
  const { devices } = await request("GET", "/api/devices");
  keepThumbnailsOf(devices.map((device) => device.device_id));
  return devices;
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

/** `arches`: the architectures it is for ("aarch64"); empty: those it is signed for. */
export function addRelease(version, notes = "", arches = []) {
  return request("POST", "/api/operator/releases", { version, notes, ...(arches.length ? { arches } : {}) });
}

export function startRollout(version, percentage, channel = "stable") {
  return request("POST", "/api/operator/rollouts", { version, percentage, channel });
}

export function changeRollout(rolloutId, change) {
  return request("PATCH", `/api/operator/rollouts/${rolloutId}`, change);
}
