"""``GET /``: a one-file test page for ``movinet serve`` — upload a video, or stream the browser's camera.

The page is a string constant, not a package-data file: a wheel then cannot ship without it. It is
self-contained (inline CSS and JS, no CDN, no font, no image) so it works on an offline machine, and
its Content-Security-Policy lets the browser load nothing but this server: the script and the style
run by their SHA-256 (no ``'unsafe-inline'``), and ``connect-src 'self'`` keeps every fetch on the
origin. Labels from the model are written with ``textContent``, never as HTML. The route is left out
of the OpenAPI schema: the schema describes the API, not this page.
"""

from __future__ import annotations

import base64
import hashlib

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 960px; padding: 1em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 0 0 .5em; }
section { border: 1px solid #ccc; border-radius: 6px; padding: .8em 1em; margin: 1em 0; }
.error { color: #b00020; white-space: pre-wrap; font-weight: 600; }
.muted { color: #666; }
ol { padding-left: 1.5em; margin: .4em 0; }
li progress { width: 12em; margin: 0 .6em; vertical-align: middle; }
canvas#timeline { width: 100%; height: 160px; border: 1px solid #ddd; }
video#camera { width: 320px; max-width: 100%; background: #000; }
#legend span { display: inline-block; margin-right: 1em; }
#legend i { display: inline-block; width: .9em; height: .9em; margin-right: .3em; vertical-align: -.1em; }
#live-label { font-size: 1.6em; font-weight: 700; }
.row { display: flex; gap: 1em; flex-wrap: wrap; align-items: center; }
"""

_SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "movinet-token";
// Everything the page knows, on window so that a test (or a curious user) can read it.
const state = {health: null, prediction: null, timeline: [], palette: {}, stream: null, lastStream: null};
window.movinetPage = state;

function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  const token = $("token").value.trim();
  if (token) headers.Authorization = "Bearer " + token;
  return headers;
}

function describe(response, data) {
  const detail = data && data.detail;
  let text = Array.isArray(detail)
    ? detail.map((e) => (e.loc ? e.loc.join(".") + ": " : "") + e.msg).join("; ")
    : detail;
  if (!text) text = response.statusText || "request failed";
  if (response.status === 401 || response.status === 403) text += " (this server needs the token above)";
  return response.status + ": " + text;
}

// Relative paths: the page also works behind a proxy that serves the API under a prefix.
async function api(method, path, body, type) {
  const init = {method, headers: authHeaders(type ? {"Content-Type": type} : {})};
  if (body !== undefined) init.body = body;
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error("the server did not answer (" + err.message + ")");
  }
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) throw new Error(describe(response, data));
  return data;
}

function showError(id, message) { $(id).textContent = message || ""; }

function hslToRgb(h, s, l) {
  const k = (n) => (n + h / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1));
  return [f(0), f(8), f(4)].map((v) => Math.round(v * 255));
}

// A class's colour follows its index in /health's list, so a label keeps its colour across videos.
function colour(label) {
  if (!state.palette[label]) {
    const classes = state.health ? state.health.classes : [];
    let index = classes.indexOf(label);
    if (index < 0) index = classes.length + Object.keys(state.palette).length;
    state.palette[label] = hslToRgb((index * 137.508) % 360, 0.65, 0.45);
  }
  return state.palette[label];
}

async function loadHealth() {
  try {
    const health = await api("GET", "health");
    state.health = health;
    $("model").textContent = (health.model || "a local model") + (health.streaming ? " (stream model)" : "");
    $("class-count").textContent = health.classes.length;
    $("classes").textContent = health.classes.join(", ");
    if (health.preprocessing && health.preprocessing.fps) $("fps").value = health.preprocessing.fps;
  } catch (err) {
    showError("health-error", "GET /health: " + err.message);
  }
}

function topList(id, top) {
  const list = $(id);
  list.replaceChildren();
  for (const row of top) {
    const item = document.createElement("li");
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = row.probability;
    item.append(row.label, bar, row.probability.toFixed(3));
    list.append(item);
  }
}

async function classify(event) {
  event.preventDefault();
  const file = $("video").files[0];
  showError("upload-error", "");
  if (!file) return showError("upload-error", "pick a video file first");
  const form = new FormData();
  form.append("video", file, file.name);
  $("classify").disabled = true;
  $("upload-status").textContent = "classifying " + file.name + "...";
  try {
    showPrediction(await api("POST", "predict?per_frame=true&top_k=5", form));
  } catch (err) {
    showPrediction(null);
    showError("upload-error", err.message);
  } finally {
    $("classify").disabled = false;
    $("upload-status").textContent = "";
  }
}

function showPrediction(body) {
  state.prediction = body;
  state.timeline = body && body.per_frame ? body.per_frame : [];
  $("label").textContent = body ? body.label + " (" + body.score.toFixed(3) + ")" : "";
  $("summary").textContent = body ? body.video + ": " + body.frames + " frames at " + body.fps + " fps" : "";
  topList("top", body ? body.top : []);
  drawTimeline(state.timeline, body ? body.frames / body.fps : 0);
}

// Top label per timeline row as a band: its colour is the class, its height the probability.
function drawTimeline(rows, duration) {
  const canvas = $("timeline");
  canvas.width = canvas.clientWidth || 900;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  $("legend").replaceChildren();
  if (!rows.length) return;
  const left = 36, top = 8, width = canvas.width - left - 8, height = canvas.height - top - 22;
  const step = rows.length > 1 ? rows[1].time - rows[0].time : 1;
  const end = Math.max(duration || 0, rows[rows.length - 1].time + step) || 1;
  const x = (t) => left + Math.round((t / end) * width);
  rows.forEach((row, i) => {
    const x0 = x(row.time), x1 = Math.max(x(i + 1 < rows.length ? rows[i + 1].time : end), x0 + 1);
    const h = Math.max(1, Math.round(row.score * height));
    ctx.fillStyle = "rgb(" + colour(row.label).join(",") + ")";
    ctx.fillRect(x0, top + height - h, x1 - x0, h);
  });
  drawAxes(ctx, left, top, width, height, end);
  for (const label of new Set(rows.map((r) => r.label))) {
    const swatch = document.createElement("i");
    swatch.style.background = "rgb(" + colour(label).join(",") + ")";
    const entry = document.createElement("span");
    entry.append(swatch, label);
    $("legend").append(entry);
  }
}

function drawAxes(ctx, left, top, width, height, end) {
  ctx.strokeStyle = "#999";
  ctx.fillStyle = "#555";
  ctx.font = "11px sans-serif";
  ctx.beginPath();
  ctx.moveTo(left - 0.5, top);
  ctx.lineTo(left - 0.5, top + height + 0.5);
  ctx.lineTo(left + width, top + height + 0.5);
  ctx.stroke();
  ctx.fillText("1.0", 4, top + 8);
  ctx.fillText("0", 4, top + height);
  ctx.fillText("0 s", left, top + height + 16);
  ctx.fillText(end.toFixed(1) + " s", left + width - 30, top + height + 16);
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// One camera frame as a JPEG, its short side scaled down to what the model's preprocessing keeps.
function grab(video) {
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h) return Promise.resolve(null);
  const prep = state.health && state.health.preprocessing ? state.health.preprocessing : {};
  const scale = Math.min(1, Math.max(prep.size || 256, prep.crop_size || 0, 16) / Math.min(w, h));
  const canvas = $("frame");
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((done, fail) =>
    canvas.toBlob((blob) => (blob ? done(blob) : fail(new Error("could not encode the frame"))), "image/jpeg", 0.85));
}

async function startCamera() {
  showError("camera-error", "");
  if (state.stream) await stopCamera();
  const fps = Number($("fps").value);
  if (!navigator.mediaDevices) {  // browsers offer a camera only to secure pages: TLS or localhost
    return showError("camera-error", "no camera: a browser offers it only to a page on localhost or served over TLS");
  }
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
  } catch (err) {
    return showError("camera-error", "camera: " + err.message);
  }
  const stream = {id: null, media, fps, sent: 0, answers: 0, received: [], last: null, running: true};
  state.stream = stream;
  $("camera").srcObject = media;
  $("start").disabled = true;
  $("stop").disabled = false;
  try {
    await $("camera").play();
    stream.id = (await api("POST", "streams?fps=" + encodeURIComponent(fps))).id;
  } catch (err) {
    await stopCamera();
    return showError("camera-error", "POST /streams: " + err.message);
  }
  pushLoop(stream);
}

// The next frame goes only once the previous answer is back: requests never pile up on a slow model.
async function pushLoop(stream) {
  const interval = 1000 / stream.fps;
  while (stream.running) {
    const started = performance.now();
    try {
      const blob = await grab($("camera"));
      if (blob && stream.running) {
        stream.sent += 1;
        const answer = await api("POST", "streams/" + stream.id + "/frames?top_k=3", blob, "image/jpeg");
        if (stream.running) showLive(stream, answer);
      }
    } catch (err) {
      if (stream.running) {
        showError("camera-error", err.message);
        await stopCamera();
      }
      return;
    }
    await sleep(Math.max(0, interval - (performance.now() - started)));
  }
}

function showLive(stream, answer) {
  stream.answers += 1;
  stream.last = answer;
  stream.received.push(answer.frames_received);
  if (stream.received.length > 1000) stream.received.shift();
  $("live-label").textContent = answer.label || "warming up...";
  $("live-score").textContent = answer.label ? answer.score.toFixed(3) : "";
  $("live-frames").textContent = answer.frames_received + " frames received";
  topList("live-top", answer.top || []);
}

async function stopCamera() {
  const stream = state.stream;
  if (!stream) return;
  stream.running = false;
  state.stream = null;
  state.lastStream = stream;
  stream.media.getTracks().forEach((track) => track.stop());
  $("camera").srcObject = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  if (stream.id) {
    try {
      await api("DELETE", "streams/" + stream.id);
    } catch (err) {
      if (!/^404/.test(err.message)) showError("camera-error", "DELETE /streams: " + err.message);
    }
  }
  stream.closed = true;
}

$("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
$("token").addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, $("token").value.trim()));
$("upload").addEventListener("submit", classify);
$("start").addEventListener("click", startCamera);
$("stop").addEventListener("click", stopCamera);
window.addEventListener("pagehide", () => {
  const stream = state.stream;
  if (stream && stream.id) fetch("streams/" + stream.id, {method: "DELETE", headers: authHeaders({}), keepalive: true});
});
loadHealth();
"""

_BODY = """
<h1>movinet</h1>
<p class="muted">Model: <span id="model">…</span> · <span id="class-count">?</span> classes
  · token <input id="token" type="password" size="24" autocomplete="off" placeholder="only if the server asks"></p>
<details><summary>Classes</summary><p id="classes"></p></details>
<p id="health-error" class="error" role="alert"></p>
<section>
  <h2>Upload a video</h2>
  <form id="upload" class="row">
    <input id="video" name="video" type="file" accept="video/*">
    <button id="classify" type="submit">Classify</button>
    <span id="upload-status" class="muted"></span>
  </form>
  <p id="upload-error" class="error" role="alert"></p>
  <p><span id="label"></span> <span id="summary" class="muted"></span></p>
  <ol id="top"></ol>
  <canvas id="timeline" width="900" height="160"></canvas>
  <div id="legend"></div>
</section>
<section>
  <h2>Camera</h2>
  <div class="row">
    <button id="start" type="button">Start camera</button>
    <button id="stop" type="button" disabled>Stop</button>
    <label>frames per second <input id="fps" type="number" min="0.5" max="30" step="0.5" value="5"></label>
  </div>
  <p id="camera-error" class="error" role="alert"></p>
  <div class="row">
    <video id="camera" muted playsinline></video>
    <div><div id="live-label"></div><div id="live-score"></div><div id="live-frames" class="muted"></div>
      <ol id="live-top"></ol></div>
  </div>
  <canvas id="frame" hidden></canvas>
</section>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f"<title>movinet</title><style>{_STYLE}</style></head>"
    f"<body>{_BODY}<script>{_SCRIPT}</script></body></html>\n"
)

# Nothing but this origin: an inline script or style that is not the page's own does not run.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; connect-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

page_router = APIRouter()


@page_router.get("/", include_in_schema=False, response_class=HTMLResponse)
def index() -> HTMLResponse:
    """The page needs no token: it holds no data, and it is where the user types the token in."""
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})
