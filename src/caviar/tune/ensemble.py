"""A study's population as an ensemble: its top k trials averaged in probability, or k members with the
best hyperparameters trained again as one population on train + validation (TabM's packed ensemble).

Every trial's model comes from its stored model file, or from :meth:`Study.retrain` (the same weights).
:func:`ensemble_report` scores an ensemble beside the best single trial on the study's own splits.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np

from caviar.backend import default_backend
from caviar.ensemble import EnsembleClassifier
from caviar.errors import CaviarError
from caviar.nn.losses import softmax
from caviar.nn.network import forward
from caviar.prepared import PreparedData
from caviar.storage import TrialRecord, TrialState
from caviar.tune.planning import load_data, plan_from_record

Study = Any  # caviar.tune.study.Study, which imports this module: named here only for the reader


def top_trials(study: Study, k: Any) -> list[TrialRecord]:
    """The ``k`` best completed trials (objective, then the lower number on ties); one-line errors for a
    ``k`` below 1 or above the completed trials."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CaviarError(f"--ensemble: {k!r} members; give an integer of at least 1")
    done = [t for t in study.storage.trials(study.id, [TrialState.COMPLETE]) if t.objective is not None]
    if k > len(done):
        raise CaviarError(f"--ensemble: {k} members asked, but study '{study.name}' has {len(done)} completed trials")
    return sorted(done, key=lambda t: (-float(t.objective), t.number))[: int(k)]


def trial_model(study: Study, trial: TrialRecord) -> Any:
    """A trial's fitted Classifier: its stored model file, else retrained to the same weights."""
    from caviar.sklearn import load
    from caviar.tune.worker import MODEL_ARTIFACT

    if MODEL_ARTIFACT in study.storage.artifact_names(trial.id):
        return load(io.BytesIO(study.storage.load_artifact(trial.id, MODEL_ARTIFACT)))
    return study.retrain(trial.number)


def study_ensemble(study: Study, k: int) -> EnsembleClassifier:
    """The top ``k`` trials (any shapes) averaged in probability."""
    return EnsembleClassifier([trial_model(study, t) for t in top_trials(study, k)])


def final_values(trial: TrialRecord) -> dict[str, Any]:
    """A trial's hyperparameters at its end: its values, with a PBT schedule's last entry on top."""
    schedule = trial.metrics.get("schedule") or [{}]
    return {**trial.params, **{n: v for n, v in schedule[-1].items() if n != "epoch"}}


def packed_ensemble(study: Study, k: int) -> EnsembleClassifier:
    """``k`` members with the best trial's (final) hyperparameters, each its own initial weights and
    dropout stream (member ids 0..k-1), trained as one population on train + validation."""
    from caviar.sklearn import load
    from caviar.tune.runner import model_file_bytes, train_population

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CaviarError(f"--ensemble: {k!r} members; give an integer of at least 1")
    best = study.best_trial
    if best is None:
        raise CaviarError(f"study '{study.name}' has no completed trial yet")
    spec = study.spec
    values = final_values(best)
    plan = dataclasses.replace(plan_from_record(spec, best), values=values)
    model, train = spec.configs_for(values)
    plans = [dataclasses.replace(plan, number=i, model=model, train=train) for i in range(int(k))]
    data = load_data(spec)
    both = dataclasses.replace(
        data,
        X_train=np.concatenate([data.X_train, data.X_val]),
        y_train=np.concatenate([data.y_train, data.y_val]),
        X_val=data.X_val[:0],
        y_val=data.y_val[:0],
    )
    seed = spec.search.seed or 0
    outcomes = train_population(plans, both, seed=seed, metric=spec.search.metric)
    return EnsembleClassifier(
        [load(io.BytesIO(model_file_bytes(p, o, both, seed=seed))) for p, o in zip(plans, outcomes, strict=True)]
    )


def _proba(member: Any, X: np.ndarray) -> np.ndarray:
    """A member's probabilities on rows already standardized the study's way (its own scaling)."""
    params = {n: a[None] for n, a in member.params_.items()}
    state = {n: a[None] for n, a in member.state_.items()}
    logits, _, _ = forward(member.architecture_, params, state, X, train=False, backend=default_backend())
    return softmax(logits[0].astype(np.float64))


def _accuracy(proba: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.mean(np.argmax(proba, axis=1) == y)) if len(y) else None


def ensemble_report(
    study: Study, ensemble: EnsembleClassifier, packed: bool = False, data: PreparedData | None = None
) -> dict[str, dict[str, float | None]]:
    """Validation and test accuracy of ``ensemble`` and of the best single trial, on the study's splits
    (a packed ensemble trained on the validation part has no validation accuracy)."""
    data = load_data(study.spec) if data is None else data
    best = study.best_trial
    if best is None:
        raise CaviarError(f"study '{study.name}' has no completed trial yet")
    single = trial_model(study, best)
    out: dict[str, dict[str, float | None]] = {}
    for name, members in (("best_trial", [single]), ("ensemble", ensemble.members)):
        val = np.mean([_proba(m, data.X_val) for m in members], axis=0) if len(data.y_val) else None
        test = np.mean([_proba(m, data.X_test) for m in members], axis=0) if len(data.y_test) else None
        out[name] = {
            "val_accuracy": None if val is None or (packed and name == "ensemble") else _accuracy(val, data.y_val),
            "test_accuracy": None if test is None else _accuracy(test, data.y_test),
        }
    return out
