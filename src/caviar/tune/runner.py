"""Training one population of trials and turning each member's fate into a trial outcome."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from caviar.backend import Backend
from caviar.metrics import (
    METRICS,
    NO_ACCURACY,
    REGRESSION,
    EpochMetrics,
    extra_metrics,
    metric_values,
    objective_of,
    task_metrics,
)
from caviar.nn.losses import accuracy, softmax_cross_entropy, squared_error
from caviar.nn.network import Architecture, Arrays, forward
from caviar.nn.padding import padded_hidden
from caviar.prepared import PreparedData
from caviar.storage import TrialState
from caviar.train.trainer import Trainer, blas_threads, hyperparameters_from
from caviar.tune.halving import SuccessiveHalving
from caviar.tune.population import TrialPlan

STATE_OF_STATUS = {
    "done": TrialState.COMPLETE,
    "stopped": TrialState.COMPLETE,
    "diverged": TrialState.DIVERGED,
    "pruned": TrialState.PRUNED,
}


@dataclass
class TrialOutcome:
    """What a trial ends with: its state, metrics, objective, curve and kept weights."""

    number: int
    state: TrialState
    metrics: dict[str, Any]
    objective: float | None
    curve: list[dict[str, float]]
    params: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    bn_state: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


class _EpochReporter:
    """Hands each epoch's rows to ``report(number, row)`` (storage streaming, heartbeats)."""

    def __init__(self, numbers: Sequence[int], report: Callable[[dict[int, dict]], None]) -> None:
        self.numbers = list(numbers)
        self.report = report

    def on_epoch_end(self, trainer: Trainer, rows: dict[int, dict[str, float]]) -> None:
        self.report({self.numbers[k]: row for k, row in rows.items()})


class _FollowThreads:
    """At each epoch end, the population's threads for the next epoch: what ``share()`` says now."""

    def __init__(self, share: Callable[[], int]) -> None:
        self.share = share

    def on_epoch_end(self, trainer: Trainer, rows: dict[int, dict[str, float]]) -> None:
        trainer.set_threads(self.share())


def population_architecture(plans: Sequence[TrialPlan], data: PreparedData) -> Architecture:
    """The static shape a population of ``plans`` trains at: the data's widths, its members' widest
    hidden widths per layer (``caviar.nn.padding``), the first plan's activation and batch norm."""
    first = plans[0]
    hidden = padded_hidden([tuple(p.model.hidden) for p in plans])
    return Architecture(data.n_features, data.n_outputs, hidden, first.model.activation, first.model.batchnorm)


def load_kernels(plans: Sequence[TrialPlan], data: PreparedData, dtype: str = "float32") -> None:
    """Load the compiled kernels a population of ``plans`` trains with into this process (numba's
    on-disk cache, ~0.3 s the first time): a step and an evaluation of a one-member, two-unit copy on
    four rows. Processes forked afterwards have them (``caviar.tune.forked``)."""
    first = plans[0]
    arch = Architecture(
        data.n_features, data.n_outputs, (2,) * len(first.model.hidden), first.model.activation, first.model.batchnorm
    )
    hp = hyperparameters_from([first.member_values()], first.train, first.model.dropout)
    trainer = Trainer(arch, first.train, hp, [0], seed=0, dtype=np.dtype(dtype), threads=1, loss=data.loss)
    rows = slice(0, min(4, len(data.y_train)))
    X, y = data.X_train[rows], data.y_train[rows]
    with threadpool_limits(limits=1, user_api="blas"):
        trainer.train_step(X, y)
        trainer.evaluate(X, y)


