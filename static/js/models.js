// "Models": every model with its versions (state, format, size, accuracy, latency, labels) and
// the traffic share its deployment policy gives each version; ensembles listed after.
"use strict";

(function () {
  const { el, clear, fmt } = MG;
  const container = MG.$("#models");
  const alerts = MG.$("#alerts");
  const updated = MG.$("#updated");
  let stopPolling = null;

  async function load() {
    try {
      const list = await MG.loadModels();
      const plain = list.filter((m) => m.kind !== "ensemble");
      const policies = await Promise.all(
        plain.map((m) =>
          MG.api(MG.modelPath(m.name) + "/deployment")
            .then((r) => r.data)
            .catch(() => null)
        )
      );
      const cards = plain.map((m, i) => modelCard(m, policies[i]));
      const ensembles = list.filter((m) => m.kind === "ensemble");
      clear(container, cards, ensembles.length ? ensembleTable(ensembles) : null);
      container.removeAttribute("aria-busy");
      clear(alerts);
      updated.textContent = "Updated " + new Date().toLocaleTimeString();
      const loading = plain.some((m) => (m.versions || []).some((v) => v.state === "LOADING"));
      if (loading && !stopPolling) stopPolling = MG.poll(load, 3000);
      if (!loading && stopPolling) {
        stopPolling();
        stopPolling = null;
      }
    } catch (err) {
      MG.showError(alerts, err, "Loading the models");
    }
  }

  function links(model) {
    const q = "?model=" + encodeURIComponent(model.name);
    return el(
      "p",
      { class: "row tight" },
      MG.mayInfer(model.name) ? el("a", { class: "button small", href: "/try" + q }, "Try it") : null,
      MG.mayInfer(model.name) ? el("a", { class: "button small", href: "/compare" + q }, "Compare versions") : null,
      MG.can("deploy") ? el("a", { class: "button small", href: "/rollouts" + q }, "Roll out") : null
    );
  }

  function modelCard(model, policy) {
    const share = policy ? MG.trafficShare(model, policy) : [];
    const shareOf = Object.fromEntries(share.map((s) => [s.version, s]));
    const labels = (policy && policy.labels) || {};
    const shadow = policy && policy.shadow;
    const rows = (model.versions || []).map((v) => {
      const p = v.provenance || {};
      const tags = Object.entries(labels)
        .filter(([, version]) => version === v.version)
        .map(([label]) => el("span", { class: "tag " + label }, label));
      if (shadow && shadow.version === v.version) tags.push(el("span", { class: "tag shadow" }, "shadow " + shadow.percent + " %"));
      const traffic = shareOf[v.version];
      const latency = p.latency_single_ms;
      return el(
        "tr",
        { dataset: { version: v.version } },
        el("td", { "data-label": "Version" }, el("strong", {}, "v" + v.version), " ", tags),
        el(
          "td",
          { "data-label": "State" },
          el("span", { class: "state state-" + v.state }, v.state),
          v.reason ? el("div", { class: "small muted" }, v.reason) : null
        ),
        el("td", { "data-label": "Format" }, MG.versionFormat(v)),
        el("td", { class: "num", "data-label": "Size" }, fmt.bytes(p.artifact_bytes)),
        el(
          "td",
          { class: "num", "data-label": "Accuracy", title: p.holdout_size ? "on " + p.holdout_size + " holdout items" : null },
          fmt.pct(p.holdout_accuracy)
        ),
        el(
          "td",
          {
            class: "num",
            "data-label": "Latency",
            title: latency !== undefined ? "one item, median, measured when the version was built" : "not measured",
          },
          fmt.ms(latency)
        ),
        el(
          "td",
          { class: "share", "data-label": "Traffic" },
          traffic
            ? MG.bars([{ label: traffic.why.join(", "), value: traffic.percent, text: traffic.percent.toFixed(traffic.percent % 1 ? 1 : 0) + " %" }], { max: 100 })
            : el("span", { class: "muted" }, "0 %")
        )
      );
    });
    const table = el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "cards-sm" },
        el("caption", { class: "visually-hidden" }, "Versions of " + model.name),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            ["Version", "State", "Format"].map((h) => el("th", { scope: "col" }, h)),
            ["Size", "Accuracy", "Latency"].map((h) => el("th", { scope: "col", class: "num" }, h)),
            el("th", { scope: "col" }, "Traffic")
          )
        ),
        el("tbody", {}, rows)
      )
    );
    return el(
      "section",
      { class: "panel model-card", "aria-labelledby": "m-" + model.name, dataset: { model: model.name } },
      el(
        "h2",
        { id: "m-" + model.name },
        model.name,
        el("span", { class: "state state-" + (model.ready ? "ready" : "failed") }, model.ready ? "READY" : "NOT READY")
      ),
      el("p", { class: "muted" }, model.description || ""),
      model.labels && model.labels.length
        ? el("ul", { class: "labels-list", "aria-label": "Class labels" }, model.labels.map((l) => el("li", { class: "chip" }, l)))
        : null,
      share.length
        ? MG.stack(
            share.map((s) => ({ label: "v" + s.version + " (" + s.why.join(", ") + ")", percent: s.percent })),
            "Traffic share of " + model.name
          )
        : null,
      table,
      links(model)
    );
  }

  function ensembleTable(ensembles) {
    return el(
      "section",
      { class: "panel", "aria-labelledby": "ensembles-h" },
      el("h2", { id: "ensembles-h" }, "Ensembles"),
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "cards-sm" },
          el("thead", {}, el("tr", {}, ["Name", "State", "Combine", "Members", ""].map((h) => el("th", { scope: "col" }, h)))),
          el(
            "tbody",
            {},
            ensembles.map((e) =>
              el(
                "tr",
                {},
                el("td", { "data-label": "Name" }, el("strong", {}, e.name), el("div", { class: "small muted" }, e.description || "")),
                el("td", { "data-label": "State" }, el("span", { class: "state state-" + (e.ready ? "ready" : "failed") }, e.ready ? "READY" : "NOT READY")),
                el("td", { "data-label": "Combine" }, e.combine || "—"),
                el(
                  "td",
                  { "data-label": "Members" },
                  (e.members || [])
                    .map((m) => m.model + (m.version !== undefined ? " v" + m.version : " (" + (m.versions || "all") + " versions)"))
                    .join(", ")
                ),
                el(
                  "td",
                  { "data-label": "" },
                  MG.mayInfer(e.name) ? el("a", { href: "/compare?model=" + encodeURIComponent(e.name) }, "Compare") : null
                )
              )
            )
          )
        )
      )
    );
  }

  MG.$("#refresh").addEventListener("click", load);
  load();
})();
