// caviar dashboard: one page, plain JS. Data comes from /api; plots are plotly figures built server-side.
"use strict";

const FIGURES = ["history", "slice", "parallel", "boxes", "curves"];
const PLOT_CONFIG = { responsive: true, displaylogo: false };

const state = {
  study: null,         // name of the study shown
  generation: 0,       // bumps on every study switch, so late answers for another study are dropped
  rows: [],            // trial rows from /trials
  params: [],          // the space: [{name, scale, ...}]
  metric: "value",
  sort: { key: "number", desc: false },
  selected: new Set(), // trial numbers whose curves are drawn
  source: null,        // the EventSource of the study shown
  pending: null,       // a scheduled refresh
};

const $ = (sel) => document.querySelector(sel);
const enc = encodeURIComponent;

async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return res.json();
}

function showError(err) {
  const box = $("#error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(Number(v.toPrecision(4)));
  }
  if (Array.isArray(v)) return v.join("-");
  return String(v);
}

// ----------------------------------------------------------------------------------------- studies

async function loadStudies() {
  const data = await getJSON("/api/studies");
  $("#storage").textContent = data.storage || "";
  const list = $("#studies");
  list.replaceChildren();
  $("#no-studies").hidden = data.studies.length > 0;
  for (const s of data.studies) {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "study-btn";
    btn.dataset.study = s.name;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = s.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    const done = s.n_trials - (s.counts.WAITING || 0) - (s.counts.RUNNING || 0);
    meta.textContent = `${s.status.toLowerCase()} · ${done}/${s.n_trials} trials · best ${fmt(s.best)}`;
    btn.append(name, meta);
    btn.addEventListener("click", () => selectStudy(s.name));
    li.append(btn);
    list.append(li);
  }
  markActive();
  const wanted = decodeURIComponent(location.hash.slice(1));
  const names = data.studies.map((s) => s.name);
  if (!state.study && names.includes(wanted)) selectStudy(wanted);
  else if (!state.study && names.length === 1) selectStudy(names[0]);
}

function markActive() {
  for (const btn of document.querySelectorAll(".study-btn")) {
    btn.classList.toggle("active", btn.dataset.study === state.study);
  }
}

function selectStudy(name) {
  if (state.study === name) return;
  state.study = name;
  state.generation += 1;
  state.selected.clear();
  state.sort = { key: "number", desc: false };
  history.replaceState(null, "", "#" + enc(name));
  markActive();
  $("#welcome").hidden = true;
  $("#study").hidden = false;
  $("#study-name").textContent = name;
  listen(name);
  refresh();
}

// ---------------------------------------------------------------------------------- live updates

function listen(name) {
  if (state.source) state.source.close();
  state.source = null;
  if (!window.EventSource) return;
  const source = new EventSource(`/api/studies/${enc(name)}/events`);
  let last = null;
  source.onmessage = (ev) => {
    if (ev.data === last) return;
    const first = last === null;
    last = ev.data;
    $("#live").hidden = JSON.parse(ev.data).status !== "RUNNING";
    if (!first) scheduleRefresh();   // the first event describes what refresh() already fetched
  };
  state.source = source;
}

function scheduleRefresh() {
  if (state.pending) return;
  state.pending = setTimeout(() => { state.pending = null; refresh(); loadStudies().catch(showError); }, 250);
}

// ------------------------------------------------------------------------------------------ study

async function refresh() {
  const name = state.study;
  const gen = state.generation;
  if (!name) return;
  try {
    const [detail, trials] = await Promise.all([
      getJSON(`/api/studies/${enc(name)}`),
      getJSON(`/api/studies/${enc(name)}/trials`),
    ]);
    if (gen !== state.generation) return;
    renderFacts(detail);
    state.rows = trials.trials;
    state.params = trials.params;
    state.metric = trials.metric;
    renderTable();
    await Promise.all(FIGURES.map((kind) => drawFigure(kind, gen)));
    showError(null);
  } catch (err) {
    if (gen === state.generation) showError(err);
  }
}

function renderFacts(d) {
  const facts = [
    ["status", d.status.toLowerCase()],
    ["trials", `${d.n_trials}`],
    ...Object.entries(d.counts).filter(([, n]) => n > 0).map(([k, n]) => [k.toLowerCase(), n]),
    ["strategy", d.spec.search.strategy],
    [`best ${d.metric}`, fmt(d.best)],
  ];
  if (d.best_trial) facts.push(["best trial", `#${d.best_trial.number}`]);
  for (const p of d.space) facts.push([p.name, p.scale]);
  const box = $("#study-facts");
  box.replaceChildren();
  for (const [k, v] of facts) {
    const span = document.createElement("span");
    span.className = "fact";
    span.textContent = `${k}: ${v}`;
    box.append(span);
  }
  $("#live").hidden = d.status !== "RUNNING";
}

