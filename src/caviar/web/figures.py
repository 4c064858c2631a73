"""Plotly figures of a study, each hyperparameter on its own scale; used by the dashboard and the report.

Every function takes a :class:`caviar.tune.study.Study` (or a :class:`~caviar.web.data.StudyData`) and
returns a ``plotly.graph_objects.Figure``. Axes follow the parameter's scale: a native log axis for
``log``/``int_log``, and for ``one_minus_log`` betas a linear axis of -log10(1 - beta) whose ticks are
labelled in beta (0.9, 0.99, 0.999), so each decade of 1 - beta gets the same room. ``layout.meta``
says which axis shows which parameter, so tests and scripts need not guess subplot names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from caviar.storage import TrialRecord
from caviar.web.data import DEFAULT_TOP_K, ParamInfo, StudyData, load_study
from caviar.web.scales import (
    LOG_SCALES,
    axis_ticks,
    axis_title,
    choice_label,
    fmt_number,
    one_minus_log,
    to_axis,
)

KINDS = ("history", "parallel", "slice", "boxes", "curves")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
TEMPLATE = "plotly_white"
SLICE_COLUMNS = 4


def round_color(rnd: int) -> str:
    """The colour of a coarse-to-fine round (the same in every figure)."""
    return PALETTE[int(rnd) % len(PALETTE)]


def _base_layout(fig: go.Figure, title: str, kind: str, **meta: Any) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title},
        margin={"l": 60, "r": 30, "t": 60, "b": 50},
        meta={"kind": kind, **meta},
    )
    return fig


def _empty(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(
        text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 14, "color": "#777"}
    )
    return fig


# ------------------------------------------------------------------------------------- axis helpers


def plot_coords(param: ParamInfo, values: Sequence[Any]) -> list[Any]:
    """What plotly gets as coordinates: raw values on log axes (plotly logs them), -log10(1 - beta)
    for one-minus-log, labels for choices, raw values otherwise."""
    if param.scale == "one_minus_log":
        return to_axis(values, "one_minus_log")
    if param.scale == "choice":
        return [choice_label(v) for v in values]
    return [None if v is None else float(v) for v in values]


def axis_layout(param: ParamInfo) -> dict[str, Any]:
    """Layout properties of an axis showing ``param`` on its scale."""
    out: dict[str, Any] = {"title": {"text": axis_title(param.name, param.scale)}}
    if param.scale in LOG_SCALES:
        out.update(type="log", exponentformat="power")
    elif param.scale == "one_minus_log":
        vals, text = axis_ticks("one_minus_log", *param.bounds) or ([], [])
        out.update(type="linear", tickmode="array", tickvals=vals, ticktext=text)
    elif param.scale == "choice":
        out.update(type="category", categoryorder="array", categoryarray=[choice_label(c) for c in param.choices])
    else:
        out["type"] = "linear"
    return out


def _hover(data: StudyData, trials: Sequence[TrialRecord]) -> tuple[list[list[Any]], str]:
    """customdata rows and a hover template: number, round, metric and every param in its own variable."""
    names = [p.name for p in data.params]
    rows = [[t.number, t.round, *(_hover_value(t.params.get(n)) for n in names)] for t in trials]
    lines = ["trial #%{customdata[0]} (round %{customdata[1]})", f"{data.metric}: %{{y:.4g}}"]
    lines += [f"{n}: %{{customdata[{i + 2}]}}" for i, n in enumerate(names)]
    return rows, "<br>".join(lines) + "<extra></extra>"


def _hover_value(value: Any) -> str:
    if isinstance(value, float):
        return fmt_number(value)
    return choice_label(value)


def _best_so_far(values: Sequence[float], maximize: bool) -> list[float]:
    out: list[float] = []
    pick = max if maximize else min
    for v in values:
        out.append(v if not out else pick(out[-1], v))
    return out


# ------------------------------------------------------------------------------------------ figures


def history_figure(study: Any) -> go.Figure:
    """Optimization history: each finished trial's metric by trial number (one colour per round) and the
    best-so-far line."""
    data = load_study(study)
    fig = _base_layout(go.Figure(), f"{data.name}: optimization history", "history", metric=data.metric)
    scored = data.scored()
    if not scored:
        return _empty(fig, "no finished trials yet")
    for rnd in sorted({t.round for t in scored}):
        trials = [t for t in scored if t.round == rnd]
        custom, hover = _hover(data, trials)
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in trials],
                y=[data.value(t) for t in trials],
                mode="markers",
                name=f"round {rnd}",
                marker={"color": round_color(rnd), "size": 8, "line": {"width": 0.5, "color": "white"}},
                customdata=custom,
                hovertemplate=hover,
            )
        )
    values = [data.value(t) or 0.0 for t in scored]
    fig.add_trace(
        go.Scatter(
            x=[t.number for t in scored],
            y=_best_so_far(values, data.maximize),
            mode="lines",
            name="best so far",
            line={"color": "#222", "width": 2, "shape": "hv"},
        )
    )
    fig.update_xaxes(title={"text": "trial"})
    fig.update_yaxes(title={"text": data.metric})
    return fig


def slice_figure(study: Any) -> go.Figure:
    """Each hyperparameter against the metric, one subplot per parameter, x on the parameter's scale."""
    data = load_study(study)
    params = data.params
    if not params:
        return _empty(_base_layout(go.Figure(), f"{data.name}: slice", "slice", axes={}), "the space is empty")
    cols = min(SLICE_COLUMNS, len(params))
    rows = math.ceil(len(params) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, horizontal_spacing=0.04, vertical_spacing=0.18)
    scored = data.scored()
    custom, hover = _hover(data, scored)
    axes: dict[str, str] = {}
    for i, param in enumerate(params):
        row, col = divmod(i, cols)
        fig.add_trace(
            go.Scatter(
                x=plot_coords(param, [t.params.get(param.name) for t in scored]),
                y=[data.value(t) for t in scored],
                mode="markers",
                name=param.name,
                showlegend=False,
                customdata=custom,
                hovertemplate=hover,
                marker={"color": [round_color(t.round) for t in scored], "size": 7, "opacity": 0.85},
            ),
            row=row + 1,
            col=col + 1,
        )
        fig.update_xaxes(**axis_layout(param), row=row + 1, col=col + 1)
        axes[param.name] = "xaxis" if i == 0 else f"xaxis{i + 1}"
    fig.update_yaxes(title={"text": data.metric}, col=1)
    _base_layout(fig, f"{data.name}: {data.metric} against each hyperparameter", "slice", axes=axes)
    fig.update_layout(height=max(360, 320 * rows))
    if not scored:
        _empty(fig, "no finished trials yet")
    return fig


