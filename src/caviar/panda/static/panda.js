// caviar panda page: live curves from /api/stream, controls as POSTs carrying the session token.
"use strict";

// The live hyperparameters (names, aliases, bounds, help) come from the server's registry: GET /api/hparams.
let HP = [];
let SHORT = {};
const MARKED = new Set(["set", "pause", "resume", "checkpoint", "rollback", "fork", "stop", "diverged", "finished"]);

const token = (() => {
  const params = new URLSearchParams(location.search);
  const t = params.get("token");
  if (t) {
    sessionStorage.setItem("caviar-token", t);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  return t || sessionStorage.getItem("caviar-token") || "";
})();

const data = { steps: { x: [], loss: [], smooth: [] }, epochs: [], state: null, fresh: true };
const $ = (id) => document.getElementById(id);

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e-3 && a < 1e4 ? String(Number(v.toPrecision(4))) : v.toExponential(2);
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers["Authorization"] = "Bearer " + token;
  let res;
  try {
    res = await fetch(path, { method: "POST", headers, body: JSON.stringify(body || {}) });
  } catch (e) {
    say("cannot reach the session: " + e, "error");
    return null;
  }
  let json = {};
  try { json = await res.json(); } catch (e) { /* empty body */ }
  if (!res.ok) {
    say(json.error || ("HTTP " + res.status), "error");
    return null;
  }
  return json;
}

// ------------------------------------------------------------------------------------------ plots
function markerLabel(ev) {
  const p = ev.payload || {};
  switch (ev.kind) {
    case "set": return Object.entries(p.changes || {}).map(([k, v]) =>
      (SHORT[k] || k) + " " + fmt((p.old || {})[k]) + "→" + fmt(v)).join(", ");
    case "rollback": return "rollback → #" + p.checkpoint;
    case "checkpoint": return "ckpt #" + p.checkpoint;
    case "fork": return "fork k=" + p.k;
    default: return ev.kind;
  }
}

function markerEvents() {
  const st = data.state;
  if (!st) return [];
  return st.events.filter((ev) => MARKED.has(ev.kind) && ev.step !== null &&
    !(ev.kind === "checkpoint" && ["auto", "start", "fork"].includes((ev.payload || {}).label)));
}

function markers() {
  const shapes = [], annotations = [];
  markerEvents().forEach((ev, i) => {
    const color = ev.undone ? "#9aa3ad" : ({ set: "#1f6fd1", rollback: "#c0392b", checkpoint: "#1e8449",
      fork: "#8e44ad", diverged: "#c0392b" })[ev.kind] || "#6b7580";
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: ev.step, x1: ev.step, y0: 0, y1: 1,
      line: { color, width: 1.5, dash: ev.undone ? "dot" : "dash" }, name: "event-" + ev.id });
    annotations.push({ xref: "x", yref: "paper", x: ev.step, y: 1 - (i % 4) * 0.07, yanchor: "top",
      xanchor: "left", showarrow: false, text: markerLabel(ev) + (ev.undone ? " (undone)" : ""),
      font: { size: 10, color }, bgcolor: "rgba(255,255,255,0.8)", name: "event-" + ev.id });
  });
  return { shapes, annotations };
}

function col(key) {
  return data.epochs.map((r) => (r[key] === null || r[key] === undefined ? null : r[key]));
}

function draw() {
  const xe = data.epochs.map((r) => r.step);
  const { shapes, annotations } = markers();
  const base = { margin: { l: 50, r: 10, t: 30, b: 40 }, xaxis: { title: { text: "step" } },
    legend: { orientation: "h", y: -0.2 }, shapes, annotations, uirevision: "keep" };
  Plotly.react("loss-plot", [
    { x: data.steps.x, y: data.steps.loss, name: "step loss", mode: "lines", line: { color: "#c9d3de", width: 1 } },
    { x: data.steps.x, y: data.steps.smooth, name: "smoothed (EWA)", mode: "lines", line: { color: "#1f6fd1", width: 2 } },
    { x: xe, y: col("train_loss"), name: "train loss / epoch", mode: "lines+markers", line: { color: "#e67e22" } },
    { x: xe, y: col("val_loss"), name: "val loss / epoch", mode: "lines+markers", line: { color: "#1e8449" } },
  ], { ...base, title: { text: "loss", font: { size: 13 } }, yaxis: { title: { text: "loss" } } },
  { displaylogo: false, responsive: true });
  Plotly.react("acc-plot", [
    { x: xe, y: col("train_accuracy"), name: "train accuracy", mode: "lines+markers", line: { color: "#e67e22" } },
    { x: xe, y: col("val_accuracy"), name: "val accuracy", mode: "lines+markers", line: { color: "#1e8449" } },
  ], { ...base, title: { text: "accuracy per epoch", font: { size: 13 } }, yaxis: { title: { text: "accuracy" } } },
  { displaylogo: false, responsive: true });
}

// ------------------------------------------------------------------------------------------ panels
async function loadControls() {
  let live = null;
  try {
    const res = await fetch("/api/hparams");
    if (res.ok) live = (await res.json()).live;
  } catch (e) { /* below */ }
  // A server without the registry (a live trial of the user's own objective) gets inputs for the
  // numbers of its state's hp instead, built when the first state arrives.
  if (live) buildInputs(live);
}

function buildInputs(live) {
  HP = live.map((p) => p.name);
  SHORT = Object.fromEntries(live.filter((p) => p.aliases.length).map((p) => [p.name, p.aliases[0]]));
  const box = $("hp-inputs");
  live.forEach((p) => {
    const label = document.createElement("label");
    label.className = "hp";
    if (p.help) label.title = `${p.help}; ${p.allowed}` + (p.aliases.length ? ` (also: ${p.aliases.join(", ")})` : "");
    const span = document.createElement("span");
    span.textContent = p.name;
    const input = document.createElement("input");
    Object.assign(input, { id: "hp-" + p.name, name: p.name, inputMode: "decimal", autocomplete: "off" });
    if (p.allowed) input.dataset.allowed = p.allowed;
    label.append(span, input);
    box.appendChild(label);
  });
}

