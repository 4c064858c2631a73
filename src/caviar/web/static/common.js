// caviar dashboard: helpers shared by every page (fetching JSON, formatting, drawing plotly figures).
"use strict";

const PLOT_CONFIG = { responsive: true, displaylogo: false };
const $ = (sel) => document.querySelector(sel);
const enc = encodeURIComponent;
// A study name as one URL path segment, whatever it holds (caviar/web/urls.py has the same rule): encoded,
// and "." / ".." with a literal "=" after them, since browsers drop dot segments even when encoded.
const DOT_MARK = "=";
function encName(name) { return name === "." || name === ".." ? name + DOT_MARK : enc(name); }
function decName(segment) {
  return segment === "." + DOT_MARK || segment === ".." + DOT_MARK ? segment.slice(0, -1) : decodeURIComponent(segment);
}

async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
    const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    err.status = res.status;
    throw err;
  }
  return res.json();
}

function showError(err, sel = "#error") {
  const box = $(sel);
  if (!box) return;
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

// A value as text: numbers with `digits` significant digits (hyperparameters get 6, so a narrow range
// such as 0.10005 is not shown as 0.1001).
function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(digits - 2) : String(Number(v.toPrecision(digits)));
  }
  if (Array.isArray(v)) return v.join("-");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function el(tag, props = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

// The plot's width in pixels: the server fits the ticks to it.
function plotWidth(div) {
  return Math.max(200, Math.min(5000, Math.round(div.getBoundingClientRect().width || div.clientWidth || 800)));
}

function withWidth(url, div) {
  return `${url}${url.includes("?") ? "&" : "?"}width=${plotWidth(div)}`;
}

async function drawFigureInto(div, fig) {
  await Plotly.react(div, fig.data, fig.layout, PLOT_CONFIG);
  div.dataset.drawn = String(Number(div.dataset.drawn || 0) + 1);
}

// Call fn after the window's width settles on a new value (ticks are refitted to the new width).
function onWidthChange(fn) {
  let last = window.innerWidth;
  let timer = null;
  window.addEventListener("resize", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (window.innerWidth !== last) { last = window.innerWidth; fn(); }
    }, 300);
  });
}

function studyURL(name) { return `/#${enc(name)}`; }
function trialURL(name, number) { return `/study/${encName(name)}/trial/${number}`; }

// The comparison page of these studies: ?studies=a,b, or one study= parameter each when a name holds a
// comma or edge spaces (which the short form would split or trim).
function compareURL(names) {
  const plain = names.every((n) => !n.includes(",") && n.trim() === n);
  return plain ? `/compare?studies=${names.map(enc).join(",")}` : `/compare?${names.map((n) => `study=${enc(n)}`).join("&")}`;
}
