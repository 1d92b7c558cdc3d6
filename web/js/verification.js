// The banner while the account's address is not confirmed yet (GET /api/account answers
// `email_verified: false`): one sentence naming the address, one action, "Send again"
// (POST /api/account/verification).  Right after sign-up it reads "Check your mail: …".
// It goes when the address is confirmed: a link opened in this browser, the cloud answering
// "already verified", or the account read again (on sign-in, and whenever the page is looked
// at again: the link may have been opened on a phone).

import * as api from "./api.js";
import { h, replace } from "./dom.js";
import * as session from "./session.js";
import { ACCOUNT_WORDS } from "./words.js";

const banner = document.getElementById("verify-banner");
let address = null; // the unconfirmed address shown, or null: no banner
let checking = null;

function draw(sentence, { waitSeconds = 0 } = {}) {
  const button = h("button", {
    class: "button",
    type: "button",
    "data-testid": "verify-send-again",
    disabled: waitSeconds > 0,
    onclick: () => sendAgain(button),
  }, ACCOUNT_WORDS.sendAgain);
  replace(banner, h("span", { "data-testid": "verify-banner-text" }, sentence), button);
  banner.hidden = false;
  if (waitSeconds > 0) setTimeout(() => (button.disabled = false), waitSeconds * 1000);
}

/** Shows the banner for `account` (as GET /api/account gives it) or hides it. */
export function show(account, { justSignedUp = false } = {}) {
  if (!account || account.email_verified !== false) {
    hide();
    return;
  }
  address = account.email;
  draw(justSignedUp ? ACCOUNT_WORDS.checkMail(address) : ACCOUNT_WORDS.confirmAddress(address));
}

export function hide() {
  address = null;
  banner.hidden = true;
  replace(banner);
}

/**
 * Reads the account again and shows what it says (errors leave the banner as it is); resolves
 * to the account, or null.  The address kept for display follows a change made by a link.
 */
export function check(options = {}) {
  checking ||= api.account().then(
    (account) => {
      show(account, options);
      if (account?.email && session.token()) session.setEmail(account.email);
      return account;
    },
    () => null, // a 401 signs out on its own; unreachable: the next look tries again
  ).finally(() => {
    checking = null;
  });
  return checking;
}

/** An address was confirmed in this browser: the banner goes if it was about that address. */
export function confirmed(email) {
  if (address && email && address.toLowerCase() === String(email).toLowerCase()) hide();
}

async function sendAgain(button) {
  if (!address) return;
  button.disabled = true;
  try {
    await api.resendVerification();
    draw(ACCOUNT_WORDS.sentAgain(address));
  } catch (failure) {
    if (failure.code === "already_verified") {
      hide();
    } else if (failure.status === 429) {
      const wait = failure.retryAfter > 0 ? failure.retryAfter : 60;
      draw(ACCOUNT_WORDS.askAgainIn(wait), { waitSeconds: wait });
    } else if (failure.status !== 401) {
      draw(failure.message);
    }
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && address) check();
});
