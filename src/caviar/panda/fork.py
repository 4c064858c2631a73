"""Fork: when unsure which way to go, hand the panda's current state over to a small caviar study.

The study's space is centred on the current values, each on its own scale: rates (learning_rate,
epsilon, l2) log-uniform on [v / f, v * f]; averaging betas (momentum, beta1, beta2, rho) one-minus-log
with 1 - beta in [(1 - v) / f, (1 - v) * f] (clipped to beta >= 0). Its trials are drawn by the
study's own random sampler (seeded), so the study is an ordinary caviar study: ``caviar show``,
``caviar best``, the dashboard all read it.

Two ways to train it:

- ``warm`` (the default): every member starts from the fork checkpoint's weights, batch-norm
  statistics, optimizer state (Adam's step counter included) and epoch/step counters, and trains
  ``epochs`` more epochs as one population; a fork taken mid-epoch restarts that epoch from its
  first batch (same batch order as the session's). Trials are enqueued, claimed and finished in
  storage exactly like a study worker does, so the study looks like any other.
- ``warm=False``: :func:`caviar.tune.study.run_study` on the same spec dict, i.e. every trial trains
  from scratch (its own initial weights from the same study seed) for the whole ``training.epochs``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from caviar import hparams
from caviar.config import TrainConfig
from caviar.errors import CaviarError, ControlError
from caviar.metrics import is_maximized
from caviar.nn.network import Architecture
from caviar.prepared import PreparedData
from caviar.storage import Storage, StudyStatus, TrialRecord
from caviar.train.trainer import Checkpoint, Trainer, hyperparameters_from
from caviar.tune.explore import reach
from caviar.tune.planning import plans_for
from caviar.tune.runner import metric_hook, model_file_bytes, population_outcomes
from caviar.tune.spec import load_spec
from caviar.tune.study import run_study
from caviar.tune.worker import MODEL_ARTIFACT, new_worker_id

LOG_NAMES = tuple(n for n in hparams.FORKABLE if hparams.BY_NAME[n].fork_scale == "log")
BETA_NAMES = tuple(n for n in hparams.FORKABLE if hparams.BY_NAME[n].fork_scale == "one_minus_log")
FORKABLE = LOG_NAMES + BETA_NAMES
OPTIMIZER_BETAS = {optimizer: hparams.optimizer_betas(optimizer) for optimizer in hparams.OPTIMIZERS}
MAX_K = 64


class ForkPoint(Protocol):
    """The point a fork starts from (``caviar.panda.session.PandaCheckpoint``)."""

    @property
    def hp(self) -> dict[str, float]: ...

    @property
    def epoch(self) -> int: ...

    @property
    def step(self) -> int: ...

    @property
    def trainer(self) -> Checkpoint: ...


class ForkSource(Protocol):
    """What a fork reads from the model it forks (``caviar.panda.session.PandaSession``); the session
    imports this module, never the other way round."""

    @property
    def study_name(self) -> str: ...

    @property
    def storage(self) -> Storage: ...

    @property
    def storage_url(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def dtype(self) -> str: ...

    @property
    def data(self) -> PreparedData: ...

    @property
    def arch(self) -> Architecture: ...

    @property
    def train_config(self) -> TrainConfig: ...

    @property
    def forks(self) -> list[Any]: ...

    @property
    def total_epochs(self) -> int: ...

    def stored_spec(self) -> dict[str, Any]: ...

    def notify_changed(self) -> None: ...


def default_params(optimizer: str) -> list[str]:
    """What a fork varies unless told: the learning rate and the optimizer's averaging betas."""
    return ["learning_rate", *OPTIMIZER_BETAS.get(optimizer, ())]


def centered_space(hp: dict[str, float], names: Sequence[str], factor: float) -> dict[str, dict[str, Any]]:
    """A ``[space]`` table centred on ``hp`` within a factor ``factor`` on each parameter's scale: the range
    of PBT's explore law (:func:`caviar.tune.explore.reach`), so each member the fork study's sampler draws
    is the centre moved by one factor g, log g uniform on [-log factor, log factor]."""
    space: dict[str, dict[str, Any]] = {}
    for name in names:
        scale = "log" if name in LOG_NAMES else "one_minus_log"
        try:
            low, high = reach(float(hp[name]), scale, factor)
        except ValueError as exc:
            raise ControlError(f"fork: {name} is {exc}") from None
        space[name] = {"low": low, "high": high, "scale": scale}
    return space


