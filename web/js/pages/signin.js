// Sign in (#/signin) and sign up (#/signup).
//
// Sign-up answers the same whether or not the address had an account (the cloud mails a
// confirmation link to a new one, and a note with a reset link to the owner of an existing one):
// the page says "Check your mail" and signs in with the password just typed.  That fails only
// when the address had an account with another password; the page then says no more than
// "Check your mail" either.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { ACCOUNT_WORDS } from "../words.js";
import { EMAIL_DRAFT } from "./mail-links.js";

/** `email`: an address to start with (an invitation's link names it). */
export function render(ctx, { mode, email: hint = null }) {
  const signup = mode === "signup";
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "form-error", hidden: true });
  const email = h("input", {
    type: "email",
    name: "email",
    autocomplete: "email",
    required: true,
    "data-testid": "email",
    placeholder: "you@example.org",
  });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: signup ? "new-password" : "current-password",
    required: true,
    minlength: signup ? 8 : null,
    "data-testid": "password",
  });
  const submit = h("button", { class: "button primary wide", type: "submit", "data-testid": "submit" },
    signup ? "Create account" : "Sign in");

  const form = h("form", { class: "stack", "data-testid": "auth-form", onsubmit: onSubmit },
    h("label", {}, "Email", email),
    h("label", {}, "Password", password,
      signup ? h("span", { class: "hint" }, "At least 8 characters.") : null),
    error,
    submit,
    signup ? null : h("p", { class: "forgot" }, h("a", {
      href: "#/forgot",
      "data-testid": "to-forgot",
      onclick: () => email.value.trim() && sessionStorage.setItem(EMAIL_DRAFT, email.value.trim()),
    }, "Forgot your password?")),
  );

  /** Passwords are checked by a bounded pool: when it is busy (503), wait as told and retry. */
  async function patiently(call) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (failure) {
        const wait = failure.retryAfter;
        if (failure.status !== 503 || attempt >= 3 || !(wait > 0 && wait <= 15)) throw failure;
        submit.textContent = `The MuMu cloud is busy; trying again in ${wait} s…`;
        await new Promise((resolve) => setTimeout(resolve, wait * 1000));
        submit.textContent = signup ? "Creating account…" : "Signing in…";
      }
    }
  }

  async function onSubmit(event) {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    submit.textContent = signup ? "Creating account…" : "Signing in…";
    const address = email.value.trim();
    let registered = null;
    try {
      if (signup) registered = (await patiently(() => api.register(address, password.value)))?.email || address;
      const { access_token: accessToken } = await patiently(() => api.login(address, password.value));
      ctx.signedIn(accessToken, registered || address, { signedUp: Boolean(registered) });
    } catch (failure) {
      if (registered && failure.code === "bad_credentials") {
        checkMail(registered);
        return;
      }
      // The next step as a link where there is one: an address with an account signs in.
      const next = failure.code === "email_taken"
        ? h("a", {
          href: "#/signin",
          "data-testid": "signin-instead",
          onclick: () => sessionStorage.setItem(EMAIL_DRAFT, address),
        }, "Sign in instead")
        : null;
      replace(error, failure.message.replace(/ Sign in instead\.$/, next ? " " : ""), next);
      error.hidden = false;
      submit.disabled = false;
      submit.textContent = signup ? "Create account" : "Sign in";
    }
  }

  /** After sign-up, when the address had an account: what a new one is told, and no more. */
  function checkMail(address) {
    ctx.show(h("section", { class: "auth" },
      h("div", { class: "auth-intro" },
        h("img", { src: "img/logo.svg", alt: "", class: "auth-logo", width: 56, height: 56 }),
        h("h1", { "data-testid": "page-title" }, "Check your mail")),
      h("div", { class: "card auth-card stack" },
        h("p", { class: "lead", role: "status", "data-testid": "check-mail" }, ACCOUNT_WORDS.checkMail(address)),
        h("a", {
          class: "button primary wide",
          href: "#/signin",
          "data-testid": "to-signin",
          onclick: () => sessionStorage.setItem(EMAIL_DRAFT, address),
        }, "Sign in"))));
  }

  ctx.show(
    h("section", { class: "auth" },
      h("div", { class: "auth-intro" },
        h("img", { src: "img/logo.svg", alt: "", class: "auth-logo", width: 56, height: 56 }),
        h("h1", { "data-testid": "page-title" }, signup ? "Create your account" : "Sign in"),
        h("p", { class: "lead" }, signup
          ? "One account for all your MuMu cameras. Video goes straight from the camera to you."
          : "Watch your MuMu cameras live, from anywhere."),
      ),
      h("div", { class: "card auth-card" },
        form,
        h("p", { class: "switch" }, signup
          ? ["Already have an account? ", h("a", { href: "#/signin", "data-testid": "to-signin" }, "Sign in")]
          : ["New here? ", h("a", { href: "#/signup", "data-testid": "to-signup" }, "Create an account")]),
      ),
    ),
  );
  const draft = sessionStorage.getItem(EMAIL_DRAFT) || (hint ? hint.trim().slice(0, 320) : null);
  sessionStorage.removeItem(EMAIL_DRAFT);
  if (draft) {
    email.value = draft;
    password.focus();
  } else {
    email.focus();
  }
}