def train_population(
    plans: Sequence[TrialPlan],
    data: PreparedData,
    seed: int,
    metric: str = "val_accuracy",
    halving: SuccessiveHalving | None = None,
    on_epoch: Callable[[dict[int, dict]], None] | None = None,
    dtype: str = "float32",
    callbacks: Sequence[Any] = (),
    threads: int | Callable[[], int] | None = None,
) -> list[TrialOutcome]:
    """Train ``plans`` (one static shape, up to hidden widths) together; one outcome per plan, in plan order.

    Members of one depth whose widths differ train padded to the widest width per layer
    (``caviar.nn.padding``), each exactly as it would alone; their outcomes are at their own widths.
    Such a population trains ordered by widths (then trial number): one matmul call per shape and layer.

    ``callbacks`` (e.g. population-based training) run after halving and before ``on_epoch`` sees the rows.
    ``threads``: slices of the population run side by side (None: one per BLAS thread; 1: the worker
    trains other populations on the other cores, ``caviar.tune.worker.work``; a function: asked at the
    start and at each epoch end, so a population takes the cores others leave); a member's numbers are
    the same either way."""
    given = list(plans)
    order = list(range(len(given)))
    if len({tuple(p.model.hidden) for p in given}) > 1:
        order.sort(key=lambda i: (tuple(given[i].model.hidden), given[i].number))
    plans = [given[i] for i in order]
    first = plans[0]
    hiddens = [tuple(p.model.hidden) for p in plans]
    arch = population_architecture(plans, data)
    hp = hyperparameters_from([p.member_values() for p in plans], first.train, first.model.dropout)
    # Slices of the population run side by side on this process's threads, but every matmul runs on
    # ONE BLAS thread: OpenBLAS's multi-threaded sgemm rounds differently from its single-threaded one
    # on large operands (evaluation sets), so a trial's numbers would depend on the worker count.
    trainer = Trainer(
        arch,
        first.train,
        hp,
        [p.number for p in plans],
        seed=seed,
        dtype=np.dtype(dtype),
        threads=blas_threads() if threads is None else threads() if callable(threads) else threads,
        member_hidden=hiddens,
        loss=data.loss,
    )
    has_val = len(data.y_val) > 0
    hooks: list[Any] = [] if not callable(threads) else [_FollowThreads(threads)]
    rows_hook = metric_hook(data, metric)
    if rows_hook is not None:  # before halving, which ranks by it
        hooks.append(rows_hook)
    if halving is not None:
        hooks.append(halving)
    hooks.extend(callbacks)
    if on_epoch is not None:
        hooks.append(_EpochReporter([p.number for p in plans], on_epoch))
    with threadpool_limits(limits=1, user_api="blas"):
        trainer.fit(
            data.X_train,
            data.y_train,
            data.X_val if has_val else None,
            data.y_val if has_val else None,
            callbacks=hooks,
        )
        outcomes = population_outcomes(trainer, [p.number for p in plans], data, metric)
    back: list[TrialOutcome] = [outcomes[0]] * len(order)
    for j, i in enumerate(order):
        back[i] = outcomes[j]
    return back


def metric_hook(data: PreparedData, metric: str) -> EpochMetrics | None:
    """The callback that adds to each epoch's rows what they lack: ``metric`` when the trainer does not
    compute it (balanced accuracy...), or for a regression every regression metric in the target's
    units, its accuracy placeholders dropped. None when nothing is to add. The study's populations,
    panda's session and its forks all use it."""
    if data.is_regression:
        return EpochMetrics(task_metrics(REGRESSION), data.X_val, data.targets(data.y_val), data.outputs, NO_ACCURACY)
    if len(data.y_val) > 0 and extra_metrics([metric]):
        return EpochMetrics([metric], data.X_val, data.y_val)
    return None


