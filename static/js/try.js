// "Try a model": one request to the model (routed, pinned to a version, or by label), and for
// every item its top label, the top-k as bars, the version, the route reason and the latency.
"use strict";

(function () {
  const { el, clear, fmt } = MG;
  const form = MG.$("#try-form");
  const modelSelect = MG.$("#model");
  const routeSelect = MG.$("#route");
  const description = MG.$("#model-desc");
  const results = MG.$("#results");
  const alerts = MG.$("#alerts");
  const button = MG.$("#predict");
  const panel = MG.inputPanel(MG.$("#input-panel"), { onDrawEnd: () => predict() });
  let models = {};
  let sequence = 0;

  async function init() {
    try {
      const list = await MG.loadModels();
      panel.setModels(Object.fromEntries(list.map((m) => [m.name, m])));
      models = MG.fillModelSelect(modelSelect, list, { filter: (m) => MG.mayInfer(m.name) });
      if (!Object.keys(models).length) {
        MG.showError(alerts, "No model here is open to you for predictions. Ask an administrator for a scope.");
        button.disabled = true;
        return;
      }
      await chooseModel();
    } catch (err) {
      MG.showError(alerts, err, "Loading the models");
    }
  }

  async function chooseModel() {
    const model = models[modelSelect.value];
    if (!model) return;
    description.textContent = model.description || "";
    panel.setModel(model);
    const url = new URL(location.href);
    url.searchParams.set("model", model.name);
    history.replaceState(null, "", url);
    await fillRoutes(model);
  }

  async function fillRoutes(model) {
    clear(routeSelect);
    if (model.kind === "ensemble") {
      routeSelect.append(el("option", { value: "" }, "The ensemble (" + (model.combine || "combined") + ")"));
      routeSelect.disabled = true;
      return;
    }
    routeSelect.disabled = false;
    routeSelect.append(el("option", { value: "" }, "Let the router decide"));
    const versions = el("optgroup", { label: "Version" });
    for (const v of model.versions || []) {
      const note = v.state === "READY" ? "" : " (" + String(v.state).toLowerCase() + ")";
      versions.append(
        el(
          "option",
          { value: "v:" + v.version, disabled: v.state !== "READY" },
          "Version " + v.version + " · " + MG.versionFormat(v) + note
        )
      );
    }
    routeSelect.append(versions);
    try {
      const { data: policy } = await MG.api(MG.modelPath(model.name) + "/deployment");
      const labels = Object.entries(policy.labels || {});
      if (labels.length) {
        const group = el("optgroup", { label: "Label" });
        for (const [label, version] of labels) {
          group.append(el("option", { value: "l:" + label }, label + " → version " + version));
        }
        routeSelect.append(group);
      }
    } catch (err) {
      // Labels are a convenience: without them the versions and the router remain.
    }
  }

  function endpoint(model) {
    const base = MG.modelPath(model.name);
    const route = routeSelect.value;
    if (route.startsWith("v:")) return base + "/versions/" + route.slice(2) + "/predict";
    if (route.startsWith("l:")) return base + "/labels/" + encodeURIComponent(route.slice(2)) + "/predict";
    return base + "/predict";
  }

  async function predict() {
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
      const request = input.form ? { method: "POST", form: input.form } : { method: "POST", json: input.json };
      const answer = await MG.api(endpoint(model), request);
      if (mine !== sequence) return; // a newer request is on its way
      render(model, answer, input);
    } catch (err) {
      if (mine !== sequence) return;
      MG.showError(alerts, err);
    } finally {
      if (mine === sequence) {
        button.disabled = false;
        results.removeAttribute("aria-busy");
      }
    }
  }

  function render(model, answer, input) {
    const data = answer.data;
    const reason = answer.headers.get("X-Route-Reason") || data.route_reason || "";
    const variant = answer.headers.get("X-Experiment-Variant");
    const served = data.version !== undefined ? "version " + data.version : "ensemble · " + (data.combine || "");
    const meta = el(
      "p",
      { class: "run-meta" },
      el("span", { class: "chip" }, data.model),
      el("span", { class: "chip strong", dataset: { testid: "served-by" } }, served),
      reason ? el("span", { class: "chip", title: "Why this version answered" }, "route: " + reason) : null,
      variant ? el("span", { class: "chip accent" }, "variant " + variant) : null,
      el("span", { class: "chip", title: "Measured in this browser, upload included" }, fmt.ms(answer.ms)),
      el("span", { class: "muted small" }, input.count === 1 ? "1 item" : input.count + " items")
    );
    const cards = data.predictions.map((prediction, index) =>
      card(prediction, input.previews[index], index, data, answer, variant)
    );
    clear(results, meta, el("div", { class: "result-grid" }, cards));
  }

  function card(prediction, preview, index, data, answer, variant) {
    const members = (data.members || []).map((m) =>
      el(
        "li",
        {},
        el("span", {}, m.model + " v" + m.version + ": "),
        el("strong", {}, m.predictions[index].label),
        " ",
        el("span", { class: "muted" }, fmt.pct(m.predictions[index].score))
      )
    );
    return el(
      "article",
      { class: "result", "aria-label": "Item " + (index + 1) + ": " + prediction.label },
      el(
        "div",
        { class: "preview" },
        preview && preview.image
          ? el("img", { src: preview.image, alt: preview.name ? "Input " + preview.name : "Input" })
          : el("p", { class: "small" }, (preview && preview.text) || "")
      ),
      el(
        "div",
        { class: "answer" },
        el(
          "p",
          { class: "top-label" },
          el("span", { class: "label-text" }, prediction.label),
          el("span", { class: "score" }, fmt.pct(prediction.score))
        ),
        MG.topKChart(prediction),
        members.length ? el("ul", { class: "members small" }, members) : null,
        el(
          "p",
          { class: "muted small" },
          (preview && preview.name ? preview.name + " · " : "") +
            (data.version !== undefined ? "v" + data.version + " · " : "") +
            fmt.ms(answer.ms)
        ),
        variant && data.predictions.length === 1 ? feedback(prediction, data) : null
      )
    );
  }

  // Feedback on an experiment's answer feeds the accuracy in the rollout report.
  function feedback(prediction, data) {
    const model = models[data.model] || {};
    const id = "fb-" + data.request_id;
    const choice = el(
      "select",
      { id },
      (model.labels || []).map((label) => el("option", { value: label, selected: label === prediction.label }, label))
    );
    const status = el("span", { class: "muted small", role: "status" });
    const send = async (label) => {
      // Every worker hands its experiment records to the shared store within a second, so
      // feedback sent at once may reach a worker that does not know the request yet.
      for (let attempt = 0; ; attempt += 1) {
        try {
          await MG.api("/api/feedback", { method: "POST", json: { request_id: data.request_id, label } });
          status.textContent = "Thanks: recorded “" + label + "”.";
          return;
        } catch (err) {
          if (!(err instanceof MG.ApiError && err.status === 404 && attempt < 3)) {
            status.textContent = MG.explain(err);
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
      }
    };
    return el(
      "div",
      { class: "feedback" },
      el("span", { class: "small" }, "Right answer? "),
      el("button", { type: "button", class: "ghost small", onclick: () => send(prediction.label) }, "Yes"),
      el("label", { for: id, class: "small" }, " or it was "),
      choice,
      el("button", { type: "button", class: "ghost small", onclick: () => send(choice.value) }, "Send"),
      status
    );
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    predict();
  });
  modelSelect.addEventListener("change", () => {
    clear(results, el("p", { class: "muted empty" }, "Answers appear here."));
    clear(alerts);
    chooseModel();
  });
  init();
})();
