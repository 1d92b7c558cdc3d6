// The operator's rollout page (#/rollouts): releases, staged rollouts with their failures and
// reasons, raise / pause / resume, and which versions the fleet runs. Operators only (the cloud's
// MUMU_OPERATORS); everybody else gets the cloud's 403 in words.

import * as api from "../api.js";
import { h, replace } from "../dom.js";

const REFRESH_MS = 5_000;

export function render(ctx) {
  const body = h("div", { "data-testid": "rollouts", "aria-busy": "true" });
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "rollouts-error", hidden: true });
  ctx.show(h("section", {}, h("div", { class: "page-head" }, h("h1", { "data-testid": "page-title" }, "Rollouts")), error, body));
  replace(body, h("p", { class: "muted loading" }, "Loading the fleet…"));

  async function refresh() {
    try {
      const fleet = await api.fleet();
      error.hidden = true;
      body.removeAttribute("aria-busy");
      draw(fleet);
    } catch (failure) {
      if (failure.status === 401) return;
      if (failure.status === 403) {
        // not an operator: one refusal, and nothing more to wait for
        clearInterval(timer);
        body.removeAttribute("aria-busy");
        replace(body);
        error.textContent = "Only the cloud's operators can manage rollouts.";
      } else {
        error.textContent = `Could not load the rollouts: ${failure.message}`;
      }
      error.hidden = false;
    }
  }

  async function act(work, done) {
    try {
      await work();
      if (done) ctx.flash(done, "info");
      await refresh();
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
    }
  }

  function draw(fleet) {
    const versions = Object.entries(fleet.versions).sort();
    replace(body,
      h("h2", {}, "Fleet"),
      h("p", { "data-testid": "fleet-versions" }, versions.length
        ? versions.map(([v, n]) => `${v}: ${n} camera${n === 1 ? "" : "s"}`).join(" · ")
        : "No camera has connected yet."),
      h("h2", {}, "Rollouts"),
      fleet.rollouts.length ? rolloutTable(fleet.rollouts) : h("p", { class: "muted" }, "No rollout yet."),
      startForm(fleet.releases),
      h("h2", {}, "Releases"),
      h("ul", { "data-testid": "releases" }, fleet.releases.map((r) =>
        h("li", {}, `${r.version} (${r.arches.join(", ")})${r.notes ? ` — ${r.notes}` : ""}`))),
      releaseForm(),
    );
  }

  function rolloutTable(rollouts) {
    return h("table", { class: "table", "data-testid": "rollout-table" },
      h("thead", {}, h("tr", {}, ...["#", "Version", "Channel", "Share", "State", "Tried", "Updated", "Failed", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rollouts.map((r) => {
        const live = r.state === "active" || r.state === "paused";
        const raise = h("input", { type: "number", min: r.percentage, max: 100, step: 1, value: Math.min(100, r.percentage * 2 || 10), "aria-label": "New percentage", class: "input-narrow" });
        const reasons = Object.entries(r.reasons);
        return h("tr", { "data-testid": "rollout", "data-state": r.state },
          h("td", {}, String(r.id)),
          h("td", {}, r.version),
          h("td", {}, r.channel),
          h("td", {}, `${r.percentage} %`),
          h("td", {},
            h("span", { class: `status ${r.state === "active" ? "online" : "offline"}`, "data-testid": "rollout-state" }, r.state),
            r.paused_reason ? h("p", { class: "small", "data-testid": "paused-reason" }, r.paused_reason) : null),
          h("td", {}, `${r.tried} of ${r.offered}`),
          h("td", {}, String(r.committed)),
          h("td", {}, String(r.failed),
            reasons.length ? h("ul", { class: "small", "data-testid": "failure-reasons" }, reasons.map(([why, n]) => h("li", {}, `${n} × ${why}`))) : null),
          h("td", {}, live ? h("div", { class: "row" },
            r.state === "paused"
              ? h("button", { class: "button primary", type: "button", "data-testid": "resume", onclick: () => act(() => api.changeRollout(r.id, { state: "active" }), `Rollout ${r.id} resumed.`) }, "Resume")
              : h("button", { class: "button", type: "button", "data-testid": "pause", onclick: () => act(() => api.changeRollout(r.id, { state: "paused" }), `Rollout ${r.id} paused.`) }, "Pause"),
            raise,
            h("button", { class: "button", type: "button", "data-testid": "raise", onclick: () => act(() => api.changeRollout(r.id, { percentage: Number(raise.value) }), `Rollout ${r.id} now reaches ${raise.value} %.`) }, "Raise"),
          ) : null),
        );
      })),
    );
  }

  function startForm(releases) {
    if (!releases.length) return h("p", { class: "muted" }, "Add a release to start a rollout.");
    const version = h("select", { "aria-label": "Version", "data-testid": "start-version" }, releases.map((r) => h("option", { value: r.version }, r.version)));
    version.value = releases[releases.length - 1].version;
    const share = h("input", { type: "number", min: 0, max: 100, step: 1, value: 5, "aria-label": "Percentage", class: "input-narrow", "data-testid": "start-percentage" });
    const channel = h("input", { type: "text", value: "stable", "aria-label": "Channel", class: "input-medium" });
    return h("form", { class: "row rollout-form", "data-testid": "start-form", onsubmit: (event) => {
      event.preventDefault();
      act(() => api.startRollout(version.value, Number(share.value), channel.value.trim() || "stable"), `Rollout of ${version.value} started.`);
    } }, h("span", {}, "Roll out"), version, h("span", {}, "to"), share, h("span", {}, "% of"), channel,
    h("button", { class: "button primary", type: "submit" }, "Start"));
  }

  function releaseForm() {
    const version = h("input", { type: "text", placeholder: "1.4.0", "aria-label": "Version", class: "input-medium", required: true, "data-testid": "release-version" });
    // the cameras it is for; left empty, the cloud takes those the repository signed it for
    const arches = h("input", { type: "text", value: "aarch64", placeholder: "aarch64", "aria-label": "Architectures (comma-separated)", class: "input-medium", "data-testid": "release-arches" });
    const notes = h("input", { type: "text", placeholder: "What changed", "aria-label": "Notes", class: "input-medium" });
    return h("form", { class: "row rollout-form", "data-testid": "release-form", onsubmit: (event) => {
      event.preventDefault();
      const names = arches.value.split(/[\s,]+/).filter(Boolean);
      act(() => api.addRelease(version.value.trim(), notes.value.trim(), names), `Release ${version.value.trim()} added.`);
    } }, version, arches, notes, h("button", { class: "button", type: "submit" }, "Add signed release"));
  }

  const timer = setInterval(refresh, REFRESH_MS);
  refresh();
  return () => clearInterval(timer);
}
