// Sharing a camera with family (docs/protocol.md, "Sharing"): everything the web app shows of it.
//
// - the owner's "Share" panel on a camera card: who watches, open invitations, invite by e-mail,
//   make a one-time link, remove a viewer, cancel an invitation;
// - a shared camera's card for its viewer: "Shared by …", watch only, "Leave";
// - invitations to the signed-in account's e-mail, above the camera list (accept / decline);
// - the invitation-link screen (#/share/<token>): whose camera, then "Accept".
//
// Hooks into the rest of the app are deliberately few: `decorateCard` and `invitations` (the
// camera list), `renderAccept` and `rememberLink`/`takeLink` (the router).

import * as api from "./api.js";
import { h, replace } from "./dom.js";

const LINK_KEY = "mumu.shareLink";

// --- the cloud's sharing API -------------------------------------------------------------------

const path = (deviceId, rest = "") => `/api/devices/${encodeURIComponent(deviceId)}${rest}`;

export const sharingOf = (deviceId) => api.call("GET", path(deviceId, "/sharing"));
export const inviteEmail = (deviceId, email) => api.call("POST", path(deviceId, "/invites"), { email });
export const inviteLink = (deviceId) => api.call("POST", path(deviceId, "/invites"), { link: true });
export const cancelInvite = (deviceId, inviteId) =>
  api.call("DELETE", path(deviceId, `/invites/${encodeURIComponent(inviteId)}`));
export const removeViewer = (deviceId, userId) =>
  api.call("DELETE", path(deviceId, `/viewers/${encodeURIComponent(userId)}`));
export const receivedInvites = async () => (await api.call("GET", "/api/invites")).invites;
export const acceptInvite = async (inviteId) =>
  (await api.call("POST", `/api/invites/${encodeURIComponent(inviteId)}/accept`)).device;
export const declineInvite = (inviteId) =>
  api.call("POST", `/api/invites/${encodeURIComponent(inviteId)}/decline`);
export const previewLink = (token) => api.call("POST", "/api/invite-links/preview", { token });
export const acceptLink = async (token) => (await api.call("POST", "/api/invite-links/accept", { token })).device;

/** An invitation link opened while signed out: kept for after sign-in (this tab only). */
export function rememberLink(token) {
  sessionStorage.setItem(LINK_KEY, token);
}

export function takeLink() {
  const value = sessionStorage.getItem(LINK_KEY);
  sessionStorage.removeItem(LINK_KEY);
  return value;
}

/** Words for a refused sharing request: the cloud's sentence, with the next step. */
function words(failure) {
  const next = {
    invite_invalid: "Ask the camera's owner to send you a new invitation.",
    invite_expired: "Ask the camera's owner to send you a new invitation.",
    own_camera: "It is already in your list of cameras.",
  }[failure.code];
  const sentence = (failure.message || "That did not work.").replace(/\.?$/, ".");
  const first = sentence.charAt(0).toUpperCase() + sentence.slice(1);
  return next && !first.includes(next) ? `${first} ${next}` : first;
}

function date(iso) {
  try {
    return new Date(iso).toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric" });
  } catch {
    return iso;
  }
}

// --- the camera list ---------------------------------------------------------------------------

/**
 * Adapts a camera card to its role.  `parts`: {panel, actions, showError, flash, onGone}; the
 * card's owner-only buttons carry `data-owner-only`.  An owner gets "Share"; a viewer gets
 * "Shared by …" and "Leave", and no owner-only buttons.
 */
