"""Axis coordinates for each hyperparameter scale, shared by the plotly and matplotlib figures.

A value is plotted in the user's variable (beta, not 1 - beta) but placed on its own scale:

- ``linear`` and ``int``: the value itself;
- ``log`` and ``int_log``: log10(value) (plotly draws these on a native ``type="log"`` axis instead);
- ``one_minus_log``: -log10(1 - beta), so 0.9 -> 1, 0.99 -> 2, 0.999 -> 3; the axis grows with beta
  and every decade of 1 - beta gets the same room. Ticks are labelled with beta values;
- ``choice``: the index of the choice, labelled with the choice.

Everything here is plain numpy and math: no plotting library is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Scales whose numbers are plotted on a log10 axis.
LOG_SCALES = ("log", "int_log")
NUMERIC_SCALES = ("linear", "log", "one_minus_log", "int", "int_log")
_MANTISSAS = (1.0, 2.0, 5.0)


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


def fmt_number(value: float) -> str:
    """Compact tick text: 0.001, 1e-05, 0.999, 128."""
    if value == 0:
        return "0"
    return format(float(f"{value:.6g}"), "g")


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
    """Custom ticks for scales plotted in transformed coordinates; None where plain ticks do."""
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
