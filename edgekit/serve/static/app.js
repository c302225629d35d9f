// The page behind `edgekit serve --ui`: plain DOM calls against the server's own /v2 API.
// Text from the server (labels, manifest values, errors) is set with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const TOP_K = 5;
let models = [];        // served model names
let meta = null;        // metadata of the chosen model

function key() { return sessionStorage.getItem("edgekit-key") || ""; }

// fetch with the key; a 401 shows the key form and stops here
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (key()) headers["Authorization"] = "Bearer " + key();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("auth").hidden = false;
    $("key").focus();
    throw new Error(key() ? "the API key was refused" : "this server needs an API key");
  }
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}, not JSON` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "muted";
}

function clearResults() {
  $("results").replaceChildren();
  $("latency").textContent = "";
}

function showPredictions(predictions, serverMs, totalMs) {
  clearResults();
  for (const p of predictions) {
    const li = document.createElement("li");
    li.className = "prediction";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(1, p.score)) * 100}%`;
    bar.append(fill);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = p.score.toFixed(4);
    li.append(label, bar, score);
    $("results").append(li);
  }
  const server = serverMs == null ? "" : `server ${serverMs.toFixed(1)} ms, `;
  $("latency").textContent = `latency: ${server}round trip ${totalMs.toFixed(1)} ms`;
  status(`top ${predictions.length} of model ${$("model").value}`);
}

async function loadModels() {
  try {
    const info = await api("/v2");
    $("server").textContent = `${info.name} ${info.version}`;
    models = (await api("/v2/repository/index", { method: "POST" })).map((m) => m.name);
  } catch (e) {
    status(e.message, true);
    return;
  }
  $("auth").hidden = true;
  $("model").replaceChildren(...models.map((name) => new Option(name, name)));
  await chooseModel();
}

async function chooseModel() {
  const name = $("model").value;
  if (!name) return;
  clearResults();
  status("");
  const path = `/v2/models/${encodeURIComponent(name)}`;
  try {
    meta = await api(path);
    const info = await api(path + "/manifest");
    showManifest(meta, info.manifest, info.size_bytes);
  } catch (e) {
    status(e.message, true);
  }
}

function showManifest(meta, manifest, size) {
  const rows = [["size", `${(size / 1024).toFixed(1)} KB`], ["platform", meta.platform]];
  for (const t of meta.inputs) rows.push([`input ${t.name}`, `${t.datatype} [${t.shape.join(", ")}]`]);
  for (const t of meta.outputs) rows.push([`output ${t.name}`, `${t.datatype} [${t.shape.join(", ")}]`]);
  if (manifest) {
    rows.push(["recipe", `${manifest.recipe} (${manifest.format})`]);
    const p = manifest.parity;
    if (p) {
      const parts = [];
      if (p.top1_agreement != null) parts.push(`top-1 agreement ${(p.top1_agreement * 100).toFixed(1)} %`);
      if (p.cosine != null) parts.push(`cosine ${p.cosine.toFixed(4)}`);
      if (p.snr_db != null) parts.push(`SNR ${p.snr_db.toFixed(1)} dB`);
      if (p.samples != null) parts.push(`${p.samples} samples`);
      rows.push(["parity", parts.join(", ")]);
    }
    if (manifest.preprocessing) rows.push(["preprocessing", JSON.stringify(manifest.preprocessing)]);
    if (manifest.labels) rows.push(["labels", `${manifest.labels.length}: ${manifest.labels.slice(0, 10).join(", ")}` +
                                              (manifest.labels.length > 10 ? ", …" : "")]);
    const m = manifest.model || {};
    if (m.description) rows.push(["description", m.description]);
    if (m.license) rows.push(["license", m.license]);
    if (manifest.created_utc) rows.push(["created", manifest.created_utc]);
  } else {
    rows.push(["manifest", "none in this artifact"]);
  }
  const dl = $("manifest");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

async function classifyFile(file) {
  if (!file) return;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  status(`classifying ${file.name}…`);
  const start = performance.now();
  try {
    const name = encodeURIComponent($("model").value);
    const body = await api(`/v2/models/${name}/classify?top_k=${TOP_K}`, {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
    showPredictions(body.predictions, body.latency_ms, performance.now() - start);
  } catch (e) {
    clearResults();
    status(e.message, true);
  }
}

// A pasted tensor: a whole v2 request, or one array for the model's first input
function tensorRequest(text) {
  let value;
  try { value = JSON.parse(text); } catch (e) { throw new Error(`not JSON: ${e.message}`); }
  if (value && !Array.isArray(value) && Array.isArray(value.inputs)) return value;
  if (!Array.isArray(value)) throw new Error("expected a nested array or {\"inputs\": [...]}");
  const input = meta.inputs[0];
  const shape = [];
  for (let v = value; Array.isArray(v); v = v[0]) shape.push(v.length);
  const flat = value.flat(Infinity);
  if (shape.length === input.shape.length - 1) shape.unshift(1);   // one sample: add the batch dimension
  return { inputs: [{ name: input.name, shape, datatype: input.datatype, data: flat }] };
}

async function runTensor() {
  const start = performance.now();
  try {
    const request = tensorRequest($("tensor").value);
    const name = encodeURIComponent($("model").value);
    const body = await api(`/v2/models/${name}/infer`, {
      method: "POST", body: JSON.stringify(request), headers: { "Content-Type": "application/json" } });
    const out = body.outputs[0];
    const per = out.shape.length > 1 ? out.shape.slice(1).reduce((a, b) => a * b, 1) : out.data.length;
    const scores = out.data.slice(0, per);   // the first sample
    const labels = (meta.parameters && meta.parameters.labels) || [];
    const top = scores.map((s, i) => ({ label: labels[i] ?? String(i), score: s }))
                      .sort((a, b) => b.score - a.score).slice(0, TOP_K);
    showPredictions(top, null, performance.now() - start);
  } catch (e) {
    clearResults();
    status(e.message, true);
  }
}

function setUp() {
  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("edgekit-key", $("key").value);
    loadModels();
  });
  $("model").addEventListener("change", chooseModel);
  $("file").addEventListener("change", () => classifyFile($("file").files[0]));
  $("run-tensor").addEventListener("click", runTensor);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    classifyFile(event.dataTransfer.files[0]);
  });
  loadModels();
}

setUp();
