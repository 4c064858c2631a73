// caviar dashboard, the index page: the studies (polled, so new ones appear live) and one study's view.
// Data comes from /api; plots are plotly figures built server-side, their ticks fitted to each plot's width.
"use strict";

const FIGURES = ["history", "importance", "edf", "pair", "slice", "parallel", "boxes", "curves"];
const STATES = ["WAITING", "RUNNING", "COMPLETE", "PRUNED", "DIVERGED", "FAILED"];
const STUDIES_POLL_MS = 2000;

const state = {
  study: null,         // name of the study shown
  generation: 0,       // bumps on every study switch, so late answers for another study are dropped
  rows: [],            // trial rows from /trials
  params: [],          // the space: [{name, scale, ...}]
  metric: "value",
  testMetric: "test_accuracy",
  sort: { key: "number", desc: false },
  selected: new Set(), // trial numbers whose curves are drawn
  methods: null,       // the importance methods the server offers (forest; fanova, ped_anova with optuna)
  pair: { x: null, y: null },  // the pair plot's axes (null: the server's default, the two most important)
  ticked: new Set(),   // studies ticked for comparison
  studiesJSON: null,   // the last /api/studies answer, to redraw the list only when it changed
  source: null,        // the EventSource of the study shown
  pending: null,       // a scheduled refresh
};

// ----------------------------------------------------------------------------------------- studies

async function loadStudies() {
  const data = await getJSON("/api/studies");
  const text = JSON.stringify(data);
  if (text === state.studiesJSON) return;
  state.studiesJSON = text;
  $("#storage").textContent = data.storage || "";
  // Panda sessions are listed apart: one trial each, whose page shows its curves and interventions.
  const sessions = data.studies.filter((s) => s.kind === "session");
  const studies = data.studies.filter((s) => s.kind !== "session");
  $("#study-count").textContent = `(${studies.length})`;
  $("#session-count").textContent = `(${sessions.length})`;
  $("#sessions-box").hidden = sessions.length === 0;
  $("#sessions").replaceChildren(...sessions.map((s) => {
    const li = el("li", { dataset: { session: s.name } });
    const a = el("a", { className: "study-btn session-link", href: trialURL(s.name, 0) });
    a.append(el("span", { className: "name" }, s.name),
      el("span", { className: "meta" }, `panda session · ${s.status.toLowerCase()} · ${s.metric} ${fmt(s.best)}`));
    li.append(a);
    return li;
  }));
  const list = $("#studies");
  list.replaceChildren();
  $("#no-studies").hidden = studies.length > 0;
  for (const s of studies) {
    const li = el("li", { dataset: { study: s.name } });
    const tick = el("input", { type: "checkbox", className: "tick", title: "tick to compare", checked: state.ticked.has(s.name) });
    tick.setAttribute("aria-label", `compare ${s.name}`);
    tick.addEventListener("change", () => {
      if (tick.checked) state.ticked.add(s.name); else state.ticked.delete(s.name);
      updateCompareLink();
    });
    const btn = el("button", { type: "button", className: "study-btn", dataset: { study: s.name } });
    const done = s.n_trials - (s.counts.WAITING || 0) - (s.counts.RUNNING || 0);
    btn.append(el("span", { className: "name" }, s.name),
      el("span", { className: "meta" }, `${s.status.toLowerCase()} · ${done}/${s.n_trials} trials · best ${fmt(s.best)}`));
    btn.addEventListener("click", () => selectStudy(s.name));
    li.append(tick, btn);
    list.append(li);
  }
  const names = studies.map((s) => s.name);
  for (const name of [...state.ticked]) if (!names.includes(name)) state.ticked.delete(name);
  updateCompareLink();
  markActive();
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (!state.study && names.includes(wanted)) selectStudy(wanted);
  else if (!state.study && names.length === 1) selectStudy(names[0]);
}

