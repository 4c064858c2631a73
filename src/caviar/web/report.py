"""The static report of a study: one HTML file that opens offline, and PNG figures fit for a paper.

``write_report(study, out_dir)`` writes ``report.html`` (the plotly figures of :mod:`caviar.web.figures`,
with plotly.js inlined, so no network is needed) and ``history.png``, ``slice.png``, ``parallel.png``,
``boxes.png``, ``curves.png``, ``importance.png``, ``pair.png``, ``edf.png`` drawn with matplotlib (Agg
backend, no kaleido, no browser). The PNGs put
every hyperparameter on its own scale: log axes for log parameters and, for one-minus-log betas, a
matplotlib ``function`` scale x -> -log10(1 - x) with ticks labelled in beta.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caviar.storage import Storage
from caviar.web.data import DEFAULT_TOP_K, ParamInfo, StudyData, load_study
from caviar.web.figures import KINDS, PALETTE, round_color
from caviar.web.figures import figures as plotly_figures
from caviar.web.scales import (
    LOG_SCALES,
    axis_title,
    choice_label,
    fit_ticks,
    from_one_minus_log,
    one_minus_log,
    to_axis,
)

DPI = 200
PNG_NAMES = tuple(f"{kind}.png" for kind in KINDS)


# ------------------------------------------------------------------------------------- matplotlib


def _pyplot():
    """pyplot on the Agg backend (files only, never a window)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": DPI,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "text.parse_math": False,  # names are text: a '$' in a study name is a dollar sign, not math
        }
    )
    return plt


def set_scale(ax: Any, param: ParamInfo, axis: str = "x") -> None:
    """Put ``param``'s scale on an axis: log, one-minus-log (a function scale with beta ticks), or linear,
    with the ticks the dashboard would pick for an axis this long (:func:`caviar.web.scales.fit_ticks`):
    integer parameters get integer ticks only, and no two labels collide."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    set_scale_fn = ax.set_xscale if axis == "x" else ax.set_yscale
    target = ax.xaxis if axis == "x" else ax.yaxis
    if param.scale in LOG_SCALES:
        set_scale_fn("log")
    elif param.scale == "one_minus_log":
        set_scale_fn("function", functions=(_oml_forward, _oml_inverse))
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(axis_title(param.name, param.scale))
    if not param.numeric:
        return
    ticks = fit_ticks(param.scale, *param.bounds, _axis_px(ax, axis) * PX_PER_POINT, horizontal=axis == "x")
    target.set_major_locator(FixedLocator(ticks.values))
    target.set_major_formatter(FixedFormatter(ticks.text))
    target.set_minor_locator(NullLocator())


#: fit_ticks measures labels of a 12 px font; matplotlib's here are 9 pt: a point of axis holds 12/9 px.
PX_PER_POINT = 12 / 9


def _axis_px(ax: Any, axis: str) -> float:
    """The axis' length in points (1/72 inch) on its figure."""
    box = ax.get_position()
    width, height = ax.figure.get_size_inches()
    return float((box.width * width if axis == "x" else box.height * height) * 72)


def _oml_forward(x: np.ndarray) -> np.ndarray:
    """beta -> -log10(1 - beta); values at or above 1 are held just below it."""
    return one_minus_log(np.minimum(np.asarray(x, dtype=float), 1.0 - 1e-12))


def _oml_inverse(y: np.ndarray) -> np.ndarray:
    return from_one_minus_log(y)


def _values(param: ParamInfo, trials: Sequence[Any]) -> list[Any]:
    """Values to plot against a param's axis: numbers as floats, choices as their index."""
    raw = [t.params.get(param.name) for t in trials]
    if param.scale == "choice":
        return to_axis(raw, "choice", param.choices)
    return [np.nan if v is None else float(v) for v in raw]


def _choice_ticks(ax: Any, param: ParamInfo, axis: str = "x") -> None:
    labels = [choice_label(c) for c in param.choices]
    (ax.set_xticks if axis == "x" else ax.set_yticks)(range(len(labels)), labels)
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(param.name)