export function decorateCard(card, device, parts) {
  const { panel, actions, showError, flash, onGone } = parts;
  card.dataset.role = device.role || "owner";
  if (device.role === "viewer") {
    for (const button of card.querySelectorAll("[data-owner-only]")) button.remove();
    card.querySelector(".device-body")?.append(
      h("p", { class: "muted small", "data-testid": "shared-by" }, `Shared with you by ${device.shared_by}`),
    );
    actions.append(h("button", { class: "button subtle-danger", type: "button", "data-testid": "leave", onclick: () => {
      showError("");
      const confirm = h("button", { class: "button danger", type: "button", "data-testid": "leave-confirm", onclick: async () => {
        confirm.disabled = true;
        try {
          await removeViewer(device.device_id, "me");
          onGone();
          flash(`${device.name || "The camera"} was removed from your list.`, "info");
        } catch (failure) {
          showError(`Could not remove it: ${words(failure)}`);
          confirm.disabled = false;
        }
      } }, "Remove");
      replace(panel,
        h("p", {}, `Remove ${device.name || "this camera"} from your list? You can watch it again only if ${device.shared_by} invites you again.`),
        h("div", { class: "row" }, confirm, h("button", { class: "button", type: "button", onclick: () => (panel.hidden = true) }, "Cancel")),
      );
      panel.hidden = false;
    } }, "Leave"));
    return;
  }
  const count = h("p", { class: "muted small", "data-testid": "viewer-count", hidden: !device.viewers },
    device.viewers ? `Shared with ${device.viewers} ${device.viewers === 1 ? "person" : "people"}` : "");
  card.querySelector(".device-body")?.append(count);
  const button = h("button", { class: "button", type: "button", "data-testid": "share", "aria-expanded": "false", onclick: () => {
    showError("");
    if (!panel.hidden && panel.dataset.open === "share") {
      panel.hidden = true;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    replace(panel, sharePanel(device, { flash, count }));
    panel.dataset.open = "share";
    panel.hidden = false;
    button.setAttribute("aria-expanded", "true");
  } }, "Share");
  actions.insertBefore(button, actions.querySelector("[data-testid=unpair]"));
}

/** The owner's panel: viewers, open invitations, and the two ways to invite. */
function sharePanel(device, { flash, count }) {
  const id = device.device_id;
  const name = device.name || "this camera";
  const people = h("ul", { class: "plain-list", "data-testid": "viewers", "aria-label": "People who can watch" });
  const invites = h("ul", { class: "plain-list", "data-testid": "invites", "aria-label": "Open invitations" });
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "share-error", hidden: true });
  const linkOut = h("div", { class: "stack", "data-testid": "invite-link-box", hidden: true });
  const email = h("input", { type: "email", required: true, autocomplete: "off", placeholder: "name@example.com", "aria-label": "E-mail address to invite", "data-testid": "invite-email" });
  const sendButton = h("button", { class: "button primary", type: "submit", "data-testid": "invite-send" }, "Invite");
  const linkButton = h("button", { class: "button", type: "button", "data-testid": "invite-link" }, "Create a one-time link");

  function fail(failure) {
    error.textContent = words(failure);
    error.hidden = false;
  }

  let loads = 0; // a reading started before a link was made does not know it yet
  async function load() {
    const started = ++loads;
    try {
      const sharing = await sharingOf(id);
      error.hidden = true;
      const n = sharing.viewers.length;
      count.hidden = n === 0;
      count.textContent = n ? `Shared with ${n} ${n === 1 ? "person" : "people"}` : "";
      replace(people, n === 0
        ? h("li", { class: "muted" }, "Nobody else can watch this camera.")
        : sharing.viewers.map((viewer) => h("li", { class: "row spread", "data-testid": "viewer", "data-user-id": viewer.user_id },
          h("span", {}, h("strong", {}, viewer.email), h("span", { class: "muted small" }, ` · since ${date(viewer.added_at)}`)),
          h("button", { class: "button subtle-danger", type: "button", "data-testid": "viewer-remove", "aria-label": `Stop sharing with ${viewer.email}`, onclick: async (event) => {
            event.currentTarget.disabled = true;
            try {
              await removeViewer(id, viewer.user_id);
              flash(`${viewer.email} can no longer watch ${name}.`, "info");
            } catch (failure) {
              fail(failure);
            }
            load();
          } }, "Remove"))));
      // the one-time link shown here was used (or cancelled): it leaves the panel
      const shown = linkOut.dataset.inviteId;
      if (shown && started > Number(linkOut.dataset.after) && !sharing.invites.some((i) => i.invite_id === shown)) {
        delete linkOut.dataset.inviteId;
        linkOut.hidden = true;
        replace(linkOut);
      }
      replace(invites, sharing.invites.map((invite) => h("li", { class: "row spread", "data-testid": "invite" },
        h("span", {}, invite.kind === "email" ? `Invited ${invite.email}` : "One-time link",
          h("span", { class: "muted small" }, ` · until ${date(invite.expires_at)}`)),
        h("button", { class: "button", type: "button", "data-testid": "invite-cancel", onclick: async (event) => {
          event.currentTarget.disabled = true;
          try {
            await cancelInvite(id, invite.invite_id);
          } catch (failure) {
            fail(failure);
          }
          load();
        } }, "Cancel"))));
      const full = n >= sharing.max_viewers;
      sendButton.disabled = full;
      linkButton.disabled = full;
      if (full) fail({ message: `${name} is shared with ${sharing.max_viewers} people, the most it can be; remove someone first` });
    } catch (failure) {
      if (failure.status !== 401) fail(failure);
    }
  }

  linkButton.addEventListener("click", async () => {
    linkButton.disabled = true;
    error.hidden = true;
    try {
      const created = await inviteLink(id);
      const field = h("input", { type: "text", readonly: true, value: created.url, "aria-label": "Invitation link", "data-testid": "invite-link-url" });
      replace(linkOut,
        h("p", {}, "Send this link to the person you want to share with. It works once, until ", date(created.expires_at), "."),
        h("div", { class: "row" }, field,
          h("button", { class: "button", type: "button", "data-testid": "invite-link-copy", onclick: async (event) => {
            field.select();
            try {
              await navigator.clipboard.writeText(created.url);
              event.currentTarget.textContent = "Copied";
            } catch {
              event.currentTarget.textContent = "Select and copy";
            }
          } }, "Copy")),
      );
      linkOut.dataset.inviteId = created.invite_id;
      linkOut.dataset.after = String(loads);
      linkOut.hidden = false;
      field.select();
    } catch (failure) {
      fail(failure);
    }
    linkButton.disabled = false;
    load();
  });

  const form = h("form", { class: "row", "data-testid": "invite-form", onsubmit: async (event) => {
    event.preventDefault();
    sendButton.disabled = true;
    error.hidden = true;
    try {
      const created = await inviteEmail(id, email.value.trim());
      flash(`${created.email} is invited to watch ${name}. They accept it after signing in with that address.`, "info");
      email.value = "";
    } catch (failure) {
      fail(failure);
    }
    sendButton.disabled = false;
    load();
  } }, email, sendButton);

  load();
  const panel = h("div", { class: "stack share-panel", "data-testid": "share-panel" },
    h("h3", {}, `Share ${name}`),
    h("p", { class: "muted small" }, "People you share with can watch, and nothing else: they cannot rename, unpair or share the camera, or see who else watches."),
    people,
    invites,
    form,
    linkButton,
    linkOut,
    error,
  );
  panel.reload = load; // the cloud said its viewers changed (devices_changed)
  return panel;
}

