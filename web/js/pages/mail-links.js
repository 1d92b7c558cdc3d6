// The pages the cloud's mails lead to, and the way to ask for one:
//   #/verify/<token>  proves an address (the account's own, or a new one it is changing to)
//   #/reset/<token>   a new password, then signed in with it
//   #/forgot          "Forgot your password?": a reset link to the address, if it has an account
// The links work signed in or not (a mail may be opened on another device).

import * as api from "../api.js";
import { h } from "../dom.js";
import * as session from "../session.js";
import * as verification from "../verification.js";
import { ACCOUNT_WORDS } from "../words.js";

export const EMAIL_DRAFT = "mumu.emailDraft"; // the address carried to the sign-in form

function page(title, ...body) {
  return h("section", { class: "auth" },
    h("div", { class: "auth-intro" },
      h("img", { src: "img/logo.svg", alt: "", class: "auth-logo", width: 56, height: 56 }),
      h("h1", { "data-testid": "page-title" }, title)),
    h("div", { class: "card auth-card stack" }, ...body));
}

function said(text, testid = "link-result") {
  return h("p", { class: "lead", role: "status", "data-testid": testid }, text);
}

function signInLink(address = "") {
  return h("a", {
    class: "button primary wide",
    href: "#/signin",
    "data-testid": "link-action",
    onclick: () => address && sessionStorage.setItem(EMAIL_DRAFT, address),
  }, "Sign in");
}

// --- #/verify/<token> ---------------------------------------------------------------------------

export function renderVerify(ctx, { token }) {
  const signedIn = Boolean(session.token());
  ctx.show(page("Confirming your address", h("p", { class: "muted loading", "data-testid": "link-busy" }, "Confirming…")));
  let live = true;
  api.verifyEmail(token).then(
    ({ email }) => {
      if (!live) return;
      verification.confirmed(email);
      if (signedIn) {
        // The address of this account may have changed: the top bar shows the new one.
        verification.check().then(() => {
          if (live) document.getElementById("who").textContent = session.email();
        });
      }
      ctx.show(page("Address confirmed",
        said(ACCOUNT_WORDS.confirmed(email)),
        signedIn
          ? h("a", { class: "button primary wide", href: "#/devices", "data-testid": "link-action" }, "Continue")
          : signInLink(email)));
    },
    (failure) => {
      if (!live) return;
      ctx.show(page("This link did not work",
        said(ACCOUNT_WORDS.link[failure.code] || failure.message, "link-error"),
        verifyNextStep(failure, signedIn)));
    },
  );
  return () => {
    live = false;
  };
}

/** The one thing to do after a refused verification link. */
function verifyNextStep(failure, signedIn) {
  if (failure.status === 0 || failure.status === 429 || failure.status >= 500) {
    // Not the link's fault (unreachable, busy, too many tries from here): the link again.
    return h("button", { class: "button primary wide", type: "button", "data-testid": "link-action", onclick: () => window.location.reload() }, "Try again");
  }
  if (failure.code === "email_taken") {
    return signedIn
      ? h("a", { class: "button primary wide", href: "#/account", "data-testid": "link-action" }, "Open your account")
      : signInLink();
  }
  if (!signedIn) return signInLink(); // signed in, the banner offers "Send again"
  if (failure.code === "link_used") {
    return h("a", { class: "button primary wide", href: "#/devices", "data-testid": "link-action" }, "Continue");
  }
  // Invalid or expired: a new link, here and now.
  const result = h("p", { role: "status", "data-testid": "link-resend-result" });
  const button = h("button", { class: "button primary wide", type: "button", "data-testid": "link-action", onclick: async () => {
    button.disabled = true;
    try {
      await api.resendVerification();
      result.textContent = ACCOUNT_WORDS.sentAgain(session.email() || "your address");
    } catch (refusal) {
      if (refusal.code === "already_verified") verification.hide();
      result.textContent = refusal.status === 429 && refusal.retryAfter > 0
        ? ACCOUNT_WORDS.askAgainIn(refusal.retryAfter)
        : refusal.message;
      button.disabled = refusal.code === "already_verified";
    }
  } }, "Send a new link");
  return h("div", { class: "stack" }, button, result);
}

