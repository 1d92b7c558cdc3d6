// The signed-in session, kept in the browser: the access token (localStorage, so that every tab
// shares it), the email it was issued for, and a claim link waiting for a sign-in.

const TOKEN_KEY = "mumu.token";
const EMAIL_KEY = "mumu.email";
const CLAIM_KEY = "mumu.pendingClaim";

/** The JWT's claims (unverified: only for the expiry and display), or null. */
function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

/** The token if there is one and it has not expired, else null. */
export function token() {
  const value = localStorage.getItem(TOKEN_KEY);
  if (!value) return null;
  return isExpired(value) ? null : value;
}

/** Whether a token was stored but has expired (the person should be told so). */
export function hasExpiredToken() {
  const value = localStorage.getItem(TOKEN_KEY);
  return Boolean(value) && isExpired(value);
}

function isExpired(value) {
  const exp = claims(value)?.exp;
  return typeof exp === "number" && exp * 1000 <= Date.now();
}

/** Milliseconds until the stored token expires (Infinity if it carries no expiry). */
export function msUntilExpiry() {
  const value = localStorage.getItem(TOKEN_KEY);
  const exp = value ? claims(value)?.exp : undefined;
  return typeof exp === "number" ? exp * 1000 - Date.now() : Infinity;
}

export function signIn(accessToken, email) {
  localStorage.setItem(TOKEN_KEY, accessToken);
  localStorage.setItem(EMAIL_KEY, email);
}

export function signOut() {
  localStorage.removeItem(TOKEN_KEY);
}

export function email() {
  return localStorage.getItem(EMAIL_KEY) || "";
}

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