def population_outcomes(
    trainer: Trainer,
    numbers: Sequence[int],
    data: PreparedData,
    metric: str,
    extra_metrics: dict[str, Any] | None = None,
) -> list[TrialOutcome]:
    """The outcome of each member of a finished population (``Trainer.finish`` done), in member
    order: its state, its best epoch's metrics (plus ``extra_metrics``), the test set's loss and
    accuracy under its kept weights, the objective of ``metric``, its curve and kept weights.
    The study's workers and panda's fork both end their populations here; a regression's test metrics
    are its loss and the regression metrics in the target's units (test_r2, test_rmse, test_mae)."""
    params, state = trainer.stacked_kept()
    if data.is_regression:
        tests = _regression_tests(trainer, params, state, data)
    else:
        test_loss, test_acc = _evaluate(
            trainer.arch, params, state, data.X_test, data.y_test, trainer.backend, trainer.member_hidden
        )
        tests = [{"test_loss": float(test_loss[k]), "test_accuracy": float(test_acc[k])} for k in range(len(numbers))]
    outcomes = []
    for k, number in enumerate(numbers):
        hist = trainer.histories[k]
        own_params, own_state = trainer.kept_weights(k)
        best = hist.best_row()
        metrics: dict[str, Any] = {key: best[key] for key in ("train_loss", "train_accuracy", *METRICS) if key in best}
        metrics.update(status=hist.status, epochs_run=len(hist.rows), best_epoch=hist.best_epoch)
        metrics.update(extra_metrics or {})
        if len(data.y_test):
            metrics.update(tests[k])
        state_name = STATE_OF_STATUS[hist.status]
        objective = _objective(metrics, metric) if state_name == TrialState.COMPLETE else None
        outcomes.append(
            TrialOutcome(
                number,
                state_name,
                metrics,
                objective,
                list(hist.rows),
                own_params,
                own_state,
            )
        )
    return outcomes


def _evaluate(
    arch: Architecture,
    params: Arrays,
    state: Arrays,
    X: np.ndarray,
    y: np.ndarray,
    backend: Backend,
    member_hidden: list[tuple[int, ...]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy) (K,) of stacked kept weights on (X, y) (NaN without samples), numpy's loss;
    ``member_hidden``: the members' own widths in a padded population."""
    K = params["out.W"].shape[0]
    if len(y) == 0:
        return np.full(K, np.nan), np.full(K, np.nan)
    with np.errstate(all="ignore"):
        logits, _, _ = forward(arch, params, state, X, train=False, backend=backend, member_hidden=member_hidden)
        loss, _ = softmax_cross_entropy(logits, y)
    return loss, accuracy(logits, y)


def _regression_tests(trainer: Trainer, params: Arrays, state: Arrays, data: PreparedData) -> list[dict[str, float]]:
    """Each kept member's test loss (on the standardized target) and regression metrics (target's units)."""
    K = params["out.W"].shape[0]
    if len(data.y_test) == 0:
        return [{} for _ in range(K)]
    with np.errstate(all="ignore"):
        out, _, _ = forward(
            trainer.arch,
            params,
            state,
            data.X_test,
            train=False,
            backend=trainer.backend,
            member_hidden=trainer.member_hidden,
        )
        loss, _ = squared_error(out, data.y_test)
    y = data.targets(data.y_test)
    names = task_metrics(REGRESSION)
    rows = []
    for k in range(K):
        values = metric_values(names, y, data.outputs(out[k]))
        rows.append({"test_loss": float(loss[k]), **{n.replace("val_", "test_", 1): v for n, v in values.items()}})
    return rows


def _objective(metrics: dict[str, Any], metric: str) -> float | None:
    """The number to maximize: the metric itself, or minus one to minimize (caviar.metrics)."""
    return objective_of(metric, metrics.get(metric))


def model_file_bytes(
    plan: TrialPlan, outcome: TrialOutcome, data: PreparedData, seed: int, dtype: str = "float32"
) -> bytes:
    """The trial's kept weights as a caviar model file (.npz bytes) that ``caviar.load`` reads: a
    Classifier, or a Regressor that predicts in the target's units."""
    from caviar.model_io import constructor_params, model_file_contents, write_model_file

    given = {
        **{f: getattr(plan.model, f) for f in ("hidden", "activation", "batchnorm", "dropout")},
        **{f: getattr(plan.train, f) for f in plan.train.__dataclass_fields__},
        "standardize": data.standardizer is not None,
        "random_state": seed,
        "dtype": dtype,
    }
    header, arrays = model_file_contents(
        constructor_params(data.is_regression, given),
        {**outcome.params, **outcome.bn_state},
        data.n_features,
        outcome.curve,
        data.standardizer,
        classes=None if data.is_regression else np.asarray(data.classes),
        target_scaler=data.target_scaler if data.is_regression else None,
    )
    buffer = io.BytesIO()
    write_model_file(buffer, header, arrays)
    return buffer.getvalue()