def check_fork_request(
    session: ForkSource, k: Any, factor: Any, params: Sequence[str] | None, epochs: Any
) -> dict[str, Any]:
    """Validate a fork request against the session; returns the normalized payload."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= int(k) <= MAX_K:
        raise ControlError(f"fork: k = {k!r} must be an integer from 2 to {MAX_K}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 1:
        raise ControlError(f"fork: factor = {factor!r} must be a finite number > 1")
    names = list(params) if params else default_params(session.train_config.optimizer)
    for name in names:
        if name not in FORKABLE:
            raise ControlError(f"fork: cannot vary '{name}'; one of {', '.join(FORKABLE)}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ControlError(f"fork: epochs = {epochs!r} must be an integer >= 1")
    return {"k": int(k), "factor": float(factor), "params": names, "epochs": epochs}


def member_lines(
    trials: Sequence[TrialRecord], final: Checkpoint | None, metric: str = "val_accuracy"
) -> list[dict[str, Any]]:
    """One line per fork trial, best by the study's ``metric`` first (in its direction): number, state,
    params, the best epoch's ``metric`` (``score``), validation accuracy and loss (as stored), the last
    epoch's validation accuracy (the state "adopt" continues from) and whether it can be adopted (a
    warm fork's member still training at its end)."""
    lines = []
    for t in trials:
        adoptable = final is not None and t.number in final.members
        rows = final.history_rows[t.number] if final is not None and t.number < len(final.history_rows) else []
        lines.append(
            {
                "number": t.number,
                "state": t.state.value,
                "params": dict(t.params),
                "metric": metric,
                "score": _number(t.metrics.get(metric)),
                "val_accuracy": _number(t.metrics.get("val_accuracy")),
                "val_loss": _number(t.metrics.get("val_loss")),
                "last_val_accuracy": _number(rows[-1].get("val_accuracy")) if rows else None,
                "epochs_run": t.metrics.get("epochs_run"),
                "adoptable": adoptable,
            }
        )
    sign = -1.0 if is_maximized(metric) else 1.0
    return sorted(lines, key=lambda m: (math.inf if m["score"] is None else sign * m["score"], m["number"]))


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


