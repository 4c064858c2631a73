"""Axis coordinates and readable ticks for each hyperparameter scale, shared by the plotly and matplotlib
figures (dashboard and report alike).

A value is plotted in the user's variable (beta, not 1 - beta) but placed on its own scale:

- ``linear`` and ``int``: the value itself;
- ``log`` and ``int_log``: log10(value) (plotly draws these on a native ``type="log"`` axis instead);
- ``one_minus_log``: -log10(1 - beta), so 0.9 -> 1, 0.99 -> 2, 0.999 -> 3; the axis grows with beta
  and every decade of 1 - beta gets the same room. Ticks are labelled with beta values;
- ``choice``: the index of the choice, labelled with the choice.

Ticks are chosen to fit: :func:`fit_ticks` lays out candidate tick sets from the densest (1, 2, 5 per
decade; fine linear steps) to the sparsest (every other decade...) and keeps the densest whose labels,
measured with a conservative width per character, leave a gap between neighbours on an axis of the
given length in pixels. So a log axis at 1024 px reads 0.0001 0.001 0.01, never "10⁻³²"; a beta2 axis on
[0.99, 0.9999] reads 0.99 0.999 0.9999, never "0.99980.9999"; integer axes get integer ticks only, and a
narrow linear range still gets labels, with as many digits as its step needs.

Everything here is plain numpy and math: no plotting library is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Scales whose numbers are plotted on a log10 axis.
LOG_SCALES = ("log", "int_log")
INT_SCALES = ("int", "int_log")
NUMERIC_SCALES = ("linear", "log", "one_minus_log", "int", "int_log")
_MANTISSAS = (1.0, 2.0, 5.0)

#: Pixel sizes of a 12 px tick font (plotly's default), deliberately generous: a digit is about 6.7 px.
CHAR_PX = 7.4
LINE_PX = 15.0
GAP_PX = 10.0
#: Room a tick label may take beyond the ends of its axis (the axis range is padded by AXIS_PAD).
EDGE_PX = 16.0
AXIS_PAD = 0.05
_MAX_TICKS = 40


def one_minus_log(beta: Any) -> np.ndarray:
    """The one-minus-log coordinate -log10(1 - beta) (beta >= 1 maps to +inf)."""
    b = np.asarray(beta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log10(1.0 - b)


def from_one_minus_log(x: Any) -> np.ndarray:
    """The beta at coordinate x: 1 - 10^-x."""
    return 1.0 - 10.0 ** (-np.asarray(x, dtype=float))


def to_axis(values: Sequence[Any], scale: str, choices: Sequence[Any] = ()) -> list[float | None]:
    """Values as coordinates on their scale's (linear) axis; missing or impossible ones become None."""
    out: list[float | None] = []
    for v in values:
        out.append(_coordinate(v, scale, choices))
    return out


def _coordinate(value: Any, scale: str, choices: Sequence[Any]) -> float | None:
    if scale == "choice":
        keys = [choice_label(c) for c in choices]
        label = choice_label(value)
        return float(keys.index(label)) if label in keys else None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if scale in LOG_SCALES:
        x = math.log10(v) if v > 0 else math.nan
    elif scale == "one_minus_log":
        x = -math.log10(1.0 - v) if v < 1 else math.nan
    else:
        x = v
    return x if math.isfinite(x) else None


def choice_label(value: Any) -> str:
    """A short text for a choice value: lists as 128-64, others as str()."""
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value) or "()"
    return str(value)


def fmt_number(value: float, digits: int = 6) -> str:
    """Compact tick text: 0.001, 1e-5, 0.999, 128 (``digits`` significant digits at most)."""
    if value == 0:
        return "0"
    text = format(float(f"{value:.{digits}g}"), "g")
    mantissa, sep, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if sep else text  # 1e-05 -> 1e-5


# ------------------------------------------------------------------------------------------- ticks


@dataclass(frozen=True)
class Ticks:
    """Ticks of one axis: where they sit on the axis (``coords``: log10 for log scales, -log10(1 - beta)
    for one-minus-log, the value otherwise), the user's values there, and their labels."""

    coords: list[float]
    values: list[float]
    text: list[str]