def _dimension(param: ParamInfo, trials: Sequence[TrialRecord]) -> dict[str, Any]:
    """One parcoords axis: values in the scale's coordinates, range = the whole space, ticks in the user's
    variable."""
    values = [t.params.get(param.name) for t in trials]
    if param.scale == "choice":
        labels = [choice_label(c) for c in param.choices]
        coords = to_axis(values, "choice", param.choices)
        return {
            "label": param.name,
            "values": coords,
            "range": [0, max(len(labels) - 1, 1)],
            "tickvals": list(range(len(labels))),
            "ticktext": labels,
        }
    scale = "log" if param.scale in LOG_SCALES else param.scale
    coords = to_axis(values, scale)
    lo, hi = to_axis(list(param.bounds), scale)
    dim: dict[str, Any] = {"label": axis_title(param.name, param.scale), "values": coords, "range": [lo, hi]}
    ticks = axis_ticks(param.scale, *param.bounds)
    if ticks:
        dim.update(tickvals=ticks[0], ticktext=ticks[1])
    return dim


def parallel_figure(study: Any) -> go.Figure:
    """Parallel coordinates: one axis per hyperparameter on its own scale (log10 for log params,
    -log10(1 - beta) labelled in beta for one-minus-log), then the metric; lines coloured by the metric."""
    data = load_study(study)
    scored = data.scored()
    fig = _base_layout(
        go.Figure(),
        f"{data.name}: parallel coordinates",
        "parallel",
        axes={p.name: i for i, p in enumerate(data.params)},
    )
    if not scored:
        return _empty(fig, "no finished trials yet")
    values = [data.value(t) for t in scored]
    dims = [_dimension(p, scored) for p in data.params]
    dims.append({"label": data.metric, "values": values})
    fig.add_trace(
        go.Parcoords(
            dimensions=dims,
            name="trials",
            line={
                "color": values,
                "colorscale": "Viridis",
                "reversescale": not data.maximize,
                "showscale": True,
                "colorbar": {"title": {"text": data.metric}},
            },
        )
    )
    fig.update_layout(margin={"l": 80, "r": 80, "t": 90, "b": 40})
    return fig