class Fork:
    """One fork: its study, trained in a background thread (warm start or from scratch)."""

    def __init__(
        self,
        session: ForkSource,
        ckpt: ForkPoint,
        k: int,
        factor: float,
        params: list[str],
        epochs: int | None,
        warm: bool = True,
        pause: bool = True,
    ) -> None:
        self.session, self.ckpt = session, ckpt
        self.k, self.factor, self.params, self.warm = k, factor, list(params), warm
        self.extra_epochs = epochs if epochs is not None else max(1, session.total_epochs - ckpt.epoch)
        self.center = {n: ckpt.hp[n] for n in self.params}
        self.name = f"{session.study_name}-fork{len(session.forks) + 1}"
        self.status = "running"
        self.error: str | None = None
        self.best: dict[str, Any] | None = None
        self.members: list[dict[str, Any]] = []  # one line per trial once done: what "adopt" chooses from
        self.final: Checkpoint | None = None  # warm forks: every member's state after its last epoch
        self.epoch_steps: dict[int, int] = {}  # warm forks: the step each epoch ended at
        self.spec_dict = self._spec_dict()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _spec_dict(self) -> dict[str, Any]:
        s, ck = self.session, self.ckpt
        d = s.stored_spec()
        d["study"]["name"] = self.name
        for name, value in ck.hp.items():
            if name == "dropout":
                d["model"]["dropout"] = value
            elif name in d["training"]:
                d["training"][name] = value
        d["training"]["epochs"] = ck.epoch + self.extra_epochs  # warm: more epochs; scratch: the same total
        d["search"].update(
            strategy="random",
            trials=self.k,
            storage=s.storage_url,
            seed=s.seed,
            max_population=max(self.k, d["search"].get("max_population", 1)),
            workers=1,
        )
        d["space"] = centered_space(ck.hp, self.params, self.factor)
        return d

    def summary(self) -> dict[str, Any]:
        return {
            "study": self.name,
            "storage": self.session.storage.url,
            "k": self.k,
            "warm": self.warm,
            "status": self.status,
            "params": self.params,
            "factor": self.factor,
            "center": self.center,
            "epochs": self.spec_dict["training"]["epochs"],
            "from_step": self.ckpt.step,
            "from_epoch": self.ckpt.epoch,
            "best": self.best,
            "members": self.members,
            "adoptable": self.final is not None,
            "error": self.error,
        }

    def member_start(self, member: int) -> tuple[Checkpoint, dict[str, float], list[dict[str, Any]]]:
        """What "adopt" continues from: the fork's final state, member ``member``'s hyperparameters, and
        its epoch rows (with the step each ended at); a one-line ControlError when it cannot be adopted."""
        if self.status != "done":
            raise ControlError(f"adopt: fork {self.name} is {self.status}; adopt once it is done")
        if self.final is None:
            raise ControlError(f"adopt: fork {self.name} trained from scratch; only a warm fork's members go on")
        if member not in self.final.members:
            known = ", ".join(str(m) for m in self.final.members) or "none"
            raise ControlError(f"adopt: fork {self.name} has no member #{member} trained to its end; one of {known}")
        row = self.final.row(member)
        hp = {name: float(values[row]) for name, values in self.final.hp.items()}
        rows = [{**r, "step": self.epoch_steps.get(int(r["epoch"]) + 1)} for r in self.final.history_rows[member]]
        return self.final, hp, rows

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            if self.warm:
                self._run_warm()
            else:
                run_study(self.spec_dict)
            store = self.session.storage
            study_id = store.get_study(self.name).id
            metric = str(self.spec_dict["search"].get("metric") or "val_accuracy")
            self.members = member_lines(store.trials(study_id), self.final, metric)
            best = store.best_trial(study_id)
            if best is not None:
                self.best = {
                    "number": best.number,
                    "params": best.params,
                    "objective": best.objective,
                    "metrics": {k: v for k, v in best.metrics.items() if isinstance(v, (int, float))},
                }
            self.status = "done"
        except (CaviarError, ValueError, FloatingPointError, MemoryError) as exc:
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
        self.session.notify_changed()

    def _run_warm(self) -> None:
        """Train the fork's trials as one population starting from the checkpoint's state."""
        s, ck = self.session, self.ckpt
        spec = load_spec(self.spec_dict)
        store = s.storage
        study_id = store.create_study(
            self.name,
            spec.to_dict(),
            seed=spec.search.seed,
            metric=spec.search.metric,
            direction="maximize" if spec.search.maximize else "minimize",
        )
        numbers = list(range(self.k))
        plans = plans_for(spec, numbers, spec.sampler().propose(numbers, []), 0)
        store.enqueue_trials(
            study_id,
            [
                {
                    "number": p.number,
                    "params": p.values,
                    "unit": list(p.unit),
                    "round": 0,
                    "seed": s.seed,
                    "group_key": "fork",
                }
                for p in plans
            ],
        )
        worker = new_worker_id()
        claimed = {r.number: r for r in store.claim_trials(study_id, worker, limit=self.k, same_group=True)}
        store.set_study_status(study_id, StudyStatus.RUNNING)
        try:
            first = plans[0]
            hp = hyperparameters_from([p.member_values() for p in plans], first.train, first.model.dropout)
            t = Trainer(s.arch, first.train, hp, numbers, seed=s.seed, dtype=np.dtype(s.dtype), loss=s.data.loss)
            t.replicate(ck.trainer, member=0)  # every member from the session's model, its own hyperparameters

            fork = self

            class _Stream:
                def on_epoch_end(self, trainer: Trainer, rows: dict[int, dict[str, float]]) -> None:
                    for k, row in rows.items():
                        store.add_curve_rows(claimed[k].id, [row], worker)
                    fork.epoch_steps[trainer.epoch] = trainer.step  # epochs done -> step (row "epoch" is one less)
                    if trainer.epoch >= first.train.epochs:  # before fit's finish() retires everyone
                        fork.final = trainer.checkpoint()

            data = s.data
            has_val = len(data.y_val) > 0
            rows_hook = metric_hook(data, spec.search.metric)  # a regression's metrics in the rows, first
            t.fit(
                data.X_train,
                data.y_train,
                data.X_val if has_val else None,
                data.y_val if has_val else None,
                callbacks=[*([rows_hook] if rows_hook is not None else []), _Stream()],
            )
            outcomes = population_outcomes(
                t, numbers, data, spec.search.metric, extra_metrics={"warm_start_step": ck.trainer.step}
            )
        except BaseException:
            store.requeue_worker(study_id, worker)
            raise
        best_objective = -np.inf
        for plan, outcome in zip(plans, outcomes, strict=True):
            trial_id = claimed[plan.number].id
            store.finish_trial(trial_id, worker, outcome.state, outcome.metrics, outcome.objective, outcome.curve)
            if outcome.objective is not None and outcome.objective > best_objective:
                best_objective = outcome.objective
                store.save_artifact(
                    trial_id, MODEL_ARTIFACT, model_file_bytes(plan, outcome, data, seed=s.seed, dtype=s.dtype)
                )
        store.set_study_status(study_id, StudyStatus.COMPLETE)
