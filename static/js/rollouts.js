// "Rollouts" (role deployer): the deployment policy of a model, the operations that change it
// (each sent with If-Match: the revision this page shows), the experiment report and the audit.
"use strict";

(function () {
  const { el, clear, fmt, $ } = MG;
  const alerts = $("#alerts");
  const modelSelect = $("#model");
  const stateBox = $("#state");
  const reportBox = $("#report");
  const auditBox = $("#audit");
  const canaryVersion = $("#canary-version");
  const canaryPercent = $("#canary-percent");
  const canaryOut = $("#canary-out");
  const promoteVersion = $("#promote-version");
  const shadowVersion = $("#shadow-version");
  const shadowPercent = $("#shadow-percent");
  const shadowOut = $("#shadow-out");
  const variantsBox = $("#variants");
  const stickySelect = $("#experiment-sticky");
  const confirmDialog = $("#confirm");

  let models = {};
  let model = null;
  let policy = null;
  let lastAuditId = null;
  let stopPolling = null;
  let variantCount = 0;

  // -- Loading -------------------------------------------------------------------------------

  async function init() {
    try {
      const list = await MG.loadModels();
      models = MG.fillModelSelect(modelSelect, list, { ensembles: false });
      if (!Object.keys(models).length) {
        MG.showError(alerts, "There is no model to roll out.");
        return;
      }
      await load({ fresh: true });
    } catch (err) {
      MG.showError(alerts, err, "Loading the models");
    }
  }

  async function load(options) {
    const { fresh = false } = options || {};
    const name = modelSelect.value;
    const base = MG.modelPath(name);
    const [detail, deployment, audit] = await Promise.all([
      MG.api(base),
      MG.api(base + "/deployment"),
      MG.api("/api/audit?limit=25&model=" + encodeURIComponent(name)),
    ]);
    model = detail.data;
    policy = deployment.data;
    renderState();
    fillVersionSelects(fresh);
    renderAudit(audit.data, fresh);
    await loadReport(audit.data);
    const active = policy.experiment || policy.shadow;
    if (active && !stopPolling) {
      stopPolling = MG.poll(() => loadReport(), 5000);
    } else if (!active && stopPolling) {
      stopPolling();
      stopPolling = null;
    }
  }

  let lastAudit = [];
  async function loadReport(audit) {
    if (audit) lastAudit = audit;
    // The running experiment, else the one most recently started (its numbers stay).
    let experiment = policy.experiment && policy.experiment.name;
    if (!experiment) {
      const started = lastAudit.find((a) => a.action === "experiment-start" && a.after && a.after.experiment);
      experiment = started ? started.after.experiment.name : null;
    }
    const query = experiment ? "?experiment=" + encodeURIComponent(experiment) : "";
    try {
      const { data } = await MG.api(MG.modelPath(model.name) + "/experiment/report" + query);
      renderReport(data, Boolean(policy.experiment));
    } catch (err) {
      clear(reportBox, MG.errorBox(err, "Loading the report"));
    }
  }

  // -- Current state -------------------------------------------------------------------------

  const ready = () => (model.versions || []).filter((v) => v.state === "READY");

  function summary(p) {
    if (!p) return "nothing";
    const parts = [];
    const labels = p.labels || {};
    if (labels.stable !== undefined) parts.push("stable v" + labels.stable);
    for (const [label, v] of Object.entries(labels)) if (label !== "stable") parts.push(label + " v" + v);
    const weights = Object.entries(p.weights || {});
    if (weights.length) parts.push("weights " + weights.map(([v, w]) => "v" + v + " " + Number(w) + " %").join(" / "));
    if (p.experiment) {
      parts.push(
        "experiment “" + p.experiment.name + "” (" +
          p.experiment.variants.map((v) => v.name + " v" + v.version + " " + v.weight + " %").join(", ") + ")"
      );
    }
    if (p.shadow) parts.push("shadow v" + p.shadow.version + " " + p.shadow.percent + " %");
    return parts.length ? parts.join(" · ") : "no policy (the newest ready version answers)";
  }

  function renderState() {
    const labels = policy.labels || {};
    const canary = labels.canary;
    const canaryWeight = canary !== undefined ? Number((policy.weights || {})[canary] || 0) : null;
    const share = MG.trafficShare(model, policy);
    const facts = el(
      "dl",
      { class: "facts" },
      el("dt", {}, "Stable"),
      el("dd", { dataset: { testid: "stable" } }, labels.stable !== undefined ? "version " + labels.stable : "none (newest ready answers)"),
      el("dt", {}, "Canary"),
      el("dd", { dataset: { testid: "canary" } }, canary !== undefined ? "version " + canary + " · " + canaryWeight + " %" : "none"),
      el("dt", {}, "Experiment"),
      el(
        "dd",
        {},
        policy.experiment
          ? "“" + policy.experiment.name + "”: " + policy.experiment.variants.map((v) => v.name + " → v" + v.version + " (" + v.weight + " %)").join(", ")
          : "none"
      ),
      el("dt", {}, "Shadow"),
      el("dd", {}, policy.shadow ? "version " + policy.shadow.version + " · " + policy.shadow.percent + " % mirrored" : "none"),
      el("dt", {}, "Revision"),
      el("dd", {}, String(policy.revision))
    );
    clear(
      stateBox,
      el(
        "div",
        { class: "split" },
        facts,
        el(
          "div",
          {},
          el("h3", {}, "Routed traffic"),
          share.length
            ? MG.stack(
                share.map((s) => ({ label: "v" + s.version + " (" + s.why.join(", ") + ")", percent: s.percent })),
                "Routed traffic by version"
              )
            : el("p", { class: "muted" }, "No version is ready.")
        )
      )
    );
    const history = policy.history || [];
    $("#rollback").disabled = !history.length;
    $("#rollback-text").textContent = history.length
      ? "Roll back: stable returns to version " + history[history.length - 1] + " in one step."
      : "Nothing to roll back to: no earlier stable version.";
    $("#canary-end").disabled = canary === undefined;
    $("#experiment-stop").disabled = !policy.experiment;
    $("#shadow-stop").disabled = !policy.shadow;
  }

  function options(select, versions, chosen) {
    clear(
      select,
      versions.map((v) => el("option", { value: v.version }, "Version " + v.version + " · " + MG.versionFormat(v)))
    );
    if (chosen !== undefined && versions.some((v) => v.version === chosen)) select.value = String(chosen);
    select.disabled = !versions.length;
  }

  function fillVersionSelects(fresh) {
    const labels = policy.labels || {};
    const versions = ready();
    const others = versions.filter((v) => v.version !== labels.stable);
    options(canaryVersion, others, labels.canary);
    $("#canary-apply").disabled = !others.length || labels.stable === undefined;
    if (labels.stable === undefined) {
      $("#canary-help").textContent = "Promote a stable version first: a canary shares traffic with it.";
    }
    if (fresh || labels.canary === undefined) {
      const weight = labels.canary !== undefined ? Number((policy.weights || {})[labels.canary] || 0) : 10;
      canaryPercent.value = String(Math.round(weight));
      canaryOut.value = canaryPercent.value + " %";
    }
    options(promoteVersion, others.length ? others : versions, labels.canary);
    $("#promote").disabled = !versions.length;
    options(shadowVersion, others, policy.shadow ? policy.shadow.version : undefined);
    $("#shadow-start").disabled = !others.length;
    if (fresh) resetVariants();
  }

  // -- Experiment form -----------------------------------------------------------------------

  function variantRow(name, version, weight) {
    variantCount += 1;
    const id = "variant" + variantCount;
    const select = el(
      "select",
      { id: id + "-version", dataset: { part: "version" } },
      ready().map((v) => el("option", { value: v.version, selected: v.version === version }, "v" + v.version))
    );
    const row = el(
      "div",
      { class: "variant-row" },
      el("div", { class: "field" }, el("label", { for: id + "-name" }, "Variant"), el("input", { id: id + "-name", type: "text", value: name, maxlength: 32, dataset: { part: "name" } })),
      el("div", { class: "field" }, el("label", { for: id + "-version" }, "Version"), select),
      el("div", { class: "field" }, el("label", { for: id + "-weight" }, "Weight %"), el("input", { id: id + "-weight", type: "number", min: 0, max: 100, step: "any", value: weight, dataset: { part: "weight" } })),
      el("button", { type: "button", class: "icon", "aria-label": "Remove this variant", onclick: () => row.remove() }, "×")
    );
    return row;
  }

  function resetVariants() {
    const versions = ready();
    const stable = (policy.labels || {}).stable;
    const a = versions.find((v) => v.version === stable) || versions[0];
    const b = versions.find((v) => a && v.version !== a.version) || a;
    clear(variantsBox);
    if (!a) return;
    variantsBox.append(variantRow("control", a.version, 50), variantRow("candidate", b.version, 50));
    const name = $("#experiment-name");
    if (!name.value) name.value = model.name + "-v" + a.version + "-vs-v" + b.version;
  }

  function experimentBody() {
    const variants = [...variantsBox.querySelectorAll(".variant-row")].map((row) => ({
      name: row.querySelector('[data-part="name"]').value.trim(),
      version: Number(row.querySelector('[data-part="version"]').value),
      weight: Number(row.querySelector('[data-part="weight"]').value),
    }));
    let sticky = stickySelect.value;
    if (sticky === "header") {
      const header = $("#sticky-header").value.trim();
      if (!header) throw new Error("Name the header that keeps a caller on one variant.");
      sticky = "header:" + header;
    }
    const total = variants.reduce((sum, v) => sum + v.weight, 0);
    if (variants.length < 2) throw new Error("An experiment needs at least two variants.");
    if (Math.abs(total - 100) > 1e-6) throw new Error("The variant weights add up to " + total + " %, not 100 %.");
    return { name: $("#experiment-name").value.trim(), sticky, variants };
  }

  // -- Actions -------------------------------------------------------------------------------

  function confirmed(title, text) {
    if (typeof confirmDialog.showModal !== "function") return Promise.resolve(true);
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    confirmDialog.returnValue = "";
    confirmDialog.showModal();
    $("#confirm-ok").focus();
    return new Promise((resolve) => {
      confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue === "ok"), { once: true });
    });
  }

  async function act(done, method, path, json) {
    clear(alerts);
    // One change at a time: the buttons wait for the answer (and the page's new revision).
    const buttons = [...document.querySelectorAll(".ops button")];
    const before = buttons.map((b) => b.disabled);
    buttons.forEach((b) => (b.disabled = true));
    let failure = null;
    try {
      await MG.api(MG.modelPath(model.name) + path, {
        method,
        json,
        headers: { "If-Match": '"' + policy.revision + '"' },
      });
    } catch (err) {
      failure = err;
    } finally {
      buttons.forEach((b, i) => (b.disabled = before[i]));
    }
    if (failure) {
      MG.showError(alerts, failure);
      if (failure instanceof MG.ApiError && failure.status === 412) await load().catch(() => {});
      return;
    }
    MG.toast(done);
    await load().catch((err) => MG.showError(alerts, err));
  }

  $("#canary-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const version = Number(canaryVersion.value);
    const percent = Number(canaryPercent.value);
    act("Canary: version " + version + " gets " + percent + " % of traffic.", "PUT", "/canary", { version, percent });
  });
  $("#canary-end").addEventListener("click", () => act("Canary ended: all traffic to stable.", "DELETE", "/canary"));
  $("#promote-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const version = Number(promoteVersion.value);
    if (await confirmed("Promote version " + version + "?", "All of " + model.name + "'s routed traffic moves to version " + version + " at once.")) {
      act("Version " + version + " is stable.", "POST", "/promote", { version });
    }
  });
  $("#rollback").addEventListener("click", async () => {
    const history = policy.history || [];
    const back = history[history.length - 1];
    if (await confirmed("Roll back to version " + back + "?", "Stable returns to version " + back + "; the canary ends.")) {
      act("Rolled back to version " + back + ".", "POST", "/rollback");
    }
  });
  $("#experiment-form").addEventListener("submit", (event) => {
    event.preventDefault();
    let body;
    try {
      body = experimentBody();
    } catch (err) {
      MG.showError(alerts, err.message);
      return;
    }
    act("Experiment “" + body.name + "” started.", "PUT", "/experiment", body);
  });
  $("#experiment-stop").addEventListener("click", async () => {
    if (await confirmed("Stop the experiment?", "Traffic returns to the canary weights or the stable version; the report keeps its numbers.")) {
      act("Experiment stopped.", "DELETE", "/experiment");
    }
  });
  $("#shadow-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const version = Number(shadowVersion.value);
    const percent = Number(shadowPercent.value);
    act("Shadow: version " + version + " sees " + percent + " % of requests.", "PUT", "/shadow", { version, percent });
  });
  $("#shadow-stop").addEventListener("click", () => act("Shadow stopped.", "DELETE", "/shadow"));
  $("#add-variant").addEventListener("click", () => {
    const versions = ready();
    if (versions.length) variantsBox.append(variantRow("variant-" + (variantsBox.children.length + 1), versions[0].version, 0));
  });
  stickySelect.addEventListener("change", () => {
    $("#sticky-header-field").hidden = stickySelect.value !== "header";
  });
  canaryPercent.addEventListener("input", () => (canaryOut.value = canaryPercent.value + " %"));
  shadowPercent.addEventListener("input", () => (shadowOut.value = shadowPercent.value + " %"));
  $("#report-refresh").addEventListener("click", () => loadReport());
  modelSelect.addEventListener("change", () => {
    const url = new URL(location.href);
    url.searchParams.set("model", modelSelect.value);
    history.replaceState(null, "", url);
    $("#experiment-name").value = "";
    lastAuditId = null;
    load({ fresh: true }).catch((err) => MG.showError(alerts, err));
  });

  // -- Report --------------------------------------------------------------------------------

  function renderReport(report, running) {
    const counted = { ...(report.variants || {}) };
    // Variants of the running experiment that no request reached yet show as zero.
    if (running && policy.experiment && policy.experiment.name === report.experiment) {
      for (const v of policy.experiment.variants) {
        counted[v.name] = counted[v.name] || {
          requests: 0,
          errors: 0,
          error_rate: null,
          latency_ms: { p50: null, p95: null, p99: null },
          feedback: { n: 0 },
        };
      }
    }
    const variants = Object.entries(counted).sort(([a], [b]) => a.localeCompare(b));
    const shadows = Object.entries(report.shadows || {});
    const parts = [];
    if (!variants.length && !shadows.length) {
      clear(reportBox, el("p", { class: "muted" }, "No experiment or shadow has run on " + model.name + " yet. Start one above; its traffic, latency, errors and accuracy show here."));
      return;
    }
    if (variants.length) {
      const totalRequests = variants.reduce((sum, [, v]) => sum + v.requests, 0);
      const maxLatency = Math.max(1, ...variants.map(([, v]) => Number(v.latency_ms.p99) || 0));
      parts.push(
        el(
          "p",
          { class: "muted" },
          "Experiment “" + report.experiment + "”" + (running ? " (running)" : " (stopped)") + ", over every worker and replica."
        ),
        el(
          "div",
          { class: "report-grid" },
          el(
            "div",
            {},
            el("h3", {}, "Traffic per variant"),
            MG.bars(
              variants.map(([name, v]) => ({ label: name, value: v.requests, text: v.requests + " req" })),
              { max: Math.max(1, totalRequests), caption: "Requests per variant", kind: "solid" }
            )
          ),
          el(
            "div",
            {},
            el("h3", {}, "Latency (p50 · p95 · p99)"),
            variants.map(([name, v]) =>
              el(
                "div",
                { class: "small" },
                el("strong", {}, name),
                MG.bars(
                  ["p50", "p95", "p99"].map((q) => ({ label: q, value: Number(v.latency_ms[q]) || 0, text: fmt.ms(v.latency_ms[q]) })),
                  { max: maxLatency, caption: "Latency of " + name, kind: "solid" }
                )
              )
            )
          ),
          el(
            "div",
            {},
            el("h3", {}, "Errors"),
            MG.bars(
              variants.map(([name, v]) => ({ label: name, value: v.error_rate || 0, text: v.errors + " (" + fmt.pct(v.error_rate) + ")" })),
              { max: Math.max(0.05, ...variants.map(([, v]) => v.error_rate || 0)), caption: "Error rate per variant", kind: "solid bad" }
            )
          ),
          el(
            "div",
            {},
            el("h3", {}, "Accuracy from feedback"),
            MG.bars(
              variants.map(([name, v]) => {
                const f = v.feedback || {};
                const ci = f.accuracy_ci95 ? " [" + fmt.pct(f.accuracy_ci95[0], 0) + "–" + fmt.pct(f.accuracy_ci95[1], 0) + "]" : "";
                return { label: name, value: f.accuracy || 0, text: f.n ? fmt.pct(f.accuracy, 0) + ci + " n=" + f.n : "no feedback" };
              }),
              { caption: "Feedback accuracy per variant", kind: "wide-values solid good" }
            ),
            report.comparison && report.comparison.p_value !== null && report.comparison.p_value !== undefined
              ? el(
                  "p",
                  { class: "small" },
                  report.comparison.variants.join(" vs ") + ": p = " + Number(report.comparison.p_value).toFixed(3) +
                    (report.comparison.p_value < 0.05 ? " (a real difference)" : " (not significant yet)")
                )
              : el("p", { class: "small muted" }, "Send feedback from “Try a model” to compare accuracy.")
          )
        )
      );
    }
    if (shadows.length) {
      parts.push(
        el("h3", {}, "Shadows: agreement with the answer returned"),
        MG.bars(
          shadows.map(([version, s]) => ({
            label: "v" + version,
            value: s.top1_agreement || 0,
            text: s.compared ? fmt.pct(s.top1_agreement) + " of " + s.compared : "nothing compared yet",
          })),
          { caption: "Top-1 agreement per shadow version", kind: "wide-values solid good" }
        ),
        el(
          "p",
          { class: "small muted" },
          shadows
            .map(([version, s]) =>
              "v" + version + ": " + s.errors + " errors, " + s.dropped + " dropped" +
                (s.mean_abs_score_diff !== null ? ", mean score gap " + Number(s.mean_abs_score_diff).toFixed(3) : "")
            )
            .join(" · ")
        )
      );
    }
    clear(reportBox, parts);
  }

  // -- Audit ---------------------------------------------------------------------------------

  function renderAudit(entries, fresh) {
    if (!entries.length) {
      clear(auditBox, el("p", { class: "muted" }, "No change to " + model.name + " yet."));
      return;
    }
    const previous = lastAuditId;
    lastAuditId = entries[0].id;
    const rows = entries.map((entry) =>
      el(
        "tr",
        { class: !fresh && previous !== null && entry.id > previous ? "fresh" : "", dataset: { action: entry.action } },
        el("td", { "data-label": "When" }, el("time", { datetime: entry.at }, fmt.time(entry.at))),
        el("td", { "data-label": "Who" }, entry.actor),
        el("td", { "data-label": "Action" }, el("strong", {}, entry.action)),
        el("td", { class: "num", "data-label": "Revision" }, String(entry.revision)),
        el(
          "td",
          { "data-label": "Change", class: "diff" },
          entry.before ? el("del", {}, summary(entry.before)) : el("span", { class: "muted" }, "(new)"),
          " → ",
          el("ins", {}, summary(entry.after))
        )
      )
    );
    clear(
      auditBox,
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "cards-sm", id: "audit-table" },
          el("caption", { class: "visually-hidden" }, "Changes to " + model.name + ", newest first"),
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              el("th", { scope: "col" }, "When"),
              el("th", { scope: "col" }, "Who"),
              el("th", { scope: "col" }, "Action"),
              el("th", { scope: "col", class: "num" }, "Rev."),
              el("th", { scope: "col" }, "Change")
            )
          ),
          el("tbody", {}, rows)
        )
      )
    );
  }

  init();
})();
