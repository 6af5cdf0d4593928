// "Jobs": submit a zip or JSONL file as a batch job, watch its progress, download the results.
"use strict";

(function () {
  const { el, clear, fmt, $ } = MG;
  const alerts = $("#alerts");
  const jobsBox = $("#jobs");
  const modelSelect = $("#job-model");
  const routeSelect = $("#job-route");
  const fileInput = $("#job-file");
  let models = {};
  let stopPolling = null;
  const states = {};

  async function init() {
    try {
      const list = await MG.loadModels();
      models = MG.fillModelSelect(modelSelect, list, { ensembles: false, filter: (m) => MG.mayInfer(m.name) });
      fillRoutes();
    } catch (err) {
      MG.showError(alerts, err, "Loading the models");
    }
    await load();
  }

  function fillRoutes() {
    const model = models[modelSelect.value];
    clear(routeSelect, el("option", { value: "" }, "Let the router decide"));
    if (!model) return;
    for (const v of model.versions || []) {
      if (v.state === "READY") routeSelect.append(el("option", { value: "v:" + v.version }, "Version " + v.version + " · " + MG.versionFormat(v)));
    }
  }

  async function load() {
    try {
      const { data } = await MG.api("/api/jobs");
      render(data);
      const active = data.some((job) => job.state === "queued" || job.state === "running");
      if (active && !stopPolling) stopPolling = MG.poll(load, 1000);
      if (!active && stopPolling) {
        stopPolling();
        stopPolling = null;
      }
    } catch (err) {
      MG.showError(alerts, err, "Loading your jobs");
    }
  }

  function render(jobs) {
    for (const job of jobs) {
      const was = states[job.id];
      if (was && was !== job.state && !["queued", "running"].includes(job.state)) {
        MG.toast("Job on " + job.model + " " + job.state + ": " + job.progress.done + " of " + job.progress.total + " answered.");
      }
      states[job.id] = job.state;
    }
    if (!jobs.length) {
      clear(jobsBox, el("p", { class: "muted" }, "No job yet. Submit one above."));
      return;
    }
    const rows = jobs.map((job) => {
      const p = job.progress || {};
      const running = job.state === "queued" || job.state === "running";
      // An optimization (POST /api/models/<m>/optimize) is a job too: no input file, no rows.
      const task = job.kind && job.kind !== "predict";
      const title = task ? job.kind + " " + ((job.params || {}).mode || "") : job.input.name;
      const made = task && job.result && job.result.version ? "version " + job.result.version : null;
      return el(
        "tr",
        { dataset: { job: job.id, state: job.state } },
        el("td", { "data-label": "Job" }, el("strong", {}, title), el("div", { class: "small muted" }, fmt.time(job.created_at) + (task ? "" : " · " + fmt.bytes(job.input.bytes)))),
        el("td", { "data-label": "Model" }, job.model + " v" + job.version, el("div", { class: "small muted" }, "route: " + job.route_reason)),
        el("td", { "data-label": "State" }, el("span", { class: "state state-" + job.state }, job.state), job.error ? el("div", { class: "small" }, job.error) : null),
        el(
          "td",
          { class: "progress-cell", "data-label": "Progress" },
          el("progress", { max: 100, value: p.percent, "aria-label": "Progress of " + title }),
          el("div", { class: "small" }, task ? fmt.pct((p.percent || 0) / 100, 0) : p.done + " done" + (p.failed ? ", " + p.failed + " failed" : "") + " of " + p.total + " · " + fmt.pct((p.percent || 0) / 100, 0))
        ),
        el(
          "td",
          { class: "actions-cell", "data-label": "" },
          job.links.results_jsonl ? el("a", { class: "button small", href: job.links.results_jsonl, download: "" }, "JSONL") : null,
          job.links.results_csv ? el("a", { class: "button small", href: job.links.results_csv, download: "" }, "CSV") : null,
          made ? el("span", { class: "small" }, made) : null,
          running ? el("button", { type: "button", class: "small danger", onclick: () => cancel(job) }, "Cancel") : null
        )
      );
    });
    clear(
      jobsBox,
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "cards-sm", id: "jobs-table" },
          el("thead", {}, el("tr", {}, ["Input", "Model", "State", "Progress", "Results"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, rows)
        )
      )
    );
  }

  async function cancel(job) {
    try {
      await MG.api("/api/jobs/" + job.id, { method: "DELETE" });
      MG.toast("Job cancelled; the results so far stay downloadable.");
      await load();
    } catch (err) {
      MG.showError(alerts, err);
    }
  }

  $("#job-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(alerts);
    const file = fileInput.files[0];
    if (!modelSelect.value) {
      MG.showError(alerts, "No model is open to you for jobs.");
      return;
    }
    if (!file) {
      MG.showError(alerts, "Choose a .zip of images or a .jsonl file first.");
      return;
    }
    if (MG.limits.jobUploadBytes && file.size > MG.limits.jobUploadBytes) {
      MG.showError(alerts, "Too large: " + file.name + " is " + fmt.bytes(file.size) + "; a job file may be at most " + fmt.bytes(MG.limits.jobUploadBytes) + ".");
      return;
    }
    const form = new FormData();
    form.append("model", modelSelect.value);
    if (routeSelect.value.startsWith("v:")) form.append("version", routeSelect.value.slice(2));
    form.append("file", file, file.name);
    const button = $("#job-submit");
    button.disabled = true;
    try {
      const { data } = await MG.api("/api/jobs", { method: "POST", form });
      MG.toast("Job submitted: " + data.progress.total + " items on " + data.model + " v" + data.version + ".");
      fileInput.value = "";
      await load();
    } catch (err) {
      MG.showError(alerts, err);
    } finally {
      button.disabled = false;
    }
  });
  modelSelect.addEventListener("change", fillRoutes);
  $("#jobs-refresh").addEventListener("click", load);
  init();
})();