/** Invitations to this account's e-mail address, above the camera list; `changed()` after one
 *  is accepted (the list gains a camera). */
export function invitations(changed) {
  const box = h("section", { class: "stack", "data-testid": "received-invites", hidden: true, "aria-label": "Invitations" });

  async function load() {
    let found;
    try {
      found = await receivedInvites();
    } catch {
      return; // the next visit asks again
    }
    box.hidden = found.length === 0;
    replace(box, found.map((invite) => {
      const error = h("p", { class: "form-error", role: "alert", hidden: true });
      let article = null;
      const act = (doing) => async (event) => {
        event.currentTarget.disabled = true;
        try {
          await doing(invite.invite_id);
          // answered: gone at once, before the camera list shows what changed
          article.remove();
          box.hidden = !box.querySelector("[data-testid=received-invite]");
          changed();
        } catch (failure) {
          error.textContent = words(failure);
          error.hidden = false;
        }
        load();
      };
      article = h("article", { class: "card stack", "data-testid": "received-invite" },
        h("p", {}, h("strong", {}, invite.owner_email), " invites you to watch ", h("strong", {}, invite.name), "."),
        h("div", { class: "row" },
          h("button", { class: "button primary", type: "button", "data-testid": "received-accept", onclick: act(acceptInvite) }, "Accept"),
          h("button", { class: "button", type: "button", "data-testid": "received-decline", onclick: act(declineInvite) }, "Decline")),
        error);
      return article;
    }));
  }

  load();
  box.reload = load;
  return box;
}

// --- the invitation link -----------------------------------------------------------------------

/** #/share/<token>: whose camera this is, then "Accept" (nothing is added before). */
export function renderAccept(ctx, { token }) {
  const holder = h("section", { class: "narrow" },
    h("div", { class: "card center stack" },
      h("div", { class: "spinner", "aria-hidden": "true" }),
      h("h1", { "data-testid": "page-title" }, "Checking the invitation…"),
    ),
  );
  ctx.show(holder);
  let live = true;

  function failed(failure) {
    if (!live || failure.status === 401) return;
    replace(holder, h("div", { class: "card center stack", "data-testid": "share-failed" },
      h("h1", { "data-testid": "page-title" }, "This invitation cannot be used"),
      h("p", { class: "form-error", role: "alert", "data-testid": "share-accept-error" }, words(failure)),
      h("a", { class: "button primary", href: "#/devices" }, "Your cameras"),
    ));
  }

  function ask(camera) {
    const error = h("p", { class: "form-error", role: "alert", "data-testid": "share-accept-error", hidden: true });
    const accept = h("button", { class: "button primary", type: "button", "data-testid": "share-accept", onclick: async () => {
      accept.disabled = true;
      accept.textContent = "Adding…";
      try {
        const device = await acceptLink(token);
        if (live) ctx.go(`#/watch/${encodeURIComponent(device.device_id)}`, `You can now watch ${device.name}, shared by ${device.shared_by}.`);
      } catch (failure) {
        if (!live || failure.status === 401) return;
        error.textContent = words(failure);
        error.hidden = false;
        accept.disabled = false;
        accept.textContent = "Accept";
      }
    } }, "Accept");
    replace(holder, h("div", { class: "card stack", "data-testid": "share-confirmation" },
      h("h1", { "data-testid": "page-title" }, "Watch this camera?"),
      h("p", {}, h("strong", { "data-testid": "share-owner" }, camera.owner_email), " shares a camera with you:"),
      h("p", { class: "claim-camera" },
        h("strong", { "data-testid": "share-name" }, camera.name),
        h("span", { class: "muted" }, ` · ${camera.model}`),
      ),
      h("p", { class: "muted" }, "You will be able to watch it, nothing more, until its owner stops sharing it. Accept only if you know this person: the camera's owner learns your network address when you watch."),
      error,
      h("div", { class: "row" }, accept, h("a", { class: "button", href: "#/devices", "data-testid": "share-decline" }, "Not now")),
    ));
    accept.focus();
  }

  previewLink(token).then((camera) => {
    if (live) ask(camera);
  }, failed);
  return () => {
    live = false;
  };
}
