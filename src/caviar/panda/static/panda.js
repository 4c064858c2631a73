// caviar panda page: live curves from /api/stream, controls as POSTs carrying the session token.
"use strict";

// The live hyperparameters (names, aliases, bounds, help) come from the server's registry: GET /api/hparams.
let HP = [];
let SHORT = {};
// "scale this parameter" controls: each numeric live parameter gets one button per factor.
const SCALES = [{ factor: 0.5, label: "½", id: "down" }, { factor: 2, label: "×2", id: "up" }];
const MARKED = new Set(["set", "pause", "resume", "checkpoint", "rollback", "fork", "adopt", "stop", "diverged", "finished"]);
// Epoch values the loss and accuracy plots draw (or that are no curve); any other number a row holds
// (a live objective's own reports) is drawn in the third plot.
const DRAWN = new Set(["epoch", "step", "lr", "train_loss", "val_loss", "train_accuracy", "val_accuracy"]);
const MARGIN = { l: 55, r: 10, t: 30, b: 40 };
const LABEL_FONT = 10, LABEL_ROW_PX = 15, LABEL_ROWS = 6, LABEL_GAP_PX = 6;

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

const data = { steps: { x: [], loss: [], smooth: [] }, epochs: [], state: null, fresh: true, logLoss: false };
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
    case "adopt": return "adopt #" + p.member;
    default: return ev.kind;
  }
}

function markerEvents() {
  const st = data.state;
  if (!st) return [];
  return st.events.filter((ev) => MARKED.has(ev.kind) && ev.step !== null &&
    !(ev.kind === "checkpoint" && ["auto", "start", "fork", "before adopt", "adopted"].includes((ev.payload || {}).label)));
}

let measureCtx = null;
function textWidth(text) {
  if (!measureCtx) {
    measureCtx = document.createElement("canvas").getContext("2d");
    measureCtx.font = `${LABEL_FONT}px "Open Sans", verdana, arial, sans-serif`;
  }
  return measureCtx.measureText(text).width + 8;  // the annotation's padding and border
}

// Labels never overlap: each goes to the first row (from the top) where it clears the previous
// label by LABEL_GAP_PX, measured in pixels on the plot's fixed x range; what fits in no row is
// folded into one "+N more" note (its line stays, with the full label on hover).
function placeLabels(evs, xmax, width) {
  const px = (x) => (x / xmax) * width;
  const ends = Array(LABEL_ROWS).fill(-Infinity);
  const placed = [], folded = [];
  evs.forEach((ev) => {
    const text = markerLabel(ev) + (ev.undone ? " (undone)" : "");
    const x0 = px(ev.step), w = textWidth(text);
    const left = x0 + w > width ? x0 - w : x0;   // near the right edge the label goes left of its line
    const row = ends.findIndex((end) => left >= end + LABEL_GAP_PX);
    if (row < 0) { folded.push(ev); return; }
    ends[row] = left + w;
    placed.push({ ev, text, row, anchor: left < x0 ? "right" : "left" });
  });
  return { placed, folded };
}

function xMax() {
  const st = data.state || {};
  let m = Math.max(1, st.step || 0, ...data.steps.x, ...data.epochs.map((r) => r.step || 0));
  markerEvents().forEach((ev) => { m = Math.max(m, ev.step); });
  return m * 1.02;
}

function markers(plotId) {
  const shapes = [], annotations = [];
  const evs = markerEvents();
  const width = Math.max(100, ($(plotId).clientWidth || 600) - MARGIN.l - MARGIN.r);
  const { placed, folded } = placeLabels(evs, xMax(), width);
  const color = (ev) => (ev.undone ? "#9aa3ad" : ({ set: "#1f6fd1", rollback: "#c0392b", checkpoint: "#1e8449",
    fork: "#8e44ad", adopt: "#8e44ad", diverged: "#c0392b" })[ev.kind] || "#6b7580");
  evs.forEach((ev) => {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: ev.step, x1: ev.step, y0: 0, y1: 1,
      line: { color: color(ev), width: 1.5, dash: ev.undone ? "dot" : "dash" }, name: "event-" + ev.id });
  });
  placed.forEach(({ ev, text, row, anchor }) => {
    annotations.push({ xref: "x", yref: "paper", x: ev.step, y: 1, yanchor: "top", yshift: -row * LABEL_ROW_PX,
      xanchor: anchor, showarrow: false, text, font: { size: LABEL_FONT, color: color(ev) },
      bgcolor: "rgba(255,255,255,0.85)", borderpad: 1, hovertext: `step ${ev.step}: ${text}`,
      name: "event-" + ev.id, captureevents: true });
  });
  if (folded.length) {
    annotations.push({ xref: "paper", yref: "paper", x: 0, y: 0, xanchor: "left", yanchor: "bottom", showarrow: false,
      text: `+${folded.length} more markers (see Interventions)`, font: { size: LABEL_FONT, color: "#6b7580" },
      bgcolor: "rgba(255,255,255,0.85)", name: "folded", hovertext: folded.map((ev) => `step ${ev.step}: ${markerLabel(ev)}`).join("<br>"),
      captureevents: true });
  }
  return { shapes, annotations };
}

