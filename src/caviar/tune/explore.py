"""Explore: move a hyperparameter value to a neighbour on its own scale (PBT's explore, panda's fork).

One law per scale, used by both population-based training (:mod:`caviar.tune.pbt`: :func:`explore`, a
factor drawn from a finite set) and panda's fork (:func:`caviar.panda.fork.centered_space`: each member
moved from the centre by one factor ``g`` with ``log g`` uniform on ``[-log f, log f]``, the range
:func:`reach` gives, drawn by the fork study's sampler on the same scale):

- ``log``: the value multiplied by the factor (0.8 or 1.2 divide or multiply);
- ``one_minus_log``: the factor applied to 1 - value (an averaging beta moves towards or away from 1);
- ``linear``: a step of ``(factor - 1)`` times the range (1.2: a fifth of the range up);
- ``int`` / ``int_log``: the neighbouring integer (up for a factor above 1, down below);
- ``choice``: the neighbouring choice in the list's order.

The result is clipped to the space's bounds. With probability ``resample_probability`` the value is
drawn afresh from the space instead (uniform on the scale), as Ray Tune's PBT does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from caviar.tune.space import ChoiceParam, FloatParam, IntParam, Param, Space

#: Ray Tune's defaults.
DEFAULT_FACTORS = (1.2, 0.8)
DEFAULT_RESAMPLE_PROBABILITY = 0.25


def scaled(value: float, scale: str, factor: float) -> float:
    """``value`` moved by ``factor`` on a multiplicative scale: log multiplies the value, one_minus_log
    multiplies 1 - value (unclipped)."""
    if scale == "log":
        return float(value) * factor
    if scale == "one_minus_log":
        return 1.0 - (1.0 - float(value)) * factor
    raise ValueError(f"scale {scale!r} has no multiplicative law (log or one_minus_log)")


def factor_between(value: float, moved: float, scale: str) -> float:
    """The factor that takes ``value`` to ``moved`` on a multiplicative scale (the inverse of :func:`scaled`)."""
    if scale == "log":
        return float(moved) / float(value)
    if scale == "one_minus_log":
        return (1.0 - float(moved)) / (1.0 - float(value))
    raise ValueError(f"scale {scale!r} has no multiplicative law (log or one_minus_log)")


def reach(value: float, scale: str, factor: float) -> tuple[float, float]:
    """The (low, high) that ``value`` reaches on ``scale`` with a factor anywhere between 1 / ``factor``
    and ``factor`` (> 1): [v / f, v * f] on log; 1 - v within a factor f on one_minus_log, beta >= 0.
    ValueError where the law has no range: a log value not positive, a beta outside [0, 1)."""
    v = float(value)
    if scale == "log" and not v > 0:
        raise ValueError(f"{v:g}; a log range needs a positive centre")
    if scale == "one_minus_log" and not 0 < 1.0 - v <= 1:
        raise ValueError(f"{v:g}; a one-minus-log range needs 0 <= value < 1")
    low, high = sorted((scaled(v, scale, 1 / factor), scaled(v, scale, factor)))
    return (max(0.0, low) if scale == "one_minus_log" else low), high


def perturb(param: Param, value: Any, factor: float) -> Any:
    """``value`` of ``param`` moved by ``factor`` on the param's scale, clipped to its bounds."""
    if isinstance(param, ChoiceParam):
        i = param.index(value) + (1 if factor > 1 else -1)
        return param.choices[min(max(i, 0), param.n - 1)]
    if isinstance(param, IntParam):
        k = int(round(float(value))) + (1 if factor > 1 else -1)
        return int(min(max(k, param.low), param.high))
    if not isinstance(param, FloatParam):
        raise TypeError(f"cannot perturb {param!r}")
    if param.scale == "linear":
        moved = float(value) + (factor - 1.0) * (param.high - param.low)
    else:
        moved = scaled(value, param.scale, factor)
    return float(min(max(moved, param.low), param.high))


def explore(
    space: Space,
    values: Mapping[str, Any],
    names: Sequence[str],
    rng: np.random.Generator,
    factors: Sequence[float] = DEFAULT_FACTORS,
    resample_probability: float = DEFAULT_RESAMPLE_PROBABILITY,
) -> dict[str, Any]:
    """A copy of ``values`` with each of ``names`` resampled (with ``resample_probability``) or
    perturbed by one of ``factors`` drawn uniformly. The draws per name are, in order: the resample
    coin, then the new unit point or the factor's index."""
    out = dict(values)
    for name in names:
        param = space[name]
        if rng.random() < resample_probability:
            out[name] = param.from_unit(float(rng.random()))
        else:
            out[name] = perturb(param, values[name], float(factors[int(rng.integers(len(factors)))]))
    return out


def check_factors(factors: Sequence[float]) -> list[float]:
    """The factors as floats, or ValueError unless each is finite, positive and not 1."""
    out = [float(f) for f in factors]
    if not out or any(not math.isfinite(f) or f <= 0 or f == 1 for f in out):
        raise ValueError(f"perturbation factors must be finite positive numbers other than 1, got {list(factors)}")
    return out
