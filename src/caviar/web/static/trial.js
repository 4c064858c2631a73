// caviar dashboard, the trial page (/study/NAME/trial/NUMBER): params, metrics, curves, events, model file.
"use strict";

function route() {
  const m = /^\/study\/([^/]+)\/trial\/([^/]+)\/?$/.exec(location.pathname);
  return m ? { study: decName(m[1]), number: decodeURIComponent(m[2]) } : { study: "", number: "" };
}

function kvRows(sel, entries) {
  const body = $(`${sel} tbody`);
  body.replaceChildren();
  for (const [k, v] of entries) {
    const tr = el("tr");
    tr.append(el("th", { scope: "row" }, k), el("td", {}, fmt(v, 6)));
    body.append(tr);
  }
}

// A panda session's interventions in words (the panda page's labels); any other event as its JSON.
function eventText(e) {
  const p = e.payload || {};
  const short = (v) => fmt(v, 4);
  switch (e.kind) {
    case "set": return ": " + Object.entries(p.changes || {}).map(([k, v]) => `${k} ${short((p.old || {})[k])} → ${short(v)}`).join(", ");
    case "checkpoint": return `: #${p.checkpoint} ${p.label || ""} (epoch ${p.epoch})`;
    case "rollback": return `: to checkpoint #${p.checkpoint}, step ${p.from_step} → ${p.to_step}, epoch ${p.from_epoch} → ${p.to_epoch}`;
    case "fork": return `: ${p.k} trials in study ${p.study}${p.warm === false ? " (from scratch)" : ""}`;
    case "adopt": return `: trial #${p.member} of ${p.study}, epoch ${p.from_epoch} → ${p.to_epoch}`;
    case "diverged": return `: loss ${p.loss === null ? "non-finite" : short(p.loss)} under lr ${short(p.lr)}`;
    case "start": return `: ${p.optimizer || ""} ${p.hidden ? JSON.stringify(p.hidden) : ""}, ${p.epochs} epochs`;
    default: return e.payload === null || !Object.keys(p).length ? "" : ": " + fmt(e.payload);
  }
}

function setLink(sel, study, number) {
  const a = $(sel);
  a.hidden = number === null || number === undefined;
  if (!a.hidden) a.href = trialURL(study, number);
}

async function load() {
  const { study, number } = route();
  $("#back").href = studyURL(study);
  $("#back").textContent = study ? `study ${study}` : "studies";
  $("#crumb").textContent = `/ trial #${number}`;
  document.title = `caviar: ${study} trial #${number}`;
  $("#trial-title").textContent = `${study}: trial #${number}`;
  $("#goto-number").value = /^\d+$/.test(number) ? number : "";
  $("#goto").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const n = $("#goto-number").value.trim();
    if (/^\d+$/.test(n)) location.href = trialURL(study, n);
  });
  if (!/^\d+$/.test(number)) {
    showError(`'${number}' is not a trial number: trials are numbered 0, 1, 2...`);
    return;
  }
  let d;
  try {
    d = await getJSON(`/api/studies/${encName(study)}/trials/${number}`);
  } catch (err) {
    showError(err);
    return;
  }
  const t = d.trial;
  if (d.kind === "session") {   // a panda session: one trial, listed apart on the index
    $("#back").href = "/";
    $("#back").textContent = "panda sessions";
    $("#trial-title").textContent = `panda session ${study}`;
  }
  $("#trial").hidden = false;
  const badge = $("#trial-state");
  badge.hidden = false;
  badge.textContent = t.state.toLowerCase();
  badge.classList.add(`state-${t.state}`);
  $("#trial-best").hidden = !t.is_best;
  setLink("#prev", study, d.previous);
  setLink("#next", study, d.next);
  const facts = [
    [d.metric, fmt(t.value)], ["round", t.round], ["seed", t.seed], ["attempts", t.attempts],
    ["seconds", fmt(t.duration)], ["worker", t.worker_id], ["started", t.started_at], ["finished", t.finished_at],
  ];
  const box = $("#trial-facts");
  box.replaceChildren(...facts.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => el("span", { className: "fact" }, `${k}: ${v}`)));
  if (t.error) box.append(el("span", { className: "fact error" }, `error: ${t.error}`));
  const scales = Object.fromEntries(d.space.map((p) => [p.name, p.scale]));
  kvRows("#params", Object.entries(t.params).map(([k, v]) => [scales[k] ? `${k} (${scales[k]})` : k, v]));
  kvRows("#metrics", Object.entries(t.metrics).filter(([k]) => !(d.lineage && (k === "lineage" || k === "schedule"))));
  const events = $("#events");
  events.replaceChildren(...d.events.map((e) => el("li", {},
    `${e.created_at || ""} · ${e.kind}${e.step === null ? "" : ` at step ${e.step}`}${eventText(e)}`)));
  $("#no-events").hidden = d.events.length > 0;
  const arts = $("#artifacts");
  arts.replaceChildren(...d.artifacts.map((a) => {
    const li = el("li");
    li.append(el("a", { href: a.url, download: "", className: "button" }, `download ${a.name}`));
    return li;
  }));
  $("#no-artifacts").hidden = d.artifacts.length > 0;
  if (d.lineage) drawLineage(study, number, d.lineage, scales);
  await drawCurves(study, number);
  onWidthChange(() => drawCurves(study, number).catch(showError));
}