function showState(st) {
  data.state = st;
  if (!HP.length) {
    const numbers = Object.keys(st.hp || {}).filter((k) => typeof st.hp[k] === "number");
    buildInputs(numbers.map((name) => ({ name, aliases: [], help: "", allowed: "" })));
  }
  $("status").textContent = st.status;
  $("status").className = "badge " + st.status;
  $("step").textContent = st.step;
  $("epoch").textContent = st.epoch;
  $("epochs").textContent = st.epochs;
  $("lr-now").textContent = fmt(st.lr);
  $("study").textContent = "study " + st.study;
  HP.forEach((name) => { $("hp-" + name).placeholder = fmt(st.hp[name]); });
  const stopped = st.status === "stopped" || st.status === "failed";
  $("pause").disabled = st.status !== "running";
  $("resume").disabled = st.status !== "paused";
  ["stop", "apply", "halve-lr", "checkpoint", "rollback", "fork"].forEach((id) => { $(id).disabled = stopped; });
  const sel = $("rollback-select");
  const ids = st.checkpoints.map((c) => c.id).join(",");
  if (sel.dataset.ids !== ids) {
    const keep = sel.value;
    sel.innerHTML = "";
    st.checkpoints.slice().reverse().forEach((c) => {
      const o = document.createElement("option");
      o.value = c.id;
      o.textContent = `#${c.id} ${c.label} · step ${c.step} · epoch ${c.epoch} · lr ${fmt(c.hp.learning_rate)}`;
      sel.appendChild(o);
    });
    if (keep && ids.split(",").includes(keep)) sel.value = keep;
    sel.dataset.ids = ids;
  }
  $("events").innerHTML = "";
  st.events.slice().reverse().forEach((ev) => {
    if (ev.kind === "checkpoint" && (ev.payload || {}).label === "auto") return;
    const li = document.createElement("li");
    const label = markerLabel(ev);
    li.textContent = `step ${ev.step}: ` + (label === ev.kind ? ev.kind : `${ev.kind}: ${label}`);
    if (ev.undone) li.className = "undone";
    $("events").appendChild(li);
  });
  $("forks").innerHTML = "";
  st.forks.forEach((f) => {
    const div = document.createElement("div");
    const best = f.best ? ` · best #${f.best.number} ${Object.entries(f.best.params).map(([k, v]) => k + "=" + fmt(v)).join(" ")}` : "";
    div.textContent = `${f.study}: ${f.k} trials, ${f.status}${best}`;
    $("forks").appendChild(div);
  });
}

function onMessage(msg) {
  if (msg.reset || data.fresh) {
    data.steps = { x: [], loss: [], smooth: [] };
    data.fresh = false;
  }
  msg.steps.forEach((p) => {
    data.steps.x.push(p.step);
    data.steps.loss.push(p.loss);
    data.steps.smooth.push(p.smooth);
  });
  data.epochs = msg.epochs;
  showState(msg.state);
  draw();
}

function connect() {
  const es = new EventSource("/api/stream");
  es.onopen = () => { data.fresh = true; };
  es.onmessage = (e) => onMessage(JSON.parse(e.data));
  es.onerror = () => { if (data.state && data.state.status !== "stopped") say("connection lost; retrying…", "error"); };
}

// ------------------------------------------------------------------------------------------ controls
function wire() {
  const done = (text) => (json) => { if (json) say(text(json.result || {}), "ok"); };
  $("pause").onclick = () => post("/api/pause").then(done((r) => `paused before step ${r.step}`));
  $("resume").onclick = () => post("/api/resume").then(done((r) => `resumed at step ${r.step}`));
  $("stop").onclick = () => { if (confirm("Stop training? The session cannot be resumed.")) post("/api/stop").then(done(() => "stopped")); };
  $("apply").onclick = () => {
    const body = {};
    HP.forEach((name) => {
      const raw = $("hp-" + name).value.trim();
      if (raw === "") return;
      const v = Number(raw);
      body[name] = Number.isFinite(v) ? v : raw;
    });
    if (!Object.keys(body).length) { say("type a new value in one of the boxes first", "error"); return; }
    post("/api/set", body).then((json) => {
      if (!json) return;
      HP.forEach((name) => { $("hp-" + name).value = ""; });
      say(`${markerLabel(json.result)} from step ${json.result.step}`, "ok");
    });
  };
  $("halve-lr").onclick = () => {
    if (!data.state) return;
    post("/api/set", { learning_rate: data.state.hp.learning_rate / 2 })
      .then(done((r) => `${markerLabel(r)} from step ${r.step}`));
  };
  $("checkpoint").onclick = () => post("/api/checkpoint", {}).then(done((r) => `checkpoint #${r.checkpoint} at step ${r.step}`));
  $("rollback").onclick = () => {
    const id = Number($("rollback-select").value);
    if (!Number.isInteger(id)) return;
    post("/api/rollback", { checkpoint: id }).then(done((r) => `rolled back to #${r.payload.checkpoint}: step ${r.payload.from_step} → ${r.payload.to_step}`));
  };
  $("fork").onclick = () => {
    const k = Number($("fork-k").value), factor = Number($("fork-factor").value);
    post("/api/fork", { k, factor }).then(done((r) => `fork study ${r.study} started (${k} trials)`));
  };
}

loadControls().finally(() => { wire(); connect(); });