def _box_params(data: StudyData, x: str | None, y: str | None) -> tuple[ParamInfo, ParamInfo] | None:
    """The two numeric params to draw boxes over: asked for by name, else the first two of the space."""
    numeric = data.numeric_params
    if x is not None or y is not None:
        px = data.param(x) if x is not None else next((p for p in numeric if p.name != y), None)
        py = data.param(y) if y is not None else next((p for p in numeric if p.name != (x or "")), None)
        for p in (px, py):
            if p is not None and not p.numeric:
                raise KeyError(f"'{p.name}' is a choice; boxes are drawn over numeric hyperparameters")
        return (px, py) if px is not None and py is not None and px.name != py.name else None
    return (numeric[0], numeric[1]) if len(numeric) >= 2 else None


def _rectangle(px: ParamInfo, py: ParamInfo, box: dict[str, Any]) -> tuple[list[Any], list[Any]] | None:
    try:
        x0, x1 = box["low"][px.name], box["high"][px.name]
        y0, y1 = box["low"][py.name], box["high"][py.name]
    except (KeyError, TypeError):
        return None
    xs = plot_coords(px, [x0, x1, x1, x0, x0])
    ys = plot_coords(py, [y0, y0, y1, y1, y0])
    return xs, ys


def boxes_figure(study: Any, x: str | None = None, y: str | None = None) -> go.Figure:
    """The coarse-to-fine boxes of each round drawn as rectangles over the trials of two numeric
    hyperparameters (the first two of the space unless ``x``/``y`` name others), both on their scales."""
    data = load_study(study)
    pair = _box_params(data, x, y)
    fig = go.Figure()
    if pair is None:
        _base_layout(fig, f"{data.name}: search boxes", "boxes", x=None, y=None)
        return _empty(fig, "boxes need two numeric hyperparameters")
    px, py = pair
    _base_layout(fig, f"{data.name}: search boxes, {px.name} x {py.name}", "boxes", x=px.name, y=py.name)
    for rnd, box in sorted(data.boxes.items()):
        rect = _rectangle(px, py, box)
        if rect is not None:
            fig.add_trace(
                go.Scatter(
                    x=rect[0],
                    y=rect[1],
                    mode="lines",
                    fill="toself",
                    name=f"round {rnd} box",
                    hoverinfo="name",
                    line={"color": round_color(rnd), "width": 2, "dash": "dot" if rnd == 0 else "solid"},
                    fillcolor=round_color(rnd),
                    opacity=0.18 if rnd else 0.08,
                )
            )
    scored = data.scored()
    for rnd in sorted({t.round for t in scored}):
        trials = [t for t in scored if t.round == rnd]
        custom, _ = _hover(data, trials)
        fig.add_trace(
            go.Scatter(
                x=plot_coords(px, [t.params.get(px.name) for t in trials]),
                y=plot_coords(py, [t.params.get(py.name) for t in trials]),
                mode="markers",
                name=f"round {rnd} trials",
                marker={"color": round_color(rnd), "size": 8, "line": {"width": 0.5, "color": "white"}},
                customdata=[[*c, data.value(t)] for c, t in zip(custom, trials, strict=True)],
                hovertemplate=f"trial #%{{customdata[0]}} (round %{{customdata[1]}})<br>{data.metric}: "
                f"%{{customdata[{len(data.params) + 2}]:.4g}}<extra></extra>",
            )
        )
    best = data.top(1)
    if best:
        t = best[0]
        fig.add_trace(
            go.Scatter(
                x=plot_coords(px, [t.params.get(px.name)]),
                y=plot_coords(py, [t.params.get(py.name)]),
                mode="markers",
                name=f"best (#{t.number})",
                marker={"symbol": "star", "size": 16, "color": "gold", "line": {"width": 1, "color": "black"}},
            )
        )
    fig.update_xaxes(**axis_layout(px))
    fig.update_yaxes(**axis_layout(py))
    if not data.boxes:
        fig.add_annotation(
            text="no coarse-to-fine boxes stored (search strategy has one round)",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=1.05,
        )
    return fig


