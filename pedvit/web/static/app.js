// pedvit demo page. Image tab: image + prompts -> POST /api/segment -> mask overlay and one tile per worker.
// Video tab: clip + a prompt on its first frame -> POST /api/video (a background run) -> polls of
// GET /api/video/<job> -> playback with masks, each frame's windows per worker and each worker's scene coverage.
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
    initVideo(c.video);
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

// POST to `path` (a sample's name as JSON, or a file as the raw body) and hand the answer to `load`;
// one place for the status line and the errors of both tabs' sample and upload buttons.
async function postThenLoad(path, body, contentType, status, load) {
  showError("");
  setStatus(status, true);
  try {
    await load(await api(path, { method: "POST", headers: { "Content-Type": contentType }, body }));
  } catch (err) {
    showError(err.message);
    setStatus("");
  }
}

function postSample(path, name, status, load) {
  return postThenLoad(path, JSON.stringify({ name }), "application/json", status, load);
}

function postFile(path, file, load) {
  showError("");
  if (!file) return;
  if (state.config && file.size > state.config.max_upload_bytes) {
    showError("file too large (" + (file.size / 1048576).toFixed(1) + " MB); the limit is " + (state.config.max_upload_bytes / 1048576) + " MB");
    return;
  }
  return postThenLoad(path, file, file.type || "application/octet-stream", "uploading " + file.name + "…", load);
}

function pickSample(name) {
  return postSample("/api/images/sample", name, "loading " + name + "…", loadImage);
}

function uploadFile(file) {
  return postFile("/api/images", file, loadImage);
}

function clearCanvas(id) {
  const c = $(id);
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
}

// canvas pixel coordinates (= original image pixels) of a mouse event
function canvasXY(c, event) {
  const r = c.getBoundingClientRect();
  const x = (event.clientX - r.left) * (c.width / r.width);
  const y = (event.clientY - r.top) * (c.height / r.height);
  return [Math.max(0, Math.min(c.width - 1, x)), Math.max(0, Math.min(c.height - 1, y))];
}

// the points and box of `target` ({points, box, drag}) on canvas `c`
function drawPromptsOn(c, target) {
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const radius = Math.max(5, Math.round(Math.max(c.width, c.height) / 120));
  const box = target.drag ? target.drag.box : target.box;
  if (box) {
    ctx.lineWidth = Math.max(2, radius / 2);
    ctx.strokeStyle = "#00e5ff";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
  for (const [x, y, label] of target.points) {
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fillStyle = label === 1 ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.lineWidth = Math.max(1.5, radius / 3);
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

function drawPrompts() {
  drawPromptsOn($("prompt-canvas"), state);
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
// Left click: foreground point, right click: background point, left drag: box; on `canvas`, into
// `target` ({points, box, drag}) while `enabled()`; `changed()` after each new prompt.
function promptInput(canvas, target, enabled, changed) {
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousedown", (e) => {
    if (!enabled()) return;
    e.preventDefault();
    const [x, y] = canvasXY(canvas, e);
    target.drag = { x, y, button: e.button, box: null };
  });
  canvas.addEventListener("mousemove", (e) => {
    if (!target.drag || target.drag.button !== 0) return;
    const [x, y] = canvasXY(canvas, e);
    const d = target.drag;
    const threshold = 6 * (canvas.width / canvas.getBoundingClientRect().width);
    if (Math.abs(x - d.x) > threshold || Math.abs(y - d.y) > threshold) {
      d.box = [Math.min(d.x, x), Math.min(d.y, y), Math.max(d.x, x), Math.max(d.y, y)];
      drawPromptsOn(canvas, target);
    }
  });
  window.addEventListener("mouseup", (e) => {
    const d = target.drag;
    if (!d) return;
    target.drag = null;
    if (d.box) {
      target.box = d.box.map((v) => Math.round(v));
    } else if (e.target === canvas) {
      target.points.push([Math.round(d.x), Math.round(d.y), d.button === 2 ? 0 : 1]);
    } else {
      return;
    }
    drawPromptsOn(canvas, target);
    changed();
  });
}

promptInput($("prompt-canvas"), state, () => !!state.imageId, segment);
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
// ---------------------------------------------------------------------------------- tabs
function showTab(name) {
  for (const el of document.querySelectorAll("[data-pane]")) el.hidden = el.dataset.pane !== name;
  for (const b of document.querySelectorAll(".tabs .tab")) b.classList.toggle("active", b.dataset.show === name);
}
for (const b of document.querySelectorAll(".tabs .tab")) b.addEventListener("click", () => showTab(b.dataset.show));

// ---------------------------------------------------------------------------------- video tab
const video = {
  clip: null, frames: [], points: [], box: null, drag: null,
  job: null, running: false, result: null, current: 0, timer: null, follow: true,
};

function initVideo(v) {
  v.temporal_policies.forEach((p) => option($("temporal"), p));
  $("temporal").value = v.default_temporal;
  $("clip-max-frames").textContent = String(v.max_frames);
  v.sample_clips.forEach((name) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = name + " (generated)";
    b.dataset.clip = name;
    b.addEventListener("click", () => pickClip(name));
    $("clip-samples").appendChild(b);
  });
}

const RUN_IN_PROGRESS = "a video run is in progress: wait for it or cancel it first";

function pickClip(name) {
  if (video.running) return showError(RUN_IN_PROGRESS);
  return postSample("/api/clips/sample", name, "generating the " + name + " clip…", loadClip);
}

function uploadClip(file) {
  if (video.running) return showError(RUN_IN_PROGRESS);
  return postFile("/api/clips", file, loadClip);
}

function loadImageUrl(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser could not display " + url));
    img.src = url;
  });
}

