"""Plotly figures of a study, each hyperparameter on its own scale; used by the dashboard and the report.

Every function takes a :class:`caviar.tune.study.Study` (or a :class:`~caviar.web.data.StudyData`) and
returns a ``plotly.graph_objects.Figure``. Axes follow the parameter's scale: a native log axis for
``log``/``int_log``, and for ``one_minus_log`` betas a linear axis of -log10(1 - beta) whose ticks are
labelled in beta (0.9, 0.99, 0.999), so each decade of 1 - beta gets the same room. ``layout.meta``
says which axis shows which parameter, so tests and scripts need not guess subplot names.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from caviar.storage import TrialRecord, TrialState
from caviar.web.data import DEFAULT_TOP_K, ParamInfo, StudyData, load_study
from caviar.web.importance import Importance, param_importance
from caviar.web.scales import (
    GAP_PX,
    LOG_SCALES,
    axis_range,
    axis_title,
    choice_label,
    fit_ticks,
    fmt_number,
    label_px,
    one_minus_log,
    to_axis,
)

COMPLETE, DIVERGED, PRUNED = TrialState.COMPLETE, TrialState.DIVERGED, TrialState.PRUNED
KINDS = ("history", "parallel", "slice", "boxes", "curves", "importance", "pair", "edf")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
TEMPLATE = "plotly_white"
SLICE_COLUMNS = 4


def round_color(rnd: int) -> str:
    """The colour of a coarse-to-fine round (the same in every figure)."""
    return PALETTE[int(rnd) % len(PALETTE)]


def _base_layout(fig: go.Figure, title: str, kind: str, sub: str | None = None, **meta: Any) -> go.Figure:
    """The template, margins and ``meta`` (what the figure shows, for tests and scripts); the title is laid
    out by :func:`finish` once the traces (and so the legend) are known."""
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title},
        margin=dict(MARGIN),
        meta={"kind": kind, "title": title, "subtitle": sub, **meta},
    )
    return fig


def _finished(builder: Callable[..., go.Figure]) -> Callable[..., go.Figure]:
    """A figure builder whose figure gets its title and legend laid out for its ``width``."""

    @functools.wraps(builder)
    def build(*args: Any, **kwargs: Any) -> go.Figure:
        fig = builder(*args, **kwargs)
        meta = fig.layout.meta or {}
        return finish(fig, kwargs.get("width"), meta.get("title", ""), meta.get("subtitle"))

    return build


TITLE_CHAR_PX = 8.8  # the title's 17 px font
SUB_CHAR_PX = 6.5  # <sup> text
LEGEND_ENTRY_PX = 46.0  # a legend entry's symbol and padding, besides its text


def _wrap(text: str, room_px: float, char_px: float) -> list[str]:
    """Words joined into lines that fit ``room_px`` (a word longer than a line gets its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and (len(lines[-1]) + 1 + len(word)) * char_px <= room_px:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _legend_names(fig: go.Figure) -> list[str]:
    names: list[str] = []
    for trace in fig.data:
        if trace.type in ("parcoords", "contour", "bar") or trace.showlegend is False or not trace.name:
            continue
        if trace.name not in names:
            names.append(trace.name)
    return names


def finish(fig: go.Figure, width: int | None, title: str, sub: str | None = None) -> go.Figure:
    """Title and legend that fit the figure's width: the title wrapped at the top left, the legend in
    rows between it and the plot (so it never narrows the plot or runs off its right edge), and a top
    margin that holds both."""
    room = (width or DEFAULT_WIDTH) - 40
    # Plotly reads titles as HTML-ish markup: names in them are escaped, so '<a href>' stays text.
    lines = [html.escape(line, quote=False) for line in _wrap(title, room, TITLE_CHAR_PX)]
    subs = [html.escape(line, quote=False) for line in _wrap(sub, room, SUB_CHAR_PX)] if sub else []
    text = "<br>".join(lines) + (f"<br><sup>{'<br>'.join(subs)}</sup>" if subs else "")
    names = _legend_names(fig)
    rows, used = (1, 0.0) if names else (0, 0.0)
    for name in names:
        entry = LEGEND_ENTRY_PX + label_px(name)
        if used and used + entry > room:
            rows, used = rows + 1, 0.0
        used += entry
    top = 28 + 24 * len(lines) + 15 * len(subs) + (22 * rows + 10 if rows else 0)
    if any(trace.type == "parcoords" for trace in fig.data):
        top += 40  # parcoords draws each axis' name above the plot
    fig.update_layout(
        title={
            "text": text,
            "x": 0.01,
            "xanchor": "left",
            "y": 1.0,
            "yanchor": "top",
            "yref": "container",
            "pad": {"t": 22},
            "automargin": False,
        },
        margin={"t": top},
        showlegend=bool(names) and fig.layout.showlegend is not False,
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom", "yref": "paper"},
    )
    return fig


def _empty(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(
        text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 14, "color": "#777"}
    )
    return fig


# ------------------------------------------------------------------------------------- axis helpers

#: A figure's width in pixels when the caller does not say (the report; a page passes its plot's width).
DEFAULT_WIDTH = 900
DEFAULT_HEIGHT = 420
MARGIN = {"l": 70, "r": 30, "t": 60, "b": 60}


def plot_px(width: int | None, margin: dict[str, int] = MARGIN) -> float:
    """The room an x axis gets in a figure ``width`` px wide (margins off, a little spare for automargin)."""
    return max(80.0, (width or DEFAULT_WIDTH) - margin["l"] - margin["r"] - 20)


def plot_coords(param: ParamInfo, values: Sequence[Any]) -> list[Any]:
    """What plotly gets as coordinates: raw values on log axes (plotly logs them), -log10(1 - beta)
    for one-minus-log, labels for choices, raw values otherwise."""
    if param.scale == "one_minus_log":
        return to_axis(values, "one_minus_log")
    if param.scale == "choice":
        return [choice_label(v) for v in values]
    return [None if v is None else float(v) for v in values]


def axis_layout(param: ParamInfo, axis_px: float = 600.0, horizontal: bool = True) -> dict[str, Any]:
    """Layout properties of an axis ``axis_px`` long showing ``param`` on its scale over its whole search
    range (padded), with ticks chosen by :func:`caviar.web.scales.fit_ticks` so no two labels collide."""
    out: dict[str, Any] = {"title": {"text": axis_title(param.name, param.scale)}, "automargin": True}
    if param.scale == "choice":
        labels = [choice_label(c) for c in param.choices]
        out.update(type="category", categoryorder="array", categoryarray=labels, tickangle=0)
        slot = axis_px / max(len(labels), 1)
        if horizontal and max(map(label_px, labels), default=0.0) + GAP_PX > slot:
            out["tickangle"] = -90  # stood up: each label needs only a line's height
        return out
    low, high = param.bounds
    ticks = fit_ticks(param.scale, low, high, axis_px, horizontal)
    lo, hi = axis_range(param.scale, low, high)
    if param.scale in LOG_SCALES:
        out.update(type="log", range=[lo, hi], tickmode="array", tickvals=ticks.values, ticktext=ticks.text)
    else:
        out.update(type="linear", range=[lo, hi], tickmode="array", tickvals=ticks.coords, ticktext=ticks.text)
    return out


def count_axis(low: int, high: int, axis_px: float, title: str) -> dict[str, Any]:
    """An axis of whole numbers (trial numbers, epochs): integer ticks only, fitted to its length."""
    ticks = fit_ticks("int", low, max(high, low), axis_px)
    lo, hi = axis_range("int", low, max(high, low))
    return {
        "title": {"text": title},
        "automargin": True,
        "type": "linear",
        "range": [lo, hi],
        "tickmode": "array",
        "tickvals": ticks.values,
        "ticktext": ticks.text,
    }


def value_axis(values: Sequence[float], axis_px: float, title: str, horizontal: bool = False) -> dict[str, Any]:
    """A linear axis over observed values (a metric), with fitted ticks and enough digits for its range."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"title": {"text": title}, "automargin": True}
    low, high = min(finite), max(finite)
    if high == low:
        low, high = low - 0.5 * (abs(low) or 1.0) * 0.01, high + 0.5 * (abs(high) or 1.0) * 0.01
    ticks = fit_ticks("linear", low, high, axis_px, horizontal)
    lo, hi = axis_range("linear", low, high)
    return {
        "title": {"text": title},
        "automargin": True,
        "type": "linear",
        "range": [lo, hi],
        "tickmode": "array",
        "tickvals": ticks.values,
        "ticktext": ticks.text,
    }


def _hover(data: StudyData, trials: Sequence[TrialRecord]) -> tuple[list[list[Any]], str]:
    """customdata rows and a hover template: number, round, state, metric and every param in its own
    variable."""
    names = [p.name for p in data.params]
    rows = [[t.number, t.round, t.state.lower(), *(_hover_value(t.params.get(n)) for n in names)] for t in trials]
    lines = ["trial #%{customdata[0]} (round %{customdata[1]}, %{customdata[2]})", f"{data.metric}: %{{y:.4g}}"]
    lines += [f"{n}: %{{customdata[{i + 3}]}}" for i, n in enumerate(names)]
    return rows, "<br>".join(lines) + "<extra></extra>"


def _hover_value(value: Any) -> str:
    if isinstance(value, float):
        return fmt_number(value)
    return choice_label(value)


def best_so_far(values: Sequence[float], maximize: bool) -> list[float]:
    """The running best of a sequence of metric values (max when maximizing, min otherwise)."""
    out: list[float] = []
    pick = max if maximize else min
    for v in values:
        out.append(v if not out else pick(out[-1], v))
    return out


#: How trials that did not complete are drawn: symbol, colour, legend name. They never count as best.
APART = {
    PRUNED: ("x", "#7f7f7f", "pruned"),
    DIVERGED: ("triangle-down", "#d62728", "diverged"),
}
BEST_COLOR = "#222"


def completed(data: StudyData) -> list[TrialRecord]:
    """COMPLETE trials with a finite metric, by number: the only ones best-so-far and the EDF count."""
    return [t for t in data.trials if t.state == COMPLETE and data.value(t) is not None]


def _height_px(height: int, margin: dict[str, int] = MARGIN) -> float:
    return max(80.0, height - margin["t"] - margin["b"] - 10)


# ------------------------------------------------------------------------------------------ figures


@_finished
def history_figure(study: Any, width: int | None = None) -> go.Figure:
    """Optimization history: each complete trial's metric by trial number (one colour per round), pruned
    and diverged trials marked apart (a diverged trial without a finite metric sits at the worst value
    seen), and the best-so-far line over COMPLETE trials only: a pruned trial's partial metric never
    counts as a result."""
    data = load_study(study)
    fig = _base_layout(go.Figure(), f"{data.name}: optimization history", "history", metric=data.metric)
    done = completed(data)
    apart = {state: [t for t in data.trials if t.state == state] for state in APART}
    if not done and not any(apart.values()):
        return _empty(fig, "no finished trials yet")
    for rnd in sorted({t.round for t in done}):
        trials = [t for t in done if t.round == rnd]
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
    seen = [v for t in data.trials if (v := data.value(t)) is not None]
    worst = (min(seen) if data.maximize else max(seen)) if seen else 0.0
    for state, trials in apart.items():
        if not trials:
            continue
        symbol, color, label = APART[state]
        custom, hover = _hover(data, trials)
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in trials],
                y=[v if (v := data.value(t)) is not None else worst for t in trials],
                mode="markers",
                name=label,
                marker={"symbol": symbol, "color": color, "size": 9, "line": {"width": 1.5, "color": color}},
                customdata=custom,
                hovertemplate=hover,
            )
        )
    if done:
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in done],
                y=best_so_far([data.value(t) or 0.0 for t in done], data.maximize),
                mode="lines",
                name="best so far",
                line={"color": BEST_COLOR, "width": 2, "shape": "hv"},
                hovertemplate="best so far after #%{x}: %{y:.4g}<extra></extra>",
            )
        )
    numbers = [t.number for t in data.trials if t.finished]
    fig.update_layout(
        xaxis=count_axis(min(numbers, default=0), max(numbers, default=0), plot_px(width), "trial"),
        yaxis=value_axis(seen or [worst], _height_px(DEFAULT_HEIGHT), data.metric),
        height=DEFAULT_HEIGHT,
        meta={**fig.layout.meta, "best_so_far": [t.number for t in done]},
    )
    return fig


def _slice_columns(n: int, width: int | None) -> int:
    """As many panels per row as leave each about SLICE_PANEL_PX (at most SLICE_COLUMNS)."""
    return max(1, min(SLICE_COLUMNS, n, int(plot_px(width) // SLICE_PANEL_PX)))


SLICE_PANEL_PX = 230
SLICE_GAP_PX = 60
SLICE_ROW_PX = 300


@_finished
def slice_figure(study: Any, width: int | None = None) -> go.Figure:
    """Each hyperparameter against the metric, one subplot per parameter, x on the parameter's scale;
    pruned and diverged trials keep their own markers."""
    data = load_study(study)
    params = data.params
    if not params:
        return _empty(_base_layout(go.Figure(), f"{data.name}: slice", "slice", axes={}), "the space is empty")
    cols = _slice_columns(len(params), width)
    rows = math.ceil(len(params) / cols)
    room = plot_px(width)
    spacing = min(0.3, SLICE_GAP_PX / room) if cols > 1 else 0.0
    panel_px = (room - (cols - 1) * SLICE_GAP_PX) / cols
    height = max(380, SLICE_ROW_PX * rows + 80)
    vspace = min(0.4, 110 / height) if rows > 1 else 0.0
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, horizontal_spacing=spacing, vertical_spacing=vspace)
    scored = data.scored()
    custom, hover = _hover(data, scored)
    symbols = [APART[t.state][0] if t.state in APART else "circle" for t in scored]
    values = [data.value(t) for t in scored]
    axes: dict[str, str] = {}
    for i, param in enumerate(params):
        row, col = divmod(i, cols)
        fig.add_trace(
            go.Scatter(
                x=plot_coords(param, [t.params.get(param.name) for t in scored]),
                y=values,
                mode="markers",
                name=param.name,
                showlegend=False,
                customdata=custom,
                hovertemplate=hover,
                marker={"color": [round_color(t.round) for t in scored], "size": 7, "opacity": 0.85, "symbol": symbols},
            ),
            row=row + 1,
            col=col + 1,
        )
        fig.update_xaxes(**axis_layout(param, panel_px), row=row + 1, col=col + 1)
        axes[param.name] = "xaxis" if i == 0 else f"xaxis{i + 1}"
    row_px = (height - MARGIN["t"] - MARGIN["b"]) * (1 - vspace * (rows - 1)) / rows
    y_axis = value_axis([v for v in values if v is not None], row_px, data.metric)
    y_axis.pop("title", None)
    fig.update_yaxes(**y_axis)
    fig.update_yaxes(title={"text": data.metric}, col=1)
    _base_layout(fig, f"{data.name}: {data.metric} against each hyperparameter", "slice", axes=axes)
    fig.update_layout(height=height)
    if not scored:
        _empty(fig, "no finished trials yet")
    return fig


PARALLEL_HEIGHT = 460
PARALLEL_MARGIN = {"l": 80, "r": 80, "t": 90, "b": 40}


def _dimension(param: ParamInfo, trials: Sequence[TrialRecord]) -> dict[str, Any]:
    """One parcoords axis: values in the scale's coordinates, range = the whole space, ticks in the user's
    variable, fitted to the axis' height."""
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
    ticks = fit_ticks(param.scale, *param.bounds, _height_px(PARALLEL_HEIGHT, PARALLEL_MARGIN), horizontal=False)
    return {
        "label": axis_title(param.name, param.scale),
        "values": coords,
        "range": [lo, hi],
        "tickvals": ticks.coords,
        "ticktext": ticks.text,
    }


@_finished
def parallel_figure(study: Any, width: int | None = None) -> go.Figure:
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
    values = [v for t in scored if (v := data.value(t)) is not None]  # scored: all have one
    dims = [_dimension(p, scored) for p in data.params]
    metric_ticks = fit_ticks(
        "linear", min(values), max(values), _height_px(PARALLEL_HEIGHT, PARALLEL_MARGIN), horizontal=False
    )
    dims.append(
        {"label": data.metric, "values": values, "tickvals": metric_ticks.values, "ticktext": metric_ticks.text}
    )
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
    fig.update_layout(margin=PARALLEL_MARGIN, height=PARALLEL_HEIGHT)
    return fig


def _box_params(data: StudyData, x: str | None, y: str | None) -> tuple[ParamInfo, ParamInfo] | None:
    """The two numeric params to draw boxes over: asked for by name, else the two most important (the
    first two of the space while there are too few trials to rank them)."""
    numeric = data.numeric_params
    if x is not None or y is not None:
        px = data.param(x) if x is not None else next((p for p in numeric if p.name != y), None)
        py = data.param(y) if y is not None else next((p for p in numeric if p.name != (x or "")), None)
        for p in (px, py):
            if p is not None and not p.numeric:
                raise KeyError(f"'{p.name}' is a choice; boxes are drawn over numeric hyperparameters")
        return (px, py) if px is not None and py is not None and px.name != py.name else None
    if len(numeric) < 2:
        return None
    ranked = [data.param(n) for n in param_importance(data).ranking if data.param(n).numeric]
    first, second = (ranked + [p for p in numeric if p not in ranked])[:2]
    return first, second


def _rectangle(px: ParamInfo, py: ParamInfo, box: dict[str, Any]) -> tuple[list[Any], list[Any]] | None:
    try:
        x0, x1 = box["low"][px.name], box["high"][px.name]
        y0, y1 = box["low"][py.name], box["high"][py.name]
    except (KeyError, TypeError):
        return None
    xs = plot_coords(px, [x0, x1, x1, x0, x0])
    ys = plot_coords(py, [y0, y0, y1, y1, y0])
    return xs, ys


@_finished
def boxes_figure(study: Any, x: str | None = None, y: str | None = None, width: int | None = None) -> go.Figure:
    """The coarse-to-fine boxes of each round drawn as rectangles over the trials of two numeric
    hyperparameters (the two most important unless ``x``/``y`` name others), both on their scales."""
    data = load_study(study)
    pair = _box_params(data, x, y)
    fig = go.Figure()
    if pair is None:
        _base_layout(fig, f"{data.name}: search boxes", "boxes", x=None, y=None)
        return _empty(fig, "boxes need two numeric hyperparameters")
    px, py = pair
    sub = None if data.boxes else "no coarse-to-fine boxes stored: the search has one round"
    _base_layout(fig, f"{data.name}: search boxes, {px.name} x {py.name}", "boxes", sub=sub, x=px.name, y=py.name)
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
                f"%{{customdata[{len(data.params) + 3}]:.4g}}<extra></extra>",
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
    fig.update_xaxes(**axis_layout(px, plot_px(width)))
    fig.update_yaxes(**axis_layout(py, _height_px(DEFAULT_HEIGHT), horizontal=False))
    fig.update_layout(height=DEFAULT_HEIGHT)
    return fig


CURVE_STYLES = (
    ("train_loss", 1, "dash"),
    ("val_loss", 1, "solid"),
    ("train_accuracy", 2, "dash"),
    ("val_accuracy", 2, "solid"),
)


def curve_styles(score: str) -> tuple[tuple[str, int, str], ...]:
    """The curves drawn per trial: the losses, and accuracy or a regression's metric (``score``, as
    ``StudyData.score_metric`` names it: validation only, there is no train one) in the second panel."""
    return CURVE_STYLES if score == "accuracy" else (*CURVE_STYLES[:2], (score, 2, "solid"))


@_finished
def curves_figure(
    study: Any, trials: Sequence[int] | None = None, k: int = DEFAULT_TOP_K, width: int | None = None
) -> go.Figure:
    """Learning curves (loss and accuracy per epoch, train dashed, validation solid) of the trials with
    these numbers, or of the top ``k`` trials; a regression's second panel is its metric (val_r2,
    val_rmse...). One legend entry per trial toggles its curves; each trace's ``meta`` says which
    curve it is (``#3 val_loss``)."""
    data = load_study(study)
    score = data.score_metric
    chosen = data.by_number(list(trials)) if trials is not None else data.top(k)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16)
    label = "selected trials" if trials is not None else f"top {len(chosen)} trials"
    if trials is not None and len(chosen) == 1:
        label = f"trial #{chosen[0].number}"
    _base_layout(
        fig,
        f"{data.name}: learning curves, {label}",
        "curves",
        sub="validation solid, train dashed",
        trials=[t.number for t in chosen],
    )
    curves = data.curves(chosen)
    for i, t in enumerate(chosen):
        color = PALETTE[i % len(PALETTE)]
        rows = curves[t.number]
        epochs = [r["epoch"] + 1 for r in rows]
        for name, col, dash in curve_styles(score):
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
    panel = plot_px(width) * 0.42  # two panels
    fig.update_xaxes(**count_axis(1, max(most, 1), panel, "epoch"))
    fig.update_yaxes(automargin=True)
    fig.update_yaxes(title={"text": "loss"}, col=1)
    fig.update_yaxes(title={"text": score}, col=2)
    fig.update_layout(height=DEFAULT_HEIGHT)
    if not chosen:
        _empty(fig, "no trials to draw")
    return fig


