// The account (#/account): its address (confirmed or not, changing it), where it is signed in,
// changing the password, signing out (here or everywhere), and deleting it.
//
// The list of sign-ins is read again whenever it may have changed: when the cloud says so over
// the signaling socket (sign_ins_changed: a browser signed in or out, one was signed out from
// here or elsewhere, the password changed), after this page changes the password, when the page
// is looked at again, when the signaling socket comes back, and, as a fallback only (a sign-in
// that lapsed unused sends nothing), every minute while it is open and seen.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { MSG } from "../protocol.js";
import * as session from "../session.js";
import { ago } from "../time.js";
import * as verification from "../verification.js";
import { ACCOUNT_WORDS } from "../words.js";

const SIGN_INS_EVERY_MS = 60_000;

/** "Chrome on Linux" from a User-Agent string, good enough to recognise one's own browsers. */
export function browserName(userAgent) {
  if (!userAgent) return "A browser";
  const ua = String(userAgent);
  const browser =
    /Edg\//.test(ua) ? "Edge"
      : /Firefox\//.test(ua) ? "Firefox"
        : /Chrome\/|Chromium\//.test(ua) ? "Chrome"
          : /Safari\//.test(ua) ? "Safari"
            : ua.split(/[/ ]/)[0] || "A browser";
  const system =
    /iPhone|iPad/.test(ua) ? "iOS"
      : /Android/.test(ua) ? "Android"
        : /Mac OS X|Macintosh/.test(ua) ? "macOS"
          : /Windows/.test(ua) ? "Windows"
            : /Linux|X11/.test(ua) ? "Linux"
              : "";
  return system ? `${browser} on ${system}` : browser;
}

function passwordInput(testid, autocomplete, label) {
  return h("input", {
    type: "password",
    autocomplete,
    required: true,
    "data-testid": testid,
    "aria-label": label,
  });
}

export function render(ctx) {
  const email = h("strong", { "data-testid": "account-email" }, session.email());
  const unconfirmed = h("span", { class: "tag", "data-testid": "email-unconfirmed", hidden: true }, "Not confirmed yet");
  const since = h("span", { class: "muted" });
  const signIns = h("ul", { class: "stack sign-ins", "data-testid": "sign-ins", "aria-busy": "true" });
  const loadError = h("p", { class: "form-error", role: "alert", hidden: true });
  const address = emailSection(() => load());

  ctx.show(
    h("section", { class: "narrow stack" },
      h("h1", { "data-testid": "page-title" }, "Your account"),
      h("div", { class: "card stack" },
        h("p", {}, "Signed in as ", email, ". ", unconfirmed, " ", since),
        loadError,
        h("h2", {}, "Where you are signed in"),
        signIns,
        signOutSection(ctx),
      ),
      address.element,
      passwordSection(ctx, () => load()),
      deleteSection(ctx),
    ),
  );

  let live = true;
  let loading = null;
  let again = false; // asked while a read was on its way: that read may predate the change
  function load() {
    if (loading) {
      again = true;
      return loading;
    }
    loading = api.account().then(
      (account) => {
        if (!live) return;
        loadError.hidden = true;
        email.textContent = account.email;
        unconfirmed.hidden = account.email_verified !== false;
        address.show(account);
        verification.show(account);
        since.textContent = `Account created ${new Date(account.created_at).toLocaleDateString()}.`;
        signIns.removeAttribute("aria-busy");
        replace(signIns, account.sign_ins.map((s) => signInRow(s, () => load())));
      },
      (failure) => {
        if (!live || failure.status === 401) return;
        loadError.textContent = `Could not load your account: ${failure.message}`;
        loadError.hidden = false;
      },
    ).finally(() => {
      loading = null;
      if (again && live) {
        again = false;
        load();
      }
    });
    return loading;
  }
  load();

  const timer = setInterval(() => {
    if (document.visibilityState === "visible") load();
  }, SIGN_INS_EVERY_MS);
  const onVisible = () => {
    if (document.visibilityState === "visible") load();
  };
  const onReady = (event) => {
    if (event.detail.reconnected) load();
  };
  const onMessage = (event) => {
    if (event.detail?.type === MSG.SIGN_INS_CHANGED) load();
  };
  document.addEventListener("visibilitychange", onVisible);
  ctx.signaling?.addEventListener("ready", onReady);
  ctx.signaling?.addEventListener("message", onMessage);
  return () => {
    live = false;
    clearInterval(timer);
    document.removeEventListener("visibilitychange", onVisible);
    ctx.signaling?.removeEventListener("ready", onReady);
    ctx.signaling?.removeEventListener("message", onMessage);
  };
}