async function loadClip(info) {
  stopPlaying();
  video.clip = info;
  video.points = [];
  video.box = info.object_box ? info.object_box.slice() : null;  // generated clips: the object's known box
  video.result = null;
  video.current = 0;
  // every frame is fetched once; playback draws them from memory
  video.frames = [];
  for (let i = 0; i < info.frames; i++) video.frames.push(loadImageUrl("/api/clips/" + info.clip_id + "/" + i + ".jpg"));
  for (const id of ["video-frame", "video-mask", "video-windows", "video-prompt"]) {
    $(id).width = info.width;
    $(id).height = info.height;
  }
  $("video-frame").getContext("2d").drawImage(await video.frames[0], 0, 0);
  clearCanvas("video-mask");
  clearCanvas("video-windows");
  drawPromptsOn($("video-prompt"), video);
  $("video-placeholder").hidden = true;
  $("video-slider").max = "0";
  $("video-slider").value = "0";
  $("video-slider").disabled = true;
  $("video-play").disabled = true;
  $("video-workers").textContent = "";
  $("video-result").textContent = "";
  $("coverage-maps").textContent = "";
  $("coverage-maps-box").hidden = true;
  clearCanvas("coverage-chart");
  $("video-progress").value = 0;
  $("video-progress-text").textContent = info.frames + " frames of " + info.width + " × " + info.height;
  setStatus("clip: " + info.frames + " frames" + (video.box ? " — the object's box is drawn; run, or draw another" : " — draw a box on the object, then run"));
}

function videoBody() {
  const cap = $("cap").value.trim();
  return Object.assign(settings(), {
    clip_id: video.clip.clip_id, points: video.points, box: video.box,
    temporal: $("temporal").value, coverage_cap: cap === "" ? null : Number(cap), reuse: $("reuse").checked,
  });
}

async function runVideo() {
  if (!video.clip) return showError("upload or pick a clip first");
  if (!video.points.length && !video.box) return showError("draw a box (or click a point) on the first frame first");
  showError("");
  stopPlaying();
  try {
    const r = await api("/api/video", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(videoBody()) });
    video.job = r.job_id;
    video.result = { frames: [], workers: [], windows: {}, settings: null, state: "queued" };
    video.running = true;
    video.follow = true;
    delete document.body.dataset.videoState;
    $("video-run").disabled = true;
    $("video-cancel").disabled = false;
    clearCanvas("video-prompt");
    setStatus("video run started", true);
    pollVideo(r.job_id);
  } catch (err) {
    showError(err.message);
  }
}

async function pollVideo(jobId) {
  if (video.job !== jobId) return;
  let r;
  try {
    r = await api("/api/video/" + jobId + "?since=" + video.result.frames.length);
  } catch (err) {
    return finishVideo("failed", err.message);
  }
  if (video.job !== jobId) return;
  const res = video.result;
  Object.assign(res, { workers: r.workers, windows: r.windows, settings: r.settings, state: r.state, total: r.total });
  for (const f of r.frames) {
    f.maskImage = loadImageUrl(f.mask);
    res.frames.push(f);
  }
  $("video-progress").max = r.total;
  $("video-progress").value = res.frames.length;
  $("video-progress-text").textContent = r.state + ": " + res.frames.length + " / " + r.total + " frames";
  if (res.frames.length) {
    $("video-slider").max = String(res.frames.length - 1);
    $("video-slider").disabled = false;
    $("video-play").disabled = false;
    if (video.follow && !video.timer) showVideoFrame(res.frames.length - 1);
  }
  if (r.state === "queued" || r.state === "running") {
    setStatus("video: frame " + res.frames.length + " of " + r.total + "…", true);
    setTimeout(() => pollVideo(jobId), 400);
    return;
  }
  res.seconds = r.seconds;
  res.max = r.max_worker_scene_coverage;
  drawCoverageMaps(r.coverage_maps);
  finishVideo(r.state, r.error);
}