@_finished
def importance_figure(
    study: Any, width: int | None = None, importance: Importance | None = None, method: str = "forest"
) -> go.Figure:
    """A bar per hyperparameter, the most important on top: its share of the metric's variance a random
    forest explains, or Optuna's fANOVA / PED-ANOVA (``method``; see :mod:`caviar.web.importance`). Too few
    complete trials: a message instead."""
    data = load_study(study)
    imp = importance if importance is not None else param_importance(data, method=method)
    fig = _base_layout(
        go.Figure(),
        f"{data.name}: hyperparameter importance for {data.metric}",
        "importance",
        sub=f"{imp.method}, {imp.n_trials} complete trials",
        ranking=imp.ranking,
        message=imp.message,
        method=imp.method,
    )
    if imp.message:
        return _empty(fig, imp.message)
    names = imp.ranking[::-1]  # plotly draws the first bar at the bottom
    shares = [imp.scores[n] for n in names]
    fig.add_trace(
        go.Bar(
            x=shares,
            y=names,
            orientation="h",
            name="importance",
            marker={"color": "#2b6cb0"},
            text=[f"{s:.2f}" for s in shares],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    height = max(260, 60 + 42 * len(names) + MARGIN["t"] + MARGIN["b"])
    axis = value_axis([0.0, max(1.0, max(shares) * 1.1)], plot_px(width) - 120, "importance", horizontal=True)
    axis["range"] = [0, max(shares) * 1.18]
    fig.update_layout(xaxis=axis, yaxis={"automargin": True, "type": "category"}, height=height)
    return fig


def _pair_params(data: StudyData, x: str | None, y: str | None) -> tuple[ParamInfo, ParamInfo] | None:
    """The two params of the pair plot: asked for by name (KeyError names the known ones; ValueError when
    they are the same), else the two most important (the first two of the space without a ranking)."""
    if x is not None and y is not None and x == y:
        raise ValueError(f"the pair plot needs two different hyperparameters, got x = y = '{x}'")
    chosen = [data.param(n) for n in (x, y) if n is not None]
    if len(data.params) < 2:
        return None
    if len(chosen) < 2:
        ranking = param_importance(data).ranking or [p.name for p in data.params]
        for name in ranking:
            if len(chosen) < 2 and name not in {p.name for p in chosen}:
                chosen.append(data.param(name))
        if x is None and y is not None:
            chosen.reverse()  # the one asked for stays on y
    return chosen[0], chosen[1]


def default_pair(study: Any) -> tuple[str, str] | None:
    """The pair plot's default axes: the two most important hyperparameters."""
    pair = _pair_params(load_study(study), None, None)
    return None if pair is None else (pair[0].name, pair[1].name)


GRID = 48


def _surface(
    px: ParamInfo, py: ParamInfo, trials: Sequence[TrialRecord], values: Sequence[float]
) -> tuple[list[Any], list[Any], list[list[float | None]]] | None:
    """The metric interpolated (linearly, inside the points' hull) over a grid on both scales, or None."""
    if not (px.numeric and py.numeric) or len(trials) < 4:
        return None
    import numpy as np
    from scipy.interpolate import griddata

    sx = "log" if px.scale in LOG_SCALES else px.scale
    sy = "log" if py.scale in LOG_SCALES else py.scale
    cx = np.array(to_axis([t.params.get(px.name) for t in trials], sx), dtype=float)
    cy = np.array(to_axis([t.params.get(py.name) for t in trials], sy), dtype=float)
    (x0, x1), (y0, y1) = axis_range(px.scale, *px.bounds, pad=0.0), axis_range(py.scale, *py.bounds, pad=0.0)
    if np.isnan(cx).any() or np.isnan(cy).any() or np.ptp(cx) == 0 or np.ptp(cy) == 0:
        return None
    gx, gy = np.linspace(x0, x1, GRID), np.linspace(y0, y1, GRID)
    mx, my = np.meshgrid((gx - x0) / (x1 - x0), (gy - y0) / (y1 - y0))
    try:
        z = griddata(
            np.column_stack([(cx - x0) / (x1 - x0), (cy - y0) / (y1 - y0)]), np.asarray(values), (mx, my), "linear"
        )
    except Exception:  # noqa: BLE001 - qhull refuses collinear points: no surface, the points still draw
        return None
    if np.isnan(z).all():
        return None
    zs = [[None if math.isnan(v) else float(v) for v in row] for row in z]

    def back(scale: str, grid: Any) -> list[float]:
        return [float(10**g) if scale == "log" else float(g) for g in grid]

    return back(sx, gx), back(sy, gy), zs


@_finished
def pair_figure(study: Any, x: str | None = None, y: str | None = None, width: int | None = None) -> go.Figure:
    """Two hyperparameters against each other, each on its own scale, the complete trials as points
    coloured by the metric over its interpolated contour; ``x``/``y`` default to the two most important.
    An unknown name is a KeyError, the same name twice a ValueError."""
    data = load_study(study)
    pair = _pair_params(data, x, y)
    if pair is None:
        fig = _base_layout(go.Figure(), f"{data.name}: pair plot", "pair", x=None, y=None, points=0)
        return _empty(fig, "the pair plot needs two hyperparameters")
    px, py = pair
    done = [t for t in completed(data) if t.params.get(px.name) is not None and t.params.get(py.name) is not None]
    values = [data.value(t) or 0.0 for t in done]
    fig = _base_layout(
        go.Figure(), f"{data.name}: {data.metric} over {px.name} x {py.name}", "pair", x=px.name, y=py.name
    )
    scale = {"colorscale": "Viridis", "reversescale": not data.maximize}
    surface = _surface(px, py, done, values)
    if surface is not None:
        fig.add_trace(
            go.Contour(
                x=surface[0],
                y=surface[1],
                z=surface[2],
                name=f"{data.metric} (interpolated)",
                showscale=False,
                opacity=0.55,
                contours={"coloring": "fill", "showlines": False},
                connectgaps=False,
                hoverinfo="skip",
                zmin=min(values),
                zmax=max(values),
                **scale,
            )
        )
    custom, hover = _hover(data, done)
    fig.add_trace(
        go.Scatter(
            x=plot_coords(px, [t.params.get(px.name) for t in done]),
            y=plot_coords(py, [t.params.get(py.name) for t in done]),
            mode="markers",
            name="complete trials",
            customdata=[[*c, v] for c, v in zip(custom, values, strict=True)],
            hovertemplate=hover.replace("%{y:.4g}", f"%{{customdata[{len(data.params) + 3}]:.4g}}"),
            marker={
                "color": values,
                "size": 9,
                "line": {"width": 0.8, "color": "white"},
                "colorbar": {"title": {"text": data.metric}, "thickness": 14},
                "showscale": bool(done),
                **scale,
            },
        )
    )
    fig.update_layout(
        xaxis=axis_layout(px, plot_px(width) - 110),  # the colour bar takes the right
        yaxis=axis_layout(py, _height_px(PAIR_HEIGHT), horizontal=False),
        height=PAIR_HEIGHT,
        showlegend=False,
        meta={**fig.layout.meta, "points": len(done)},
    )
    if not done:
        _empty(fig, "no complete trials yet")
    return fig


PAIR_HEIGHT = 480


def _studies(studies: Any) -> list[StudyData]:
    many = studies if isinstance(studies, (list, tuple)) else [studies]
    return [load_study(s) for s in many]


def _metric_title(datas: Sequence[StudyData]) -> str:
    metrics = sorted({d.metric for d in datas})
    return metrics[0] if len(metrics) == 1 else " / ".join(metrics)


def as_text(name: str) -> str:
    """A name as plotly shows it literally: legend entries and titles read HTML-ish markup, so escape it."""
    return html.escape(name, quote=False)


def hover_text(name: str) -> str:
    """A name inside a hovertemplate: escaped, and its '%{' kept from being read as a placeholder."""
    return as_text(name).replace("%{", "%&#123;")


@_finished
def edf_figure(studies: Any, width: int | None = None) -> go.Figure:
    """The empirical distribution function of the metric over COMPLETE trials: for each value, the
    fraction of trials that reached at most it; one line per study (give a list to compare)."""
    datas = _studies(studies)
    names = [d.name for d in datas]
    title = f"{names[0]}: " if len(datas) == 1 else ""
    fig = _base_layout(go.Figure(), f"{title}empirical distribution of {_metric_title(datas)}", "edf", studies=names)
    seen: list[float] = []
    for i, data in enumerate(datas):
        values = sorted(data.value(t) or 0.0 for t in completed(data))
        seen += values
        n = len(values)
        fig.add_trace(
            go.Scatter(
                x=values,
                y=[(k + 1) / n for k in range(n)],
                mode="lines",
                name=as_text(data.name),
                line={"shape": "hv", "width": 2, "color": PALETTE[i % len(PALETTE)]},
                hovertemplate=f"{hover_text(data.name)}<br>%{{y:.0%}} of trials at most %{{x:.4g}}<extra></extra>",
            )
        )
    fig.update_layout(
        xaxis=value_axis(seen, plot_px(width), _metric_title(datas), horizontal=True),
        yaxis={**value_axis([0.0, 1.0], _height_px(DEFAULT_HEIGHT), "fraction of complete trials"), "range": [0, 1.04]},
        height=DEFAULT_HEIGHT,
        showlegend=True,
    )
    if not seen:
        _empty(fig, "no complete trials yet")
    return fig


@_finished
def best_so_far_figure(studies: Any, width: int | None = None) -> go.Figure:
    """Best-so-far of the metric by trial number over COMPLETE trials, one line per study."""
    datas = _studies(studies)
    fig = _base_layout(
        go.Figure(), f"best {_metric_title(datas)} so far", "best_so_far", studies=[d.name for d in datas]
    )
    seen: list[float] = []
    last = 0
    for i, data in enumerate(datas):
        done = completed(data)
        best = best_so_far([data.value(t) or 0.0 for t in done], data.maximize)
        seen += best
        last = max([last, *(t.number for t in done)])
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in done],
                y=best,
                mode="lines+markers",
                name=as_text(data.name),
                marker={"size": 5},
                line={"shape": "hv", "width": 2, "color": PALETTE[i % len(PALETTE)]},
                hovertemplate=f"{hover_text(data.name)}<br>best after #%{{x}}: %{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_layout(
        xaxis=count_axis(0, last, plot_px(width), "trial"),
        yaxis=value_axis(seen, _height_px(DEFAULT_HEIGHT), _metric_title(datas)),
        height=DEFAULT_HEIGHT,
    )
    if not seen:
        _empty(fig, "no complete trials yet")
    return fig


