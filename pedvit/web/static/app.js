// pedvit demo page: image + prompts -> POST /api/segment -> mask overlay and one tile per worker.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { config: null, imageId: null, width: 0, height: 0, points: [], box: null, drag: null, seq: 0 };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text, busy) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("busy", !!busy);
}

// fetch + JSON; every server error arrives as {"error": ...}
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("cannot reach the demo server (" + err.message + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || ("HTTP " + response.status));
  }
  return body;
}

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = String(value);
  o.textContent = label === undefined ? String(value) : label;
  select.appendChild(o);
}

async function init() {
  try {
    const c = await api("/api/config");
    state.config = c;
    c.plans.forEach((p) => option($("plan"), p));
    $("plan").value = c.default_plan;
    c.schemes.forEach((s) => option($("scheme"), s));
    $("scheme").value = c.default_scheme;
    for (let n = 1; n <= c.workers_available; n++) option($("workers"), n);
    $("workers").value = String(c.workers_available);
    c.halos.forEach((h) => option($("halo"), h));
    $("dp-row").hidden = !c.dp_supported;
    c.samples.forEach((name) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = name;
      b.dataset.sample = name;
      b.addEventListener("click", () => pickSample(name));
      $("samples").appendChild(b);
    });
    setStatus(c.model + " · " + c.workers_available + " workers available");
  } catch (err) {
    showError(err.message);
    setStatus("not connected");
  }
}

async function loadImage(info) {
  state.imageId = info.image_id;
  state.width = info.width;
  state.height = info.height;
  state.points = [];
  state.box = null;
  const img = new Image();
  await new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("the browser could not display the image"));
    img.src = "/api/images/" + info.image_id + ".png";
  });
  for (const id of ["image-canvas", "mono-canvas", "mask-canvas", "prompt-canvas"]) {
    const c = $(id);
    c.width = info.width;
    c.height = info.height;
  }
  $("image-canvas").getContext("2d").drawImage(img, 0, 0);
  clearCanvas("mask-canvas");
  clearCanvas("mono-canvas");
  drawPrompts();
  $("placeholder").hidden = true;
  $("tiles").textContent = "";
  $("result").textContent = "";
  setStatus("image " + info.width + " × " + info.height + " — click on an object");
}

async function pickSample(name) {
  showError("");
  setStatus("loading " + name + "…", true);
  try {
    await loadImage(await api("/api/images/sample", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }) }));
  } catch (err) {
    showError(err.message);
    setStatus("");
  }
}

async function uploadFile(file) {
  showError("");
  if (!file) return;
  if (state.config && file.size > state.config.max_upload_bytes) {
    showError("file too large (" + (file.size / 1048576).toFixed(1) + " MB); the limit is " + (state.config.max_upload_bytes / 1048576) + " MB");
    return;
  }
  setStatus("uploading " + file.name + "…", true);
  try {
    await loadImage(await api("/api/images", { method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file }));
  } catch (err) {
    showError(err.message);
    setStatus("");
  }
}

function clearCanvas(id) {
  const c = $(id);
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
}

// canvas pixel coordinates (= original image pixels) of a mouse event
function imageXY(event) {
  const c = $("prompt-canvas");
  const r = c.getBoundingClientRect();
  const x = (event.clientX - r.left) * (c.width / r.width);
  const y = (event.clientY - r.top) * (c.height / r.height);
  return [Math.max(0, Math.min(c.width - 1, x)), Math.max(0, Math.min(c.height - 1, y))];
}