function updateCompareLink() {
  const link = $("#compare-link");
  const names = [...state.ticked];
  link.href = compareURL(names);
  link.setAttribute("aria-disabled", names.length < 2 ? "true" : "false");
  link.textContent = names.length < 2 ? "tick two studies to compare" : `compare ${names.length} studies`;
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
  state.pair = { x: null, y: null };
  $("#text-filter").value = "";
  $("#state-filter").value = "";
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
  const source = new EventSource(`/api/studies/${encName(name)}/events`);
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
      getJSON(`/api/studies/${encName(name)}`),
      getJSON(`/api/studies/${encName(name)}/trials`),
    ]);
    if (gen !== state.generation) return;
    renderFacts(detail);
    state.rows = trials.trials;
    state.params = trials.params;
    state.metric = trials.metric;
    state.testMetric = trials.test_metric || "test_accuracy";  // test_r2 for a regression study
    renderPairControls();
    renderTable();
    loadMethods(name).catch(() => {});
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
  const box = $("#study-facts");
  box.replaceChildren();
  for (const [k, v] of facts) box.append(el("span", { className: "fact" }, `${k}: ${v}`));
  if (d.best_trial) {
    const best = el("a", { className: "fact", href: trialURL(d.name, d.best_trial.number) }, `best trial: #${d.best_trial.number}`);
    box.append(best);
  }
  if (d.spec.search.strategy === "pbt") {   // population-based training: who copied whom, when
    box.append(el("a", { className: "fact", id: "lineage-tree", href: `/study/${encName(d.name)}/lineage` }, "lineage tree"));
  }
  for (const p of d.space) box.append(el("span", { className: "fact" }, `${p.name}: ${p.scale}`));
  $("#live").hidden = d.status !== "RUNNING";
}

function figureURL(kind) {
  const base = `/api/studies/${encName(state.study)}/figures/${kind}`;
  const q = new URLSearchParams();
  if (kind === "curves" && state.selected.size) q.set("trials", [...state.selected].join(","));
  if (kind === "importance" && $("#importance-method").value !== "forest") q.set("method", $("#importance-method").value);
  if (kind === "pair") {
    if (state.pair.x) q.set("x", state.pair.x);
    if (state.pair.y) q.set("y", state.pair.y);
  }
  const text = q.toString();
  return text ? `${base}?${text}` : base;
}

async function drawFigure(kind, gen) {
  const div = document.getElementById(`plot-${kind}`);
  let fig;
  try {
    fig = await getJSON(withWidth(figureURL(kind), div));
  } catch (err) {
    if (kind !== "pair" || gen !== state.generation) throw err;
    showError(err, "#pair-error");     // a bad pair of axes: say so by the selects, keep the last plot
    return;
  }
  if (gen !== state.generation) return;
  if (kind === "pair") {
    showError(null, "#pair-error");
    const meta = fig.layout.meta || {};
    state.pair = { x: meta.x || null, y: meta.y || null };
    $("#pair-x").value = state.pair.x || "";
    $("#pair-y").value = state.pair.y || "";
  }
  await drawFigureInto(div, fig);
}

const METHOD_LABELS = { forest: "random forest", fanova: "fANOVA (optuna)", ped_anova: "PED-ANOVA (optuna)" };

async function loadMethods(name) {
  if (state.methods) return;
  const body = await getJSON(`/api/studies/${encName(name)}/importance`);
  state.methods = body.methods;
  const select = $("#importance-method");
  const current = select.value;
  select.replaceChildren(...body.methods.map((m) => el("option", { value: m }, METHOD_LABELS[m] || m)));
  select.value = current;
}

function renderPairControls() {
  for (const [sel, axis] of [["#pair-x", "x"], ["#pair-y", "y"]]) {
    const select = $(sel);
    select.replaceChildren(...state.params.map((p) => el("option", { value: p.name }, `${p.name} (${p.scale})`)));
    select.value = state.pair[axis] || "";
  }
  $("#pair-controls").hidden = state.params.length < 2;
}

