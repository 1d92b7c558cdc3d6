// The app's own words for what the cloud's HTTP API answers: one sentence that says what
// happened and what to do next, by error code (never the server's sentence, which is written
// for developers).  Pages add an action button where there is one ("Sign in instead").

const CODE_WORDS = {
  network: "Cannot reach the MuMu cloud. Check your connection and try again.",
  bad_credentials: "That e-mail address and password do not match. Check them and try again.",
  email_taken: "There is already an account with this e-mail address. Sign in instead.",
  wrong_password: "That is not the password of this account.",
  rate_limited: "Too many attempts.",
  code_pairing_paused:
    "Too many codes were tried recently, so for now a code works only from the camera's own network. Scan the QR code on the camera instead, or connect to the camera's network.",
  invalid_code: "That code is not right. Type the 6 digits the camera shows now.",
  code_expired: "That code has expired. Type the new code the camera shows now.",
  owned_by_other:
    "This camera is on another account. Ask its owner to unpair it, or reset the camera (hold its button while it starts).",
  already_yours: "This camera is already on your account.",
  already_paired: "This camera is already on an account.",
  not_found: "That was not found. It may have been removed meanwhile.",
  forbidden: "You are not allowed to do that.",
  unauthorized: "Your session has expired. Please sign in again.",
  busy: "The MuMu cloud is busy right now.",
  unavailable: "The MuMu cloud is restarting or busy.",
  internal: "The MuMu cloud had a problem. Try again in a moment.",
  too_large: "That is too large to send.",
  already_verified: "Your address is already confirmed.",
  email_unverified:
    "Confirm your address first: open the link we mailed to it, or press “Send again” at the top of the page.",
  link_invalid: "This link is not valid: it may have been cut short when it was copied.",
  link_expired: "This link has expired.",
  link_used: "This link was already used.",
};

const STATUS_WORDS = {
  400: "That was not accepted. Check what you entered.",
  401: CODE_WORDS.unauthorized,
  403: CODE_WORDS.forbidden,
  404: CODE_WORDS.not_found,
  409: "That conflicts with something that exists already.",
  410: "That has expired.",
  422: "Check what you entered.",
  429: CODE_WORDS.rate_limited,
  500: CODE_WORDS.internal,
  502: "The MuMu cloud cannot be reached right now.",
  503: CODE_WORDS.unavailable,
  504: "The MuMu cloud took too long to answer.",
};

// invalid_input: the server names the field first ("email: not an e-mail address").
const FIELD_WORDS = [
  [/^email:/, "That is not an e-mail address. Check it and try again."],
  [/^(new_)?password: too weak/, "Choose a stronger password: use more different characters."],
  [/^new_password: choose a different/, "Choose a password different from your current one."],
  [/^(new_)?password:/, "Choose a password of at least 8 characters."],
  [/^name:/, "Enter a name of 1 to 64 letters, digits or spaces."],
  [/^code:/, "The pairing code has 6 digits. It is shown on the camera's screen."],
  // the operators' releases (cloud/updates/api.py)
  [/ is signed for .+ only$|^arches|architectures \(arches\)/,
    "That release is not signed for those architectures. Name the ones it was published for, such as aarch64."],
  [/ is not in the signed repository/, "That version is not in the signed repository. Publish it with mumu-release first."],
];

/** "56 seconds", "3 minutes". */
export function waitWords(seconds) {
  if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"}`;
  return `${Math.ceil(seconds / 60)} minutes`;
}

/**
 * The sentence for a refusal: `code` (the cloud's error code), `status` (HTTP, 0: unreachable),
 * `serverMessage` (only to tell invalid_input's fields apart), `retryAfter` (seconds or null).
 */
export function refusalWords({ code, status, serverMessage = "", retryAfter = null }) {
  let words = CODE_WORDS[code];
  if (!words && code === "invalid_input") {
    words = FIELD_WORDS.find(([pattern]) => pattern.test(serverMessage))?.[1] || STATUS_WORDS[422];
  }
  words = words || STATUS_WORDS[status] || `The MuMu cloud refused that (error ${status || code}).`;
  const waiting = (status === 429 || status === 503 || status === 502) && retryAfter > 0;
  if (waiting) return `${words} Try again in ${waitWords(retryAfter)}.`;
  if ((status >= 500 || status === 429) && !/try again/i.test(words)) return `${words} Try again in a moment.`;
  return words;
}

