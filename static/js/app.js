// ModelGate web UI: what every page shares. The pages call the same JSON API as any client;
// the browser's credentials are an HttpOnly cookie, and writes echo the CSRF cookie in a header.
"use strict";

(function () {
  const body = document.body;
  const MG = (window.MG = {});

  const PERMISSIONS = {
    viewer: ["models:read"],
    predictor: ["models:read", "infer"],
    deployer: ["models:read", "infer", "deploy"],
    admin: ["models:read", "infer", "deploy", "admin"],
  };

  MG.user = {
    name: body.dataset.user || "",
    role: body.dataset.role || "",
    scopes: (body.dataset.scopes || "").split(" ").filter(Boolean),
  };
  MG.limits = {
    uploadBytes: Number(body.dataset.maxUpload) || 0,
    jobUploadBytes: Number(body.dataset.maxJobUpload) || 0,
    itemsPerRequest: Number(body.dataset.maxItems) || 0,
  };

  /** Whether the signed-in role holds a permission (the server checks again). */
  MG.can = (permission) => (PERMISSIONS[MG.user.role] || []).includes(permission);

  /** Whether the role and scopes allow inference on a model. */
  MG.mayInfer = (model) =>
    MG.can("infer") &&
    (MG.user.role === "admin" ||
      MG.user.scopes.includes("infer:*") ||
      MG.user.scopes.includes("infer:" + model));

  // -- DOM ---------------------------------------------------------------------------------

  /** el("p", {class: "x", onclick: f}, "text", child): builds elements without innerHTML,
   * so names and messages from the server are never parsed as markup. */
  MG.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") {
        node.addEventListener(key.slice(2), value);
      } else if (key === "class") {
        node.className = value;
      } else if (key === "style" && typeof value === "object") {
        Object.assign(node.style, value);
      } else if (key === "dataset") {
        Object.assign(node.dataset, value);
      } else if (value === true) {
        node.setAttribute(key, "");
      } else {
        node.setAttribute(key, String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  MG.$ = (selector, root) => (root || document).querySelector(selector);

  MG.clear = function (node, ...children) {
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
    return node;
  };

  // -- Formatting --------------------------------------------------------------------------

  MG.fmt = {
    bytes(n) {
      // Binary units, as the server's limits are set (10 MiB uploads).
      if (n === null || n === undefined || Number.isNaN(Number(n))) return "—";
      const units = ["B", "KiB", "MiB", "GiB"];
      let value = Number(n);
      let unit = 0;
      while (value >= 1024 && unit < units.length - 1) {
        value /= 1024;
        unit += 1;
      }
      const text = unit === 0 || value >= 100 ? Math.round(value).toString() : value.toFixed(1).replace(/\.0$/, "");
      return text + " " + units[unit];
    },
    pct(x, digits) {
      if (x === null || x === undefined || Number.isNaN(Number(x))) return "—";
      return (100 * Number(x)).toFixed(digits === undefined ? 1 : digits) + " %";
    },
    ms(x) {
      if (x === null || x === undefined || Number.isNaN(Number(x))) return "—";
      const v = Number(x);
      return (v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : Math.round(v)) + " ms";
    },
    time(iso) {
      if (!iso) return "—";
      const date = new Date(iso);
      if (Number.isNaN(date.getTime())) return iso;
      return date.toLocaleString(undefined, {
        month: "short",
        day: "numeric",
        hour: "2-digit",
        minute: "2-digit",
        second: "2-digit",
      });
    },
  };

  // -- API ---------------------------------------------------------------------------------

  function cookie(name) {
    const prefix = name + "=";
    for (const part of document.cookie.split(";")) {
      const item = part.trim();
      if (item.startsWith(prefix)) return decodeURIComponent(item.slice(prefix.length));
    }
    return "";
  }

  class ApiError extends Error {
    constructor(status, data, headers) {
      const envelope = data && typeof data === "object" ? data : {};
      super(envelope.error || (typeof data === "string" && data) || "HTTP " + status);
      this.status = status;
      this.code = envelope.code || "";
      this.details = envelope.details || {};
      this.requestId = envelope.request_id || (headers && headers.get("X-Request-ID")) || "";
      this.retryAfter = headers ? Number(headers.get("Retry-After")) || null : null;
    }
  }
  MG.ApiError = ApiError;

  /** One API call: JSON or FormData in, {data, headers, ms, status} out; throws ApiError
   * with the server's envelope. ``ms`` is the latency this browser saw. */
  MG.api = async function (path, options) {
    const { method = "GET", json, form, headers = {}, signal } = options || {};
    const sent = new Headers(headers);
    sent.set("Accept", "application/json");
    let payload;
    if (json !== undefined) {
      sent.set("Content-Type", "application/json");
      payload = JSON.stringify(json);
    } else if (form !== undefined) {
      payload = form;
    }
    if (!["GET", "HEAD"].includes(method)) {
      const token = cookie(body.dataset.csrfCookie || "csrf_access_token");
      if (token) sent.set(body.dataset.csrfHeader || "X-CSRF-TOKEN", token);
    }
    const started = performance.now();
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: sent,
        body: payload,
        credentials: "same-origin",
        signal,
      });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, { error: "the server could not be reached", code: "network" }, null);
    }
    let data = null;
    if (response.status !== 204) {
      const type = response.headers.get("Content-Type") || "";
      data = type.includes("json")
        ? await response.json().catch(() => null)
        : await response.text();
    }
    const ms = performance.now() - started;
    if (!response.ok) throw new ApiError(response.status, data, response.headers);
    return { data, headers: response.headers, ms, status: response.status };
  };

  /** What went wrong, in words a person can act on. */
  MG.explain = function (err) {
    if (!(err instanceof ApiError)) return String((err && err.message) || err);
    const server = err.message;
    switch (err.status) {
      case 0:
        return "The server could not be reached. Check your connection and try again.";
      case 401:
        return "Your session has ended. Sign in again to continue.";
      case 403:
        return "Not allowed: " + server + ".";
      case 412:
        return (
          "Someone else changed this deployment since the page loaded it. " +
          "The page now shows the current state: check it, then try again."
        );
      case 413:
        return "Too large: " + server + ".";
      case 415:
        return "Not an image ModelGate can read (use PNG, JPEG or WebP): " + server + ".";
      case 422:
        return "The input does not fit: " + server + ".";
      case 429:
        return (
          "Too many requests. " +
          (err.retryAfter ? "Try again in " + err.retryAfter + " s." : "Wait a moment, then try again.")
        );
      case 503:
        return "Not available right now: " + server + ". Try again shortly.";
      default:
        if (err.status >= 500) return "The server had a problem (" + server + ").";
        return server.charAt(0).toUpperCase() + server.slice(1) + ".";
    }
  };

  /** An error box for ``err`` (an ApiError or a message), with a way to sign in again. */
  MG.errorBox = function (err, context) {
    const text = typeof err === "string" ? err : MG.explain(err);
    const parts = [context ? MG.el("strong", {}, context + ": ") : null, text];
    if (err instanceof ApiError && err.status === 401) {
      const next = location.pathname + location.search;
      parts.push(" ", MG.el("a", { href: "/login?next=" + encodeURIComponent(next) }, "Sign in"));
    }
    if (err instanceof ApiError && err.requestId && err.status >= 500) {
      parts.push(MG.el("span", { class: "muted small" }, " Request id " + err.requestId + "."));
    }
    return MG.el(
      "div",
      { class: "alert error", role: "alert", dataset: { status: err.status || "" } },
      parts
    );
  };

  /** Shows an error in a page's alert region (replacing what was there). */
  MG.showError = function (region, err, context) {
    MG.clear(region, MG.errorBox(err, context));
    region.scrollIntoView({ block: "nearest" });
  };

  let toastTimer = null;
  /** A short confirmation, read out by screen readers. */
  MG.toast = function (message) {
    const toast = MG.$("#toast");
    if (!toast) return;
    toast.textContent = message;
    toast.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => toast.classList.remove("show"), 4000);
  };

  // -- Models ------------------------------------------------------------------------------

  /** GET /api/models: models and ensembles. */
  MG.loadModels = async function () {
    const { data } = await MG.api("/api/models");
    return data;
  };

  MG.modelPath = (name) => "/api/models/" + encodeURIComponent(name);

  /** How a version takes its input, read from its declared pre-processing. */
  MG.inputKind = function (version) {
    const steps = (version && version.preprocess) || [];
    const features = steps.find((s) => s.step === "features");
    if (features) return { kind: "features", features: features.names || [] };
    if (steps.some((s) => s.step === "decode_image")) {
      return { kind: "image", drawable: steps.some((s) => s.step === "digit_ink") };
    }
    return { kind: "json" };
  };

  /** The version that describes a model's input: the newest ready one, else the newest. */
  MG.referenceVersion = function (model) {
    const versions = model.versions || [];
    return versions.find((v) => v.state === "READY") || versions[0] || null;
  };

  /** Format of a version: its runtime, and how it was optimised if it was. */
  MG.versionFormat = function (version) {
    const mode = version.provenance && version.provenance.mode;
    const runtime = { tflite: "TFLite", savedmodel: "SavedModel" }[version.runtime] || version.runtime;
    return mode ? runtime + " " + mode : runtime || "—";
  };

  /** Fills a <select> of models; ensembles in their own group. Returns the models by name. */
  MG.fillModelSelect = function (select, models, options) {
    const { ensembles = true, filter = () => true } = options || {};
    const byName = {};
    const plain = models.filter((m) => m.kind !== "ensemble" && filter(m));
    const combined = ensembles ? models.filter((m) => m.kind === "ensemble" && filter(m)) : [];
    const previous = select.value;
    MG.clear(select);
    const group = (label, list) => {
      if (!list.length) return;
      const node = MG.el("optgroup", { label });
      for (const model of list) {
        byName[model.name] = model;
        const note = model.ready ? "" : " (not ready)";
        node.append(MG.el("option", { value: model.name }, model.name + note));
      }
      select.append(node);
    };
    group("Models", plain);
    group("Ensembles", combined);
    const wanted = new URLSearchParams(location.search).get("model");
    for (const name of [previous, wanted]) {
      if (name && byName[name]) select.value = name;
    }
    return byName;
  };

  /** Share of routed traffic per version under a policy: [{version, percent, why}]. */
  MG.trafficShare = function (model, policy) {
    const ready = new Set((model.versions || []).filter((v) => v.state === "READY").map((v) => v.version));
    const share = {};
    const add = (version, percent, why) => {
      if (!ready.has(version) || percent <= 0) return;
      share[version] = share[version] || { version, percent: 0, why: [] };
      share[version].percent += percent;
      share[version].why.push(why);
    };
    const experiment = policy && policy.experiment;
    const live = experiment ? experiment.variants.filter((v) => ready.has(v.version) && v.weight > 0) : [];
    if (live.length) {
      const total = live.reduce((sum, v) => sum + v.weight, 0);
      for (const v of live) add(v.version, (100 * v.weight) / total, "variant " + v.name);
    } else {
      const weights = Object.entries((policy && policy.weights) || {})
        .map(([v, w]) => [Number(v), Number(w)])
        .filter(([v, w]) => ready.has(v) && w > 0);
      if (weights.length) {
        const total = weights.reduce((sum, [, w]) => sum + w, 0);
        const canary = policy.labels && policy.labels.canary;
        for (const [v, w] of weights) add(v, (100 * w) / total, v === canary ? "canary" : "weighted");
      } else {
        const stable = policy && policy.labels && policy.labels.stable;
        if (stable !== undefined && ready.has(stable)) add(stable, 100, "stable");
        else if (ready.size) add(Math.max(...ready), 100, "newest ready");
      }
    }
    return Object.values(share).sort((a, b) => b.percent - a.percent);
  };

  // -- Charts ------------------------------------------------------------------------------

  /** Horizontal bars: rows of {label, value, text, mark}; ``max`` scales them (default 1). */
  MG.bars = function (rows, options) {
    const { max = 1, caption = "", kind = "" } = options || {};
    const list = MG.el("ul", { class: "bars " + kind, "aria-label": caption || null });
    for (const row of rows) {
      const width = max > 0 ? Math.max(0, Math.min(100, (100 * (row.value || 0)) / max)) : 0;
      const fill = MG.el("span", { class: "fill" + (row.mark ? " mark" : "") });
      fill.style.width = width.toFixed(1) + "%";
      list.append(
        MG.el(
          "li",
          { class: row.mark ? "best" : "" },
          MG.el("span", { class: "bar-label", title: row.label }, row.label),
          MG.el("span", { class: "track", "aria-hidden": "true" }, fill),
          MG.el("span", { class: "bar-value" }, row.text !== undefined ? row.text : MG.fmt.pct(row.value))
        )
      );
    }
    return list;
  };

  /** Top-k scores of one prediction as bars, the top label marked. */
  MG.topKChart = function (prediction) {
    const rows = (prediction.top_k || []).map((s, i) => ({
      label: s.label,
      value: s.score,
      mark: i === 0,
    }));
    return MG.bars(rows, { caption: "Top scores" });
  };

  /** A stacked bar of shares [{label, percent, cls}] with a legend. */
  MG.stack = function (parts, caption) {
    const bar = MG.el("div", { class: "stack-bar", role: "img", "aria-label": caption });
    const legend = MG.el("ul", { class: "legend" });
    parts.forEach((part, i) => {
      const seg = MG.el("span", { class: "seg c" + (i % 6) });
      seg.style.width = part.percent + "%";
      bar.append(seg);
      legend.append(
        MG.el(
          "li",
          {},
          MG.el("span", { class: "swatch c" + (i % 6), "aria-hidden": "true" }),
          part.label + " ",
          MG.el("strong", {}, part.percent.toFixed(part.percent % 1 ? 1 : 0) + " %")
        )
      );
    });
    return MG.el("div", { class: "stack-chart" }, bar, legend);
  };

  /** Pauses polling while the tab is hidden; ``run`` is awaited before the next tick. */
  MG.poll = function (run, intervalMs) {
    let timer = null;
    let stopped = false;
    const tick = async () => {
      if (stopped) return;
      if (!document.hidden) {
        try {
          await run();
        } catch (err) {
          // The page shows its own errors; polling goes on.
        }
      }
      if (!stopped) timer = setTimeout(tick, intervalMs);
    };
    timer = setTimeout(tick, intervalMs);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  };
})();