function finishVideo(stateName, error) {
  video.running = false;
  $("video-run").disabled = false;
  $("video-cancel").disabled = true;
  if (error) showError(error);
  const res = video.result;
  setStatus("video " + stateName + (res && res.seconds ? " in " + res.seconds.toFixed(1) + " s" : ""));
  if (res) showVideoResult(res);
  document.body.dataset.videoState = stateName;
}

function showVideoResult(res) {
  const frames = res.frames;
  const cap = res.settings && res.settings.coverage_cap;
  const rows = [
    ["frames segmented", frames.length + " / " + (res.total || frames.length)],
    ["policy", res.settings ? res.settings.temporal + (cap ? ", cap " + cap : ", no cap") + (res.settings.reuse ? ", reuse" : "") : ""],
    ["lost (re-prompted)", String(frames.filter((f) => f.lost).length)],
    ["windows sent per frame", frames.length ? (frames.reduce((n, f) => n + Object.values(f.windows_per_worker).reduce((a, w) => a + w.length, 0), 0) / frames.length).toFixed(1) : "–"],
    ["max worker scene coverage", res.max !== undefined ? (100 * res.max).toFixed(1) + "%" + (cap ? " (cap " + (100 * cap).toFixed(0) + "%)" : "") : "–"],
  ];
  if (res.seconds) rows.push(["frames per second", (frames.length / res.seconds).toFixed(2)]);
  const table = document.createElement("table");
  for (const [k, v] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = v;
  }
  const h = document.createElement("h2");
  h.textContent = "Video result";
  $("video-result").textContent = "";
  $("video-result").append(h, table);
}

async function showVideoFrame(i) {
  const res = video.result;
  if (!res || !res.frames[i]) return;
  video.current = i;
  const f = res.frames[i];
  $("video-slider").value = String(i);
  $("video-frame-label").textContent = "frame " + (i + 1) + " / " + res.frames.length + (f.lost ? " · lost, re-prompted" : "") + " · score " + f.score.toFixed(2);
  const [frame, mask] = await Promise.all([video.frames[i], f.maskImage]);
  if (video.current !== i) return;  // a newer frame was asked for meanwhile
  $("video-frame").getContext("2d").drawImage(frame, 0, 0);
  const m = $("video-mask").getContext("2d");
  m.clearRect(0, 0, m.canvas.width, m.canvas.height);
  m.drawImage(mask, 0, 0);
  drawFrameWindows(f, res);
  drawWorkerRows(f, res);
  drawCoverageChart(res, i);
  if (i === 0) drawPromptsOn($("video-prompt"), video); else clearCanvas("video-prompt");  // the prompt is the first frame's
  document.body.dataset.videoFrame = String(i);
}

function strokeWindow(ctx, rect, colour, dash, cross) {
  const [x0, y0, x1, y1] = rect;
  ctx.setLineDash(dash);
  ctx.strokeStyle = colour;
  ctx.strokeRect(x0 + 1, y0 + 1, x1 - x0 - 2, y1 - y0 - 2);
  if (cross) {
    ctx.beginPath();
    ctx.moveTo(x0, y0); ctx.lineTo(x1, y1);
    ctx.moveTo(x1, y0); ctx.lineTo(x0, y1);
    ctx.stroke();
  }
  ctx.setLineDash([]);
}

function drawFrameWindows(f, res) {
  const c = $("video-windows");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.lineWidth = Math.max(1.5, Math.max(c.width, c.height) / 300);
  const dash = [6, 4];
  res.workers.forEach((w) => {
    for (const id of f.windows_per_worker[w.name] || []) {
      const rect = res.windows[String(id)];
      if (!rect) continue;
      ctx.fillStyle = w.colour + "22";
      ctx.fillRect(rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]);
      strokeWindow(ctx, rect, w.colour, [], false);
    }
  });
  for (const id of f.reused) if (res.windows[String(id)]) strokeWindow(ctx, res.windows[String(id)], "#9aa3b5", dash, false);
  for (const id of f.held_back) if (res.windows[String(id)]) strokeWindow(ctx, res.windows[String(id)], "#d62728", dash, false);
  for (const id of f.kept_local.concat(f.remembered_local || [])) if (res.windows[String(id)]) strokeWindow(ctx, res.windows[String(id)], "#d62728", [], true);
}

