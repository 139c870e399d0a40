// Sampan console: the try-it page. It calls the public API exactly as a client would
// (POST /v1/models/NAME:predict), with the console session's CSRF token when signed in, and
// shows the equivalent curl command. Everything a model returns is put in as text.
"use strict";
(() => {
  const config = JSON.parse(document.getElementById("model-config").textContent);
  const form = document.getElementById("try-form");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("status");
  const output = document.getElementById("output");
  const curl = document.getElementById("curl");
  const url = `/v1/models/${encodeURIComponent(config.name)}:predict`;
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function quote(text) { return "'" + text.replace(/'/g, "'\\''") + "'"; }

  function showCurl(extra, note) {
    const auth = form.dataset.needsKey === "yes" ? ' \\\n  -H "Authorization: Bearer $SAMPAN_KEY"' : "";
    curl.textContent = `curl -X POST ${quote(location.origin + url)}${auth} \\\n  ${extra}` + (note ? `\n# ${note}` : "");
  }

  async function predict(body, isJson) {
    const headers = {};
    if (csrf) headers["X-CSRF-Token"] = csrf;
    if (isJson) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method: "POST", headers, credentials: "same-origin", body: isJson ? JSON.stringify(body) : body,
    });
    let data;
    try { data = await response.json(); } catch { data = { error: `HTTP ${response.status}` }; }
    if (!response.ok) throw new Error(`${response.status}: ${data.error || JSON.stringify(data)}`);
    return data;
  }

  function bars(rows) {  // rows: [{label, score}]
    const box = el("div", { class: "bars", id: "labels" });
    for (const row of rows) {
      box.append(el("span", { class: "label" }, row.label));
      const track = el("div", { class: "bar-track" });
      const bar = el("div", { class: "bar" });
      bar.style.width = `${Math.max(0, Math.min(1, row.score)) * 100}%`;
      track.append(bar);
      box.append(track, el("span", { class: "score" }, row.score.toFixed(3)));
    }
    return box;
  }

  function classification(prediction) {
    output.replaceChildren(
      el("p", { id: "top-label" }, `Predicted: ${prediction.label} (${prediction.score.toFixed(3)})`),
      bars(prediction.top_k || [{ label: prediction.label, score: prediction.score }]),
    );
    if (prediction.truncated) output.append(el("p", { class: "muted" }, "The text was truncated to the model's maximum length."));
  }

  // -- readings ---------------------------------------------------------------------------
  function parseReadings(text) {
    const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l);
    if (!lines.length) throw new Error("Paste some readings first.");
    let rows = lines.map((l) => l.split(/[,;\t]/).map((c) => c.trim()));
    let pick = null;
    if (rows[0].some((c) => c !== "" && isNaN(Number(c)))) {  // a header
      const header = rows[0];
      rows = rows.slice(1);
      pick = (config.columns || []).map((name) => header.indexOf(name));
      if (pick.some((i) => i < 0)) {
        throw new Error(`The file needs the columns ${config.columns.join(", ")}; it has ${header.join(", ")}.`);
      }
    }
    const channels = (config.columns || [null]).length;
    return rows.map((cells, n) => {
      const chosen = pick ? pick.map((i) => cells[i]) : cells.slice(cells.length - channels);
      const values = chosen.map((c) => (c === "" || c === undefined ? null : Number(c)));
      if (values.some((v) => v !== null && isNaN(v))) throw new Error(`Line ${n + 1} is not a number: ${cells.join(",")}`);
      return channels === 1 ? values[0] : values;
    });
  }

  function instance(window) {  // a model trained per series is told which one this is
    const pick = document.getElementById("series-id");
    return pick ? { series: pick.value, window } : window;
  }

  function firstChannel(row) { return Array.isArray(row) ? row[0] : row; }

  function seriesChart(history, forecast, flags) {
    const w = 760, h = 220, pad = 30;
    const all = history.concat(forecast || []).map(firstChannel).filter((v) => v !== null);
    const lo = Math.min(...all), hi = Math.max(...all), n = history.length + (forecast ? forecast.length : 0);
    const x = (i) => pad + ((w - 2 * pad) * i) / Math.max(1, n - 1);
    const y = (v) => h - pad - ((h - 2 * pad) * (v - lo)) / (hi - lo || 1);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("class", "chart");
    svg.setAttribute("id", "series-chart");
    const line = (points, color) => {
      const p = document.createElementNS(SVG, "polyline");
      p.setAttribute("fill", "none"); p.setAttribute("stroke", color); p.setAttribute("stroke-width", "1.5");
      p.setAttribute("points", points.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
      svg.append(p);
    };
    line(history.map((r, i) => [i, firstChannel(r)]).filter(([, v]) => v !== null), "#2563eb");
    if (forecast) line([[history.length - 1, firstChannel(history[history.length - 1])], ...forecast.map((r, i) => [history.length + i, firstChannel(r)])], "#d97706");
    for (const i of flags || []) {
      const c = document.createElementNS(SVG, "circle");
      c.setAttribute("cx", x(i).toFixed(1)); c.setAttribute("cy", y(firstChannel(history[i])).toFixed(1));
      c.setAttribute("r", "4"); c.setAttribute("fill", "#dc2626"); c.setAttribute("class", "anomaly-mark");
      svg.append(c);
    }
    return svg;
  }

  function sample() {  // a synthetic daily-cycle signal with one spike, said so on the page
    const period = config.period || 24, n = Math.max(3 * config.window, config.window + 4 * period);
    const channels = (config.columns || [null]).length;
    const lines = [];
    for (let i = 0; i < n; i++) {
      const values = [];
      for (let c = 0; c < channels; c++) {
        let v = 10 + 3 * Math.sin((2 * Math.PI * i) / period + c) + 0.2 * Math.sin(i * 12.9898 + c);
        if (i === Math.floor(n * 0.8)) v += 15;
        values.push(v.toFixed(3));
      }
      lines.push(values.join(","));
    }
    document.getElementById("series-input").value = lines.join("\n");
  }

  // -- the forms --------------------------------------------------------------------------
  const runners = {
    async image() {
      const file = document.getElementById("image-input").files[0];
      if (!file) throw new Error("Choose an image first.");
      const body = new FormData();
      body.append("file", file);
      showCurl(`-F file=@${quote(file.name)}`);
      classification((await predict(body, false)).predictions[0]);
    },
    async text() {
      const text = document.getElementById("text-input").value;
      if (!text.trim()) throw new Error("Type a text first.");
      const body = { instances: [text] };
      showCurl(`-H 'Content-Type: application/json' -d ${quote(JSON.stringify(body))}`);
      classification((await predict(body, true)).predictions[0]);
    },
    async embedding() {
      const query = document.getElementById("query-input").value.trim();
      const examples = document.getElementById("examples-input").value.split(/\r?\n/).map((l) => l.trim()).filter((l) => l);
      if (!query || !examples.length) throw new Error("Type a query and at least one example.");
      const texts = [query, ...examples], vectors = [];
      for (let i = 0; i < texts.length; i += config.max_batch_size) {
        const chunk = { instances: texts.slice(i, i + config.max_batch_size) };
        if (i === 0) showCurl(`-H 'Content-Type: application/json' -d ${quote(JSON.stringify(chunk))}`, texts.length > config.max_batch_size ? "the first of several requests" : "");
        for (const p of (await predict(chunk, true)).predictions) vectors.push(p.embedding);
      }
      const q = vectors[0];
      const ranked = examples.map((text, i) => ({ label: text, score: vectors[i + 1].reduce((s, v, j) => s + v * q[j], 0) }));
      ranked.sort((a, b) => b.score - a.score);
      output.replaceChildren(el("p", {}, `Nearest examples to "${query}" (cosine similarity):`), bars(ranked.slice(0, 10)));
    },
    async forecast() {
      const readings = parseReadings(document.getElementById("series-input").value);
      if (readings.length < config.window) throw new Error(`The model needs ${config.window} readings; got ${readings.length}.`);
      const window = readings.slice(-config.window);
      const body = { instances: [instance(window)] };
      showCurl(`-H 'Content-Type: application/json' -d ${quote(JSON.stringify(body))}`);
      const forecast = (await predict(body, true)).predictions[0].forecast;
      output.replaceChildren(
        el("p", { id: "forecast-summary" }, `Forecast of the next ${forecast.length} readings (orange) after the last ${config.window} (blue).`),
        seriesChart(window, forecast),
        el("pre", {}, forecast.map((r, i) => `+${i + 1}: ${JSON.stringify(r)}`).join("\n")),
      );
    },
    async anomaly() {
      const readings = parseReadings(document.getElementById("series-input").value);
      if (readings.length < config.window) throw new Error(`The model needs at least ${config.window} readings; got ${readings.length}.`);
      const ends = [];
      for (let i = config.window - 1; i < readings.length; i++) ends.push(i);
      const flags = [], scores = [];
      for (let k = 0; k < ends.length; k += config.max_batch_size) {
        const chunk = ends.slice(k, k + config.max_batch_size);
        const body = { instances: chunk.map((i) => instance(readings.slice(i - config.window + 1, i + 1))) };
        if (k === 0) showCurl(`-H 'Content-Type: application/json' -d ${quote(JSON.stringify({ instances: body.instances.slice(0, 1) }))}`, `one window per instance; the page sent ${ends.length} windows in ${Math.ceil(ends.length / config.max_batch_size)} requests`);
        status.textContent = `Scoring windows ${k + 1}-${k + chunk.length} of ${ends.length}...`;
        const predictions = (await predict(body, true)).predictions;
        predictions.forEach((p, j) => { scores.push(p.score); if (p.anomaly) flags.push(chunk[j]); });
      }
      output.replaceChildren(
        el("p", { id: "anomaly-summary" }, `${flags.length} of ${ends.length} readings flagged (red); the highest score is ${Math.max(...scores).toFixed(2)} (1.0 is the calibrated threshold).`),
        seriesChart(readings, null, flags),
      );
    },
    async json() {
      const body = { instances: JSON.parse(document.getElementById("json-input").value) };
      showCurl(`-H 'Content-Type: application/json' -d ${quote(JSON.stringify(body))}`);
      const data = await predict(body, true);
      output.replaceChildren(el("pre", { id: "json-output" }, JSON.stringify(data.predictions, null, 2)));
    },
  };

  const image = document.getElementById("image-input");
  if (image) {
    image.addEventListener("change", () => {
      const preview = document.getElementById("image-preview");
      if (image.files[0]) { preview.src = URL.createObjectURL(image.files[0]); preview.hidden = false; }
    });
  }
  const seriesFile = document.getElementById("series-file");
  if (seriesFile) {
    seriesFile.addEventListener("change", async () => {
      if (seriesFile.files[0]) document.getElementById("series-input").value = await seriesFile.files[0].text();
    });
    document.getElementById("series-sample").addEventListener("click", sample);
  }
  document.getElementById("run").addEventListener("click", async () => {
    status.textContent = "Calling the model...";
    status.className = "muted";
    try {
      await runners[form.dataset.form]();
      status.textContent = "Done.";
    } catch (error) {
      status.textContent = error.message;
      status.className = "error";
      output.replaceChildren();
    }
  });
})();
