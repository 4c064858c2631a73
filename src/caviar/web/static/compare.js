// caviar dashboard, the comparison page (/compare?study=a&study=b): best-so-far curves and EDFs side by side.
"use strict";

// The names asked for: study=a&study=b (any name), or studies=a,b (names without commas).
function wanted() {
  const query = new URLSearchParams(location.search);
  const listed = (query.get("studies") || "").split(",").map((s) => s.trim()).filter(Boolean);
  return [...query.getAll("study"), ...listed];
}

async function renderChoices(names) {
  const data = await getJSON("/api/studies");
  const box = $("#choices");
  box.replaceChildren();
  for (const s of data.studies) {
    const label = el("label", { className: "choice" });
    label.append(el("input", { type: "checkbox", value: s.name, checked: names.includes(s.name) }), ` ${s.name}`);
    box.append(label);
  }
  if (!data.studies.length) box.append(el("span", { className: "muted" }, "no study in this storage yet"));
}

async function draw(names) {
  if (names.length < 2) {
    showError("tick two or more studies to compare them");
    return;
  }
  const probe = $("#plot-best_so_far");
  $("#compared").hidden = false;
  let d;
  try {
    d = await getJSON(withWidth(`/api/${compareURL(names).slice(1)}`, probe));
  } catch (err) {
    $("#compared").hidden = true;
    showError(err);
    return;
  }
  showError(null);
  const box = $("#summaries");
  box.replaceChildren(...d.studies.map((s) => {
    const a = el("a", { className: "fact", href: studyURL(s.name) },
      `${s.name}: ${s.status.toLowerCase()}, ${s.n_trials} trials, best ${s.metric} ${fmt(s.best)}`);
    return a;
  }));
  for (const [kind, fig] of Object.entries(d.figures)) await drawFigureInto($(`#plot-${kind}`), fig);
}

document.addEventListener("DOMContentLoaded", () => {
  const names = wanted();
  $("#choose").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const ticked = [...document.querySelectorAll("#choices input:checked")].map((i) => i.value);
    location.href = compareURL(ticked);
  });
  renderChoices(names).catch(showError);
  draw(names).catch(showError);
  onWidthChange(() => draw(wanted()).catch(showError));
});
