// The signed-in session, kept in the browser.
//
// The access token (short-lived, a few minutes) lives in localStorage so that every tab shares
// it; the refresh token never reaches scripts: the cloud keeps it in an HttpOnly cookie scoped
// to /api/auth and rotates it on every refresh.  `freshToken()` hands out a token that is valid
// for a while yet, refreshing first when it is not; a timer refreshes in the background before
// expiry, so that nobody is signed out while the page is open and a live view never notices.
// Two tabs refreshing at once take turns through the Web Locks API (where the browser has it;
// the cloud also gives the token it just replaced a short grace).

const TOKEN_KEY = "mumu.token";
const EMAIL_KEY = "mumu.email";
// Set when this browser signed in through the cloud (so it holds a refresh cookie).
const SIGNED_IN_KEY = "mumu.signedIn";
const CLAIM_KEY = "mumu.pendingClaim";
const LOCK_NAME = "mumu-refresh";
// Kept across sign-ins: a preference of the person at this screen, not of an account.
const KEPT_KEYS = new Set(["mumu.theme"]);

/** A refresh the cloud refused (401): the person must sign in again; `message` says why. */
export class RefreshRefused extends Error {
  constructor(message, code) {
    super(message);
    this.name = "RefreshRefused";
    this.code = code;
  }
}

/** The JWT's claims (unverified: only for the expiry and display), or null. */
function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

function stored() {
  return localStorage.getItem(TOKEN_KEY);
}

/** Milliseconds the token stays valid (Infinity if it carries no expiry; <= 0 if expired). */
function msLeft(value) {
  const exp = value ? claims(value)?.exp : undefined;
  return typeof exp === "number" ? exp * 1000 - Date.now() : value ? Infinity : -1;
}

/** How long before expiry a token counts as stale: a quarter of its life, at most a minute. */
function margin(value) {
  const c = value ? claims(value) : null;
  const life = c && typeof c.exp === "number" && typeof c.iat === "number" ? (c.exp - c.iat) * 1000 : 0;
  return Math.min(60_000, Math.max(1_000, life / 4));
}

/** The token if there is one and it has not expired, else null. */
export function token() {
  const value = stored();
  return value && msLeft(value) > 0 ? value : null;
}

/** Whether a token was stored but has expired (the person should be told so). */
export function hasExpiredToken() {
  const value = stored();
  return Boolean(value) && msLeft(value) <= 0;
}

/** Whether this browser can ask for a new access token (it signed in through the cloud). */
export function canRefresh() {
  return localStorage.getItem(SIGNED_IN_KEY) === "1";
}

/** Milliseconds until the stored token expires (Infinity if it carries no expiry). */
export function msUntilExpiry() {
  return msLeft(stored());
}

export function signIn(accessToken, email) {
  localStorage.setItem(TOKEN_KEY, accessToken);
  if (email) localStorage.setItem(EMAIL_KEY, email);
  localStorage.setItem(SIGNED_IN_KEY, "1");
}

/**
 * Ends the sign-in in this browser and forgets everything of the account kept here: the token,
 * the address, anything else of ours in localStorage and sessionStorage (the theme stays), and
 * whatever the `forgetters` registered keep elsewhere (the thumbnails in IndexedDB).  Every way
 * of leaving comes here.  Resolves when the forgetting is done.
 */
export function signOut() {
  clearTimeout(timer);
  for (const storage of [localStorage, sessionStorage]) {
    const ours = [];
    for (let i = 0; i < storage.length; i++) {
      const key = storage.key(i);
      if (key?.startsWith("mumu.") && !KEPT_KEYS.has(key)) ours.push(key);
    }
    for (const key of ours) storage.removeItem(key);
  }
  return Promise.all([...forgetters].map((forget) => Promise.resolve().then(forget).catch(() => null)));
}

const forgetters = new Set();

/** `forget()` runs on every sign-out (it clears what a module keeps of the account). */
export function onSignOut(forget) {
  forgetters.add(forget);
}

/** The account's address changed (a confirmed new address): the one shown from now on. */
export function setEmail(address) {
  localStorage.setItem(EMAIL_KEY, address);
}