function choosePair() {
  state.pair = { x: $("#pair-x").value || null, y: $("#pair-y").value || null };
  drawFigure("pair", state.generation).catch(showError);
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
  cols.push({ key: `metrics.${state.testMetric}`, label: state.testMetric });
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

function sortedRows(rows) {
  const { key, desc } = state.sort;
  const out = [...rows];
  out.sort((r, s) => {
    const a = cell(r, key);
    const b = cell(s, key);
    const missing = (a === null || a === undefined) - (b === null || b === undefined);
    if (missing) return missing;          // missing values last, whatever the direction
    const c = compare(a, b);
    return (desc ? -c : c) || r.number - s.number;
  });
  return out;
}

// The filter box: space-separated terms, all of which a row must pass. "column op value" compares a
// column (its header or key: learning_rate, params.learning_rate, value, the metric's name, #) with a
// number (< <= > >= = !=) or, for = and !=, a text; any other term is text that some cell must contain.
const TERM = /^([^\s<>=!]+)\s*(<=|>=|!=|=|<|>)\s*(\S+)$/;

function parseFilter(text, cols) {
  const preds = [];
  const errors = [];
  for (const term of text.trim().split(/\s+/).filter(Boolean)) {
    const m = TERM.exec(term);
    if (!m) {
      const needle = term.toLowerCase();
      preds.push((row) => cols.some((c) => fmt(cell(row, c.key)).toLowerCase().includes(needle)));
      continue;
    }
    const [, name, op, raw] = m;
    const wanted = name.toLowerCase();
    const col = cols.find((c) => c.key.toLowerCase() === wanted || c.label.toLowerCase() === wanted)
      || (wanted === "number" || wanted === "trial" ? cols[0] : undefined);
    if (!col) {
      errors.push(`no column '${name}' (columns: ${cols.map((c) => c.label).join(", ")})`);
      continue;
    }
    const num = Number(raw);
    const numeric = raw.trim() !== "" && Number.isFinite(num);
    if (!numeric && !["=", "!="].includes(op)) {
      errors.push(`'${term}': ${op} needs a number`);
      continue;
    }
    preds.push((row) => {
      const v = cell(row, col.key);
      if (v === null || v === undefined) return op === "!=";
      if (numeric && typeof v === "number") {
        return { "<": v < num, "<=": v <= num, ">": v > num, ">=": v >= num, "=": v === num, "!=": v !== num }[op];
      }
      const same = fmt(v).toLowerCase() === raw.toLowerCase();
      return op === "=" ? same : !same;
    });
  }
  return { preds, errors };
}

function filteredRows(cols) {
  const wantedState = $("#state-filter").value;
  const { preds, errors } = parseFilter($("#text-filter").value, cols);
  showError(errors.length ? errors.join("; ") : null, "#filter-error");
  return state.rows.filter((row) => (!wantedState || row.state === wantedState) && preds.every((p) => p(row)));
}

function renderTable() {
  const cols = columns();
  const head = $("#trials thead tr");
  head.replaceChildren();
  for (const col of cols) {
    const th = el("th", { scope: "col", dataset: { key: col.key } }, col.label);
    if (state.sort.key === col.key) th.setAttribute("aria-sort", state.sort.desc ? "descending" : "ascending");
    th.addEventListener("click", () => sortBy(col.key));
    head.append(th);
  }
  const bestRow = state.rows.filter((r) => r.state === "COMPLETE" && r.value !== null)
    .sort((r, s) => compare(s.value, r.value))[0];
  const rows = sortedRows(filteredRows(cols));
  const body = $("#trials tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = el("tr", { dataset: { number: row.number, state: row.state } });
    tr.classList.toggle("selected", state.selected.has(row.number));
    tr.classList.toggle("best", bestRow !== undefined && bestRow.number === row.number);
    for (const col of cols) {
      const td = el("td");
      const v = cell(row, col.key);
      if (col.key === "number") {
        const link = el("a", { href: trialURL(state.study, row.number), title: `trial #${row.number}: details` }, fmt(v));
        link.addEventListener("click", (ev) => ev.stopPropagation());
        td.append(link);
      } else {
        td.textContent = fmt(v, col.key.startsWith("params.") ? 6 : 4);
      }
      if (col.key === "state") td.className = `state-${v}`;
      if (col.key === "state" && row.error) td.title = row.error;
      tr.append(td);
    }
    tr.addEventListener("click", () => toggleTrial(row.number));
    body.append(tr);
  }
  const shown = rows.length === state.rows.length ? `${rows.length}` : `${rows.length} of ${state.rows.length}`;
  $("#trial-count").textContent = `(${shown})`;
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
  const stateFilter = $("#state-filter");
  for (const s of STATES) stateFilter.append(el("option", { value: s }, s.toLowerCase()));
  stateFilter.addEventListener("change", renderTable);
  $("#text-filter").addEventListener("input", renderTable);
  $("#pair-x").addEventListener("change", choosePair);
  $("#importance-method").addEventListener("change", () => drawFigure("importance", state.generation).catch(showError));
  $("#pair-y").addEventListener("change", choosePair);
  $("#clear-selection").addEventListener("click", () => {
    state.selected.clear();
    $("#clear-selection").hidden = true;
    renderTable();
    drawFigure("curves", state.generation).catch(showError);
  });
  $("#compare-link").addEventListener("click", (ev) => {
    if (state.ticked.size < 2) ev.preventDefault();
  });
  onWidthChange(() => {
    if (state.study) Promise.all(FIGURES.map((kind) => drawFigure(kind, state.generation))).catch(showError);
  });
  loadStudies().catch(showError);
  setInterval(() => loadStudies().catch(showError), STUDIES_POLL_MS);   // new studies appear without a reload
});