// A PBT trial: whom it copied and who copied it (a small table, ancestors first), and its schedule.
function drawLineage(study, number, lin, scales) {
  const p = $("#lineage");
  const chain = lin.ancestors.slice().reverse().map((a) => `#${a.parent} → #${a.child} after epoch ${a.epoch}`);
  p.textContent = chain.length ? `ancestry: ${chain.join(", ")}` : `trial #${number} never copied another trial`;
  p.classList.remove("muted");
  const rows = [
    ...lin.copied.map((e) => [e.epoch, "copied the weights of", e.parent]),
    ...lin.copied_by.map((e) => [e.epoch, "was copied by", e.child]),
  ].sort((a, b) => a[0] - b[0]);
  const table = $("#lineage-table");
  const body = $("#lineage-table tbody");
  body.replaceChildren(...rows.map(([epoch, what, other]) => {
    const tr = el("tr");
    const link = el("a", { href: trialURL(study, other) }, `#${other}`);
    const td = el("td");
    td.append(link);
    tr.append(el("td", {}, String(epoch)), el("td", {}, what), td);
    return tr;
  }));
  table.hidden = rows.length === 0;
  const tree = $("#lineage-link");
  tree.href = `/study/${encName(study)}/lineage`;
  tree.hidden = false;
  if (!lin.schedule.length) return;
  const names = Object.keys(lin.schedule[0]).filter((k) => k !== "epoch");
  const end = lin.epochs || lin.schedule[lin.schedule.length - 1].epoch + 1;
  const data = names.map((name, i) => ({
    x: [...lin.schedule.map((e) => e.epoch), end],
    y: [...lin.schedule.map((e) => e[name]), lin.schedule[lin.schedule.length - 1][name]],
    name, mode: "lines+markers", line: { shape: "hv" }, yaxis: i ? `y${i + 1}` : "y",
  }));
  // one panel per hyperparameter, stacked over a shared epoch axis, each on its own scale
  const n = names.length;
  const layout = { height: 80 + 150 * n, margin: { t: 10, r: 10, l: 90 }, showlegend: false,
    xaxis: { title: { text: "epochs done" }, dtick: 1, anchor: n > 1 ? `y${n}` : "y" } };
  names.forEach((name, i) => {
    const top = 1 - i / n;
    layout[i ? `yaxis${i + 1}` : "yaxis"] = { title: { text: name }, anchor: "x", domain: [top - 1 / n + 0.08, top],
      type: scales[name] === "log" ? "log" : "linear" };
  });
  $("#schedule-card").hidden = false;
  Plotly.react($("#plot-schedule"), data, layout, PLOT_CONFIG);
}

async function drawCurves(study, number) {
  const div = $("#plot-curves");
  const fig = await getJSON(withWidth(`/api/studies/${encName(study)}/figures/curves?trials=${number}`, div));
  await drawFigureInto(div, fig);
}

document.addEventListener("DOMContentLoaded", () => { load().catch(showError); });