/** One browser signed in to the account; another one can be signed out from here. */
function signInRow(signIn, reload) {
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "sign-in-error", hidden: true });
  const signOut = signIn.current ? null : h("button", {
    class: "button small",
    type: "button",
    "data-testid": "sign-in-revoke",
    "aria-label": `Sign out ${browserName(signIn.user_agent)}`,
    onclick: async () => {
      signOut.disabled = true;
      error.hidden = true;
      try {
        await api.revokeSignIn(signIn.id);
      } catch (failure) {
        if (failure.status === 401) return;
        if (failure.status !== 404) { // 404: it ended already, which is what was asked
          error.textContent = ACCOUNT_WORDS.signInNotEnded(failure.message);
          error.hidden = false;
          signOut.disabled = false;
          return;
        }
      }
      reload();
    },
  }, "Sign out");
  return h("li", { "data-testid": "sign-in", "data-sign-in": signIn.id },
    h("strong", {}, browserName(signIn.user_agent)),
    signIn.current ? h("span", { class: "tag", "data-testid": "this-browser" }, "This browser") : null,
    h("span", { class: "muted small" }, ` · signed in ${ago(signIn.created_at) || "just now"}, last active ${ago(signIn.last_used_at) || "just now"}`),
    signOut,
    error,
  );
}

/** The address: waiting to be confirmed, or changing it (the new one is confirmed first). */
function emailSection(reload) {
  const pending = h("p", { role: "status", "data-testid": "email-pending", hidden: true });
  const next = h("input", { type: "email", autocomplete: "email", required: true, "data-testid": "new-email", "aria-label": "New address" });
  const password = passwordInput("email-password", "current-password", "Current password");
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "email-error", hidden: true });
  const submit = h("button", { class: "button", type: "submit", "data-testid": "email-submit" }, "Change address");
  let current = session.email();

  function showPending(newAddress) {
    pending.textContent = newAddress ? ACCOUNT_WORDS.emailPending(newAddress, current) : "";
    pending.hidden = !newAddress;
  }

  async function onSubmit(event) {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const answer = await api.changeEmail(next.value.trim(), password.value);
      showPending(answer?.pending_email || next.value.trim());
      next.value = "";
      password.value = "";
      reload();
    } catch (failure) {
      if (failure.status === 401) return;
      error.textContent = failure.code === "wrong_password" ? "Your current password is not right." : failure.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  }

  const element = h("form", { class: "card stack", "data-testid": "email-form", onsubmit: onSubmit },
    h("h2", {}, "Change your address"),
    h("p", { class: "muted" }, "We mail the new address a link; it replaces the old one once you open it."),
    pending,
    h("label", {}, "New address", next),
    h("label", {}, "Current password", password),
    error,
    h("div", { class: "row" }, submit),
  );
  return {
    element,
    show(account) {
      current = account.email;
      showPending(account.pending_email || null);
    },
  };
}

function signOutSection(ctx) {
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const panel = h("div", { class: "inline-panel", hidden: true });
  const everywhere = h("button", { class: "button", type: "button", "data-testid": "signout-everywhere", onclick: () => {
    const confirmButton = h("button", { class: "button danger", type: "button", "data-testid": "signout-everywhere-confirm", onclick: async () => {
      confirmButton.disabled = true;
      try {
        await api.logoutEverywhere();
        ctx.signOut("You are signed out on every browser and device.");
      } catch (failure) {
        if (failure.status === 401) return;
        error.textContent = `Could not sign out everywhere: ${failure.message}`;
        error.hidden = false;
        confirmButton.disabled = false;
      }
    } }, "Sign out everywhere");
    replace(panel,
      h("p", {}, "Sign out on every browser and device, this one included? Live views on them stop."),
      h("div", { class: "row" }, confirmButton,
        h("button", { class: "button", type: "button", onclick: () => (panel.hidden = true) }, "Cancel")),
    );
    panel.hidden = false;
  } }, "Sign out everywhere…");
  return h("div", { class: "stack" },
    h("div", { class: "row" },
      h("button", { class: "button", type: "button", "data-testid": "account-signout", onclick: () => ctx.signOut() }, "Sign out"),
      everywhere,
    ),
    panel,
    error,
  );
}

