// The input panel of "Try a model" and "Compare": draw a digit, upload images, fill in named
// features or write JSON instances, depending on what the model's pre-processing accepts.
"use strict";

(function () {
  const { el, clear, fmt } = MG;
  let panelCount = 0;

  const IMAGE_TYPES = "image/png,image/jpeg,image/webp";

  function humanize(name) {
    return name.replace(/[_-]+/g, " ");
  }

  /** A drawing pad: white ink on black, pointer events (mouse, pen, touch). */
  function drawPad(id, onStrokeEnd) {
    const canvas = el("canvas", {
      id,
      width: 280,
      height: 280,
      class: "pad",
      role: "img",
      "aria-label": "Drawing area: draw one digit with a mouse, pen or finger",
    });
    const ctx = canvas.getContext("2d");
    let drawing = false;
    let last = null;
    let inked = false;

    function reset() {
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      inked = false;
    }

    function point(event) {
      const box = canvas.getBoundingClientRect();
      return {
        x: ((event.clientX - box.left) * canvas.width) / box.width,
        y: ((event.clientY - box.top) * canvas.height) / box.height,
      };
    }

    function line(from, to) {
      ctx.strokeStyle = "#fff";
      ctx.fillStyle = "#fff";
      ctx.lineWidth = 22;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
      inked = true;
    }

    canvas.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      drawing = true;
      last = point(event);
      line(last, last);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
      for (const e of events.length ? events : [event]) {
        const next = point(e);
        line(last, next);
        last = next;
      }
    });
    const end = () => {
      if (!drawing) return;
      drawing = false;
      if (inked) onStrokeEnd();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    reset();
    return {
      canvas,
      reset,
      get inked() {
        return inked;
      },
      blob: () => new Promise((resolve) => canvas.toBlob(resolve, "image/png")),
    };
  }

  /**
   * MG.inputPanel(container, {onDrawEnd}) -> {setModel(model), collect(), mode}
   * collect() resolves to {form, json, count, previews} or throws an Error to show.
   */
  MG.inputPanel = function (container, options) {
    const { onDrawEnd = () => {} } = options || {};
    panelCount += 1;
    const uid = "in" + panelCount;
    let mode = null;
    let kind = { kind: "json" };
    let files = [];
    let featureRows = 1;

    const modeBox = el("fieldset", { class: "modes" }, el("legend", { class: "visually-hidden" }, "Input"));
    const body = el("div", { class: "input-body" });
    container.append(modeBox, body);

    // Draw
    const liveBox = el("input", { type: "checkbox", id: uid + "-live", checked: true });
    const pad = drawPad(uid + "-pad", () => {
      if (liveBox.checked) onDrawEnd();
    });
    const drawView = el(
      "div",
      { class: "draw" },
      el("p", { class: "muted small", id: uid + "-draw-help" }, "Draw one digit, large, in the middle of the square."),
      pad.canvas,
      el(
        "div",
        { class: "row tight" },
        el("button", { type: "button", class: "ghost", onclick: () => pad.reset() }, "Clear"),
        el("label", { class: "check", for: uid + "-live" }, liveBox, " Predict when I lift the pen")
      )
    );

    // Upload
    const fileInput = el("input", {
      type: "file",
      id: uid + "-files",
      multiple: true,
      accept: IMAGE_TYPES,
      class: "file-input",
    });
    const thumbs = el("ul", { class: "thumbs", "aria-label": "Chosen images" });
    const limitText = MG.limits.uploadBytes
      ? "PNG, JPEG or WebP; up to " + fmt.bytes(MG.limits.uploadBytes) + " per request."
      : "PNG, JPEG or WebP.";
    const drop = el(
      "div",
      { class: "dropzone" },
      fileInput,
      el(
        "label",
        { for: uid + "-files" },
        el("span", { class: "drop-icon", "aria-hidden": "true" }, "⇪"),
        el("strong", {}, "Choose images"),
        " or drop them here"
      ),
      el("p", { class: "muted small" }, limitText)
    );
    const uploadView = el("div", { class: "upload" }, drop, thumbs);

    // Previews are data: URLs: the page's Content-Security-Policy allows no blob: images.
    function dataUrl(file) {
      return new Promise((resolve) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => resolve("");
        reader.readAsDataURL(file);
      });
    }

    async function addFiles(list) {
      const added = [...list];
      const urls = await Promise.all(added.map((f) => (f.size <= 4e6 ? dataUrl(f) : "")));
      added.forEach((file, i) => files.push({ file, url: urls[i] }));
      renderThumbs();
    }

    function renderThumbs() {
      clear(
        thumbs,
        files.map((entry, index) =>
          el(
            "li",
            {},
            entry.url ? el("img", { src: entry.url, alt: "" }) : el("span", { class: "thumb-none", "aria-hidden": "true" }, "▣"),
            el("span", { class: "thumb-name", title: entry.file.name }, entry.file.name),
            el("span", { class: "muted small" }, fmt.bytes(entry.file.size)),
            el(
              "button",
              {
                type: "button",
                class: "icon",
                "aria-label": "Remove " + entry.file.name,
                onclick: () => {
                  files.splice(index, 1);
                  renderThumbs();
                },
              },
              "×"
            )
          )
        )
      );
    }

    fileInput.addEventListener("change", async () => {
      await addFiles(fileInput.files);
      fileInput.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (event) => {
        event.preventDefault();
        drop.classList.add("over");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      drop.addEventListener(type, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      addFiles(event.dataTransfer.files);
    });

    // Features
    const featureView = el("div", { class: "features" });

    function renderFeatures() {
      const names = kind.features || [];
      const keep = collectFeatureValues();
      clear(featureView);
      for (let row = 0; row < featureRows; row += 1) {
        const set = el("fieldset", { class: "feature-row" }, el("legend", {}, "Item " + (row + 1)));
        const grid = el("div", { class: "grid-fields" });
        names.forEach((name) => {
          const id = uid + "-f" + row + "-" + name;
          grid.append(
            el(
              "div",
              { class: "field" },
              el("label", { for: id }, humanize(name)),
              el("input", {
                id,
                type: "number",
                step: "any",
                inputmode: "decimal",
                required: true,
                dataset: { feature: name, row: String(row) },
                value: keep[row] && keep[row][name] !== undefined ? keep[row][name] : null,
              })
            )
          );
        });
        set.append(grid);
        if (featureRows > 1) {
          set.append(
            el(
              "button",
              {
                type: "button",
                class: "ghost small",
                onclick: () => {
                  const values = collectFeatureValues();
                  values.splice(row, 1);
                  featureRows -= 1;
                  renderFeatures();
                  fillFeatureValues(values);
                },
              },
              "Remove item " + (row + 1)
            )
          );
        }
        featureView.append(set);
      }
      featureView.append(
        el(
          "button",
          {
            type: "button",
            class: "ghost",
            onclick: () => {
              featureRows += 1;
              renderFeatures();
            },
          },
          "+ Add an item"
        )
      );
    }

    function collectFeatureValues() {
      const rows = [];
      for (const input of featureView.querySelectorAll("input[data-feature]")) {
        const row = Number(input.dataset.row);
        rows[row] = rows[row] || {};
        rows[row][input.dataset.feature] = input.value;
      }
      return rows;
    }

    function fillFeatureValues(rows) {
      for (const input of featureView.querySelectorAll("input[data-feature]")) {
        const row = rows[Number(input.dataset.row)];
        if (row && row[input.dataset.feature] !== undefined) input.value = row[input.dataset.feature];
      }
    }

    // JSON
    const jsonId = uid + "-json";
    const jsonArea = el("textarea", { id: jsonId, rows: 8, spellcheck: "false", class: "code" });
    const jsonView = el(
      "div",
      { class: "field" },
      el("label", { for: jsonId }, "JSON body"),
      jsonArea,
      el("p", { class: "muted small" }, '{"instances": [...]}: named features, {"b64": ...} images, or rows.')
    );

    const views = {
      draw: { label: "Draw", view: drawView },
      upload: { label: "Upload images", view: uploadView },
      features: { label: "Features", view: featureView },
      json: { label: "JSON", view: jsonView },
    };

    function modesFor(k) {
      if (k.kind === "image") return k.drawable ? ["draw", "upload"] : ["upload"];
      if (k.kind === "features") return ["features", "json"];
      return ["json"];
    }

    function show(next) {
      mode = next;
      clear(body, views[next].view);
      for (const radio of modeBox.querySelectorAll("input")) radio.checked = radio.value === next;
    }

    function setModel(model) {
      const version = MG.referenceVersion(model) || {};
      const next = model.kind === "ensemble" ? ensembleKind(model) : MG.inputKind(version);
      const sameKind = JSON.stringify(next) === JSON.stringify(kind);
      kind = next;
      const modes = modesFor(kind);
      clear(modeBox, el("legend", { class: "visually-hidden" }, "Input"));
      modeBox.hidden = modes.length < 2;
      for (const name of modes) {
        const id = uid + "-mode-" + name;
        modeBox.append(
          el(
            "label",
            { for: id },
            el("input", { type: "radio", name: uid + "-mode", id, value: name, onchange: () => show(name) }),
            views[name].label
          )
        );
      }
      if (!sameKind) {
        featureRows = 1;
        if (kind.kind === "features") {
          renderFeatures();
          const example = {};
          for (const name of kind.features) example[name] = 0;
          jsonArea.value = JSON.stringify({ instances: [example] }, null, 2);
        } else {
          jsonArea.value = JSON.stringify({ instances: [] }, null, 2);
        }
      }
      show(modes.includes(mode) && sameKind ? mode : modes[0]);
    }

    // An ensemble's input is its members'; the models list carries the member versions.
    let modelsByName = {};
    function ensembleKind(ensemble) {
      const member = (ensemble.members || [])[0];
      const model = member && modelsByName[member.model];
      return model ? MG.inputKind(MG.referenceVersion(model)) : { kind: "image", drawable: false };
    }

    async function collect() {
      if (mode === "draw") {
        if (!pad.inked) throw new Error("Draw a digit first.");
        const blob = await pad.blob();
        const form = new FormData();
        form.append("file", blob, "drawing.png");
        return { form, count: 1, previews: [{ image: pad.canvas.toDataURL("image/png"), name: "drawing" }] };
      }
      if (mode === "upload") {
        if (!files.length) throw new Error("Choose or drop one or more images first.");
        checkSizes(files.map((f) => f.file));
        const form = new FormData();
        for (const { file } of files) form.append("file", file, file.name);
        return {
          form,
          count: files.length,
          previews: files.map((f) => ({ image: f.url, name: f.file.name })),
        };
      }
      if (mode === "features") {
        const rows = collectFeatureValues();
        const instances = rows.map((row, index) => {
          const instance = {};
          for (const [name, raw] of Object.entries(row)) {
            const value = Number(raw);
            if (raw === "" || !Number.isFinite(value)) {
              throw new Error("Item " + (index + 1) + ": enter a number for " + humanize(name) + ".");
            }
            instance[name] = value;
          }
          return instance;
        });
        return {
          json: { instances },
          count: instances.length,
          previews: instances.map((inst) => ({
            text: Object.entries(inst)
              .map(([k, v]) => humanize(k) + " " + v)
              .join(", "),
          })),
        };
      }
      let parsed;
      try {
        parsed = JSON.parse(jsonArea.value);
      } catch (err) {
        throw new Error("The JSON body does not parse: " + err.message);
      }
      if (!parsed || !Array.isArray(parsed.instances) || !parsed.instances.length) {
        throw new Error('Write {"instances": [...]} with at least one instance.');
      }
      return {
        json: parsed,
        count: parsed.instances.length,
        previews: parsed.instances.map((inst) => ({ text: JSON.stringify(inst).slice(0, 120) })),
      };
    }

    function checkSizes(list) {
      const limit = MG.limits.uploadBytes;
      if (MG.limits.itemsPerRequest && list.length > MG.limits.itemsPerRequest) {
        throw new Error(
          "Too many images: one request takes at most " + MG.limits.itemsPerRequest + "."
        );
      }
      if (!limit) return;
      const big = list.find((f) => f.size > limit);
      if (big) {
        throw new Error(
          "Too large: " + big.name + " is " + fmt.bytes(big.size) + "; a request may carry at most " +
            fmt.bytes(limit) + ". Choose a smaller image."
        );
      }
      const total = list.reduce((sum, f) => sum + f.size, 0);
      if (total > limit) {
        throw new Error(
          "Too large: the images add up to " + fmt.bytes(total) + "; a request may carry at most " +
            fmt.bytes(limit) + ". Send fewer at a time."
        );
      }
    }

    return {
      setModel,
      setModels(byName) {
        modelsByName = byName;
      },
      collect,
      get mode() {
        return mode;
      },
    };
  };
})();