def _empty_png(path: Path, title: str, message: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#777", transform=ax.transAxes)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _round_legend(ax: Any, rounds: Sequence[int]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=round_color(r), label=f"round {r}") for r in rounds]
    if len(handles) > 1:
        ax.legend(handles=handles, fontsize=7, frameon=False)


def history_png(data: StudyData, path: Path) -> Path:
    """Metric per complete trial (coloured by round), pruned and diverged trials marked apart (a diverged
    one without a finite metric at the worst value seen), and the best-so-far step line over COMPLETE
    trials only (as on the dashboard)."""
    from matplotlib.ticker import MaxNLocator

    from caviar.web.figures import APART, completed

    done = completed(data)
    apart = {state: [t for t in data.trials if t.state == state] for state in APART}
    if not done and not any(apart.values()):
        return _empty_png(path, f"{data.name}: optimization history", "no finished trials yet")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [t.number for t in done]
    ys = [data.value(t) for t in done]
    ax.scatter(xs, ys, c=[round_color(t.round) for t in done], s=22, edgecolors="white", linewidths=0.5, zorder=3)
    seen = [v for t in data.trials if (v := data.value(t)) is not None]
    worst = (min(seen) if data.maximize else max(seen)) if seen else 0.0  # where a broken run is drawn
    for state, trials in apart.items():
        if trials:
            symbol, color, label = APART[state]
            marker = "x" if symbol == "x" else "v"
            ax.scatter(
                [t.number for t in trials],
                [v if (v := data.value(t)) is not None else worst for t in trials],
                marker=marker,
                color=color,
                s=30,
                label=label,
                zorder=3,
            )
    if done:
        pick = np.maximum if data.maximize else np.minimum
        ax.step(
            xs, pick.accumulate(np.asarray(ys, dtype=float)), where="post", color="#222", lw=1.5, label="best so far"
        )
    _round_legend(ax, sorted({t.round for t in done}))
    if any(apart.values()):
        ax.legend(fontsize=7, frameon=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(data.metric)
    ax.set_title(f"{data.name}: optimization history")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def slice_png(data: StudyData, path: Path) -> Path:
    """One panel per hyperparameter: the metric against the value, on the parameter's scale."""
    scored, params = data.scored(), data.params
    if not scored or not params:
        return _empty_png(path, f"{data.name}: slice", "no finished trials yet" if params else "the space is empty")
    plt = _pyplot()
    cols = min(4, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), sharey=True, squeeze=False)
    ys = [data.value(t) for t in scored]
    colors = [round_color(t.round) for t in scored]
    for ax, param in zip(axes.flat, params, strict=False):
        ax.scatter(_values(param, scored), ys, c=colors, s=16, alpha=0.85, edgecolors="none")
        if param.scale == "choice":
            _choice_ticks(ax, param)
        else:
            set_scale(ax, param)
    for ax in axes.flat[len(params) :]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel(data.metric)
    fig.suptitle(f"{data.name}: {data.metric} against each hyperparameter")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _normalized(param: ParamInfo, trials: Sequence[Any]) -> tuple[np.ndarray, list[float], list[str]]:
    """A param's values mapped to [0, 1] over its whole range on its scale, with tick positions/labels."""
    raw = [t.params.get(param.name) for t in trials]
    if param.scale == "choice":
        n = max(len(param.choices) - 1, 1)
        coords = np.array([np.nan if c is None else c / n for c in to_axis(raw, "choice", param.choices)])
        return coords, [i / n for i in range(len(param.choices))], [choice_label(c) for c in param.choices]
    scale = "log" if param.scale in LOG_SCALES else param.scale
    low, high = param.bounds
    lo, hi = to_axis([low, high], scale)
    assert lo is not None and hi is not None, "a numeric range is finite on its own scale"
    span = (hi - lo) or 1.0
    coords = np.array([np.nan if c is None else (c - lo) / span for c in to_axis(raw, scale)])
    ticks = fit_ticks(param.scale, low, high, PARALLEL_AXIS_PX, horizontal=False)
    return coords, [(t - lo) / span for t in ticks.coords], ticks.text


#: The height of a parallel-coordinates axis in the PNG, in fit_ticks' pixels (4.2 in, less the margins).
PARALLEL_AXIS_PX = 3.2 * 72 * PX_PER_POINT


def parallel_png(data: StudyData, path: Path) -> Path:
    """Parallel coordinates: each hyperparameter on its own scale, the metric last; lines coloured by it."""
    scored = data.scored()
    if not scored:
        return _empty_png(path, f"{data.name}: parallel coordinates", "no finished trials yet")
    plt = _pyplot()
    values = np.array([data.value(t) for t in scored], dtype=float)
    vlo, vhi = float(values.min()), float(values.max())
    vspan = (vhi - vlo) or 1.0
    axes_data = [_normalized(p, scored) for p in data.params]
    vt = fit_ticks("linear", vlo, vhi, PARALLEL_AXIS_PX, horizontal=False)
    axes_data.append(((values - vlo) / vspan, [(v - vlo) / vspan for v in vt.values], vt.text))
    labels = [axis_title(p.name, p.scale) for p in data.params] + [data.metric]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(labels)), 4.2))
    cmap = plt.get_cmap("viridis" if data.maximize else "viridis_r")
    coords = np.vstack([a[0] for a in axes_data])  # (n axes, n trials)
    order = np.argsort(values if data.maximize else -values)  # best drawn last, on top
    for j in order:
        ax.plot(range(len(labels)), coords[:, j], color=cmap((values[j] - vlo) / vspan), lw=1.1, alpha=0.8)
    for i, (_, tick_pos, tick_labels) in enumerate(axes_data):
        ax.axvline(i, color="#333", lw=0.8)
        for pos, text in zip(tick_pos, tick_labels, strict=True):
            ax.text(i + 0.03, pos, text, fontsize=6.5, va="center", ha="left", color="#333")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(labels) - 0.6)
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(vlo, vhi))
    fig.colorbar(sm, ax=ax, label=data.metric, pad=0.02)
    ax.set_title(f"{data.name}: parallel coordinates")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def boxes_png(data: StudyData, path: Path, x: str | None = None, y: str | None = None) -> Path:
    """Coarse-to-fine boxes per round as rectangles over the trials of two numeric hyperparameters."""
    from caviar.web.figures import _box_params

    pair = _box_params(data, x, y)
    if pair is None:
        return _empty_png(path, f"{data.name}: search boxes", "boxes need two numeric hyperparameters")
    px, py = pair
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for rnd, box in sorted(data.boxes.items()):
        try:
            x0, x1 = box["low"][px.name], box["high"][px.name]
            y0, y1 = box["low"][py.name], box["high"][py.name]
        except (KeyError, TypeError):
            continue
        color = round_color(rnd)
        ax.add_patch(
            Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                facecolor=color,
                alpha=0.12 if rnd else 0.05,
                edgecolor=color,
                lw=1.5,
                ls=":" if rnd == 0 else "-",
                label=f"round {rnd} box",
            )
        )
    scored = data.scored()
    for rnd in sorted({t.round for t in scored}):
        trials = [t for t in scored if t.round == rnd]
        ax.scatter(
            _values(px, trials),
            _values(py, trials),
            s=20,
            color=round_color(rnd),
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
            label=f"round {rnd} trials",
        )
    best = data.top(1)
    if best:
        t = best[0]
        ax.scatter(
            _values(px, [t]),
            _values(py, [t]),
            marker="*",
            s=160,
            color="gold",
            edgecolors="black",
            zorder=4,
            label=f"best (#{t.number})",
        )
    set_scale(ax, px, "x")
    set_scale(ax, py, "y")
    _fit_limits(ax, px, "x")
    _fit_limits(ax, py, "y")
    ax.legend(fontsize=7, frameon=False, loc="best")
    ax.set_title(f"{data.name}: search boxes")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fit_limits(ax: Any, param: ParamInfo, axis: str) -> None:
    """The whole search range, with a small margin measured on the param's scale."""
    scale = "log" if param.scale in LOG_SCALES else param.scale
    lo, hi = to_axis([param.low, param.high], scale)
    if lo is None or hi is None:
        return
    pad = 0.04 * (hi - lo)
    ends = [lo - pad, hi + pad]
    if scale == "log":
        ends = [10**e for e in ends]
    elif scale == "one_minus_log":
        ends = [float(b) for b in from_one_minus_log(ends)]
    (ax.set_xlim if axis == "x" else ax.set_ylim)(*ends)


