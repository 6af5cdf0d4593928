// "Compare": one input on every ready version (one pinned request each, in parallel), or on an
// ensemble (one request; its members answer side by side), with disagreements outlined.
"use strict";

(function () {
  const { el, clear, fmt } = MG;
  const form = MG.$("#compare-form");
  const modelSelect = MG.$("#model");
  const description = MG.$("#model-desc");
  const results = MG.$("#results");
  const alerts = MG.$("#alerts");
  const button = MG.$("#run");
  const panel = MG.inputPanel(MG.$("#input-panel"), { onDrawEnd: () => run() });
  let models = {};
  let sequence = 0;

  async function init() {
    try {
      const list = await MG.loadModels();
      panel.setModels(Object.fromEntries(list.map((m) => [m.name, m])));
      models = MG.fillModelSelect(modelSelect, list, { filter: (m) => MG.mayInfer(m.name) });
      if (!Object.keys(models).length) {
        MG.showError(alerts, "No model here is open to you for predictions.");
        button.disabled = true;
        return;
      }
      chooseModel();
    } catch (err) {
      MG.showError(alerts, err, "Loading the models");
    }
  }

  function chooseModel() {
    const model = models[modelSelect.value];
    if (!model) return;
    const ready = (model.versions || []).filter((v) => v.state === "READY");
    description.textContent =
      (model.description || "") +
      (model.kind === "ensemble" ? "" : " · " + ready.length + " ready version" + (ready.length === 1 ? "" : "s"));
    panel.setModel(model);
    const url = new URL(location.href);
    url.searchParams.set("model", model.name);
    history.replaceState(null, "", url);
  }

  function request(input) {
    return input.form ? { method: "POST", form: input.form } : { method: "POST", json: input.json };
  }

  async function run() {
    const model = models[modelSelect.value];
    if (!model) return;
    const mine = ++sequence;
    clear(alerts);
    let input;
    try {
      input = await panel.collect();
    } catch (err) {
      MG.showError(alerts, err.message);
      return;
    }
    button.disabled = true;
    results.setAttribute("aria-busy", "true");
    try {
      const columns = model.kind === "ensemble" ? await viaEnsemble(model, input) : await viaVersions(model, input);
      if (mine !== sequence) return;
      render(columns, input);
    } catch (err) {
      if (mine === sequence) MG.showError(alerts, err);
    } finally {
      if (mine === sequence) {
        button.disabled = false;
        results.removeAttribute("aria-busy");
      }
    }
  }

  async function viaVersions(model, input) {
    const ready = (model.versions || []).filter((v) => v.state === "READY");
    if (!ready.length) throw new Error("No version of " + model.name + " is ready.");
    const base = MG.modelPath(model.name);
    const answers = await Promise.allSettled(
      ready.map((v) => MG.api(base + "/versions/" + v.version + "/predict", request(input)))
    );
    return ready.map((v, i) => ({
      title: "Version " + v.version,
      subtitle: MG.versionFormat(v),
      version: v.version,
      ms: answers[i].status === "fulfilled" ? answers[i].value.ms : null,
      predictions: answers[i].status === "fulfilled" ? answers[i].value.data.predictions : null,
      error: answers[i].status === "rejected" ? answers[i].reason : null,
    }));
  }

  async function viaEnsemble(model, input) {
    const answer = await MG.api(MG.modelPath(model.name) + "/predict", request(input));
    const columns = (answer.data.members || []).map((m) => ({
      title: m.model + " v" + m.version,
      subtitle: "member",
      version: m.version,
      predictions: m.predictions,
      ms: null,
    }));
    columns.push({
      title: "Ensemble",
      subtitle: answer.data.combine || "",
      predictions: answer.data.predictions,
      ms: answer.ms,
      combined: true,
    });
    return columns;
  }

  function render(columns, input) {
    const answered = columns.filter((c) => c.predictions && !c.combined);
    const majority = [];
    for (let item = 0; item < input.count; item += 1) {
      const counts = {};
      for (const c of answered) counts[c.predictions[item].label] = (counts[c.predictions[item].label] || 0) + 1;
      majority[item] = Object.entries(counts).sort((a, b) => b[1] - a[1])[0];
    }
    const split = majority
      .map((m, item) => (m && m[1] < answered.length ? item + 1 : null))
      .filter((x) => x !== null);
    const summary = split.length
      ? el("p", { class: "alert warn agreement" }, "The versions disagree on item " + split.join(", ") + ".")
      : el(
          "p",
          { class: "alert ok agreement" },
          answered.length > 1
            ? "All " + answered.length + " agree on " + (input.count === 1 ? "the answer." : "every item.")
            : "One answer."
        );
    const grid = el("div", { class: "compare-grid", dataset: { testid: "compare-grid" } });
    for (const column of columns) {
      const differs =
        column.predictions &&
        !column.combined &&
        column.predictions.some((p, item) => majority[item] && p.label !== majority[item][0]);
      const node = el(
        "section",
        { class: "compare-col" + (differs ? " disagree" : ""), "aria-label": column.title },
        el(
          "h3",
          {},
          el("span", {}, column.title),
          el("span", { class: "muted small" }, column.subtitle + (column.ms !== null ? " · " + fmt.ms(column.ms) : ""))
        )
      );
      if (column.error) {
        node.append(MG.errorBox(column.error));
      } else {
        column.predictions.forEach((prediction, item) => {
          const preview = input.previews[item] || {};
          node.append(
            el(
              "div",
              { class: "answer" },
              input.count > 1
                ? el("p", { class: "muted small" }, "Item " + (item + 1) + (preview.name ? " · " + preview.name : ""))
                : null,
              el(
                "p",
                { class: "top-label" },
                el("span", { class: "label-text" }, prediction.label),
                el("span", { class: "score" }, fmt.pct(prediction.score))
              ),
              MG.topKChart(prediction)
            )
          );
        });
      }
      grid.append(node);
    }
    clear(results, answered.length ? summary : null, grid);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  modelSelect.addEventListener("change", () => {
    clear(results, el("p", { class: "muted empty" }, "Each version's answer appears here."));
    clear(alerts);
    chooseModel();
  });
  init();
})();
