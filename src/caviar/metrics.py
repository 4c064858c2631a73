"""The metrics a study tunes for: each one's name, task, direction and a pure function.

One registry (``METRICS``) is the source of truth for which way a metric is better: the spec's
``[search] metric`` choices, the study's stored ``direction``, the objective the samplers maximize,
successive halving's ranking, the dashboard's best-so-far and ``caviar best`` all read it here.

``val_loss`` and ``val_accuracy`` come from the trainer's own evaluation (every epoch's row has them);
the others are computed by ``metric_values`` from a model's outputs on the validation part: class
probabilities (N, C) for classification, predictions (N,) for regression, with scikit-learn's
metric functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType

import numpy as np

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)


def _skm() -> ModuleType:
    """sklearn.metrics, imported on first use: a study scored by accuracy or loss never pays its start-up."""
    from sklearn import metrics

    return metrics


#: f(y_true (N,), outputs (N, C) probabilities or (N,) predictions, sample_weight (N,) or None) -> float
MetricFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], float]


@dataclass(frozen=True)
class Metric:
    """A metric to tune for: which task it fits, whether larger is better, how it is computed
    (``fn`` is None for the trainer's own ``val_loss``/``val_accuracy``)."""

    name: str
    task: str
    maximize: bool
    fn: MetricFn | None = None
    doc: str = ""

    @property
    def direction(self) -> str:
        """The stored study direction: ``maximize`` or ``minimize``."""
        return "maximize" if self.maximize else "minimize"

    def objective(self, value: float) -> float:
        """The value turned into what samplers maximize (minus a metric to minimize)."""
        return float(value) if self.maximize else -float(value)


def _labels(proba: np.ndarray) -> np.ndarray:
    return np.asarray(proba).argmax(axis=-1)


def _balanced_accuracy(y: np.ndarray, proba: np.ndarray, w: np.ndarray | None) -> float:
    return float(_skm().balanced_accuracy_score(y, _labels(proba), sample_weight=w))


def _f1_macro(y: np.ndarray, proba: np.ndarray, w: np.ndarray | None) -> float:
    labels = np.arange(np.asarray(proba).shape[-1])
    return float(_skm().f1_score(y, _labels(proba), labels=labels, average="macro", sample_weight=w, zero_division=0))


def _log_loss(y: np.ndarray, proba: np.ndarray, w: np.ndarray | None) -> float:
    p = np.asarray(proba, dtype=np.float64)
    p = np.clip(p, 1e-15, 1.0)
    p = p / p.sum(axis=-1, keepdims=True)
    return float(_skm().log_loss(y, p, labels=np.arange(p.shape[-1]), sample_weight=w))


def _auc(y: np.ndarray, proba: np.ndarray, w: np.ndarray | None) -> float:
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"val_auc is for two classes; the model has {p.shape[-1]}")
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(_skm().roc_auc_score(y, p[:, 1], sample_weight=w))


def _r2(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None) -> float:
    return float(_skm().r2_score(y, pred, sample_weight=w))


def _rmse(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None) -> float:
    return float(np.sqrt(_skm().mean_squared_error(y, pred, sample_weight=w)))


def _mae(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None) -> float:
    return float(_skm().mean_absolute_error(y, pred, sample_weight=w))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("val_accuracy", CLASSIFICATION, True, doc="fraction of correct predictions"),
        Metric("val_loss", CLASSIFICATION, False, doc="the training loss on the validation part"),
        Metric("val_balanced_accuracy", CLASSIFICATION, True, _balanced_accuracy, "mean recall over classes"),
        Metric("val_f1_macro", CLASSIFICATION, True, _f1_macro, "unweighted mean of the classes' F1"),
        Metric("val_log_loss", CLASSIFICATION, False, _log_loss, "cross-entropy of the probabilities"),
        Metric("val_auc", CLASSIFICATION, True, _auc, "area under the ROC curve (two classes)"),
        Metric("val_r2", REGRESSION, True, _r2, "coefficient of determination"),
        Metric("val_rmse", REGRESSION, False, _rmse, "root mean squared error"),
        Metric("val_mae", REGRESSION, False, _mae, "mean absolute error"),
    )
}
#: Metrics every epoch's row carries without extra work (the trainer's evaluation).
BUILTIN = ("val_loss", "val_accuracy")
#: The default metric of each task.
DEFAULT = {CLASSIFICATION: "val_accuracy", REGRESSION: "val_r2"}
#: The test metric a study's summary shows beside its search metric, by task.
TEST_HEADLINE = {CLASSIFICATION: "test_accuracy", REGRESSION: "test_r2"}
#: Rows of a regression carry no accuracy: the trainer's NaN placeholders are dropped from them.
NO_ACCURACY = ("train_accuracy", "val_accuracy")