def axis_range(scale: str, low: float, high: float, pad: float = AXIS_PAD) -> tuple[float, float]:
    """The axis range in coordinates for values in [low, high], padded by ``pad`` of its span each side
    (so end ticks and markers are not cut); a single value gets a unit-wide range around it."""
    lo, hi = to_axis([low, high], "log" if scale in LOG_SCALES else scale)
    if lo is None or hi is None:
        raise ValueError(f"[{low}, {high}] is not a range on the {scale} scale")
    lo, hi = min(lo, hi), max(lo, hi)
    span = hi - lo
    if span <= 0:
        half = 0.5 if scale not in LOG_SCALES else 0.25
        return lo - half, hi + half
    return lo - pad * span, hi + pad * span


def labels_fit(
    coords: Sequence[float],
    text: Sequence[str],
    extent: tuple[float, float],
    axis_px: float,
    horizontal: bool = True,
) -> bool:
    """Whether labels at these coordinates leave GAP_PX between neighbours (and stay within EDGE_PX of
    the axis ends) on an axis ``axis_px`` long spanning ``extent``; widths are estimated per character."""
    lo, hi = extent
    if not coords:
        return True
    if hi <= lo or axis_px <= 0:
        return len(coords) <= 1
    per = axis_px / (hi - lo)
    items = sorted(((c - lo) * per, _size(t, horizontal)) for c, t in zip(coords, text, strict=True))
    for (p1, s1), (p2, s2) in zip(items, items[1:], strict=False):
        if p2 - p1 < (s1 + s2) / 2 + GAP_PX:
            return False
    (first, s_first), (last, s_last) = items[0], items[-1]
    return first - s_first / 2 >= -EDGE_PX and last + s_last / 2 <= axis_px + EDGE_PX


def label_px(text: str) -> float:
    """Estimated width in pixels of a tick label at 12 px."""
    return CHAR_PX * len(text)


def _size(text: str, horizontal: bool) -> float:
    return label_px(text) if horizontal else LINE_PX


def fit_ticks(scale: str, low: float, high: float, axis_px: float, horizontal: bool = True) -> Ticks:
    """Readable ticks for values in [low, high] on ``scale``, for an axis about ``axis_px`` long (its
    range padded as :func:`axis_range` does): the densest candidate set whose labels fit; at worst one
    tick. ``horizontal`` says the labels sit side by side (an x axis) rather than stacked (a y axis)."""
    if scale == "choice":
        raise ValueError("choices are labelled by their category axis, not by fit_ticks")
    low, high = min(low, high), max(low, high)
    extent = axis_range(scale, low, high)
    sets = [s for s in _candidates(scale, low, high) if s.coords]
    fitting = [s for s in sets if labels_fit(s.coords, s.text, extent, axis_px, horizontal)]
    several = [s for s in fitting if len(s.coords) >= 2]
    if several:
        return max(several, key=lambda s: len(s.coords))  # the densest that fits (stable: first wins)
    if fitting:
        return fitting[0]
    middle = (low + high) / 2 if scale not in INT_SCALES else float(round((low + high) / 2))
    return _ticks(scale, [middle], [fmt_number(middle)])


def _candidates(scale: str, low: float, high: float) -> list[Ticks]:
    """Candidate tick sets, densest first."""
    if scale in LOG_SCALES:
        lo, hi = math.log10(low), math.log10(high)
        sets = [_ticks(scale, vals, [fmt_number(v) for v in vals]) for vals in _decade_sets(lo, hi)]
        if hi - lo < 1.5:  # narrow: plain steps between the decades too
            sets += [_ticks(scale, v, t) for v, t in _linear_sets(low, high, scale == "int_log")]
        if scale == "int_log":
            sets = [s for s in sets if all(float(v).is_integer() for v in s.values)]
        return _dedupe(sets)
    if scale == "one_minus_log":
        if not (high < 1):
            return []
        a, b = math.log10(1.0 - high), math.log10(1.0 - low)  # decades of 1 - beta
        sets = []
        for gaps in _decade_sets(a, b):
            betas = sorted({round(1.0 - g, 12) for g in gaps})
            sets.append(_ticks(scale, betas, [fmt_number(beta, 12) for beta in betas]))
        if b - a < 1.5:
            sets += [_ticks(scale, v, t) for v, t in _linear_sets(low, high, False)]
        return _dedupe(sets)
    return [_ticks(scale, v, t) for v, t in _linear_sets(low, high, scale in INT_SCALES)]


def _ticks(scale: str, values: Sequence[float], text: Sequence[str]) -> Ticks:
    coords = to_axis(values, "log" if scale in LOG_SCALES else scale)
    kept = [(c, float(v), t) for c, v, t in zip(coords, values, text, strict=True) if c is not None]
    return Ticks([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept])


