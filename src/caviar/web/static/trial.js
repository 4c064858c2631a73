// caviar dashboard, the trial page (/study/NAME/trial/NUMBER): params, metrics, curves, events, model file.
"use strict";

function route() {
  const m = /^\/study\/([^/]+)\/trial\/([^/]+)\/?$/.exec(location.pathname);
  return m ? { study: decodeURIComponent(m[1]), number: decodeURIComponent(m[2]) } : { study: "", number: "" };
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
    d = await getJSON(`/api/studies/${enc(study)}/trials/${number}`);
  } catch (err) {
    showError(err);
    return;
  }
  const t = d.trial;
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
  kvRows("#metrics", Object.entries(t.metrics));
  const events = $("#events");
  events.replaceChildren(...d.events.map((e) => el("li", {},
    `${e.created_at || ""} · ${e.kind}${e.step === null ? "" : ` at step ${e.step}`}${e.payload === null ? "" : ": " + fmt(e.payload)}`)));
  $("#no-events").hidden = d.events.length > 0;
  const arts = $("#artifacts");
  arts.replaceChildren(...d.artifacts.map((a) => {
    const li = el("li");
    li.append(el("a", { href: a.url, download: "", className: "button" }, `download ${a.name}`));
    return li;
  }));
  $("#no-artifacts").hidden = d.artifacts.length > 0;
  if (d.lineage) $("#lineage").textContent = fmt(d.lineage);
  await drawCurves(study, number);
  onWidthChange(() => drawCurves(study, number).catch(showError));
}

async function drawCurves(study, number) {
  const div = $("#plot-curves");
  const fig = await getJSON(withWidth(`/api/studies/${enc(study)}/figures/curves?trials=${number}`, div));
  await drawFigureInto(div, fig);
}

document.addEventListener("DOMContentLoaded", () => { load().catch(showError); });