def task_metrics(task: str) -> tuple[str, ...]:
    """The metrics computed from outputs for ``task`` (a regression's rows carry all of them)."""
    return tuple(m.name for m in METRICS.values() if m.task == task and m.fn is not None)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; a one-line error listing the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def is_maximized(name: str) -> bool:
    """Whether a larger ``name`` is better. Registered metrics say so themselves; for any other name
    (a user's own objective's) the rule of thumb: a name ending in 'loss' or 'error' is minimized."""
    if name in METRICS:
        return METRICS[name].maximize
    return not (name.endswith("loss") or name.endswith("error"))


def direction_of(name: str) -> str:
    """``maximize`` or ``minimize`` for ``name`` (see ``is_maximized``)."""
    return "maximize" if is_maximized(name) else "minimize"


def objective_of(name: str, value: float | None) -> float | None:
    """What the samplers maximize for a metric value: the value or its negative; None if not finite."""
    if value is None or not np.isfinite(value):
        return None
    return float(value) if is_maximized(name) else -float(value)


def check_metric_for_task(name: str, task: str) -> None:
    """A one-line error when ``name`` does not fit ``task`` (val_r2 for a classification study...)."""
    metric = get_metric(name)
    if metric.task != task and name != "val_loss":
        fitting = ", ".join(m.name for m in METRICS.values() if m.task == task or m.name == "val_loss")
        raise ValueError(f"[search] metric {name!r} is for {metric.task}, the study is {task}; use one of {fitting}")


def extra_metrics(names: tuple[str, ...] | list[str]) -> list[str]:
    """The names among ``names`` computed from outputs (not in every epoch's row already)."""
    return [n for n in names if n in METRICS and METRICS[n].fn is not None]


def metric_values(
    names: list[str] | tuple[str, ...],
    y_true: np.ndarray,
    outputs: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> dict[str, float]:
    """Each metric of ``names`` (those with a function) on one model's ``outputs``; a metric that
    cannot be computed on these outputs (non-finite probabilities) is NaN."""
    values: dict[str, float] = {}
    for name in extra_metrics(names):
        fn = METRICS[name].fn
        assert fn is not None
        if not np.all(np.isfinite(outputs)):
            values[name] = float("nan")
            continue
        values[name] = fn(np.asarray(y_true), np.asarray(outputs), sample_weight)
    return values


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of logits (..., C), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class EpochMetrics:
    """A trainer callback adding the metrics of ``names`` that are not in every row already (balanced
    accuracy, F1...) to each active member's epoch row, computed on (X_val, y_val). Put it before
    any callback that reads those metrics (successive halving).

    ``to_outputs`` turns the network's outputs into what the metrics take (class probabilities, or a
    regression's predictions in the target's units, as ``y_val`` is); ``drop``: keys removed from
    every row first (a regression's accuracy, which the trainer fills with NaN)."""

    def __init__(
        self,
        names: list[str] | tuple[str, ...],
        X_val: np.ndarray,
        y_val: np.ndarray,
        to_outputs: Callable[[np.ndarray], np.ndarray] = softmax_rows,
        drop: tuple[str, ...] = (),
    ) -> None:
        self.names = extra_metrics(names)
        self.X_val = X_val
        self.y_val = y_val
        self.to_outputs = to_outputs
        self.drop = drop

    def on_epoch_end(self, trainer, rows: Mapping[int, dict[str, float]]) -> None:
        for each in rows.values():
            for key in self.drop:
                each.pop(key, None)
        if not self.names or len(self.y_val) == 0 or trainer.K == 0:
            return None
        with np.errstate(all="ignore"):
            outputs = self.to_outputs(trainer.logits(self.X_val))
        for j, k in enumerate(trainer.active):
            row = rows.get(int(k))
            if row is not None:
                row.update(metric_values(self.names, self.y_val, outputs[j]))
        return None