function drawPrompts() {
  const c = $("prompt-canvas");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const radius = Math.max(5, Math.round(Math.max(c.width, c.height) / 120));
  const box = state.drag ? state.drag.box : state.box;
  if (box) {
    ctx.lineWidth = Math.max(2, radius / 2);
    ctx.strokeStyle = "#00e5ff";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
  for (const [x, y, label] of state.points) {
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fillStyle = label === 1 ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.lineWidth = Math.max(1.5, radius / 3);
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

function settings() {
  const dp = $("dp").value.trim();
  const body = {
    plan: $("plan").value,
    scheme: $("scheme").value,
    workers: Number($("workers").value),
    halo: Number($("halo").value),
    allow_local: $("allow-local").checked,
    fusion: $("fusion").checked,
    compare: $("compare").checked,
  };
  if (dp && state.config && state.config.dp_supported) body.dp_epsilon = Number(dp);
  return body;
}

async function segment() {
  if (!state.imageId) return;
  if (!state.points.length && !state.box) {
    clearCanvas("mask-canvas");
    clearCanvas("mono-canvas");
    return;
  }
  const seq = ++state.seq;  // only the newest answer is drawn
  showError("");
  setStatus("segmenting…", true);
  const body = Object.assign({ image_id: state.imageId, points: state.points, box: state.box }, settings());
  const started = performance.now();
  try {
    const r = await api("/api/segment", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (seq !== state.seq) return;
    await drawDataUrl("mask-canvas", r.mask);
    if (r.mono) {
      await drawDataUrl("mono-canvas", r.mono.mask);
    } else {
      clearCanvas("mono-canvas");
    }
    $("mono-canvas").hidden = !r.mono;
    drawTiles(r.tiles, r.settings && r.settings.dp_epsilon);
    showResult(r, performance.now() - started);
    setStatus("done in " + ((performance.now() - started) / 1000).toFixed(2) + " s" + (r.cached ? " (embedding cached: decoder only)" : ""));
    document.body.dataset.segmented = String(seq);
  } catch (err) {
    if (seq !== state.seq) return;
    showError(err.message);
    setStatus("failed");
  }
}

function drawDataUrl(canvasId, url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = $(canvasId);
      const ctx = c.getContext("2d");
      ctx.clearRect(0, 0, c.width, c.height);
      ctx.drawImage(img, 0, 0, c.width, c.height);
      resolve();
    };
    img.onerror = () => reject(new Error("could not draw the server's image"));
    img.src = url;
  });
}

function kb(n) {
  return n >= 1048576 ? (n / 1048576).toFixed(2) + " MB" : (n / 1024).toFixed(1) + " KB";
}

function drawTiles(tiles, dpEpsilon) {
  const root = $("tiles");
  root.textContent = "";
  for (const t of tiles || []) {
    const div = document.createElement("div");
    div.className = "tile" + (t.failed ? " failed" : "") + " tile-" + t.kind;
    div.style.borderColor = t.colour;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = t.name + (t.failed ? " (failed)" : "");
    name.style.color = t.colour;
    const canvas = document.createElement("canvas");
    const img = new Image();
    img.onload = () => {
      canvas.width = img.width;
      canvas.height = img.height;
      canvas.getContext("2d").drawImage(img, 0, 0);
      canvas.dataset.drawn = "1";
    };
    img.src = t.png;
    const stats = document.createElement("div");
    stats.className = "stats";
    const lines = [
      t.windows.length + " windows · " + (100 * t.coverage).toFixed(0) + "% of pixels",
    ];
    if (t.kind === "worker") {
      if (dpEpsilon) lines.push("pixels sent with DP noise (ε = " + dpEpsilon + ")");
      lines.push("sent " + kb(t.bytes_sent) + " · got " + kb(t.bytes_received));
      lines.push("wall " + t.wall_s.toFixed(2) + " s · compute " + t.compute_s.toFixed(2) + " s");
    } else {
      lines.push("never leaves the edge" + (t.keep_local && t.keep_local.length ? " · sensitive: " + t.keep_local.join(", ") : ""));
      lines.push("edge compute " + t.compute_s.toFixed(2) + " s");
    }
    if (t.errors && t.errors.length) lines.push(t.errors[0]);
    stats.textContent = lines.join("\n");
    div.append(name, canvas, stats);
    root.appendChild(div);
  }
}

function showResult(r, clientMs) {
  const rows = [
    ["mask score (IoU pred.)", r.score.toFixed(3)],
    ["mask area", (100 * r.mask_area).toFixed(1) + "%"],
    ["encode (split)", r.cached ? "cached" : r.timings.encode_s.toFixed(2) + " s"],
    ["decode", r.timings.decode_s.toFixed(3) + " s"],
    ["round trip", (clientMs / 1000).toFixed(2) + " s"],
  ];
  if (r.run) {
    rows.push(["plan / scheme", r.run.plan + " / " + r.run.scheme]);
    rows.push(["max windows per worker", String(r.run.max_windows_per_worker)]);
    if (r.run.failovers && r.run.failovers.length) rows.push(["failovers", String(r.run.failovers.length)]);
  }
  if (r.mono) {
    rows.push(["monolithic score", r.mono.score.toFixed(3)]);
    rows.push(["IoU split vs monolithic", r.mono.iou.toFixed(3)]);
    rows.push(["overlay", "blue: split · yellow: monolithic"]);
  }
  const table = document.createElement("table");
  for (const [k, v] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = v;
  }
  const root = $("result");
  root.textContent = "";
  const h = document.createElement("h2");
  h.textContent = "Result";
  root.append(h, table);
}

// ---------------------------------------------------------------------------------- prompt input
const prompt = $("prompt-canvas");
prompt.addEventListener("contextmenu", (e) => e.preventDefault());
prompt.addEventListener("mousedown", (e) => {
  if (!state.imageId) return;
  e.preventDefault();
  const [x, y] = imageXY(e);
  state.drag = { x, y, button: e.button, box: null };
});
prompt.addEventListener("mousemove", (e) => {
  if (!state.drag || state.drag.button !== 0) return;
  const [x, y] = imageXY(e);
  const d = state.drag;
  const threshold = 6 * ($("prompt-canvas").width / $("prompt-canvas").getBoundingClientRect().width);
  if (Math.abs(x - d.x) > threshold || Math.abs(y - d.y) > threshold) {
    d.box = [Math.min(d.x, x), Math.min(d.y, y), Math.max(d.x, x), Math.max(d.y, y)];
    drawPrompts();
  }
});
window.addEventListener("mouseup", (e) => {
  const d = state.drag;
  if (!d) return;
  state.drag = null;
  if (d.box) {
    state.box = d.box.map((v) => Math.round(v));
  } else if (e.target === prompt) {
    state.points.push([Math.round(d.x), Math.round(d.y), d.button === 2 ? 0 : 1]);
  } else {
    return;
  }
  drawPrompts();
  segment();
});
$("file").addEventListener("change", (e) => uploadFile(e.target.files[0]));
const wrap = $("canvas-wrap");
wrap.addEventListener("dragover", (e) => e.preventDefault());
wrap.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files.length) uploadFile(e.dataTransfer.files[0]);
});
$("undo").addEventListener("click", () => { state.points.pop(); drawPrompts(); segment(); });
$("clear").addEventListener("click", () => {
  state.points = [];
  state.box = null;
  drawPrompts();
  clearCanvas("mask-canvas");
  clearCanvas("mono-canvas");
});
for (const id of ["plan", "scheme", "workers", "halo", "dp", "allow-local", "fusion", "compare"]) {
  $(id).addEventListener("change", segment);
}
init();