def _dedupe(sets: list[Ticks]) -> list[Ticks]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for s in sorted(sets, key=lambda s: -len(s.coords)):
        key = tuple(s.text)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _decade_sets(lo: float, hi: float) -> list[list[float]]:
    """Values m * 10^k inside [10^lo, 10^hi]: m in 1, 2, 5; then every decade; then every 2nd, 3rd... decade."""
    tol = 1e-9
    k_lo, k_hi = math.floor(lo) - 1, math.ceil(hi) + 1

    def inside(m: float, k: int) -> bool:
        return lo - tol <= math.log10(m) + k <= hi + tol

    sets = [[m * 10.0**k for k in range(k_lo, k_hi + 1) for m in _MANTISSAS if inside(m, k)]]
    for stride in (1, 2, 3, 4, 5, 10, 20):
        sets.append([10.0**k for k in range(k_lo, k_hi + 1) if k % stride == 0 and inside(1.0, k)])
    return [s for s in sets if s]


def _linear_sets(low: float, high: float, integer: bool) -> list[tuple[list[float], list[str]]]:
    """Multiples of nice steps (1, 2, 5 x 10^k, integers only when ``integer``) inside [low, high]."""
    span = high - low
    if span <= 0:
        return [([low], [fmt_number(low)])]
    out = []
    top = math.ceil(math.log10(span)) + 1
    for k in range(top - 4, top + 1):
        for m in _MANTISSAS:
            step = m * 10.0**k
            if integer and step < 1:
                continue
            first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
            if last - first + 1 > _MAX_TICKS or last < first:
                continue
            values = [round(i * step, 12) for i in range(first, last + 1)]
            out.append((values, [_step_label(v, step) for v in values]))
    return out


def _step_label(value: float, step: float) -> str:
    """A label with just the digits a step of ``step`` needs: 0.10002 for a step of 2e-5 near 0.1."""
    if value == 0:
        return "0"
    digits = math.floor(math.log10(abs(value))) - math.floor(math.log10(step) + 1e-9) + 1
    return fmt_number(value, max(1, min(12, digits)))


# --------------------------------------------------------------------------- fixed grids (parallel)


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick values (as log10 coordinates) and labels for a log10 axis covering [low, high] (values)."""
    if not (low > 0 and high > 0):
        return [], []
    lo, hi = sorted((math.log10(low), math.log10(high)))
    values = _decade_grid(lo, hi, 10.0)
    return [math.log10(v) for v in values], [fmt_number(v) for v in values]


def one_minus_log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick coordinates (-log10(1 - beta)) and beta labels (0.9, 0.99, 0.999...) for betas in [low, high]."""
    if not (low < 1 and high < 1):
        return [], []
    # the grid is laid on 1 - beta, whose decades are the axis' units
    a, b = sorted((math.log10(1.0 - low), math.log10(1.0 - high)))
    gaps = _decade_grid(a, b, 10.0)
    betas = sorted({round(1.0 - g, 12) for g in gaps})
    return [float(one_minus_log(beta)) for beta in betas], [fmt_number(beta) for beta in betas]


def _decade_grid(lo: float, hi: float, base: float) -> list[float]:
    """Nice numbers m * 10^k (m in 1, 2, 5; only 1 over wide ranges) inside [10^lo, 10^hi]."""
    span = hi - lo
    mantissas = (1.0,) if span > 2.5 else _MANTISSAS
    tol = 1e-9
    found = []
    for k in range(math.floor(lo) - 1, math.ceil(hi) + 1):
        for m in mantissas:
            x = math.log10(m) + k
            if lo - tol <= x <= hi + tol:
                found.append(m * base**k)
    if len(found) < 2:  # a narrow range: its two ends
        found = sorted({float(f"{base**lo:.3g}"), float(f"{base**hi:.3g}")})
    return found


def axis_ticks(scale: str, low: float, high: float) -> tuple[list[float], list[str]] | None:
    """The fixed tick grid (coordinates, labels) of scales plotted in transformed coordinates; None where
    plain ticks do. :func:`fit_ticks` is the one that knows the axis length."""
    if scale in LOG_SCALES:
        return log_ticks(low, high)
    if scale == "one_minus_log":
        return one_minus_log_ticks(low, high)
    return None


def axis_title(name: str, scale: str) -> str:
    """An axis title that names the scale where it is not linear."""
    if scale in LOG_SCALES:
        return f"{name} (log)"
    if scale == "one_minus_log":
        return f"{name} (one-minus-log)"
    return name
