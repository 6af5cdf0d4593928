// "API keys" (role admin): create (the secret shown once, with a copy button), list with
// usage, rotate and revoke.
"use strict";

(function () {
  const { el, clear, fmt, $ } = MG;
  const alerts = $("#alerts");
  const secretBox = $("#secret-box");
  const keysBox = $("#keys");
  const showRevoked = $("#show-revoked");

  async function load() {
    try {
      const { data } = await MG.api("/api/keys");
      render(data);
    } catch (err) {
      MG.showError(alerts, err, "Loading the keys");
    }
  }

  function showSecret(key, verb) {
    const code = el("code", { id: "new-secret" }, key.key);
    const status = el("span", { class: "small", role: "status" });
    const copy = el(
      "button",
      {
        type: "button",
        class: "primary",
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(key.key);
            status.textContent = "Copied.";
          } catch (err) {
            // No clipboard access (an insecure origin, or denied): select it for Ctrl+C.
            const range = document.createRange();
            range.selectNodeContents(code);
            const selection = getSelection();
            selection.removeAllRanges();
            selection.addRange(range);
            status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
          }
        },
      },
      "Copy"
    );
    clear(
      secretBox,
      el(
        "section",
        { class: "alert warn", "aria-labelledby": "secret-heading" },
        el("h2", { id: "secret-heading" }, "Key “" + key.name + "” " + verb),
        el("p", {}, "Copy the secret now: it is shown this once and cannot be seen again."),
        el("div", { class: "secret" }, code, copy, status),
        el("p", { class: "small" }, "Send it as ", el("code", {}, "X-API-Key: " + key.prefix + "_…"), " or exchange it for a token at POST /auth/token."),
        el("button", { type: "button", class: "ghost small", onclick: () => clear(secretBox) }, "I stored it, hide the secret")
      )
    );
    copy.focus();
  }

  function render(keys) {
    const visible = keys.filter((k) => showRevoked.checked || !k.revoked_at);
    if (!visible.length) {
      clear(keysBox, el("p", { class: "muted" }, keys.length ? "Every key is revoked." : "No key yet: create one for each application."));
      return;
    }
    const rows = visible.map((key) => {
      const usage = key.usage || {};
      const revoked = Boolean(key.revoked_at);
      return el(
        "tr",
        { dataset: { key: key.id } },
        el("td", { "data-label": "Name" }, el("strong", {}, key.name), el("div", { class: "small muted" }, el("code", {}, key.prefix + "_…"))),
        el("td", { "data-label": "Role" }, key.role, el("div", { class: "small muted" }, (key.scopes || []).join(" "))),
        el(
          "td",
          { "data-label": "Limits" },
          key.rate_limit || "default",
          el("div", { class: "small muted" }, key.daily_quota ? key.daily_quota + " a day" : "no daily quota")
        ),
        el("td", { class: "num", "data-label": "Requests" }, String(usage.requests || 0)),
        el("td", { class: "num", "data-label": "Items" }, String(usage.items || 0)),
        el("td", { class: "num", "data-label": "Errors" }, String(usage.errors || 0)),
        el("td", { "data-label": "Last used" }, fmt.time(usage.last_used_at)),
        el(
          "td",
          { "data-label": "Status" },
          revoked
            ? el("span", { class: "state state-failed" }, "revoked " + fmt.time(key.revoked_at))
            : el("span", { class: "state state-ready" }, "active"),
          el("div", { class: "small muted" }, "by " + (key.created_by || "?") + ", " + fmt.time(key.created_at))
        ),
        el(
          "td",
          { class: "actions-cell", "data-label": "" },
          revoked
            ? null
            : [
                el("button", { type: "button", class: "small ghost", "aria-label": "Rotate " + key.name, onclick: () => rotate(key) }, "Rotate"),
                el("button", { type: "button", class: "small danger", "aria-label": "Revoke " + key.name, onclick: () => revoke(key) }, "Revoke"),
              ]
        )
      );
    });
    clear(
      keysBox,
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "cards-sm", id: "keys-table" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              ["Name", "Role and scopes", "Limits"].map((h) => el("th", { scope: "col" }, h)),
              ["Requests", "Items", "Errors"].map((h) => el("th", { scope: "col", class: "num" }, h)),
              ["Last used", "Status", ""].map((h) => el("th", { scope: "col" }, h))
            )
          ),
          el("tbody", {}, rows)
        )
      )
    );
  }

  async function rotate(key) {
    if (!confirm("Rotate “" + key.name + "”? Its current secret stops working at once.")) return;
    try {
      const { data } = await MG.api("/api/keys/" + key.id + "/rotate", { method: "POST" });
      showSecret(data, "rotated");
      await load();
    } catch (err) {
      MG.showError(alerts, err);
    }
  }

  async function revoke(key) {
    if (!confirm("Revoke “" + key.name + "”? Applications using it are refused at once.")) return;
    try {
      await MG.api("/api/keys/" + key.id, { method: "DELETE" });
      MG.toast("Key “" + key.name + "” revoked.");
      await load();
    } catch (err) {
      MG.showError(alerts, err);
    }
  }

  $("#create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(alerts);
    const name = $("#key-name").value.trim();
    if (!name) {
      MG.showError(alerts, "Give the key a name: the application that will use it.");
      $("#key-name").focus();
      return;
    }
    const body = {
      name,
      role: $("#key-role").value,
      scopes: $("#key-scopes").value.split(/\s+/).filter(Boolean),
    };
    const limit = $("#key-limit").value.trim();
    const quota = $("#key-quota").value.trim();
    if (limit) body.rate_limit = limit;
    if (quota) body.daily_quota = Number(quota);
    const button = $("#create");
    button.disabled = true;
    try {
      const { data } = await MG.api("/api/keys", { method: "POST", json: body });
      showSecret(data, "created");
      $("#create-form").reset();
      await load();
    } catch (err) {
      const fields = err.details && err.details.errors && err.details.errors.json;
      const detail = fields
        ? Object.entries(fields)
            .map(([field, messages]) => field + ": " + [].concat(messages).join(" "))
            .join("; ")
        : null;
      MG.showError(alerts, detail ? "The key was not created: " + detail : err);
    } finally {
      button.disabled = false;
    }
  });
  showRevoked.addEventListener("change", load);
  load();
})();