// A readable loss range on a linear axis: a spike (or the steps before a divergence) does not
// flatten the rest; the log toggle shows everything.
function lossRange() {
  const finite = (a) => a.filter((v) => typeof v === "number" && Number.isFinite(v));
  const steps = finite(data.steps.loss).slice().sort((a, b) => a - b);
  const p95 = steps.length ? steps[Math.floor(0.95 * (steps.length - 1))] : 0;
  const top = Math.max(p95, ...finite(data.steps.smooth), ...finite(col("train_loss")), ...finite(col("val_loss")));
  return top > 0 ? [0, top * 1.1] : undefined;
}

function col(key) {
  return data.epochs.map((r) => (r[key] === null || r[key] === undefined ? null : r[key]));
}

function draw() {
  const xe = data.epochs.map((r) => r.step);
  const xrange = [0, xMax()];
  const base = (plotId) => ({ margin: MARGIN, xaxis: { title: { text: "step" }, range: xrange },
    legend: { orientation: "h", y: -0.2 }, ...markers(plotId), uirevision: "keep" });
  const range = lossRange();
  const yaxis = data.logLoss ? { title: { text: "loss (log)" }, type: "log" }
    : { title: { text: "loss" }, type: "linear", ...(range ? { range } : {}) };
  Plotly.react("loss-plot", [
    { x: data.steps.x, y: data.steps.loss, name: "step loss", mode: "lines", line: { color: "#c9d3de", width: 1 } },
    { x: data.steps.x, y: data.steps.smooth, name: "smoothed (EWA)", mode: "lines", line: { color: "#1f6fd1", width: 2 } },
    { x: xe, y: col("train_loss"), name: "train loss / epoch", mode: "lines+markers", line: { color: "#e67e22" } },
    { x: xe, y: col("val_loss"), name: "val loss / epoch", mode: "lines+markers", line: { color: "#1e8449" } },
  ], { ...base("loss-plot"), title: { text: "loss", font: { size: 13 } }, yaxis, uirevision: data.logLoss ? "log" : "linear" },
  { displaylogo: false, responsive: true });
  const score = scoreMetric();
  if (score) {  // a regression: its metric (val_r2, val_rmse...) per epoch, no accuracy
    Plotly.react("acc-plot", [
      { x: xe, y: col(score), name: score, mode: "lines+markers", line: { color: "#1e8449" } },
    ], { ...base("acc-plot"), title: { text: `${score} per epoch`, font: { size: 13 } },
      yaxis: { title: { text: score } } },
    { displaylogo: false, responsive: true });
    return;
  }
  Plotly.react("acc-plot", [
    { x: xe, y: col("train_accuracy"), name: "train accuracy", mode: "lines+markers", line: { color: "#e67e22" } },
    { x: xe, y: col("val_accuracy"), name: "val accuracy", mode: "lines+markers", line: { color: "#1e8449" } },
  ], { ...base("acc-plot"), title: { text: "accuracy per epoch", font: { size: 13 } },
    yaxis: { title: { text: "accuracy" }, range: [0, 1.02] } },
  { displaylogo: false, responsive: true });
  const others = [...new Set(data.epochs.flatMap((r) => Object.keys(r)))]
    .filter((k) => !DRAWN.has(k) && data.epochs.some((r) => typeof r[k] === "number"));
  $("more-plot").hidden = !others.length;
  if (others.length) {
    Plotly.react("more-plot", others.map((k) => ({ x: xe, y: col(k), name: k, mode: "lines+markers" })),
      { ...base("more-plot"), title: { text: "other values per epoch", font: { size: 13 } } },
      { displaylogo: false, responsive: true });
  }
}