/**
 * The sentences of an account's address and password (the links the cloud mails).  Each one
 * names the address it is about, so that the person sees where to look.
 */
export const ACCOUNT_WORDS = {
  /** Right after sign-up (and on its "check your mail" screen). */
  checkMail: (address) => `Check your mail: we sent a link to ${address}.`,
  /** The banner while the address is not confirmed. */
  confirmAddress: (address) => `Confirm your address — we sent a link to ${address}.`,
  sendAgain: "Send again",
  sentAgain: (address) => `We sent a new link to ${address}.`,
  askAgainIn: (seconds) => `You can ask for another link in ${waitWords(seconds)}.`,
  confirmed: (address) => `Your address ${address} is confirmed.`,
  forgotSent: (address) => `If an account uses ${address}, we sent it a link.`,
  emailPending: (next, current) =>
    `Confirm the new address from the mail we sent to ${next}; until then you sign in with ${current}.`,
  passwordReset: "Your password was changed, and every browser signed in to this account was signed out.",
  /** "Sign out" beside another browser on the account page, refused (`why`: the refusal). */
  signInNotEnded: (why) => `That browser is still signed in. ${why}`,
  /** What a refused link means, by the cloud's code (the page adds the one next step). */
  link: {
    link_invalid: CODE_WORDS.link_invalid,
    link_expired: CODE_WORDS.link_expired,
    link_used: CODE_WORDS.link_used,
    email_taken: "Another account uses that address now, so it cannot become the address of yours.",
  },
};

/** A camera's model in words: "Raspberry Pi 4 Model B", "A computer (Linux, x86_64)". */
export function modelWords(model) {
  const text = String(model || "").trim();
  if (!text || text === "unknown") return "MuMu camera";
  const pi = /^(Raspberry Pi.*?)(\s+Rev\s+[\d.]+)?$/i.exec(text);
  if (pi) return pi[1];
  const computer = /^(Linux|Darwin|Windows)\s+(\S+)$/.exec(text);
  if (computer) return `A computer (${computer[1]}, ${computer[2]})`;
  return text;
}

/**
 * The six digits of a pairing code in whatever was typed or pasted: " 560 176 ",
 * "Code: 560-176", "560176".  Null when it does not hold exactly one six-digit code.
 */
export function pairingDigits(text) {
  const all = String(text || "").replace(/\D/g, "");
  if (all.length === 6) return all;
  const runs = String(text || "").match(/(?<!\d)\d(?:[\s\-.]?\d){5}(?!\d)/g) || [];
  const codes = runs.map((run) => run.replace(/\D/g, "")).filter((digits) => digits.length === 6);
  return codes.length === 1 ? codes[0] : null;
}

/**
 * What a browser without H.264 (the camera's codec) can do about it, for its platform, in one
 * sentence: `userAgent` is navigator.userAgent.  Firefox can get H.264 on every desktop
 * platform; other browsers are told which ones play it.
 */
export function noH264Words(userAgent) {
  const ua = String(userAgent || "");
  if (!/Firefox\//.test(ua) || /Android/.test(ua)) {
    return "This browser cannot play this camera's video (it has no H.264). Open it in Chrome, Edge or Safari.";
  }
  if (/Windows|Macintosh|Mac OS X/.test(ua)) {
    return "Firefox cannot play this camera's video until its H.264 plugin is on: open the menu ☰ → Add-ons and themes → Plugins, set “OpenH264 Video Codec provided by Cisco Systems, Inc.” to Always Activate (Firefox downloads it by itself, which can take a few minutes after it starts), and restart Firefox.";
  }
  return "Firefox cannot play this camera's video until H.264 is on: install the system's libavcodec (on Debian or Ubuntu: sudo apt install libavcodec-extra), open about:config, set media.webrtc.hw.h264.enabled to true and gfx.blacklist.webrtc.hw.acceleration.h264 to 1, and restart Firefox (or, where Add-ons and themes → Plugins lists “OpenH264 Video Codec”, set it to Always Activate).";
}
