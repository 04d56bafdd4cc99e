// lemario push: the browser side of `lemario push serve` (protocol in lemario/web/push_server.py).
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("board");
const ctx = canvas.getContext("2d");
const MAX_WAYPOINTS = 3;
const FRAME_MS = 100; // the game's 10 Hz
const ITER_MS = 300; // one CEM iteration of the dream field

let ws = null;
let animating = false;
let match = null; // the last "state" message: side, opponent, ...
let waypoints = [];
let history = []; // every frame of the match: {image, state}
let queue = []; // messages waiting for the animation
let busy = false; // animating, or waiting for the server
let dream = null; // {samples, upTo}: the dream field being drawn

function connect() {
  ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => newMatch();
  ws.onmessage = (ev) => { queue.push(JSON.parse(ev.data)); if (!animating) pump(); };
  ws.onclose = () => status("disconnected: reload the page");
}

function send(msg) { ws.send(JSON.stringify(msg)); }
function status(text) { $("status").textContent = text; }
function myTurn() { return match && !match.over && match.actor === match.side && !busy; }

function newMatch() {
  queue = []; history = []; waypoints = []; dream = null; busy = true;
  $("result").style.display = "none";
  send({ type: "new_match", side: $("side").value });
}

// ---- drawing ----------------------------------------------------------------------------------------------
function loadImage(b64) {
  return new Promise((resolve) => { const img = new Image(); img.onload = () => resolve(img); img.src = "data:image/png;base64," + b64; });
}

function draw(frame) {
  ctx.drawImage(frame.image, 0, 0);
  if (dream) drawDream();
  if (myTurn()) drawWaypoints(frame.state);
}

function drawWaypoints(state) {
  const own = match.side === "amber" ? [state[0], state[1]] : [state[4], state[5]];
  ctx.strokeStyle = match.side === "amber" ? "#ffaa1e" : "#28c8f0";
  ctx.fillStyle = ctx.strokeStyle;
  ctx.setLineDash([6, 4]);
  ctx.beginPath();
  ctx.moveTo(own[0], own[1]);
  for (const [x, y] of waypoints) ctx.lineTo(x, y);
  ctx.stroke();
  ctx.setLineDash([]);
  waypoints.forEach(([x, y], i) => { ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.fill(); ctx.fillText(String(i + 1), x + 8, y - 8); });
}

function drawDream() {
  const shown = dream.samples.filter((s) => s.iter <= dream.upTo && s.t_path);
  if (!shown.length) return;
  const costs = shown.map((s) => s.cost);
  const lo = Math.min(...costs), hi = Math.max(...costs);
  for (const s of shown) {
    const u = hi > lo ? (s.cost - lo) / (hi - lo) : 0; // 0 best .. 1 worst
    const alpha = s.iter === dream.upTo ? 0.75 : 0.18;
    ctx.strokeStyle = `hsla(${Math.round(120 * (1 - u))}, 90%, 55%, ${alpha})`;
    ctx.beginPath();
    s.t_path.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
  }
  ctx.fillStyle = "#d8dae3";
  ctx.fillText(`dream field: CEM iteration ${dream.upTo + 1}`, 10, 500);
  document.body.dataset.dreamPaths = String(shown.length); // what the last dream field drew (read by the tests)
}

function telemetry(msg) {
  if (msg.turn !== undefined) $("turn").textContent = `${Math.min(msg.turn + 1, 10)} / 10`;
  if (msg.distances) { $("d-amber").textContent = msg.distances[0].toFixed(0); $("d-cyan").textContent = msg.distances[1].toFixed(0); }
}

// ---- messages, animated in order -------------------------------------------------------------------------------
async function pump() {
  animating = true;
  while (queue.length) await handle(queue.shift());
  animating = false;
  if (match && !match.over && history.length) draw(history[history.length - 1]);
  updateControls();
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function pushFrame(msg) {
  history.push({ image: await loadImage(msg.frame), state: msg.state });
  $("timeline").max = String(history.length - 1);
  $("timeline").value = $("timeline").max;
}

async function handle(msg) {
  switch (msg.type) {
    case "state":
      match = { ...msg, over: false };
      $("opponent").textContent = msg.opponent;
      $("actor").textContent = msg.actor;
      telemetry(msg);
      await pushFrame(msg);
      draw(history[history.length - 1]);
      busy = false;
      if (match.actor !== match.side) requestModelTurn();
      else status(`seed ${msg.seed}: you are ${msg.side}. Click waypoints, then Play turn.`);
      break;
    case "plan": {
      $("cost").textContent = msg.best_cost.toFixed(1);
      $("seconds").textContent = `${msg.seconds.toFixed(2)} s`;
      $("searched").textContent = `${msg.searched} of ${msg.plans}`;
      dream = { samples: msg.samples, upTo: 0 };
      const iters = Math.max(...msg.samples.map((s) => s.iter)) + 1;
      for (let i = 0; i < iters; i++) { dream.upTo = i; draw(history[history.length - 1]); await sleep(ITER_MS); }
      break;
    }
    case "step_frame":
      await pushFrame(msg);
      draw(history[history.length - 1]);
      await sleep(FRAME_MS);
      break;
    case "turn_result":
      telemetry({ ...msg, turn: msg.turn + 1 });
      dream = null;
      match.actor = msg.next;
      $("actor").textContent = msg.next || "–";
      busy = false;
      if (msg.next && msg.next !== match.side) requestModelTurn();
      else if (msg.next) status("your turn: click up to three waypoints, then Play turn.");
      break;
    case "match_over": {
      match.over = true;
      const won = msg.winner === match.side;
      $("result-text").textContent = msg.winner === "draw" ? "Draw" : won ? "You win" : "The model wins";
      $("result-detail").textContent = `T to amber goal ${msg.distances[0].toFixed(0)}, to cyan goal ${msg.distances[1].toFixed(0)}`;
      $("result").style.display = "flex";
      status(`match over: ${msg.winner === "draw" ? "a draw" : msg.winner + " wins"}. New match to play again.`);
      break;
    }
    case "error":
      busy = false;
      status(`error: ${msg.message}`);
      break;
  }
}

function requestModelTurn() {
  busy = true;
  status("the model is planning…");
  send({ type: "model_turn" });
}

function updateControls() {
  $("play").disabled = !(myTurn() && waypoints.length);
  $("clear").disabled = !(myTurn() && waypoints.length);
}

// ---- input ---------------------------------------------------------------------------------------------------
canvas.addEventListener("click", (ev) => {
  if (!myTurn() || waypoints.length >= MAX_WAYPOINTS) return;
  const r = canvas.getBoundingClientRect();
  waypoints.push([((ev.clientX - r.left) * 512) / r.width, ((ev.clientY - r.top) * 512) / r.height]);
  draw(history[history.length - 1]);
  updateControls();
});
$("play").addEventListener("click", () => {
  if (!myTurn() || !waypoints.length) return;
  busy = true;
  send({ type: "human_turn", targets: waypoints });
  waypoints = [];
  status("your disc moves…");
  updateControls();
});
$("clear").addEventListener("click", () => { waypoints = []; draw(history[history.length - 1]); updateControls(); });
$("new").addEventListener("click", newMatch);
$("timeline").addEventListener("input", () => {
  const i = Number($("timeline").value);
  if (history[i]) ctx.drawImage(history[i].image, 0, 0);
});

connect();
