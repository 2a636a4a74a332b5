// The zoo page: one photo, the models it asks for, POST /v1/compare, one card per model. No build step, no CDN.
"use strict";

const FIRST_YEAR = 1989, LAST_YEAR = 2022;
const $ = (id) => document.getElementById(id);
let models = [];   // GET /v1/models
let photo = null;  // {blob, type}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function year(model) { return (model.card && model.card.year) || null; }

async function loadModels() {
  const response = await fetch("/v1/models");
  models = (await response.json()).models.sort((a, b) => (year(a) || 0) - (year(b) || 0) || a.name.localeCompare(b.name));
  const box = $("models");
  for (const m of models) {
    const id = `model-${m.name}`;
    const input = el("input", {type: "checkbox", id, value: m.name});
    input.checked = m.state === "ready";
    input.disabled = m.state !== "ready";
    const label = el("label", {for: id}, `${m.name}${year(m) ? " (" + year(m) + ")" : ""}${m.state !== "ready" ? " [" + m.state + "]" : ""}`);
    box.append(el("div", {class: "model-choice"}, input, label));
  }
  drawTimeline();
}

function drawTimeline() {
  const line = $("timeline");
  line.replaceChildren(el("span", {class: "tick start", text: FIRST_YEAR}), el("span", {class: "tick end", text: LAST_YEAR}));
  const width = line.clientWidth || 600;
  const rowEnds = [];  // per row, where its last label ends (px): a label goes to the first row it fits in
  for (const m of models) {
    const y = year(m);
    if (!y) continue;
    const x = ((y - FIRST_YEAR) / (LAST_YEAR - FIRST_YEAR)) * width;
    const half = (m.name.length * 7 + 12) / 2;  // about a label's half width at .75rem
    let row = rowEnds.findIndex((end) => x - half > end);
    if (row < 0) row = rowEnds.push(-Infinity) - 1;
    rowEnds[row] = x + half;
    line.append(el("span", {class: "dot", title: `${m.name}, ${y}`, style: `left:${x}px;top:${(row + 1) * 1.4}em`, text: m.name}));
  }
  line.style.height = `${(rowEnds.length + 2) * 1.4}em`;
}

function setPhoto(blob, type) {
  photo = {blob, type: type || blob.type || "application/octet-stream"};
  const preview = $("preview");
  preview.src = URL.createObjectURL(blob);
  preview.alt = "the photo sent";
  preview.hidden = false;
  $("run").disabled = false;
}

async function sample(name) {
  const response = await fetch(`/static/samples/${name}`);
  if (!response.ok) {
    showError(`The sample ${name} is missing (${response.status}).`);
    return;
  }
  showError("");
  setPhoto(await response.blob());
}

function chosen() {
  return [...document.querySelectorAll("#models input:checked")].map((i) => i.value);
}

function showError(message) {
  const error = $("error");
  error.textContent = message;
  error.hidden = !message;
}

async function run() {
  if (!photo) return;
  showError("");
  $("run").disabled = true;
  $("summary").textContent = "Running…";
  try {
    const query = new URLSearchParams({models: chosen().join(","), top_k: "5"});
    const response = await fetch(`/v1/compare?${query}`, {method: "POST", headers: {"content-type": photo.type}, body: photo.blob});
    const body = await response.json();
    if (!response.ok) {
      $("summary").textContent = "";
      $("results").replaceChildren();
      showError(`${response.status}: ${body.error ? body.error.message : JSON.stringify(body)}`);
      return;
    }
    render(body.results);
  } catch (e) {
    showError(`The service did not answer: ${e}`);
  } finally {
    $("run").disabled = false;
  }
}

function render(results) {
  const answered = results.filter((r) => r.predictions.length);
  const votes = {};
  for (const r of answered) votes[r.predictions[0].label] = (votes[r.predictions[0].label] || 0) + 1;
  let [majority, count] = Object.entries(votes).sort((a, b) => b[1] - a[1])[0] || [null, 0];
  if (count === 1 && answered.length > 1) {
    majority = "";  // no two agree: every card is marked
    $("summary").textContent = `The ${answered.length} models all disagree.`;
  } else {
    $("summary").textContent = answered.length
      ? `${count} of ${answered.length} models say “${majority}”` + (count < answered.length ? "; the others disagree (marked)." : ".")
      : "No model answered.";
  }
  const byName = Object.fromEntries(models.map((m) => [m.name, m]));
  $("results").replaceChildren(...results.map((r) => card(r, byName[r.model] || {}, majority)));
}

function card(result, model, majority) {
  const info = model.card || {};
  const node = el("article", {class: "card", "data-model": result.model, tabindex: "0"});
  node.append(el("h3", {text: `${result.model}${info.year ? " · " + info.year : ""}`}));
  if (info.paper) node.append(el("p", {class: "paper", text: info.paper}));
  const weights = result.weights || model.weights;
  if (weights && weights.source === "random") {
    node.append(el("p", {class: "warning", role: "note", text: "⚠ Random weights: these predictions are meaningless."}));
  }
  if (result.error) {
    node.classList.add("failed");
    node.append(el("p", {class: "error", text: `${result.error.code}: ${result.error.message}`}));
    return node;
  }
  const top = result.predictions[0];
  if (majority !== null && top.label !== majority) {
    node.classList.add("disagrees");
    node.append(el("p", {class: "badge", text: `disagrees: says “${top.label}”`}));
  }
  const list = el("ol", {class: "predictions"});
  for (const p of result.predictions) {
    const percent = (p.probability * 100).toFixed(1);
    const bar = el("span", {class: "bar", style: `width:${Math.max(0.5, p.probability * 100)}%`});
    list.append(el("li", {class: "prediction"}, el("span", {class: "label", text: p.label}), el("span", {class: "track"}, bar), el("span", {class: "pct", text: `${percent}%`})));
  }
  node.append(list);
  const t = result.timing;
  node.append(el("p", {class: "timing", text: `decode ${t.decode_ms.toFixed(1)} ms · queue ${t.queue_ms.toFixed(1)} ms · inference ${t.inference_ms.toFixed(1)} ms · batch of ${result.batch_size}`}));
  const facts = [];
  if (model.input) facts.push(`input ${model.input.shape.slice(1).join("×")}`);
  if (info.params) facts.push(`${(info.params / 1e6).toFixed(1)} M parameters`);
  if (info.gflops) facts.push(info.gflops < 0.01 ? `${(info.gflops * 1000).toPrecision(3)} MFLOPs` : `${info.gflops.toPrecision(3)} GFLOPs`);
  const published = info.published_accuracy || {};
  if (published.imagenet_top1) facts.push(`ImageNet top-1 ${published.imagenet_top1}%, top-5 ${published.imagenet_top5}% (published, with torchvision's weights)`);
  if (weights) facts.push(`weights: ${weights.source}${weights.uri ? " (" + weights.uri + ")" : ""}`);
  node.append(el("p", {class: "facts", text: `version ${result.version} · ${facts.join(" · ")}`}));
  return node;
}

function wireDrop() {
  const drop = $("drop");
  for (const kind of ["dragenter", "dragover"]) drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const kind of ["dragleave", "drop"]) drop.addEventListener(kind, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer.files[0];
    if (file) setPhoto(file);
  });
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) setPhoto(e.target.files[0]); });
}

document.addEventListener("DOMContentLoaded", () => {
  wireDrop();
  for (const button of document.querySelectorAll("[data-sample]")) button.addEventListener("click", () => sample(button.dataset.sample));
  $("run").addEventListener("click", run);
  loadModels().catch((e) => showError(`Could not list the models: ${e}`));
});