CURVE_PANELS = (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_accuracy", "val_accuracy")))


def curve_panels(data: StudyData) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The two panels' titles and curves: the losses, and accuracy or a regression's metric (validation only)."""
    score = data.score_metric
    return CURVE_PANELS if score == "accuracy" else (CURVE_PANELS[0], (score, (score,)))


def curves_png(data: StudyData, path: Path, k: int = DEFAULT_TOP_K) -> Path:
    """Loss and accuracy (a regression: its metric) per epoch of the top-k trials (train dashed,
    validation solid)."""
    chosen = data.top(k)
    if not chosen:
        return _empty_png(path, f"{data.name}: learning curves", "no completed trials yet")
    plt = _pyplot()
    curves = data.curves(chosen)
    panels = curve_panels(data)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, t in enumerate(chosen):
        rows = curves[t.number]
        epochs = [r["epoch"] + 1 for r in rows]
        color = PALETTE[i % len(PALETTE)]
        for ax, (_, names) in zip(axes, panels, strict=True):
            for name in names:
                ys = [np.nan if r.get(name) is None else r[name] for r in rows]
                ls = "--" if name.startswith("train") else "-"
                label = f"#{t.number}" if name.startswith("val") else None
                ax.plot(epochs, ys, ls=ls, color=color, lw=1.3, marker="o", ms=2.5, label=label)
    from matplotlib.ticker import MaxNLocator

    for ax, (title, _) in zip(axes, panels, strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=7, frameon=False, title="trial (val solid, train dashed)", title_fontsize=7)
    fig.suptitle(f"{data.name}: learning curves, top {len(chosen)} trials")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def importance_png(data: StudyData, path: Path) -> Path:
    """A horizontal bar per hyperparameter, the most important on top (or the reason there is none)."""
    from caviar.web.importance import param_importance

    imp = param_importance(data)
    title = f"{data.name}: hyperparameter importance for {data.metric}"
    if imp.message:
        return _empty_png(path, title, imp.message)
    plt = _pyplot()
    names = imp.ranking[::-1]
    shares = [imp.scores[n] for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.45 * len(names)))
    ax.barh(names, shares, color="#2b6cb0")
    for i, share in enumerate(shares):
        ax.text(share, i, f" {share:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(shares) * 1.18)
    ax.set_xlabel(f"importance ({imp.method}, {imp.n_trials} complete trials)", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def pair_png(data: StudyData, path: Path, x: str | None = None, y: str | None = None) -> Path:
    """The complete trials over two hyperparameters (default: the two most important), coloured by the
    metric, each axis on its parameter's scale."""
    from caviar.web.figures import _pair_params, completed

    pair = _pair_params(data, x, y)
    if pair is None:
        return _empty_png(path, f"{data.name}: pair plot", "the pair plot needs two hyperparameters")
    px, py = pair
    done = [t for t in completed(data) if t.params.get(px.name) is not None and t.params.get(py.name) is not None]
    if not done:
        return _empty_png(path, f"{data.name}: pair plot", "no complete trials yet")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    values = [data.value(t) for t in done]
    points = ax.scatter(
        _values(px, done),
        _values(py, done),
        c=values,
        cmap="viridis" if data.maximize else "viridis_r",
        s=30,
        edgecolors="white",
        linewidths=0.5,
        zorder=3,
    )
    fig.colorbar(points, ax=ax, label=data.metric, pad=0.02)
    for param, axis in ((px, "x"), (py, "y")):
        if param.scale == "choice":
            _choice_ticks(ax, param, axis)
        else:
            set_scale(ax, param, axis)
            _fit_limits(ax, param, axis)
    ax.set_title(f"{data.name}: {data.metric} over {px.name} x {py.name}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def edf_png(data: StudyData, path: Path) -> Path:
    """The empirical distribution function of the metric over the complete trials."""
    from caviar.web.figures import completed

    values = sorted(v for t in completed(data) if (v := data.value(t)) is not None)
    title = f"{data.name}: empirical distribution of {data.metric}"
    if not values:
        return _empty_png(path, title, "no complete trials yet")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    n = len(values)
    ax.step(values, [(k + 1) / n for k in range(n)], where="post", color=PALETTE[0], lw=1.6)
    ax.set_ylim(0, 1.04)
    ax.set_xlabel(data.metric)
    ax.set_ylabel("fraction of complete trials")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


PNG_WRITERS = {
    "history": history_png,
    "slice": slice_png,
    "parallel": parallel_png,
    "boxes": boxes_png,
    "curves": curves_png,
    "importance": importance_png,
    "pair": pair_png,
    "edf": edf_png,
}


# -------------------------------------------------------------------------------------------- HTML


def _top_table(data: StudyData, k: int = 10) -> str:
    names = [p.name for p in data.params]
    test = data.test_metric  # test_r2 for a regression
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["#", "round", data.metric, *names, test])
    body = []
    for t in data.top(k):
        cells = [t.number, t.round, data.value(t), *(t.params.get(n) for n in names), t.metrics.get(test)]
        body.append("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else choice_label(value)


REPORT_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #1d2430; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } .muted { color: #6b7380; }
table { border-collapse: collapse; margin: 1rem 0 2rem; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e3e6eb; padding: .3rem .7rem; text-align: right; }
section { margin: 2rem 0; } .space span { display: inline-block; margin-right: 1rem; }
"""


def report_html(data: StudyData, figs: dict[str, Any]) -> str:
    """The whole report page: summary, top trials, and every figure, with plotly.js inlined."""
    from caviar.web.app import plotly_js

    rec = data.record
    counts = ", ".join(f"{n} {k.lower()}" for k, n in rec.counts.items() if n) or "no trials"
    space = "".join(f"<span><b>{html.escape(p.name)}</b> {html.escape(p.scale)}</span>" for p in data.params)
    sections = []
    for kind in KINDS:
        div = figs[kind].to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-{kind}",
            config={"displaylogo": False, "responsive": True},
        )
        sections.append(f'<section id="{kind}"><h2>{kind}</h2>{div}</section>')
    strategy = html.escape(str(rec.spec.get("search", {}).get("strategy", "")))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>caviar report: {html.escape(rec.name)}</title><style>{REPORT_CSS}</style>"
        f"<script>{plotly_js().decode('utf-8')}</script></head><body>"
        f"<h1>Study {html.escape(rec.name)}</h1>"
        f"<p class='muted'>{html.escape(counts)}; {strategy} search; metric {html.escape(rec.metric)} "
        f"({html.escape(rec.direction)}); status {html.escape(rec.status.lower())}</p>"
        f"<p class='space'>{space}</p>"
        f"<h2>Top trials</h2>{_top_table(data)}{''.join(sections)}</body></html>"
    )


def write_report(study: Any, out_dir: str | Path, storage: Storage | str | None = None) -> list[Path]:
    """Write report.html and the five PNG figures into ``out_dir`` (created); returns the paths written.

    ``study`` is a caviar Study, a StudyData, or a name/id together with ``storage``.
    """
    data = load_study(study, storage)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    page.write_text(report_html(data, plotly_figures(data)), encoding="utf-8")
    written = [page]
    for kind in KINDS:
        written.append(PNG_WRITERS[kind](data, out / f"{kind}.png"))
    return written
