"""The dry-run picture: the points a sampler would try first, each parameter on its own scale.

One histogram per hyperparameter, binned evenly *on its scale* (log decades for log parameters,
decades of 1 - beta for one-minus-log betas), so a user sees before training that, say, half the
beta2 draws on [0.99, 0.9999] land above 0.999.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caviar.tune.space import Space
from caviar.web.data import ParamInfo
from caviar.web.report import _choice_ticks, _pyplot, set_scale
from caviar.web.scales import LOG_SCALES, from_one_minus_log, one_minus_log

BINS = 12


def _bin_edges(info: ParamInfo) -> np.ndarray:
    """Edges evenly spaced on the parameter's scale, in the user's variable."""
    lo, hi = info.bounds
    if info.scale in LOG_SCALES:
        return np.logspace(math.log10(lo), math.log10(hi), BINS + 1)
    if info.scale == "one_minus_log":
        return from_one_minus_log(np.linspace(one_minus_log(lo), one_minus_log(hi), BINS + 1))
    return np.linspace(lo, hi + (1 if info.scale == "int" else 0), BINS + 1)


def param_infos(space: Space) -> list[ParamInfo]:
    """The space's parameters as the figures describe them."""
    out = []
    for p in space:
        d = p.as_dict()
        out.append(ParamInfo(p.name, p.scale, d.get("low"), d.get("high"), tuple(d.get("choices", ()))))
    return out


def preview_png(space: Space, rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write histograms of the previewed points (``rows`` from caviar.tune.planning.preview)."""
    plt = _pyplot()
    infos = param_infos(space)
    cols = min(3, max(1, len(infos)))
    nrows = max(1, math.ceil(len(infos) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.6 * nrows), squeeze=False)
    for ax, info in zip(axes.flat, infos, strict=False):
        values = [r[info.name] for r in rows if info.name in r]
        if info.scale == "choice":
            keys = [str(c) for c in info.choices]
            counts = [sum(str(v) == k for v in values) for k in keys]
            ax.bar(range(len(keys)), counts, color="#4c78a8")
            _choice_ticks(ax, info)
        else:
            ax.hist(np.asarray(values, dtype=float), bins=_bin_edges(info), color="#4c78a8", edgecolor="white")
            set_scale(ax, info)
        ax.set_ylabel("points")
    for ax in list(axes.flat)[len(infos) :]:
        ax.set_axis_off()
    fig.suptitle(f"{len(rows)} points the sampler tries first (each axis on its parameter's scale)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
