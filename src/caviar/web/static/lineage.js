// caviar dashboard, a PBT study's lineage page (/study/NAME/lineage): who copied whom and when, as a
// tree over epochs, every trial's hyperparameter schedule, and the list of copies.
"use strict";

function route() {
  const m = /^\/study\/([^/]+)\/lineage\/?$/.exec(location.pathname);
  return m ? decName(m[1]) : "";
}

// Lanes of the tree: trials grouped by population, then by number.
function lanes(trials) {
  const order = trials.slice().sort((a, b) =>
    String(a.population).localeCompare(String(b.population)) || a.number - b.number);
  return new Map(order.map((t, i) => [t.number, i]));
}

function drawTree(study, d) {
  const lane = lanes(d.trials);
  const lives = { x: [], y: [], mode: "lines", name: "trained", hoverinfo: "skip",
    line: { color: "#94a3b8", width: 2 } };
  for (const t of d.trials) lives.x.push(0, t.epochs, null), lives.y.push(lane.get(t.number), lane.get(t.number), null);
  // a link from the parent (circle) to the child (triangle pointing at it); copies after the same epoch
  // are spread a little around it so that none hides another
  const symbols = [];
  const copies = { x: [], y: [], text: [], mode: "lines+markers", name: "copies", hoverinfo: "text",
    line: { color: "#2b6cb0", width: 1.5 }, marker: { size: 8, symbol: symbols } };
  const shown = d.copies.filter((c) => lane.has(c.parent) && lane.has(c.child));
  for (const c of shown) {
    const same = shown.filter((o) => o.epoch === c.epoch);
    const x = c.epoch + (same.length > 1 ? 0.16 * (same.indexOf(c) / (same.length - 1) - 0.5) : 0);
    const text = `#${c.child} copied #${c.parent} after epoch ${c.epoch}`;
    const down = lane.get(c.child) > lane.get(c.parent);   // lanes grow downwards
    copies.x.push(x, x, null);
    copies.y.push(lane.get(c.parent), lane.get(c.child), null);
    copies.text.push(text, text, null);
    symbols.push("circle", down ? "triangle-down" : "triangle-up", "circle");
  }
  const ends = { x: d.trials.map((t) => t.epochs), y: d.trials.map((t) => lane.get(t.number)),
    customdata: d.trials.map((t) => t.number), mode: "markers", name: "trials", hoverinfo: "text",
    text: d.trials.map((t) => `trial #${t.number} (${t.population}): ${d.metric} ${fmt(t.value)}`),
    marker: { size: 10, color: d.trials.map((t) => t.value), colorscale: "Viridis", showscale: true,
      colorbar: { title: { text: d.metric } } } };
  const byLane = [...lane.entries()].sort((a, b) => a[1] - b[1]);
  const layout = { height: Math.max(300, 60 + 22 * d.trials.length), margin: { t: 10, r: 10, l: 60 },
    showlegend: false, hovermode: "closest",
    xaxis: { title: { text: "epochs done" }, dtick: 1, rangemode: "tozero" },
    yaxis: { autorange: "reversed", tickvals: byLane.map(([, i]) => i), ticktext: byLane.map(([n]) => `#${n}`) } };
  const div = $("#plot-tree");
  return Plotly.react(div, [lives, copies, ends], layout, PLOT_CONFIG).then(() => {
    div.on("plotly_click", (ev) => {
      const p = ev.points.find((q) => q.customdata !== undefined);
      if (p) location.href = trialURL(study, p.customdata);
    });
  });
}

// One panel per hyperparameter, a step line per trial (its schedule), on the parameter's own scale.
function drawSchedules(d) {
  const first = d.trials.find((t) => t.schedule.length);
  if (!first) return Promise.resolve();
  const names = Object.keys(first.schedule[0]).filter((k) => k !== "epoch");
  const scales = Object.fromEntries(d.space.map((p) => [p.name, p.scale]));
  const data = names.map((name, i) => {
    const tr = { x: [], y: [], text: [], name, mode: "lines", line: { shape: "hv", width: 1.5 },
      hoverinfo: "text", yaxis: i ? `y${i + 1}` : "y" };
    for (const t of d.trials) {
      if (!t.schedule.length) continue;
      const last = t.schedule[t.schedule.length - 1];
      for (const e of t.schedule) tr.x.push(e.epoch), tr.y.push(e[name]), tr.text.push(`#${t.number}: ${name} ${fmt(e[name])}`);
      tr.x.push(Math.max(t.epochs || 0, last.epoch), null);
      tr.y.push(last[name], null);
      tr.text.push(`#${t.number}: ${name} ${fmt(last[name])}`, null);
    }
    return tr;
  });
  const n = names.length;
  const layout = { height: 80 + 170 * n, margin: { t: 10, r: 10, l: 90 }, showlegend: false, hovermode: "closest",
    xaxis: { title: { text: "epochs done" }, dtick: 1, anchor: n > 1 ? `y${n}` : "y" } };
  names.forEach((name, i) => {
    const top = 1 - i / n;
    layout[i ? `yaxis${i + 1}` : "yaxis"] = { title: { text: name }, anchor: "x", domain: [top - 1 / n + 0.06, top],
      type: scales[name] === "log" ? "log" : "linear" };
  });
  return Plotly.react($("#plot-schedules"), data, layout, PLOT_CONFIG);
}

function copiesTable(study, d) {
  const link = (n) => {
    const td = el("td");
    td.append(el("a", { href: trialURL(study, n) }, `#${n}`));
    return td;
  };
  $("#copies tbody").replaceChildren(...d.copies.map((c) => {
    const tr = el("tr");
    tr.append(el("td", {}, String(c.epoch)), link(c.child), link(c.parent));
    return tr;
  }));
}

async function load() {
  const study = route();
  $("#back").href = studyURL(study);
  $("#back").textContent = study ? `study ${study}` : "studies";
  document.title = `caviar: ${study} lineage`;
  $("#lineage-title").textContent = `${study}: lineage`;
  let d;
  try {
    d = await getJSON(`/api/studies/${encName(study)}/lineage`);
  } catch (err) {
    showError(err);
    return;
  }
  if (!d.trials.length) {
    $("#no-lineage").hidden = false;
    return;
  }
  const populations = new Set(d.trials.map((t) => t.population)).size;
  const copied = new Set(d.copies.map((c) => c.child)).size;
  $("#lineage-summary").textContent = `${d.trials.length} trials in ${populations} population${populations === 1 ? "" : "s"}: `
    + `${d.copies.length} cop${d.copies.length === 1 ? "y" : "ies"}, ${copied} trial${copied === 1 ? "" : "s"} copied another.`;
  $("#lineage-view").hidden = false;
  copiesTable(study, d);
  await drawTree(study, d);
  await drawSchedules(d);
}

document.addEventListener("DOMContentLoaded", () => { load().catch(showError); });
