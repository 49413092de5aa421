// The explorer's page: everything it shows comes from the JSON API under /api/ of the same server.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const $ = (id) => document.getElementById(id);
const state = { info: null, map: null, view: null, hovered: null, examples: new Map(), click: null };

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, options);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `${response.status}`);
  $("error").hidden = true;
  return answer;
}

function showError(error) {
  $("error").textContent = error.message;
  $("error").hidden = false;
}

function run(fn) {  // a button's action: an API error is shown on the page, never thrown
  return (...args) => fn(...args).catch(showError);
}

// ---------------------------------------------------------------------------------------- outputs
function digit(b64, height, width) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height; canvas.className = "digit";
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  for (let i = 0; i < bytes.length; i++) {
    image.data.set([bytes[i], bytes[i], bytes[i], 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function render(target, answer, cols) {  // images or sentences of an answer into a container
  const box = $(target);
  box.replaceChildren();
  box.classList.toggle("grid", Boolean(cols));
  box.style.gridTemplateColumns = cols ? `repeat(${cols}, max-content)` : "";
  if (answer.images) {
    for (const b64 of answer.images) box.append(digit(b64, answer.height, answer.width));
  } else {
    const list = document.createElement("ol");
    for (const s of answer.sentences) {
      const item = document.createElement("li");
      item.textContent = s || "(empty)";
      list.append(item);
    }
    box.append(list);
  }
}

function words(container, tokens) {  // the words as the model read them, <unk> marked
  container.replaceChildren();
  tokens.forEach((w, i) => {
    const span = document.createElement("span");
    span.textContent = (i ? " " : "") + w;
    if (w === "<unk>") span.className = "unk";
    container.append(span);
  });
}

// ---------------------------------------------------------------------------------------- the map
async function loadMap() {
  const dims = document.body.classList.contains("map-dims") ? `?dims=${$("map-dim-x").value},${$("map-dim-y").value}` : "";
  state.map = await api(`/api/map${dims}`);
  const m = state.map;
  $("map-caption").textContent = m.method === "pca"
    ? `(PCA: ${(100 * m.explained[0]).toFixed(0)}% + ${(100 * m.explained[1]).toFixed(0)}% of the means' variance)`
    : `(dimensions ${dims.slice(6)})`;
  drawMap();
}

function drawMap() {
  const canvas = $("map"), ctx = canvas.getContext("2d"), m = state.map, pad = 12;
  const span = (a) => { const lo = Math.min(...a), hi = Math.max(...a), w = (hi - lo) || 1; return [lo - 0.05 * w, hi + 0.05 * w]; };
  const [x0, x1] = span(m.x), [y0, y1] = span(m.y);
  const sx = (x) => pad + (x - x0) / (x1 - x0) * (canvas.width - 2 * pad);
  const sy = (y) => canvas.height - pad - (y - y0) / (y1 - y0) * (canvas.height - 2 * pad);
  state.view = { sx, sy, fromX: (px) => x0 + (px - pad) / (canvas.width - 2 * pad) * (x1 - x0),
    fromY: (py) => y0 + (canvas.height - pad - py) / (canvas.height - 2 * pad) * (y1 - y0) };
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 0.6;
  for (let i = 0; i < m.x.length; i++) {
    ctx.fillStyle = m.labels ? PALETTE[m.labels[i] % PALETTE.length] : "#1f77b4";
    ctx.fillRect(sx(m.x[i]) - 1.5, sy(m.y[i]) - 1.5, 3, 3);
  }
  ctx.globalAlpha = 1;
  if (m.labels) drawLegend(ctx, [...new Set(m.labels)].sort((a, b) => a - b), canvas.width);
  if (state.click) {
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(sx(state.click[0]), sy(state.click[1]), 6, 0, 2 * Math.PI); ctx.stroke();
  }
  document.body.dataset.mapPoints = String(m.x.length);
}

function drawLegend(ctx, labels, width) {  // the colour of each label, top right
  ctx.font = "11px sans-serif"; ctx.textAlign = "left";
  labels.slice(0, 20).forEach((label, i) => {
    ctx.fillStyle = PALETTE[label % PALETTE.length];
    ctx.fillRect(width - 34, 8 + 14 * i, 9, 9);
    ctx.fillStyle = "#333";
    ctx.fillText(String(label), width - 20, 16 + 14 * i);
  });
}

function nearestPoint(px, py) {
  const { sx, sy } = state.view, m = state.map;
  let best = -1, bestD = 64;  // within 8 pixels
  for (let i = 0; i < m.x.length; i++) {
    const d = (sx(m.x[i]) - px) ** 2 + (sy(m.y[i]) - py) ** 2;
    if (d < bestD) { best = i; bestD = d; }
  }
  return best;
}

async function example(index) {
  if (!state.examples.has(index)) state.examples.set(index, await api("/api/example", { index }));
  return state.examples.get(index);
}

async function hover(event) {
  const rect = event.target.getBoundingClientRect();
  const px = event.clientX - rect.left, py = event.clientY - rect.top;
  const index = nearestPoint(px, py), box = $("hover");
  if (index < 0) { box.hidden = true; return; }
  state.hovered = index;
  const ex = await example(index);
  if (state.hovered !== index) return;  // the pointer moved on while it loaded
  box.replaceChildren();
  if (ex.image) box.append(digit(ex.image, 28, 28));
  const caption = document.createElement("div");
  caption.textContent = ex.sentence !== undefined ? `#${index}: ${ex.sentence}` : `#${index}, label ${ex.label}`;
  box.append(caption);
  box.style.left = `${px + 12}px`; box.style.top = `${py + 12}px`;
  box.hidden = false;
}

async function clickMap(event) {
  const rect = event.target.getBoundingClientRect();
  const px = event.clientX - rect.left, py = event.clientY - rect.top, m = state.map;
  const x = state.view.fromX(px), y = state.view.fromY(py);
  const z = m.origin.map((o, d) => o + x * m.axes[0][d] + y * m.axes[1][d]);
  state.click = [x, y];
  drawMap();
  render("decoded", await api("/api/decode", { z }));
  $("picked").textContent = `decoded at (${x.toFixed(2)}, ${y.toFixed(2)}) of the map`;
  const index = nearestPoint(px, py);
  if (index >= 0 && state.info.outputs === "sentences") {
    $("sentence").value = (await example(index)).sentence;
    await encodeSentence();
  }
}

function pick(which) {
  if (state.hovered === null) return;
  const text = state.info.outputs === "sentences";
  if (text) example(state.hovered).then((ex) => { $(`interp-${which}-text`).value = ex.sentence; });
  else $(`interp-${which}`).value = state.hovered;
}

// ---------------------------------------------------------------------------------------- text
async function encodeSentence() {
  const sentence = $("sentence").value;
  const answer = await api("/api/encode", { input: sentence, method: $("recon-method").value });
  const out = $("recon-output");
  out.replaceChildren();
  const read = document.createElement("p"), recon = document.createElement("p"), kl = document.createElement("p");
  read.className = "read"; read.append("read as: "); const span = document.createElement("span");
  words(span, answer.input.read); read.append(span);
  if (answer.input.truncated) read.append(" (cut at the model's length)");
  recon.id = "reconstruction"; recon.textContent = answer.reconstruction.sentences[0] || "(empty)";
  kl.textContent = `KL ${answer.kl.toFixed(2)} nats; posterior mean [${answer.mean.map((v) => v.toFixed(2)).join(", ")}]`;
  out.append(read, recon, kl);
  drawKl(answer.kl_per_dim, `this sentence's KL per dimension (total ${answer.kl.toFixed(2)} nats)`);
  const near = await api("/api/nearest", { z: answer.mean, k: 5 });
  $("nearest").replaceChildren(...near.examples.map((s, i) => {
    const li = document.createElement("li");
    li.textContent = `${s}  (#${near.indices[i]}, distance ${near.distances[i].toFixed(2)})`;
    return li;
  }));
}

async function pickSentence() {
  $("sentence").value = (await example(Number($("pick-index").value))).sentence;
  await encodeSentence();
}

// ---------------------------------------------------------------------------------------- panels
function ref(which) {
  return state.info.outputs === "sentences" ? $(`interp-${which}-text`).value : Number($(`interp-${which}`).value);
}

async function interpolate() {
  const steps = Number($("interp-steps").value);
  const answer = await api("/api/interpolate", { a: ref("a"), b: ref("b"), steps, mode: $("interp-mode").value });
  render("interp-output", answer, answer.images ? steps : 0);
}

async function traverse() {
  const dims = $("trav-dims").value.split(",").filter((s) => s.trim()).map(Number);
  const base = $("trav-base").value === "" ? null : Number($("trav-base").value);
  const answer = await api("/api/traverse", { dims, steps: Number($("trav-steps").value),
    span: Number($("trav-span").value), base });
  render("trav-output", answer, answer.images ? answer.cols : 0);
}

async function sample() {
  const answer = await api("/api/sample", { n: Number($("sample-n").value), temperature: Number($("sample-t").value),
    seed: Number($("sample-seed").value) });
  render("sample-output", answer, answer.images ? 8 : 0);
}

function drawKl(values, caption) {
  const canvas = $("kl"), ctx = canvas.getContext("2d"), info = state.info;
  const top = Math.max(...values, 1e-3), w = canvas.width / values.length, h = canvas.height - 16;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "10px sans-serif"; ctx.textAlign = "center";
  values.forEach((v, d) => {
    ctx.fillStyle = info.activity[d] > info.active_threshold ? "#1f77b4" : "#bbb";
    const bar = (v / top) * (h - 12);
    ctx.fillRect(d * w + 1, h - bar, Math.max(w - 2, 1), bar);
    ctx.fillStyle = "#444";
    if (values.length <= 40) ctx.fillText(String(d), d * w + w / 2, canvas.height - 4);
  });
  $("kl-caption").textContent = caption;
}

async function start() {
  const info = state.info = await api("/api/info");
  document.body.classList.add(`task-${info.task}`);
  $("info").textContent = `${info.task === "text" ? "sentence" : "image"} VAE, trained in ${info.trained_in}, running in ` +
    `${info.backend}; latent ${info.latent_dim}, step ${info.step ?? "?"}; ${info.test_examples} test examples ` +
    `(${info.test_source}); ${info.active_units} of ${info.latent_dim} units active; KL ${info.kl_total.toFixed(2)} nats`;
  if (info.outputs === "sentences") {
    $("sample-n").value = 5;
    const [a, b] = await Promise.all([example(0), example(Math.min(1, info.test_examples - 1))]);
    $("interp-a-text").value = a.sentence; $("interp-b-text").value = b.sentence;
  }
  drawKl(info.kl_per_dim, `test-set mean KL per dimension; ${info.active_units} active units ` +
    `(variance of the means over ${info.active_threshold})`);
  for (const [id, fn] of [["encode", encodeSentence], ["pick", pickSentence], ["interpolate", interpolate],
    ["traverse", traverse], ["sample", sample]]) $(id).addEventListener("click", run(fn));
  $("sentence").addEventListener("keydown", (e) => { if (e.key === "Enter") run(encodeSentence)(); });
  $("pick-a").addEventListener("click", () => pick("a"));
  $("pick-b").addEventListener("click", () => pick("b"));
  $("map").addEventListener("mousemove", (e) => hover(e).catch(showError));
  $("map").addEventListener("mouseleave", () => { $("hover").hidden = true; });
  $("map").addEventListener("click", run((e) => clickMap(e)));
  $("map-method").addEventListener("change", run(async () => {
    document.body.classList.toggle("map-dims", $("map-method").value === "dims"); await loadMap(); }));
  for (const id of ["map-dim-x", "map-dim-y"]) $(id).addEventListener("change", run(loadMap));
  await loadMap();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => start().catch(showError));