// --- #/reset/<token> ----------------------------------------------------------------------------

export function renderReset(ctx, { token }) {
  const password = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: 8, "data-testid": "reset-password" });
  const again = h("input", { type: "password", autocomplete: "new-password", required: true, minlength: 8, "data-testid": "reset-password-again" });
  const error = h("div", { class: "form-error", role: "alert", "data-testid": "form-error", hidden: true });
  const submit = h("button", { class: "button primary wide", type: "submit", "data-testid": "reset-submit" }, "Set new password");

  function refuse(text, action = null) {
    error.replaceChildren(text, action ? " " : "", action || "");
    error.hidden = false;
  }

  async function onSubmit(event) {
    event.preventDefault();
    error.hidden = true;
    if (password.value !== again.value) {
      refuse("The two passwords are not the same.");
      return;
    }
    submit.disabled = true;
    submit.textContent = "Setting…";
    let email;
    try {
      ({ email } = await api.resetPassword(token, password.value));
    } catch (failure) {
      submit.disabled = false;
      submit.textContent = "Set new password";
      const dead = ["link_invalid", "link_expired", "link_used"].includes(failure.code);
      refuse(ACCOUNT_WORDS.link[failure.code] || failure.message,
        dead ? h("a", { href: "#/forgot", "data-testid": "link-action" }, "Send me a new link") : null);
      return;
    }
    // Every sign-in of that account just ended (this browser's too, if it was one of them):
    // leave whatever sign-in this browser had, then sign in with the new password.
    await ctx.leave();
    try {
      const { access_token: accessToken } = await api.login(email, password.value);
      ctx.signedIn(accessToken, email, { flash: ACCOUNT_WORDS.passwordReset });
    } catch {
      sessionStorage.setItem(EMAIL_DRAFT, email);
      ctx.go("#/signin", `${ACCOUNT_WORDS.passwordReset} Sign in with the new password.`, "info");
    }
  }

  ctx.show(page("Choose a new password",
    h("form", { class: "stack", "data-testid": "reset-form", onsubmit: onSubmit },
      h("label", {}, "New password", password, h("span", { class: "hint" }, "At least 8 characters.")),
      h("label", {}, "New password again", again),
      error,
      submit)));
  password.focus();
}

// --- #/forgot -----------------------------------------------------------------------------------

export function renderForgot(ctx) {
  const email = h("input", { type: "email", autocomplete: "email", required: true, "data-testid": "forgot-email", placeholder: "you@example.org" });
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "form-error", hidden: true });
  const submit = h("button", { class: "button primary wide", type: "submit", "data-testid": "forgot-submit" }, "Send me a link");
  email.value = sessionStorage.getItem(EMAIL_DRAFT) || "";
  sessionStorage.removeItem(EMAIL_DRAFT);

  async function onSubmit(event) {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    const address = email.value.trim();
    try {
      await api.forgotPassword(address);
    } catch (failure) {
      // Only refusals of the request itself (too many from here, unreachable): never whether
      // the address has an account, which the cloud does not say.
      error.textContent = failure.message;
      error.hidden = false;
      submit.disabled = false;
      return;
    }
    ctx.show(page("Check your mail", said(ACCOUNT_WORDS.forgotSent(address), "forgot-sent"), signInLink(address)));
  }

  ctx.show(page("Forgot your password?",
    h("form", { class: "stack", "data-testid": "forgot-form", onsubmit: onSubmit },
      h("p", { class: "muted" }, "We mail you a link to choose a new one."),
      h("label", {}, "Email", email),
      error,
      submit),
    h("p", { class: "switch" }, h("a", { href: "#/signin", "data-testid": "to-signin" }, "Back to sign in"))));
  email.focus();
}