function figureURL(kind) {
  const base = `/api/studies/${enc(state.study)}/figures/${kind}`;
  if (kind === "curves" && state.selected.size) return `${base}?trials=${[...state.selected].join(",")}`;
  return base;
}

async function drawFigure(kind, gen) {
  const fig = await getJSON(figureURL(kind));
  if (gen !== state.generation) return;
  const div = document.getElementById(`plot-${kind}`);
  await Plotly.react(div, fig.data, fig.layout, PLOT_CONFIG);
}

// ------------------------------------------------------------------------------------------ table

function columns() {
  const cols = [
    { key: "number", label: "#" },
    { key: "round", label: "round" },
    { key: "state", label: "state" },
    { key: "value", label: state.metric },
  ];
  for (const p of state.params) cols.push({ key: `params.${p.name}`, label: p.name });
  cols.push({ key: "metrics.test_accuracy", label: "test_accuracy" });
  cols.push({ key: "metrics.epochs_run", label: "epochs" });
  cols.push({ key: "duration", label: "seconds" });
  return cols;
}

function cell(row, key) {
  const [group, name] = key.split(/\.(.*)/s);
  if (name !== undefined) return (row[group] || {})[name];
  return row[key];
}

function compare(a, b) {
  const missingA = a === null || a === undefined;
  const missingB = b === null || b === undefined;
  if (missingA || missingB) return missingA - missingB;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b));
}

function sortedRows() {
  const { key, desc } = state.sort;
  const rows = [...state.rows];
  rows.sort((r, s) => {
    const a = cell(r, key);
    const b = cell(s, key);
    const missing = (a === null || a === undefined) - (b === null || b === undefined);
    if (missing) return missing;          // missing values last, whatever the direction
    const c = compare(a, b);
    return (desc ? -c : c) || r.number - s.number;
  });
  return rows;
}

function renderTable() {
  const cols = columns();
  const head = $("#trials thead tr");
  head.replaceChildren();
  for (const col of cols) {
    const th = document.createElement("th");
    th.textContent = col.label;
    th.dataset.key = col.key;
    th.scope = "col";
    if (state.sort.key === col.key) th.setAttribute("aria-sort", state.sort.desc ? "descending" : "ascending");
    th.addEventListener("click", () => sortBy(col.key));
    head.append(th);
  }
  const bestRow = state.rows.filter((r) => r.state === "COMPLETE" && r.value !== null)
    .sort((r, s) => compare(s.value, r.value))[0];
  const body = $("#trials tbody");
  body.replaceChildren();
  for (const row of sortedRows()) {
    const tr = document.createElement("tr");
    tr.dataset.number = row.number;
    tr.classList.toggle("selected", state.selected.has(row.number));
    tr.classList.toggle("best", bestRow !== undefined && bestRow.number === row.number);
    for (const col of cols) {
      const td = document.createElement("td");
      const v = cell(row, col.key);
      td.textContent = fmt(v);
      if (col.key === "state") td.className = `state-${v}`;
      if (col.key === "state" && row.error) td.title = row.error;
      tr.append(td);
    }
    tr.addEventListener("click", () => toggleTrial(row.number));
    body.append(tr);
  }
  $("#trial-count").textContent = `(${state.rows.length})`;
}

function sortBy(key) {
  state.sort = state.sort.key === key ? { key, desc: !state.sort.desc } : { key, desc: false };
  renderTable();
}

function toggleTrial(number) {
  if (state.selected.has(number)) state.selected.delete(number);
  else state.selected.add(number);
  for (const tr of document.querySelectorAll("#trials tbody tr")) {
    tr.classList.toggle("selected", state.selected.has(Number(tr.dataset.number)));
  }
  $("#clear-selection").hidden = state.selected.size === 0;
  drawFigure("curves", state.generation).catch(showError);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#clear-selection").addEventListener("click", () => {
    state.selected.clear();
    $("#clear-selection").hidden = true;
    renderTable();
    drawFigure("curves", state.generation).catch(showError);
  });
  loadStudies().catch(showError);
});
