// The account (#/account): where it is signed in, changing the password, signing out (here or
// everywhere), and deleting it.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import * as session from "../session.js";
import { ago } from "../time.js";

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
  const since = h("span", { class: "muted" });
  const signIns = h("ul", { class: "stack sign-ins", "data-testid": "sign-ins", "aria-busy": "true" });
  const loadError = h("p", { class: "form-error", role: "alert", hidden: true });

  ctx.show(
    h("section", { class: "narrow stack" },
      h("h1", { "data-testid": "page-title" }, "Your account"),
      h("div", { class: "card stack" },
        h("p", {}, "Signed in as ", email, ". ", since),
        loadError,
        h("h2", {}, "Where you are signed in"),
        signIns,
        signOutSection(ctx),
      ),
      passwordSection(ctx),
      deleteSection(ctx),
    ),
  );

  let live = true;
  api.account().then(
    (account) => {
      if (!live) return;
      email.textContent = account.email;
      since.textContent = `Account created ${new Date(account.created_at).toLocaleDateString()}.`;
      signIns.removeAttribute("aria-busy");
      replace(signIns, account.sign_ins.map((s) =>
        h("li", { "data-testid": "sign-in" },
          h("strong", {}, browserName(s.user_agent)),
          s.current ? h("span", { class: "tag", "data-testid": "this-browser" }, "This browser") : null,
          h("span", { class: "muted small" }, ` · signed in ${ago(s.created_at) || "just now"}, last active ${ago(s.last_used_at) || "just now"}`),
        )));
    },
    (failure) => {
      if (!live || failure.status === 401) return;
      loadError.textContent = `Could not load your account: ${failure.message}`;
      loadError.hidden = false;
    },
  );
  return () => {
    live = false;
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

function passwordSection(ctx) {
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
