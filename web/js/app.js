// The app shell: hash routes, the signed-in session, the signaling connection, the banner.
//
// Routes: #/signin  #/signup  #/devices  #/pair  #/claim/<token>  #/watch/<device_id>  #/account
//         #/signup?email=<address>  #/grid  #/history  #/history/<device_id>  #/rollouts (operators)
//         #/share/<token> (an invitation link, sharing.js)
//         #/forgot  #/verify/<token>  #/reset/<token> (the links the cloud mails, mail-links.js)
// Test hook: window.__mumu = {signaling, watch, pc, state, stats, route}.

import * as api from "./api.js";
import { h, replace } from "./dom.js";
import * as session from "./session.js";
import { Signaling } from "./signaling.js";
import * as accountPage from "./pages/account.js";
import * as devicesPage from "./pages/devices.js";
import * as gridPage from "./pages/grid.js";
import * as historyPage from "./pages/history.js";
import * as pairPage from "./pages/pair.js";
import * as rolloutsPage from "./pages/rollouts.js";
import * as mailLinks from "./pages/mail-links.js";
import * as signinPage from "./pages/signin.js";
import * as watchPage from "./pages/watch.js";
import * as sharing from "./sharing.js";
import { MSG } from "./protocol.js";
import * as verification from "./verification.js";

const EXPIRED = "Your session has expired. Please sign in again.";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const connection = document.getElementById("connection");

let signaling = null;
let cleanup = null;
let pendingFlash = null;
let currentWatch = null;
let lastSocketRefresh = 0;
let quietReconnect = false; // reconnecting with a new token, not because the network failed
let currentRoute = null;

window.__mumu = {
  get signaling() {
    return signaling;
  },
  get watch() {
    return currentWatch;
  },
  get pc() {
    return currentWatch?.pc ?? null;
  },
  get state() {
    return currentWatch?.state ?? null;
  },
  get stats() {
    return currentWatch?.stats ?? null;
  },
  get route() {
    return currentRoute;
  },
};

// --- banner -----------------------------------------------------------------------------------

function flash(text, kind = "info") {
  banner.className = `banner ${kind}`;
  replace(banner, h("span", {}, text),
    h("button", { class: "banner-close", type: "button", "aria-label": "Dismiss", onclick: () => (banner.hidden = true) }, "×"));
  banner.dataset.kind = kind;
  banner.hidden = false;
}