function drawWorkerRows(f, res) {
  const root = $("video-workers");
  root.textContent = "";
  const cap = res.settings && res.settings.coverage_cap;
  res.workers.forEach((w, k) => {
    const row = document.createElement("div");
    row.className = "worker-row";
    const name = document.createElement("div");
    const sent = (f.windows_per_worker[w.name] || []).length;
    const coverage = f.coverage[k] || 0;
    const label = document.createElement("span");
    label.className = "name";
    label.style.color = w.colour;
    label.textContent = w.name;
    name.append(label, " · " + sent + (sent === 1 ? " window" : " windows") + " now · " + (100 * coverage).toFixed(1) + "% of the scene so far");
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = Math.min(100, 100 * coverage).toFixed(1) + "%";
    fill.style.background = w.colour;
    bar.appendChild(fill);
    if (cap) {
      const mark = document.createElement("div");
      mark.className = "cap";
      mark.style.left = (100 * cap).toFixed(1) + "%";
      bar.appendChild(mark);
    }
    row.append(name, bar);
    root.appendChild(row);
  });
  const edge = document.createElement("div");
  edge.className = "worker-row";
  edge.textContent = "edge: " + f.kept_local.length + " kept local · " + (f.remembered_local || []).length + " remembered · " + f.held_back.length + " held back · " + f.reused.length + " reused";
  root.appendChild(edge);
}

// each worker's cumulative scene coverage over the frames, the cap (dashed) and the current frame
function drawCoverageChart(res, current) {
  const c = $("coverage-chart");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const total = Math.max(2, res.total || res.frames.length);
  const cap = res.settings && res.settings.coverage_cap;
  const top = Math.min(1, Math.max(cap || 0, ...res.frames.map((f) => Math.max(0, ...f.coverage))) * 1.15 || 1);
  const pad = 24;
  const x = (i) => pad + (c.width - pad - 6) * i / (total - 1);
  const y = (v) => c.height - 14 - (c.height - 24) * v / top;
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#5a6478";
  ctx.fillText((100 * top).toFixed(0) + "%", 0, 12);
  ctx.fillText("0", 8, c.height - 12);
  ctx.fillText("frame", c.width - 32, c.height - 2);
  if (cap) {
    ctx.strokeStyle = "#d62728";
    ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(pad, y(cap)); ctx.lineTo(c.width - 6, y(cap)); ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.lineWidth = 2;
  res.workers.forEach((w, k) => {
    ctx.strokeStyle = w.colour;
    ctx.beginPath();
    res.frames.forEach((f, i) => (i ? ctx.lineTo(x(i), y(f.coverage[k])) : ctx.moveTo(x(i), y(f.coverage[k]))));
    ctx.stroke();
  });
  ctx.lineWidth = 1;
  ctx.strokeStyle = "#1d2330";
  ctx.beginPath(); ctx.moveTo(x(current), 4); ctx.lineTo(x(current), c.height - 14); ctx.stroke();
}

function drawCoverageMaps(maps) {
  const root = $("coverage-maps");
  root.textContent = "";
  for (const m of maps || []) {
    const div = document.createElement("div");
    div.className = "tile tile-coverage";
    div.style.borderColor = m.colour;
    const name = document.createElement("div");
    name.className = "name";
    name.style.color = m.colour;
    name.textContent = m.name + " · " + (100 * m.coverage).toFixed(1) + "%";
    const img = document.createElement("img");
    img.src = m.png;
    img.alt = "what " + m.name + " saw of the scene";
    img.style.width = "100%";
    div.append(name, img);
    root.appendChild(div);
  }
  $("coverage-maps-box").hidden = !(maps && maps.length);
}

function stopPlaying() {
  if (video.timer) clearInterval(video.timer);
  video.timer = null;
  $("video-play").textContent = "Play";
}

function togglePlay() {
  if (video.timer) return stopPlaying();
  const res = video.result;
  if (!res || !res.frames.length) return;
  video.follow = false;
  if (video.current >= res.frames.length - 1) showVideoFrame(0);
  const fps = Math.min(15, Math.max(2, (video.clip && video.clip.fps) || 10));
  $("video-play").textContent = "Pause";
  video.timer = setInterval(() => {
    const next = video.current + 1;
    if (next >= video.result.frames.length - 1) stopPlaying();  // the last frame stays on screen
    if (next <= video.result.frames.length - 1) showVideoFrame(next);
  }, 1000 / fps);
}

promptInput($("video-prompt"), video, () => !!video.clip && !video.running, () => {
  if (video.result && video.current !== 0) showVideoFrame(0);  // the prompt belongs to the first frame
});
$("video-clear").addEventListener("click", () => {
  video.points = [];
  video.box = null;
  drawPromptsOn($("video-prompt"), video);
});
$("clip-file").addEventListener("change", (e) => uploadClip(e.target.files[0]));
$("video-run").addEventListener("click", runVideo);
$("video-cancel").addEventListener("click", () => { if (video.job) api("/api/video/" + video.job + "/cancel", { method: "POST" }).catch((err) => showError(err.message)); });
$("video-play").addEventListener("click", togglePlay);
$("video-slider").addEventListener("input", (e) => { stopPlaying(); video.follow = false; showVideoFrame(Number(e.target.value)); });
init();