BUILDERS: dict[str, Callable[..., go.Figure]] = {
    "history": history_figure,
    "parallel": parallel_figure,
    "slice": slice_figure,
    "boxes": boxes_figure,
    "curves": curves_figure,
    "importance": importance_figure,
    "pair": pair_figure,
    "edf": edf_figure,
}


def figure(study: Any, kind: str, **options: Any) -> go.Figure:
    """One figure by kind (see KINDS); options go to its builder."""
    if kind not in BUILDERS:
        raise KeyError(f"unknown figure '{kind}': one of {', '.join(KINDS)}")
    return BUILDERS[kind](study, **options)


def figures(study: Any, storage: Any = None, width: int | None = None) -> dict[str, go.Figure]:
    """Every figure of a study (a Study, a StudyData, or a name/id with its ``storage``), by kind."""
    data = load_study(study, storage)
    return {kind: BUILDERS[kind](data, width=width) for kind in KINDS}


__all__ = [
    "KINDS",
    "axis_layout",
    "best_so_far_figure",
    "boxes_figure",
    "count_axis",
    "curves_figure",
    "default_pair",
    "edf_figure",
    "figure",
    "figures",
    "history_figure",
    "importance_figure",
    "one_minus_log",
    "pair_figure",
    "parallel_figure",
    "plot_coords",
    "slice_figure",
]