/** Navigates and shows `text` on the page that follows. */
function go(hash, text = null, kind = "info") {
  if (text) pendingFlash = { text, kind };
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

// --- session ----------------------------------------------------------------------------------

/** A valid access token for the signaling socket; signs out when the sign-in is over. */
async function socketToken() {
  try {
    return await session.freshToken();
  } catch (error) {
    expired(error.message);
    return null;
  }
}

function startSignaling() {
  if (signaling) return;
  signaling = new Signaling({ getToken: socketToken });
  signaling.addEventListener("state", (event) => showConnection(event.detail));
  // A refused or revoked token: with a fresh one the same socket reconnects (a live view keeps
  // its session); if the sign-in itself is over, back to sign-in, saying why.
  signaling.addEventListener("unauthorized", () => socketRefused());
  signaling.addEventListener("signedout", () => socketRefused());
  // A camera left the list (unpaired, no longer shared): reading the list forgets its picture
  // at once, whichever page is open (the camera list reads it again itself).
  signaling.addEventListener("message", (event) => {
    if (event.detail?.type === MSG.DEVICES_CHANGED && currentRoute?.path !== "/devices") {
      api.listDevices().catch(() => null);
    }
  });
  signaling.start();
}

/**
 * The cloud refused the socket's token or closed it as signed out.  A token may simply have
 * expired on the way, or the password was just changed in this tab: with a new token the same
 * socket object reconnects (a live view keeps its session).  If that cannot help, sign in again.
 */
async function socketRefused() {
  const current = signaling;
  if (!current || !session.canRefresh() || Date.now() - lastSocketRefresh < 10_000) {
    expired();
    return;
  }
  lastSocketRefresh = Date.now();
  try {
    await session.refresh({ force: true });
  } catch (error) {
    // (unless this socket was closed meanwhile: that sign-in is left already, and this browser
    // may be in a new one, e.g. just signed in with the password a reset link set)
    if (error instanceof session.RefreshRefused && signaling === current) {
      expired(error.message);
      return;
    }
  }
  if (signaling === current) {
    quietReconnect = true;
    current.start();
  }
}

function stopSignaling() {
  if (!signaling) return;
  signaling.close();
  signaling = null;
  connection.hidden = true;
}

function showConnection({ state, retryInMs }) {
  connection.dataset.state = state;
  connection.hidden = state === "closed";
  const words = {
    connecting: "Connecting…",
    open: "Connected",
    reconnecting: retryInMs ? `Reconnecting in ${Math.max(1, Math.round(retryInMs / 1000))} s…` : "Reconnecting…",
  }[state];
  connection.textContent = words || "";
  connection.title = state === "open" ? "Connected to the MuMu cloud" : "Not connected to the MuMu cloud";
  if (state === "open") quietReconnect = false;
  if (state === "reconnecting" && (currentWatch || quietReconnect)) {
    // The watch page says in its own one state what losing the cloud means there (video may
    // well keep flowing peer to peer), or a new token is on its way: no second message.
  } else if (state === "reconnecting") {
    flash("Connection to the MuMu cloud lost. Reconnecting…", "warning");
    banner.dataset.signaling = "lost";
  } else if (state === "open" && banner.dataset.signaling === "lost") {
    delete banner.dataset.signaling;
    banner.hidden = true;
  }
}

function keepSignedIn() {
  session.keepFresh((refused) => expired(refused.message));
}

/** `signedUp`: the account was just made (the banner says "Check your mail"). */
function signedIn(accessToken, email, { signedUp = false, flash: text = null } = {}) {
  session.signIn(accessToken, email);
  keepSignedIn();
  startSignaling();
  accountChecked = email;
  verification.check({ justSignedUp: signedUp });
  const claim = session.takeClaim();
  const shared = sharing.takeLink();
  go(claim ? `#/claim/${claim}` : shared ? `#/share/${shared}` : "#/devices", text, "info");
}

/**
 * Leaves the sign-in in this browser: the socket closes, and everything kept of the account
 * here is forgotten (session.signOut: the token, the address, the pictures).  `remote`: the
 * cloud ends the sign-in too.  Every way of leaving comes here.
 */
async function leave({ remote = false } = {}) {
  stopSignaling();
  verification.hide();
  operatorChecked = null;
  accountChecked = null;
  document.getElementById("nav-rollouts").hidden = true;
  if (remote) {
    try {
      await api.logout();
    } catch {
      // Unreachable: the local sign-out still happens; the cookie ends with its sign-in.
    }
  }
  await session.signOut();
}

/** The sign-in is over (expired, revoked, signed out elsewhere): back to sign-in, saying why. */
async function expired(message = EXPIRED) {
  const wasSignedIn = Boolean(localStorage.getItem("mumu.token"));
  await leave();
  if (wasSignedIn || currentRoute?.auth) go("#/signin", message, "error");
}

/**
 * Signs this browser out, on the cloud too (its sign-in ends there: `remote`), then shows the
 * sign-in page with `text`.
 */
async function signOut(text = "You are signed out.", { remote = true } = {}) {
  await leave({ remote });
  go("#/signin", text, "info");
}

window.addEventListener(api.UNAUTHORIZED_EVENT, (event) => expired(event.detail?.message || EXPIRED));
// Another tab signed in or out, or refreshed the shared token.
window.addEventListener("storage", (event) => {
  if (event.key !== "mumu.token") return;
  if (!event.newValue) {
    // (that window forgot the account's data already; this one forgets what it holds)
    leave().then(() => go("#/signin", "You were signed out in another window.", "info"));
  } else if (!event.oldValue) {
    keepSignedIn();
    route();
  } else {
    keepSignedIn(); // a refresh by another tab: only the timer moves
  }
});

// --- routing ----------------------------------------------------------------------------------

const ROUTES = [
  { pattern: /^\/signin$/, auth: false, show: (ctx) => signinPage.render(ctx, { mode: "signin" }) },
  // An invitation mailed to an address without an account: #/signup?email=<address> (a hint).
  { pattern: /^\/signup(?:\?(.*))?$/, auth: false, show: (ctx, [query]) => signinPage.render(ctx, { mode: "signup", email: new URLSearchParams(query || "").get("email") }) },
  { pattern: /^\/forgot$/, auth: "any", show: (ctx) => mailLinks.renderForgot(ctx) },
  { pattern: /^\/verify\/([A-Za-z0-9_-]+)$/, auth: "any", show: (ctx, [token]) => mailLinks.renderVerify(ctx, { token }) },
  { pattern: /^\/reset\/([A-Za-z0-9_-]+)$/, auth: "any", show: (ctx, [token]) => mailLinks.renderReset(ctx, { token }) },
  { pattern: /^\/devices$/, auth: true, show: (ctx) => devicesPage.render(ctx) },
  { pattern: /^\/pair$/, auth: true, show: (ctx) => pairPage.render(ctx) },
  { pattern: /^\/rollouts$/, auth: true, show: (ctx) => rolloutsPage.render(ctx) },
  { pattern: /^\/claim\/([A-Za-z0-9_.~-]+)$/, auth: "claim", show: (ctx, [claimToken]) => pairPage.renderClaim(ctx, { claimToken }) },
  { pattern: /^\/watch\/([^/]+)$/, auth: true, show: (ctx, [id]) => watchPage.render(ctx, { deviceId: decodeURIComponent(id) }) },
  { pattern: /^\/account$/, auth: true, show: (ctx) => accountPage.render(ctx) },
  { pattern: /^\/share\/([A-Za-z0-9_-]+)$/, auth: "share", show: (ctx, [token]) => sharing.renderAccept(ctx, { token }) },
  { pattern: /^\/grid$/, auth: true, show: (ctx) => gridPage.render(ctx) },
  { pattern: /^\/history$/, auth: true, show: (ctx) => historyPage.render(ctx) },
  { pattern: /^\/history\/([^/]+)$/, auth: true, show: (ctx, [id]) => historyPage.render(ctx, { deviceId: decodeURIComponent(id) }) },
];

function route() {
  const path = window.location.hash.replace(/^#/, "") || "/";
  const signed = Boolean(session.token());
  const match = ROUTES.map((r) => ({ r, m: r.pattern.exec(path) })).find(({ m }) => m);

  if (!signed && session.canRefresh() && match && match.r.auth !== false && match.r.auth !== "any") {
    // The access token expired while the page was closed or asleep: get a new one first.
    session.refresh().then(
      () => {
        keepSignedIn();
        route();
      },
      async (error) => {
        const remember = () => {
          if (match.r.auth === "claim") session.rememberClaim(match.m[1]);
          if (match.r.auth === "share") sharing.rememberLink(match.m[1]);
        };
        if (error instanceof session.RefreshRefused) {
          await leave(); // (forgets everything of the account: the link is remembered after)
          remember();
          go("#/signin", error.message, "error");
        } else {
          remember();
          // The cloud cannot be asked now: the sign-in may well hold; a reload will tell.
          go("#/signin", "Cannot reach the MuMu cloud right now. Check your connection and try again.", "error");
        }
      },
    );
    return;
  }

  if (!match) {
    go(signed ? "#/devices" : "#/signin");
    return;
  }
  const { r, m } = match;
  if (r.auth === "claim" && !signed) {
    session.rememberClaim(m[1]);
    go("#/signin", "Sign in or create an account to add this camera to it.", "info");
    return;
  }
  if (r.auth === "share" && !signed) {
    sharing.rememberLink(m[1]);
    go("#/signin", "Sign in or create an account to accept this invitation to watch a camera.", "info");
    return;
  }
  if (r.auth === true && !signed) {
    const wasExpired = session.hasExpiredToken();
    if (wasExpired) leave().then(() => go("#/signin", EXPIRED, "error"));
    else go("#/signin");
    return;
  }
  if (r.auth === false && signed) {
    go("#/devices");
    return;
  }

  if (cleanup) cleanup();
  cleanup = null;
  if (pendingFlash) {
    flash(pendingFlash.text, pendingFlash.kind);
    pendingFlash = null;
  } else if (banner.dataset.signaling !== "lost") {
    banner.hidden = true;
  }
  if (signed) startSignaling();
  if (signed) showOperatorLink();
  if (signed && accountChecked !== session.email()) {
    // Once per sign-in (and per address): is the address confirmed? (the banner)
    accountChecked = session.email();
    verification.check();
  }
  nav.hidden = !signed;
  who.textContent = signed ? session.email() : "";
  for (const link of nav.querySelectorAll("a[data-route]")) {
    link.classList.toggle("active", path.startsWith(link.dataset.route));
  }
  document.title = "MuMu Camera";
  currentRoute = { path, auth: r.auth };

  const ctx = {
    signaling,
    show: (...nodes) => replace(main, ...nodes),
    flash,
    go,
    signedIn,
    signOut,
    leave,
    setWatch: (watch) => (currentWatch = watch),
  };
  cleanup = r.show(ctx, m.slice(1)) || null;
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

// Operators (the cloud's MUMU_OPERATORS) see the rollout page in the menu.
let operatorChecked = null;
let accountChecked = null; // the address whose account was read for the banner
async function showOperatorLink() {
  const link = document.getElementById("nav-rollouts");
  if (!link || operatorChecked === session.token()) return;
  operatorChecked = session.token();
  try {
    await api.fleet();
    link.hidden = false;
  } catch {
    link.hidden = true;
  }
}

document.getElementById("signout").addEventListener("click", () => signOut());

// --- light or dark (theme.js applies a stored choice before the first paint) -----------------

const themeToggle = document.getElementById("theme");
const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
function isDark() {
  const chosen = document.documentElement.dataset.theme;
  return chosen ? chosen === "dark" : systemDark.matches;
}
function showTheme() {
  themeToggle.setAttribute("aria-pressed", String(isDark()));
  document.querySelector("meta[name=theme-color]")?.setAttribute("content", isDark() ? "#0b1220" : "#101828");
}
themeToggle.addEventListener("click", () => {
  const next = isDark() ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  try {
    localStorage.setItem("mumu.theme", next);
  } catch {
    // not kept: this page only
  }
  showTheme();
});
systemDark.addEventListener("change", showTheme);
showTheme();
window.addEventListener("hashchange", route);
if (session.token()) keepSignedIn();
route();