// A regression session's metric for the second plot (the study's, or val_r2 when it is val_loss); null for classes.
function scoreMetric() {
  const st = data.state || {};
  if (st.task !== "regression") return null;
  return st.metric && st.metric !== "val_loss" ? st.metric : "val_r2";
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
    const row = document.createElement("div");
    row.className = "hp";
    if (p.help) row.title = `${p.help}; ${p.allowed}` + (p.aliases.length ? ` (also: ${p.aliases.join(", ")})` : "");
    const label = document.createElement("label");
    label.textContent = p.name;
    label.htmlFor = "hp-" + p.name;
    const input = document.createElement("input");
    Object.assign(input, { id: "hp-" + p.name, name: p.name, inputMode: "decimal", autocomplete: "off" });
    if (p.allowed) input.dataset.allowed = p.allowed;
    row.append(label, input);
    if (p.kind === "float" || p.kind === "int") {
      SCALES.forEach((s) => row.appendChild(scaleButton(p, s)));
    }
    box.appendChild(row);
  });
}

// One "scale this parameter" button: sets the parameter to its current value times the factor
// (an integer one rounded), from the next step; the server checks the bounds as for any change.
function scaleButton(p, s) {
  const b = document.createElement("button");
  Object.assign(b, { id: `scale-${p.name}-${s.id}`, className: "scale", textContent: s.label,
    title: `${p.name} × ${s.factor} (from the next step)` });
  b.onclick = () => {
    const now = data.state && data.state.hp ? data.state.hp[p.name] : null;
    if (typeof now !== "number") { say(`${p.name} has no current value to scale`, "error"); return; }
    const value = p.kind === "int" ? Math.round(now * s.factor) : now * s.factor;
    post("/api/set", { [p.name]: value }).then((json) => {
      if (json) say(`${markerLabel(json.result)} from step ${json.result.step}`, "ok");
    });
  };
  return b;
}

function showState(st) {
  data.state = st;
  if (!HP.length) {
    const numbers = Object.keys(st.hp || {}).filter((k) => typeof st.hp[k] === "number");
    buildInputs(numbers.map((name) => ({ name, kind: "float", aliases: [], help: "", allowed: "" })));
  }
  $("status").textContent = st.status;
  $("status").className = "badge " + st.status;
  $("step").textContent = st.step;
  $("epoch").textContent = st.epoch;
  $("epochs").textContent = st.epochs === null || st.epochs === undefined ? "–" : st.epochs;
  $("lr-now").textContent = fmt(st.lr);
  $("lr-now").parentElement.hidden = st.lr === null || st.lr === undefined;   // an objective without a learning rate
  $("study").textContent = "study " + st.study;
  HP.forEach((name) => { $("hp-" + name).placeholder = fmt(st.hp[name]); });
  const stopped = st.status === "stopped" || st.status === "failed";
  $("pause").disabled = st.status !== "running";
  $("resume").disabled = st.status !== "paused";
  const fresh = st.status === "paused" && st.step === 0;   // a session started with --paused waits here
  $("resume").textContent = fresh ? "start" : "resume";
  $("resume").className = fresh ? "primary" : "";
  ["stop", "apply", "checkpoint", "rollback", "fork"].forEach((id) => { $(id).disabled = stopped; });
  document.querySelectorAll("button.scale").forEach((b) => { b.disabled = stopped; });
  // Only the checkpoints the current state descends from; the newest is chosen whenever the list moves.
  const branch = (st.checkpoints || []).filter((c) => c.current !== false);
  const sel = $("rollback-select");
  const ids = branch.map((c) => c.id).join(",");
  if (sel.dataset.ids !== ids) {
    sel.innerHTML = "";
    branch.slice().reverse().forEach((c) => {
      const o = document.createElement("option");
      o.value = c.id;
      const first = HP[0];   // the first live hyperparameter (panda's: the learning rate, shown as lr)
      o.textContent = `#${c.id} ${c.label} · step ${c.step} · epoch ${c.epoch}` +
        (first ? ` · ${SHORT[first] || first} ${fmt((c.hp || {})[first])}` : "");
      sel.appendChild(o);
    });
    if (branch.length) sel.value = String(branch[branch.length - 1].id);
    sel.dataset.ids = ids;
  }
  showDivergence(st, branch);
  $("events").innerHTML = "";
  st.events.slice().reverse().forEach((ev) => {
    if (ev.kind === "checkpoint" && (ev.payload || {}).label === "auto") return;
    const li = document.createElement("li");
    const label = markerLabel(ev);
    li.textContent = (ev.step === null ? "" : `step ${ev.step}: `) + (label === ev.kind ? ev.kind : `${ev.kind}: ${label}`);
    if (ev.undone) li.className = "undone";
    $("events").appendChild(li);
  });
  showForks(st.forks || [], stopped);
}

