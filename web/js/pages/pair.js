// Adding a camera: by its 6-digit code (#/pair) or by the claim link of its QR code
// (#/claim/<token>; see app.js for the signed-out case).

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { modelWords, pairingDigits } from "../words.js";

/** Words for a refused pairing: the app's words for its code (api.js), or, for a claim link,
 * what to do with the QR code instead. */
function pairingWords(failure, how) {
  if (how === "claim") {
    if (failure.code === "invalid_code" || failure.status === 404) {
      return "This camera link is not valid any more. Scan the QR code the camera shows now, or type its code.";
    }
    if (failure.code === "code_expired") return "This camera link has expired. Scan the new QR code on the camera.";
  }
  return failure.message;
}

/** The camera is on this account already (a used code or link opened again by its owner). */
function alreadyYours(device) {
  return h("div", { class: "card center stack", "data-testid": "already-yours" },
    h("h1", { "data-testid": "page-title" }, "Already on your account"),
    h("p", { class: "lead" }, [h("strong", { "data-testid": "paired-name" }, device?.name || "This camera"), " is already on your account."]),
    h("div", { class: "row center" },
      device?.device_id
        ? h("a", { class: "button primary", href: `#/watch/${encodeURIComponent(device.device_id)}`, "data-testid": "watch-paired" }, "Watch")
        : null,
      h("a", { class: `button${device?.device_id ? "" : " primary"}`, href: "#/devices", "data-testid": "to-devices" }, "All cameras"),
    ),
  );
}

function paired(ctx, device) {
  return h("div", { class: "card center stack", "data-testid": "pair-success" },
    h("div", { class: "success-mark", "aria-hidden": "true" }, "✓"),
    h("h1", { "data-testid": "page-title" }, "Camera added"),
    h("p", { class: "lead" }, [h("strong", { "data-testid": "paired-name" }, device?.name || "Your camera"), " is now on your account."]),
    h("div", { class: "row center" },
      device?.device_id
        ? h("a", { class: "button primary", href: `#/watch/${encodeURIComponent(device.device_id)}`, "data-testid": "watch-paired" }, "Watch now")
        : null,
      h("a", { class: "button", href: "#/devices", "data-testid": "to-devices" }, "All cameras"),
    ),
  );
}

export function render(ctx) {
  const code = h("input", {
    class: "code-input",
    name: "code",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    maxlength: 64, // a pasted "Code: 560 176" fits; the six digits are taken from it
    placeholder: "000 000",
    "aria-label": "Pairing code",
    "data-testid": "pair-code",
  });
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "pair-error", hidden: true });
  const submit = h("button", { class: "button primary wide", type: "submit", "data-testid": "pair-submit" }, "Add camera");
  const card = h("div", { class: "card stack" });

  const form = h("form", { class: "stack", novalidate: true, "data-testid": "pair-form", onsubmit: async (event) => {
    event.preventDefault();
    const digits = pairingDigits(code.value);
    if (!digits) {
      error.textContent = "The pairing code has 6 digits. It is shown on the camera's screen.";
      error.hidden = false;
      return;
    }
    error.hidden = true;
    submit.disabled = true;
    submit.textContent = "Adding…";
    try {
      const device = await api.pairWithCode(digits);
      replace(card.parentElement, paired(ctx, device));
    } catch (failure) {
      if (failure.code === "already_yours") {
        replace(card.parentElement, alreadyYours(null));
        return;
      }
      error.textContent = pairingWords(failure, "code");
      error.hidden = false;
      submit.disabled = false;
      submit.textContent = "Add camera";
    }
  } },
    h("label", {}, "Pairing code", code),
    error,
    submit,
  );

  replace(card,
    h("h1", { "data-testid": "page-title" }, "Add a camera"),
    h("ol", { class: "steps" },
      h("li", {}, "Power on the camera and connect it to your network."),
      h("li", {}, "Its screen shows a 6-digit pairing code and a QR code."),
      h("li", {}, "Type the code below, or scan the QR code with your phone's camera."),
    ),
    form,
  );
  ctx.show(h("section", { class: "narrow" }, card));
  code.focus();
}

/**
 * #/claim/<token> while signed in: show which camera the link adds and ask first.  A link can
 * come from anyone: adding somebody else's camera would let its owner see where you watch from.
 */
export function renderClaim(ctx, { claimToken }) {
  const holder = h("section", { class: "narrow" },
    h("div", { class: "card center stack", "data-testid": "claim-progress" },
      h("div", { class: "spinner", "aria-hidden": "true" }),
      h("h1", { "data-testid": "page-title" }, "Checking the camera…"),
    ),
  );
  ctx.show(holder);
  let live = true;

  function failed(failure) {
    if (!live || failure.status === 401) return;
    replace(holder, h("div", { class: "card center stack", "data-testid": "claim-failed" },
      h("h1", { "data-testid": "page-title" }, "Could not add the camera"),
      h("p", { class: "form-error", role: "alert", "data-testid": "pair-error" }, pairingWords(failure, "claim")),
      h("div", { class: "row center" },
        h("a", { class: "button primary", href: "#/pair" }, "Enter the code instead"),
        h("a", { class: "button", href: "#/devices" }, "All cameras"),
      ),
    ));
  }

  function ask(camera) {
    const error = h("p", { class: "form-error", role: "alert", "data-testid": "pair-error", hidden: true });
    const add = h("button", { class: "button primary", type: "button", "data-testid": "claim-confirm", onclick: async () => {
      add.disabled = true;
      add.textContent = "Adding…";
      try {
        const device = await api.pairWithClaim(claimToken);
        if (live) replace(holder, paired(ctx, device));
      } catch (failure) {
        if (!live || failure.status === 401) return;
        if (failure.code === "already_yours") {
          replace(holder, alreadyYours(null));
          return;
        }
        error.textContent = pairingWords(failure, "claim");
        error.hidden = false;
        add.disabled = false;
        add.textContent = "Add camera";
      }
    } }, "Add camera");
    replace(holder, h("div", { class: "card stack", "data-testid": "claim-confirmation" },
      h("h1", { "data-testid": "page-title" }, "Add this camera?"),
      h("p", { class: "claim-camera" },
        h("strong", { "data-testid": "claim-name" }, camera.name),
        h("span", { class: "muted", "data-testid": "claim-model" }, ` · ${modelWords(camera.model)}`),
      ),
      h("p", {}, "Add it only if it is your own camera and you set it up yourself: whoever owns a camera learns your network address when you watch it."),
      error,
      h("div", { class: "row" },
        add,
        h("a", { class: "button", href: "#/devices", "data-testid": "claim-cancel" }, "Cancel"),
      ),
    ));
    add.focus();
  }

  api.previewClaim(claimToken).then((camera) => {
    if (!live) return;
    if (camera.already_yours) replace(holder, alreadyYours(camera));
    else ask(camera);
  }, failed);
  return () => {
    live = false;
  };
}