CURVE_STYLES = (
    ("train_loss", 1, "dash"),
    ("val_loss", 1, "solid"),
    ("train_accuracy", 2, "dash"),
    ("val_accuracy", 2, "solid"),
)


def curves_figure(study: Any, trials: Sequence[int] | None = None, k: int = DEFAULT_TOP_K) -> go.Figure:
    """Learning curves (loss and accuracy per epoch, train dashed, validation solid) of the trials with
    these numbers, or of the top ``k`` trials. One legend entry per trial toggles its four curves; each
    trace's ``meta`` says which curve it is (``#3 val_loss``)."""
    data = load_study(study)
    chosen = data.by_number(list(trials)) if trials is not None else data.top(k)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.08)
    label = "selected trials" if trials is not None else f"top {len(chosen)} trials"
    _base_layout(
        fig,
        f"{data.name}: learning curves, {label}<br><sup>validation solid, train dashed</sup>",
        "curves",
        trials=[t.number for t in chosen],
    )
    curves = data.curves(chosen)
    for i, t in enumerate(chosen):
        color = PALETTE[i % len(PALETTE)]
        rows = curves[t.number]
        epochs = [r["epoch"] + 1 for r in rows]
        for name, col, dash in CURVE_STYLES:
            ys = [r.get(name) for r in rows]
            if all(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in ys):
                continue
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=ys,
                    mode="lines+markers",
                    name=f"#{t.number}",
                    legendgroup=f"t{t.number}",
                    showlegend=name == "val_loss",
                    meta=f"#{t.number} {name}",
                    line={"color": color, "dash": dash},
                    marker={"size": 4},
                    hovertemplate="%{meta}<br>epoch %{x}: %{y:.4g}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    most = max((len(rows) for rows in curves.values()), default=0)
    fig.update_xaxes(title={"text": "epoch"}, **({"dtick": 1} if most <= 12 else {}))
    fig.update_layout(margin={"t": 90})
    if not chosen:
        _empty(fig, "no trials to draw")
    return fig


BUILDERS: dict[str, Callable[..., go.Figure]] = {
    "history": history_figure,
    "parallel": parallel_figure,
    "slice": slice_figure,
    "boxes": boxes_figure,
    "curves": curves_figure,
}


def figure(study: Any, kind: str, **options: Any) -> go.Figure:
    """One figure by kind (history, parallel, slice, boxes, curves); options go to its builder."""
    if kind not in BUILDERS:
        raise KeyError(f"unknown figure '{kind}': one of {', '.join(KINDS)}")
    return BUILDERS[kind](study, **options)


def figures(study: Any, storage: Any = None) -> dict[str, go.Figure]:
    """Every figure of a study (a Study, a StudyData, or a name/id with its ``storage``), by kind."""
    data = load_study(study, storage)
    return {kind: BUILDERS[kind](data) for kind in KINDS}


__all__ = [
    "KINDS",
    "axis_layout",
    "boxes_figure",
    "curves_figure",
    "figure",
    "figures",
    "history_figure",
    "one_minus_log",
    "parallel_figure",
    "plot_coords",
    "slice_figure",
]