function passwordSection(ctx, reload) {
  const current = passwordInput("current-password", "current-password", "Current password");
  const next = passwordInput("new-password", "new-password", "New password");
  const again = passwordInput("new-password-again", "new-password", "New password again");
  next.minLength = 8;
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "password-error", hidden: true });
  const submit = h("button", { class: "button primary", type: "submit", "data-testid": "password-submit" }, "Change password");

  async function onSubmit(event) {
    event.preventDefault();
    error.hidden = true;
    if (next.value !== again.value) {
      error.textContent = "The two new passwords are not the same.";
      error.hidden = false;
      return;
    }
    submit.disabled = true;
    submit.textContent = "Changing…";
    try {
      // Under the refresh lock: the cloud closes this tab's socket as it revokes the old
      // sign-in, and the reconnect must find the new token, not refresh with the old one.
      await session.exclusive(async () => {
        const tokens = await api.changePassword(current.value, next.value);
        session.signIn(tokens.access_token, session.email());
      });
      for (const input of [current, next, again]) input.value = "";
      ctx.flash("Your password was changed. Every other browser and device was signed out.", "info");
      reload(); // the list of sign-ins: this browser alone now
    } catch (failure) {
      if (failure.status === 401) return;
      error.textContent = failure.code === "wrong_password"
        ? "Your current password is not right."
        : failure.message.charAt(0).toUpperCase() + failure.message.slice(1);
      error.hidden = false;
    } finally {
      submit.disabled = false;
      submit.textContent = "Change password";
    }
  }

  return h("form", { class: "card stack", "data-testid": "password-form", onsubmit: onSubmit },
    h("h2", {}, "Change password"),
    h("p", { class: "muted" }, "Every other browser and device signed in to this account is signed out."),
    h("label", {}, "Current password", current),
    h("label", {}, "New password", next, h("span", { class: "hint" }, "At least 8 characters.")),
    h("label", {}, "New password again", again),
    error,
    h("div", { class: "row" }, submit),
  );
}

function deleteSection(ctx) {
  const password = passwordInput("delete-password", "current-password", "Password");
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "delete-error", hidden: true });
  const panel = h("div", { class: "inline-panel", hidden: true });

  function confirmStep(event) {
    event.preventDefault();
    error.hidden = true;
    if (!password.value) {
      error.textContent = "Enter your password to delete your account.";
      error.hidden = false;
      return;
    }
    const confirmButton = h("button", { class: "button danger", type: "button", "data-testid": "delete-confirm", onclick: async () => {
      confirmButton.disabled = true;
      try {
        await api.deleteAccount(password.value);
        ctx.signOut("Your account was deleted. Your cameras were unpaired and can be added to another account.", { remote: false });
      } catch (failure) {
        if (failure.status === 401) return;
        panel.hidden = true;
        error.textContent = failure.code === "wrong_password"
          ? "That is not your password. Your account was not deleted."
          : `Could not delete your account: ${failure.message}`;
        error.hidden = false;
        confirmButton.disabled = false;
      }
    } }, "Delete my account for good");
    replace(panel,
      h("p", {}, "This cannot be undone. Your cameras are unpaired (live views stop) and everything stored about your account is deleted."),
      h("div", { class: "row" }, confirmButton,
        h("button", { class: "button", type: "button", onclick: () => (panel.hidden = true) }, "Keep my account")),
    );
    panel.hidden = false;
  }

  return h("form", { class: "card stack", "data-testid": "delete-form", onsubmit: confirmStep },
    h("h2", {}, "Delete account"),
    h("p", { class: "muted" }, "Deletes your account and unpairs all your cameras."),
    h("label", {}, "Password", password),
    error,
    h("div", { class: "row" },
      h("button", { class: "button subtle-danger", type: "submit", "data-testid": "delete-account" }, "Delete account…")),
    panel,
  );
}