// The loss went non-finite: say so above the plots and offer the rollback to the newest checkpoint before it.
function showDivergence(st, branch) {
  const banner = $("diverged-banner");
  const ev = st.status === "diverged" ? st.events.filter((e) => e.kind === "diverged").pop() : null;
  banner.hidden = !ev;
  if (!ev) return;
  const target = branch.filter((c) => c.step < ev.step).pop();
  const p = ev.payload || {};
  $("diverged-text").textContent = `The model diverged at step ${ev.step}: its loss became ${p.loss === null || p.loss === undefined ? "non-finite" : fmt(p.loss)} under lr ${fmt(p.lr)}. ` +
    (target ? `Roll back to checkpoint #${target.id} (epoch ${target.epoch}, step ${target.step}) and lower the learning rate.`
      : "No checkpoint to roll back to.");
  const btn = $("diverged-rollback");
  btn.hidden = !target;
  if (target) {
    btn.textContent = `roll back to #${target.id}`;
    btn.dataset.checkpoint = target.id;
  }
}

// Each fork: its members by validation accuracy, the best marked, and "adopt" to continue from one.
function showForks(forks, stopped) {
  const box = $("forks");
  box.innerHTML = "";
  forks.forEach((f, i) => {
    const div = document.createElement("div");
    div.className = "fork";
    div.dataset.fork = i + 1;
    const head = document.createElement("div");
    head.className = "fork-head";
    head.textContent = `fork ${i + 1}: ${f.study} · ${f.k} trials · ${f.status}` + (f.error ? ` · ${f.error}` : "");
    div.appendChild(head);
    if ((f.members || []).length) {
      const table = document.createElement("table");
      table.className = "members";
      const names = f.params || [];
      const hrow = table.createTHead().insertRow();
      const score = scoreMetric();
      ["#", score || "val acc", "val loss", ...names.map((n) => SHORT[n] || n), ""].forEach((t) => {
        const th = document.createElement("th");
        th.textContent = t;
        hrow.appendChild(th);
      });
      const body = table.createTBody();
      f.members.forEach((m, j) => {
        const tr = body.insertRow();
        tr.dataset.member = m.number;
        const shown = score ? m.score : m.val_accuracy;
        if (j === 0 && shown !== null) tr.className = "best";
        const done = m.state === "COMPLETE";
        const cells = [`#${m.number}`, done ? fmt(shown) : m.state.toLowerCase(), done ? fmt(m.val_loss) : "",
          ...names.map((n) => fmt(m.params[n]))];
        cells.forEach((t) => { tr.insertCell().textContent = t; });
        const td = tr.insertCell();
        if (m.adoptable) {
          const b = document.createElement("button");
          b.textContent = "adopt";
          b.className = "adopt";
          b.disabled = stopped;
          b.title = `continue the session from trial #${m.number}: its weights and hyperparameters after epoch ${f.epochs}`;
          b.onclick = () => post("/api/adopt", { member: m.number, fork: i + 1 }).then((json) => {
            if (json) say(`adopted #${m.number} of fork ${i + 1}: epoch ${json.result.payload.to_epoch}; press resume to go on`, "ok");
          });
          td.appendChild(b);
        }
      });
      div.appendChild(table);
    }
    box.appendChild(div);
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
  $("checkpoint").onclick = () => post("/api/checkpoint", {}).then(done((r) => `checkpoint #${r.checkpoint} at step ${r.step}`));
  $("rollback").onclick = () => {
    const id = Number($("rollback-select").value);
    if (!Number.isInteger(id)) return;
    post("/api/rollback", { checkpoint: id }).then(done((r) => `rolled back to #${r.payload.checkpoint}: step ${r.payload.from_step} → ${r.payload.to_step}`));
  };
  $("log-loss").onchange = (e) => { data.logLoss = e.target.checked; draw(); };
  $("diverged-rollback").onclick = (e) => {
    const id = Number(e.target.dataset.checkpoint);
    if (!Number.isInteger(id)) return;
    post("/api/rollback", { checkpoint: id }).then(done((r) => `rolled back to #${r.payload.checkpoint}: step ${r.payload.from_step} → ${r.payload.to_step}; lower the learning rate, then resume`));
  };
  window.addEventListener("resize", () => { if (data.state) draw(); });
  $("fork").onclick = () => {
    const k = Number($("fork-k").value), factor = Number($("fork-factor").value);
    const epochs = $("fork-epochs").value.trim();
    post("/api/fork", epochs ? { k, factor, epochs: Number(epochs) } : { k, factor }).then(done((r) => `fork study ${r.study} started (${k} trials)`));
  };
}

loadControls().finally(() => { wire(); connect(); });
