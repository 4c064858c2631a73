"""Hyperparameter importance: which parameters decide the study's metric.

A random forest (scikit-learn, fixed seed, so the same trials always give the same ranking) is fitted on
the COMPLETE trials, each parameter in its unit coordinate on its own scale (log10 for log, -log10(1 - beta)
for one-minus-log, the choice's index for choices, each mapped onto [0, 1] over the search range), to
predict the metric. A parameter's importance is its mean decrease in impurity over the forest, normalised
so the importances sum to 1: the share of the metric's explained variance that splits on it earn.
Pruned and diverged trials are left out (their metric is a partial or broken run, not the parameters'
verdict).

With Optuna installed (the ``tpe`` extra), ``method="fanova"`` or ``"ped_anova"`` asks Optuna's
evaluators instead (fANOVA with seed 0; PED-ANOVA, which needs no model), over the same unit coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from caviar.storage import TrialState
from caviar.web.data import ParamInfo, StudyData, load_study
from caviar.web.scales import LOG_SCALES, to_axis

#: Fewer complete trials than this and the ranking is noise: the view says so instead.
MIN_TRIALS = 5
N_TREES = 64
SEED = 0
METHOD = "random-forest mean decrease in impurity (scikit-learn)"
#: Importance methods by name: the forest always; Optuna's evaluators when optuna is installed.
METHODS = {
    "forest": METHOD,
    "fanova": "fANOVA (optuna)",
    "ped_anova": "PED-ANOVA (optuna)",
}
OPTUNA_METHODS = ("fanova", "ped_anova")


def available_methods() -> list[str]:
    """The importance methods this installation offers."""
    import importlib.util

    has_optuna = importlib.util.find_spec("optuna") is not None
    return [m for m in METHODS if m not in OPTUNA_METHODS or has_optuna]


def check_method(method: str) -> str:
    """``method`` if this installation offers it; ValueError names the ones it does."""
    known = available_methods()
    if method not in known:
        extra = " (fanova and ped_anova need optuna: pip install 'caviar[tpe]')" if method in OPTUNA_METHODS else ""
        raise ValueError(f"no importance method '{method}' here{extra}; one of {', '.join(known)}")
    return method


@dataclass(frozen=True)
class Importance:
    """Importances by parameter, largest first (empty with a ``message`` when none can be computed)."""

    scores: dict[str, float]
    n_trials: int
    method: str = METHOD
    message: str | None = None

    @property
    def ranking(self) -> list[str]:
        """Parameter names, most important first."""
        return list(self.scores)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_trials": self.n_trials,
            "min_trials": MIN_TRIALS,
            "message": self.message,
            "methods": available_methods(),
            "importances": [{"name": k, "importance": v} for k, v in self.scores.items()],
        }


def unit_coordinates(param: ParamInfo, values: Sequence[Any]) -> np.ndarray:
    """Values placed on [0, 1] over the parameter's range, on its own scale (NaN where missing)."""
    if param.scale == "choice":
        n = max(len(param.choices) - 1, 1)
        coords = to_axis(values, "choice", param.choices)
        return np.array([np.nan if c is None else c / n for c in coords], dtype=float)
    scale = "log" if param.scale in LOG_SCALES else param.scale
    lo, hi = to_axis(list(param.bounds), scale)
    if lo is None or hi is None:
        return np.full(len(values), np.nan)
    span = (hi - lo) or 1.0
    return np.array([np.nan if c is None else (c - lo) / span for c in to_axis(values, scale)], dtype=float)


def design_matrix(data: StudyData) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(X, y, trial numbers): the COMPLETE trials with a finite metric, one column per parameter."""
    done = [t for t in data.trials if t.state == TrialState.COMPLETE and data.value(t) is not None]
    columns = [unit_coordinates(p, [t.params.get(p.name) for t in done]) for p in data.params]
    x = np.column_stack(columns) if columns else np.zeros((len(done), 0))
    y = np.array([data.value(t) for t in done], dtype=float)
    keep = np.asarray(~np.isnan(x).any(axis=1) if x.size else np.ones(len(done), dtype=bool), dtype=bool)
    return x[keep], y[keep], [t.number for t, k in zip(done, keep.tolist(), strict=True) if k]


_CACHE: dict[tuple[Any, ...], Importance] = {}
_CACHE_SIZE = 32


def param_importance(study: Any, seed: int = SEED, method: str = "forest") -> Importance:
    """The importance of each hyperparameter of a study (see the module docstring). The same trials give
    the same answer, so it is kept for the next page load until a trial changes. An unknown or
    unavailable ``method`` is a ValueError."""
    check_method(method)
    data = load_study(study)
    x, y, numbers = design_matrix(data)
    key = (data.storage.url, data.record.id, seed, method, tuple(numbers), x.tobytes(), y.tobytes())
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _importance(data, x, y, numbers, seed, method)
    return _CACHE[key]


def _importance(
    data: StudyData, x: np.ndarray, y: np.ndarray, numbers: list[int], seed: int, method: str
) -> Importance:
    n = len(numbers)
    if not data.params:
        return Importance({}, n, METHODS[method], message="the space is empty: no hyperparameter to rank")
    if n < MIN_TRIALS:
        return Importance(
            {},
            n,
            METHODS[method],
            message=f"importance needs at least {MIN_TRIALS} complete trials with a {data.metric}; {n} so far",
        )
    if float(np.ptp(y)) == 0.0:
        return Importance(
            {}, n, METHODS[method], message=f"every complete trial has the same {data.metric}: nothing to explain"
        )
    if method in OPTUNA_METHODS:
        scores = _optuna_importance(data, x, y, seed, method)
        order = sorted(range(len(data.params)), key=lambda i: (-scores[data.params[i].name], i))
        return Importance({data.params[i].name: scores[data.params[i].name] for i in order}, n, METHODS[method])
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(n_estimators=N_TREES, random_state=seed, n_jobs=1, min_samples_leaf=1)
    forest.fit(x, y)
    raw = np.asarray(forest.feature_importances_, dtype=float)
    total = float(raw.sum())
    shares = raw / total if total > 0 else np.zeros_like(raw)
    order = sorted(range(len(data.params)), key=lambda i: (-shares[i], i))
    return Importance({data.params[i].name: float(shares[i]) for i in order}, n)


def _optuna_importance(data: StudyData, x: np.ndarray, y: np.ndarray, seed: int, method: str) -> dict[str, float]:
    """Optuna's fANOVA or PED-ANOVA over the trials, each numeric parameter as its unit coordinate on [0, 1]
    and each choice as a categorical; normalised to sum to 1 (all zero when nothing varies)."""
    import warnings

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, Any] = {}
    for p in data.params:
        n = len(p.choices)
        dists[p.name] = CategoricalDistribution(list(range(n))) if p.scale == "choice" else FloatDistribution(0, 1)
    study = optuna.create_study(direction="maximize" if data.maximize else "minimize")
    trials = []
    for row, value in zip(x, y, strict=True):
        params: dict[str, Any] = {}
        for p, v in zip(data.params, row, strict=True):
            params[p.name] = int(round(v * max(len(p.choices) - 1, 1))) if p.scale == "choice" else float(v)
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(value)))
    study.add_trials(trials)
    evaluator = FanovaImportanceEvaluator(seed=seed) if method == "fanova" else PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA is marked experimental
        raw = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=False)
    total = sum(raw.values())
    return {p.name: float(raw.get(p.name, 0.0) / total) if total > 0 else 0.0 for p in data.params}