export function email() {
  return localStorage.getItem(EMAIL_KEY) || "";
}

// --- refreshing ---------------------------------------------------------------------------------

let inflight = null;

async function withLock(work) {
  if (navigator.locks?.request) return navigator.locks.request(LOCK_NAME, work);
  return work();
}

/** Runs `work` while no refresh can run in any tab (e.g. replacing the sign-in). */
export function exclusive(work) {
  return withLock(work);
}

/**
 * A new access token from the refresh cookie.  Resolves to the token; rejects with
 * RefreshRefused when the cloud says the sign-in is over, or with another Error when the cloud
 * could not be asked (offline, 5xx: the current token is kept; try again later).
 * `force`: refresh even if the stored token is still fresh (the cloud refused it).
 */
export function refresh({ force = false } = {}) {
  if (inflight) return inflight;
  const seen = stored();
  inflight = withLock(async () => {
    // Another tab may have refreshed while we waited for the lock.
    const now = stored();
    if (now && now !== seen && msLeft(now) > margin(now)) return now;
    if (!force && now && msLeft(now) > margin(now)) return now;
    if (!canRefresh()) throw new RefreshRefused("Your session has expired. Please sign in again.", "refresh_missing");
    let response;
    try {
      response = await fetch("/api/auth/refresh", {
        method: "POST",
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch {
      throw new Error("Cannot reach the MuMu cloud.");
    }
    const data = await response.json().catch(() => null);
    if (response.ok && data?.access_token) {
      localStorage.setItem(TOKEN_KEY, data.access_token);
      schedule();
      return data.access_token;
    }
    if (response.status === 401) {
      throw new RefreshRefused(sentence(data?.error?.message), data?.error?.code);
    }
    throw new Error(data?.error?.message || `The MuMu cloud answered ${response.status}.`);
  }).finally(() => {
    inflight = null;
  });
  return inflight;
}

function sentence(message) {
  if (!message) return "Your session has expired. Please sign in again.";
  const text = message.charAt(0).toUpperCase() + message.slice(1);
  return text.replace(/;\s*sign in again\.?$/i, ". Please sign in again.").replace(/([^.])$/, "$1.");
}

/** A token valid for a while yet (refreshing first if needed); null when signed out. */
export async function freshToken() {
  const value = stored();
  if (value && msLeft(value) > margin(value)) return value;
  if (!canRefresh()) return token();
  try {
    return await refresh();
  } catch (error) {
    if (error instanceof RefreshRefused) throw error;
    return token(); // the cloud is unreachable: use what we have while it lasts
  }
}

// --- the background timer -------------------------------------------------------------------------

let timer = null;
let onRefused = null;

/** Refreshes before expiry, again and again; `refused(error)` is called if the sign-in ended. */
export function keepFresh(refused) {
  onRefused = refused;
  schedule();
}

function schedule() {
  clearTimeout(timer);
  const value = stored();
  if (!value || !canRefresh() || !onRefused) return;
  const wait = Math.max(0, msLeft(value) - margin(value));
  timer = setTimeout(tick, Math.min(wait, 2 ** 31 - 1));
}

async function tick() {
  try {
    await refresh();
  } catch (error) {
    if (error instanceof RefreshRefused) {
      onRefused?.(error);
      return;
    }
    // Unreachable for now: try again soon (the token may still be valid for a while).
    clearTimeout(timer);
    timer = setTimeout(tick, 5_000);
  }
}

// Timers sleep in background tabs and sleeping laptops: check when the page is looked at again.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") schedule();
});
window.addEventListener("online", () => schedule());

// --- a claim link waiting for a sign-in ----------------------------------------------------------

/** A claim link opened while signed out: remembered (this tab only) until the sign-in. */
export function rememberClaim(claimToken) {
  sessionStorage.setItem(CLAIM_KEY, claimToken);
}

export function takeClaim() {
  const value = sessionStorage.getItem(CLAIM_KEY);
  sessionStorage.removeItem(CLAIM_KEY);
  return value;
}

export function hasPendingClaim() {
  return sessionStorage.getItem(CLAIM_KEY) !== null;
}
