"""A panda session: one model trained step by step in a background thread, steered while it trains.

Controls (pause, resume, set hyperparameters, checkpoint, rollback, stop, fork) are *submitted* from
any thread and applied by the training loop between two steps, so a change never lands in the middle
of an update. Each applied control is logged with ``step`` = the number of the first step that runs
under it (steps count from 1; the step-loss point plotted at x = s is the loss of step s). Without a
running loop (tests, scripts) a control is applied at once by the caller, which is the same thing:
the next step to run is the first one to see it; :meth:`PandaSession.run_steps` then steps
synchronously.

Everything lands in a study storage: the session is a study with one trial (number 0), its epoch rows
are the trial's curve, and every intervention is an event (kind, payload, step) of that trial.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from caviar import hparams
from caviar.config import PER_MEMBER, ModelConfig, TrainConfig, with_values
from caviar.errors import CaviarError, ControlError
from caviar.metrics import METRICS
from caviar.nn.network import Architecture
from caviar.panda.fork import Fork, check_fork_request
from caviar.panda.recovery import recover_dead_sessions
from caviar.prepared import PreparedData
from caviar.storage import Storage, StudyStatus, TrialState, open_storage
from caviar.train.trainer import Checkpoint, Trainer, hyperparameters_from
from caviar.tune.planning import load_data
from caviar.tune.runner import metric_hook
from caviar.tune.space import did_you_mean
from caviar.tune.spec import StudySpec, load_spec
from caviar.tune.worker import Heartbeat, new_worker_id
from caviar.validation import check_value

#: Hyperparameters a panda may change while the model trains (caviar.hparams.LIVE: per-member, no shape changes).
HYPERPARAMETERS = hparams.LIVE
#: Short names accepted by ``set`` (the page, ``caviar ctl set lr=0.001``): the registry's aliases.
ALIASES = {alias: name for alias, name in hparams.ALIASES.items() if name in HYPERPARAMETERS}

RUNNING, PAUSED, FINISHED, DIVERGED_STATUS, STOPPED, FAILED_STATUS = (
    "running",
    "paused",
    "finished",
    "diverged",
    "stopped",
    "failed",
)


def canonical_name(name: str) -> str:
    """The hyperparameter a (possibly short) name means; unknown names raise a one-line ControlError."""
    full = ALIASES.get(name, name)
    if full not in HYPERPARAMETERS:
        known = (*HYPERPARAMETERS, *ALIASES)
        raise ControlError(
            f"unknown hyperparameter '{name}'{did_you_mean(name, known)}; "
            f"one of {', '.join(HYPERPARAMETERS)} can change during training"
        )
    return full


def validate_changes(changes: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Check a ``{name: value}`` change with caviar's validation rules; returns canonical names -> floats.

    ``current`` (the training's values now) lets the registry's rules across fields check the change
    too (lr_decay stays below 1 under exponential or step decay).
    """
    if not changes:
        raise ControlError("nothing to set: give at least one name=value")
    out: dict[str, float] = {}
    for name, value in changes.items():
        full = canonical_name(str(name))
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ControlError(f"{full}: {value!r} is not a number")
        try:
            check_value(full, float(value))
        except CaviarError as exc:
            raise ControlError(str(exc)) from None
        out[full] = float(value)
    broken = hparams.broken_rule({**current, **out}) if current is not None else None
    if broken:
        raise ControlError(broken)
    return out


class EWA:
    """Exponentially weighted average with bias correction: v_t = b v_{t-1} + (1 - b) x_t; v_t / (1 - b^t)."""

    def __init__(self, beta: float = 0.98) -> None:
        if not 0 <= beta < 1:
            raise ControlError(f"ewa beta: {beta!r} is not in [0, 1)")
        self.beta = float(beta)
        self.v = 0.0
        self.t = 0

    def update(self, x: float) -> float:
        """Add one value (non-finite values are skipped) and return the bias-corrected average."""
        if math.isfinite(x):
            self.v = self.beta * self.v + (1.0 - self.beta) * float(x)
            self.t += 1
        return self.value

    @property
    def value(self) -> float:
        return self.v / (1.0 - self.beta**self.t) if self.t else float("nan")


@dataclass
class Control:
    """A submitted control: applied by the loop (or at once when no loop runs); wait() for the result."""

    kind: str
    payload: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: CaviarError | None = None

    def wait(self, timeout: float | None = 30.0) -> dict[str, Any]:
        """The result once applied; re-raises the error the control met (ControlError)."""
        if not self.done.wait(timeout):
            raise ControlError(f"{self.kind}: not applied within {timeout:g}s (is the training loop stuck?)")
        if self.error is not None:
            raise self.error
        return self.result or {}


@dataclass
class PandaCheckpoint:
    """A point to come back to: the trainer's checkpoint (weights, optimizer, counters, generators,
    curve, best-epoch record, the running epoch's batches and sums) plus the page's own state."""

    id: int
    label: str
    trainer: Checkpoint
    ewa: tuple[float, int]
    n_steps: int
    n_epochs: int
    hp: dict[str, float]
    created_at: float

    @property
    def step(self) -> int:
        return self.trainer.step

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "step": self.step,
            "epoch": self.epoch,
            "hp": dict(self.hp),
            "created_at": self.created_at,
        }


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return _finite_or_none(obj)


def start_values(spec: StudySpec) -> dict[str, Any]:
    """The values a panda starts from: the spec's fixed ones, and each tuned name at its range's midpoint."""
    if not spec.space.names:
        return {}
    return spec.space.decode(np.full(spec.space.dim, 0.5))


class PandaSession:
    """Trains one model from a study spec, step by step, and applies controls between steps."""

    def __init__(
        self,
        spec: StudySpec | str | os.PathLike[str] | Mapping[str, Any],
        *,
        storage: Storage | str | None = None,
        epochs: int | None = None,
        checkpoint_every: int = 1,
        keep_auto_checkpoints: int = 10,
        ewa_beta: float = 0.98,
        step_delay_s: float = 0.0,
        study_name: str | None = None,
        data: PreparedData | None = None,
        dtype: str = "float32",
    ) -> None:
        self.spec = spec if isinstance(spec, StudySpec) else load_spec(spec)
        if checkpoint_every < 0:
            raise ControlError(f"checkpoint_every: {checkpoint_every!r} must be >= 0 (0: no automatic checkpoints)")
        self.values = start_values(self.spec)
        model, train = self.spec.configs_for(self.values)
        # The panda decides when to stop: early stopping would take the only member away.
        model, train = with_values(model, train, {"early_stopping": False})
        if epochs is not None:
            check_value("epochs", epochs)
            model, train = with_values(model, train, {"epochs": int(epochs)})
        self.model_config: ModelConfig = model
        self.train_config: TrainConfig = train
        self.seed = int(self.spec.search.seed or 0)
        self.dtype = dtype
        self.data = data if data is not None else load_data(self.spec)
        self.checkpoint_every = int(checkpoint_every)
        self.keep_auto_checkpoints = max(1, int(keep_auto_checkpoints))
        self.step_delay_s = float(step_delay_s)
        self._rows_hook = metric_hook(self.data, self.spec.search.metric)
        self.arch = Architecture(
            self.data.n_features, self.data.n_outputs, model.hidden, model.activation, model.batchnorm
        )
        self.trainer = self._new_trainer()

        self._cond = threading.Condition(threading.RLock())
        self._pending: list[Control] = []
        self._thread: threading.Thread | None = None
        self.status = PAUSED
        self.generation = 0  # bumps at each rollback: clients reload the curves
        self.version = 0  # bumps at every change: the stream sends when it moves
        self.ewa = EWA(ewa_beta)
        self.steps: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.checkpoints: dict[int, PandaCheckpoint] = {}
        self.branch: list[int] = []  # the checkpoints the current state descends from, oldest first
        self._parent: dict[int, int | None] = {}  # each checkpoint's predecessor on its branch
        self.forks: list[Fork] = []
        self._next_ckpt = 0
        self.error: str | None = None

        self.storage_url = (
            str(storage)
            if isinstance(storage, (str, os.PathLike))
            else (storage.url if isinstance(storage, Storage) else str(self.spec.search.storage))
        )
        self.storage = open_storage(storage if storage is not None else cast(str, self.spec.search.storage))
        # Sessions killed earlier in this storage: their trials are closed, not left RUNNING for good.
        self.recovered = recover_dead_sessions(self.storage)
        self.study_name = study_name or self._default_name()
        self.worker_id = new_worker_id()  # host:pid:random, as a tuning worker: a dead session is recognized
        self.study_id, self.trial_id = self._create_study()
        # Beats like a worker's (every 5 s, paused or not), so a killed session's trial goes stale and is requeued.
        self._heartbeat = Heartbeat(self.storage, [self.trial_id], self.worker_id).__enter__()
        self._hp = self._read_hp()
        self._log(
            "start",
            {
                "hp": dict(self._hp),
                "epochs": train.epochs,
                "values": self.values,
                "optimizer": train.optimizer,
                "hidden": list(model.hidden),
            },
        )
        self._take_checkpoint("start", auto=False)

    # ------------------------------------------------------------------------------- set-up
    def _new_trainer(self) -> Trainer:
        hp = hyperparameters_from([self._member_values()], self.train_config, self.model_config.dropout)
        return Trainer(
            self.arch, self.train_config, hp, [0], seed=self.seed, dtype=np.dtype(self.dtype), loss=self.data.loss
        )

    def _member_values(self) -> dict[str, float]:
        values = {name: getattr(self.train_config, name) for name in PER_MEMBER if name != "dropout"}
        values["dropout"] = self.model_config.dropout
        return values

    def _default_name(self) -> str:
        stem = self.spec.study.name or "panda"
        return f"panda-{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"

    def stored_spec(self) -> dict[str, Any]:
        """The spec stored with the session's study: the start values fixed, no space, one trial."""
        d = self.spec.to_dict()
        d["study"]["name"] = self.study_name
        d["space"] = {}
        d["search"]["trials"] = 1
        d["search"]["strategy"] = "random"
        d["search"]["storage"] = self.storage_url
        d["search"].pop("halving", None)
        d["model"].update(
            hidden=list(self.model_config.hidden),
            activation=self.model_config.activation,
            batchnorm=self.model_config.batchnorm,
            dropout=self.model_config.dropout,
        )
        d["training"].update({k: getattr(self.train_config, k) for k in d["training"]})
        return d

    def _create_study(self) -> tuple[int, int]:
        s = self.spec.search
        study_id = self.storage.create_study(
            self.study_name,
            self.stored_spec(),
            seed=self.seed,
            metric=s.metric,
            direction="maximize" if s.maximize else "minimize",
            kind="session",
        )
        self.storage.enqueue_trials(
            study_id,
            [
                {
                    "number": 0,
                    "params": {**self.values, **self._member_values()},
                    "seed": self.seed,
                    "group_key": "panda",
                }
            ],
        )
        claimed = self.storage.claim_trials(study_id, self.worker_id)
        self.storage.set_study_status(study_id, StudyStatus.RUNNING)
        return study_id, claimed[0].id

    def _read_hp(self) -> dict[str, float]:
        if self.trainer.K == 0:
            return dict(getattr(self, "_hp", {}))
        hp = self.trainer.hyperparameters(0)
        return {name: hp[name] for name in HYPERPARAMETERS}

    # ------------------------------------------------------------------------------- reading
    @property
    def step(self) -> int:
        """Steps done (the trainer's counter; goes back on rollback)."""
        return self.trainer.step

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    @property
    def total_epochs(self) -> int:
        return self.train_config.epochs

    @property
    def hp(self) -> dict[str, float]:
        """The current hyperparameters (a copy)."""
        with self._cond:
            return dict(self._hp)

    def state(self) -> dict[str, Any]:
        """A JSON-able picture: status, step, epoch, hyperparameters, checkpoints, events, forks."""
        with self._cond:
            return clean(
                {
                    "status": self.status,
                    "step": self.trainer.step,
                    "epoch": self.trainer.epoch,
                    "epochs": self.total_epochs,
                    "generation": self.generation,
                    "version": self.version,
                    "hp": dict(self._hp),
                    "lr": self._lr_now(),
                    "optimizer": self.train_config.optimizer,
                    "batch_size": self.train_config.batch_size,
                    "hidden": list(self.model_config.hidden),
                    "task": self.data.task,
                    "metric": self.spec.search.metric,
                    "study": self.study_name,
                    "study_id": self.study_id,
                    "trial_id": self.trial_id,
                    "storage": self.storage.url,
                    "checkpoints": [{**c.summary(), "current": c.id in self.branch} for c in self.checkpoints.values()],
                    "events": list(self.events),
                    "forks": [f.summary() for f in self.forks],
                    "error": self.error,
                    "step_delay_s": self.step_delay_s,
                    "smoothed_loss": self.ewa.value,
                }
            )

    def curves(self, since: int | None = None) -> dict[str, Any]:
        """Step points (step > ``since``, all without it) and every epoch row, with the generation."""
        with self._cond:
            steps = self.steps if since is None else [p for p in self.steps if p["step"] > since]
            return clean(
                {
                    "generation": self.generation,
                    "step": self.trainer.step,
                    "steps": [dict(p) for p in steps],
                    "epochs": [dict(r) for r in self.epochs],
                }
            )

    def _lr_now(self) -> float | None:
        return float(self.trainer.lr[0]) if self.trainer.K else None

    def notify_changed(self) -> None:
        """Something the page shows changed (e.g. a fork ended): bump the version, wake the waiters."""
        with self._cond:
            self.version += 1
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[PandaSession], bool], timeout: float = 30.0) -> bool:
        """Block until ``predicate(self)`` holds (checked after every step and control); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    # ------------------------------------------------------------------------------- controls
    def submit(self, kind: str, payload: Mapping[str, Any] | None = None) -> Control:
        """Queue a control for the loop (or apply it now when no loop runs). Bad input raises ControlError."""
        payload = dict(payload or {})
        if kind == "set":
            current = {**vars(self.train_config), **self.hp}
            payload = {"changes": validate_changes(payload.get("changes", {}), current)}
        elif kind == "rollback":
            self._find_checkpoint(payload.get("checkpoint"))
        elif kind not in ("pause", "resume", "checkpoint", "stop", "fork", "adopt"):
            raise ControlError(f"unknown control '{kind}'")
        control = Control(kind, payload)
        with self._cond:
            if self.status == STOPPED and kind != "stop":
                raise ControlError("the session is stopped; start a new one with caviar panda")
            if self._thread is not None and self._thread.is_alive():
                self._pending.append(control)
                self._cond.notify_all()
                return control
            self._apply(control)
        return control

    def pause(self) -> Control:
        return self.submit("pause")

    def resume(self) -> Control:
        return self.submit("resume")

    def set_hyperparameters(self, changes: Mapping[str, Any] | None = None, **kw: Any) -> Control:
        """Change hyperparameters from the next step on: ``set_hyperparameters(learning_rate=1e-3)``."""
        return self.submit("set", {"changes": {**(changes or {}), **kw}})

    def checkpoint(self, label: str = "") -> Control:
        return self.submit("checkpoint", {"label": label})

    def rollback(self, checkpoint: int) -> Control:
        return self.submit("rollback", {"checkpoint": checkpoint})

    def stop(self) -> Control:
        return self.submit("stop")

    def adopt(self, member: int, fork: int | None = None) -> Control:
        """Continue the session from member ``member`` of fork ``fork`` (1-based; the latest by default):
        its weights, optimizer state, counters and hyperparameters after the fork's last epoch."""
        return self.submit("adopt", {"member": member, "fork": fork})

    def fork(
        self,
        k: int = 8,
        factor: float = 2.0,
        params: list[str] | None = None,
        epochs: int | None = None,
        warm: bool = True,
        pause: bool = True,
    ) -> Control:
        """Start a population of ``k`` variants around the current values (see caviar.panda.fork)."""
        payload = check_fork_request(self, k, factor, params, epochs)
        payload.update(warm=bool(warm), pause=bool(pause))
        return self.submit("fork", payload)

    def _find_checkpoint(self, ident: Any) -> PandaCheckpoint:
        if isinstance(ident, bool) or not isinstance(ident, (int, np.integer)):
            raise ControlError(f"rollback: checkpoint id {ident!r} is not an integer")
        with self._cond:
            ckpt = self.checkpoints.get(int(ident))
            if ckpt is None:
                known = ", ".join(str(i) for i in self.checkpoints) or "none"
                raise ControlError(f"rollback: no checkpoint {ident}; known: {known}")
            return ckpt

    def _apply_pending(self) -> None:
        while self._pending:
            self._apply(self._pending.pop(0))

    def _apply(self, control: Control) -> None:
        """Apply one control (holding the lock), log it with the step it takes effect at, wake waiters."""
        try:
            control.result = getattr(self, f"_do_{control.kind}")(**control.payload)
        except CaviarError as exc:
            control.error = exc if isinstance(exc, ControlError) else ControlError(str(exc))
        except Exception as exc:  # a broken control must not kill the loop
            control.error = ControlError(f"{control.kind}: {type(exc).__name__}: {exc}")
        self.version += 1
        control.done.set()
        self._cond.notify_all()

    def _effect_step(self) -> int:
        return self.trainer.step + 1

    def _do_pause(self) -> dict[str, Any]:
        if self.status == RUNNING:
            self.status = PAUSED
        return self._log("pause", {})

    def _do_resume(self) -> dict[str, Any]:
        if self.status in (PAUSED, RUNNING):
            self.status = RUNNING
        elif self.status == FINISHED:
            raise ControlError(f"training finished its {self.total_epochs} epochs; roll back to go on")
        elif self.status == DIVERGED_STATUS:
            raise ControlError("the model diverged; roll back to a checkpoint first")
        return self._log("resume", {})

    def _do_set(self, changes: dict[str, float]) -> dict[str, Any]:
        if self.trainer.K == 0:
            raise ControlError("the model diverged; roll back to a checkpoint first")
        old = {name: self._hp[name] for name in changes}
        for name, value in changes.items():
            self.trainer.set_hyperparameter(name, value)
        self._hp = self._read_hp()
        return self._log("set", {"changes": changes, "old": old, "lr": self._lr_now()})

    def _do_checkpoint(self, label: str = "") -> dict[str, Any]:
        if self.trainer.K == 0:
            raise ControlError("the model diverged; roll back to a checkpoint first")
        ckpt = self._take_checkpoint(label or "manual", auto=False)
        return {"checkpoint": ckpt.id, "step": ckpt.step, "epoch": ckpt.epoch}

    def _do_rollback(self, checkpoint: int) -> dict[str, Any]:
        ckpt = self._find_checkpoint(checkpoint)
        from_step, from_epoch = self.trainer.step, self.trainer.epoch
        self._restore(ckpt)
        self.storage.drop_curve_after(self.trial_id, ckpt.epoch - 1)  # rows 0..epoch-1: only the kept branch stays
        self.branch = self._lineage(ckpt.id)
        for ev in self.events:  # interventions of the abandoned branch no longer hold
            if ev["step"] is not None and ev["step"] > ckpt.step and ev["kind"] in ("set", "pause", "resume"):
                ev["undone"] = True
        if self.status in (FINISHED, DIVERGED_STATUS):
            self.status = PAUSED if self.trainer.epoch < self.total_epochs else FINISHED
        self.generation += 1
        return self._log(
            "rollback",
            {
                "checkpoint": ckpt.id,
                "from_step": from_step,
                "from_epoch": from_epoch,
                "to_step": ckpt.step,
                "to_epoch": ckpt.epoch,
                "hp": dict(self._hp),
            },
        )

    def _do_stop(self) -> dict[str, Any]:
        if self.status == STOPPED:
            return {"status": STOPPED}
        result = self._log("stop", {})
        self._finish_trial()
        self.status = STOPPED
        return result

    def _do_adopt(self, member: Any, fork: Any = None) -> dict[str, Any]:
        if isinstance(member, bool) or not isinstance(member, (int, np.integer)):
            raise ControlError(f"adopt: member {member!r} is not an integer (a fork trial's number)")
        if not self.forks:
            raise ControlError("adopt: no fork yet; fork first, then adopt one of its members")
        if fork is None:
            f = self.forks[-1]
        elif isinstance(fork, bool) or not isinstance(fork, (int, np.integer)) or not 1 <= fork <= len(self.forks):
            raise ControlError(f"adopt: fork {fork!r} is not one of 1..{len(self.forks)}")
        else:
            f = self.forks[int(fork) - 1]
        final, hp, rows = f.member_start(int(member))
        if self.status == STOPPED:
            raise ControlError("the session is stopped")
        before = self._take_checkpoint("before adopt", auto=False)
        from_step, from_epoch = self.trainer.step, self.trainer.epoch
        trainer = self._new_trainer()
        trainer.replicate(final, member=int(member))
        for name, value in hp.items():
            if name in trainer.hp:
                trainer.set_hyperparameter(name, value)
        self.trainer = trainer
        start_epoch = f.ckpt.epoch
        fork_point = next((c for c in self.checkpoints.values() if c is f.ckpt), None)
        if fork_point is not None:  # the fork's steps are not drawn: the step curve ends where it began
            del self.steps[fork_point.n_steps :]
            self.ewa.v, self.ewa.t = fork_point.ewa
        del self.epochs[sum(1 for r in self.epochs if r["epoch"] < start_epoch) :]
        self.epochs.extend(clean(r) for r in rows)
        self.storage.drop_curve_after(self.trial_id, start_epoch - 1)
        if rows:
            self.storage.add_curve_rows(self.trial_id, [clean(r) for r in rows], self.worker_id)
        self._hp = self._read_hp()
        self.generation += 1  # the page reloads its curves
        self.status = PAUSED if trainer.epoch < self.total_epochs else FINISHED
        event = self._log(
            "adopt",
            {
                "study": f.name,
                "fork": self.forks.index(f) + 1,
                "member": int(member),
                "hp": dict(self._hp),
                "from_step": from_step,
                "from_epoch": from_epoch,
                "to_step": trainer.step,
                "to_epoch": trainer.epoch,
                "checkpoint_before": before.id,
            },
        )
        self._take_checkpoint("adopted", auto=False)
        return event

    def _do_fork(self, **request: Any) -> dict[str, Any]:
        if self.trainer.K == 0:
            raise ControlError("the model diverged; roll back to a checkpoint before forking")
        ckpt = self._take_checkpoint("fork", auto=False)
        fork = Fork(self, ckpt, **request)
        self.forks.append(fork)
        if request.get("pause") and self.status == RUNNING:
            self.status = PAUSED
        result = self._log("fork", {**fork.summary(), "checkpoint": ckpt.id})
        fork.start()
        return {**result, "study": fork.name, "checkpoint": ckpt.id}

    # ------------------------------------------------------------------------------- log
    def _log(self, kind: str, payload: dict[str, Any], step: int | None = None, keep: bool = True) -> dict[str, Any]:
        """Store an event (kind, payload, effect step); ``keep`` also lists it in :attr:`events` for the page
        (automatic checkpoints are stored only: the checkpoint list shows them)."""
        step = self._effect_step() if step is None else step
        payload = clean(payload)
        event_id = self.storage.add_event(self.study_id, kind, payload, trial_id=self.trial_id, step=step)
        event = {
            "id": event_id,
            "kind": kind,
            "step": step,
            "epoch": self.trainer.epoch,
            "payload": payload,
            "time": time.time(),
            "undone": False,
        }
        if keep:
            self.events.append(event)
        self.version += 1
        return dict(event)

    # ------------------------------------------------------------------------------- checkpoints
    def _take_checkpoint(self, label: str, auto: bool) -> PandaCheckpoint:
        t = self.trainer
        ckpt = PandaCheckpoint(
            id=self._next_ckpt,
            label=label,
            trainer=t.checkpoint(),
            ewa=(self.ewa.v, self.ewa.t),
            n_steps=len(self.steps),
            n_epochs=len(self.epochs),
            hp=dict(self._hp),
            created_at=time.time(),
        )
        self._next_ckpt += 1
        self.checkpoints[ckpt.id] = ckpt
        self._parent[ckpt.id] = self.branch[-1] if self.branch else None
        self.branch.append(ckpt.id)
        if auto:
            autos = [c.id for c in self.checkpoints.values() if c.label == "auto"]
            for old in autos[: max(0, len(autos) - self.keep_auto_checkpoints)]:
                del self.checkpoints[old]

        self._log(
            "checkpoint",
            {"checkpoint": ckpt.id, "label": label, "epoch": ckpt.epoch, "at_step": ckpt.step},
            keep=not auto,
        )
        return ckpt

    def _lineage(self, ckpt_id: int) -> list[int]:
        """Checkpoint ``ckpt_id`` and its predecessors, oldest first: the branch a rollback to it is on."""
        chain: list[int] = []
        node: int | None = ckpt_id
        while node is not None:
            chain.append(node)
            node = self._parent.get(node)
        return chain[::-1]

    def _restore(self, ckpt: PandaCheckpoint) -> None:
        """Put weights, optimizer, hyperparameters, counters, RNG streams, the running epoch and curves
        back as they were."""
        if self.trainer.K != 1:  # diverged: the trainer let its member go; start from a fresh one
            self.trainer = self._new_trainer()
        self.trainer.restore(ckpt.trainer)
        self.ewa.v, self.ewa.t = ckpt.ewa
        del self.steps[ckpt.n_steps :]
        del self.epochs[ckpt.n_epochs :]
        self._hp = self._read_hp()

    # ------------------------------------------------------------------------------- stepping
    def run_steps(self, n: int) -> int:
        """Synchronous mode (no loop thread): apply pending controls and train up to ``n`` steps.

        Stops early when the session is not running (paused, finished, diverged, stopped); returns the
        steps done. A paused session is resumed first: calling this is asking for steps.
        """
        if self._thread is not None and self._thread.is_alive():
            raise ControlError("run_steps is for sessions without a training thread")
        done = 0
        with self._cond:
            if self.status == PAUSED:
                self.status = RUNNING
        for _ in range(n):
            with self._cond:
                self._apply_pending()
                if self.status != RUNNING:
                    break
            self._advance()
            done += 1
        with self._cond:
            if self.status == RUNNING:
                self.status = PAUSED
        return done

    def run_epochs(self, n: int) -> int:
        """Synchronous mode: train until ``n`` more epochs have ended (or the session stops running)."""
        target = self.trainer.epoch + n
        done = 0
        while self.trainer.epoch < target and self.run_steps(1):
            done += 1
        return done

    def _advance(self) -> None:
        """One step on the trainer's next batch and its point on the curve; at an epoch's end, the epoch row."""
        t, data = self.trainer, self.data
        with self._cond:
            if not t.in_epoch:
                t.begin_epoch(len(data.y_train))
            lr = float(t.lr[0])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is reported, not warned
            loss, _ = t.train_next_batch(data.X_train, data.y_train)  # outside the lock: readers go on
        loss0 = float(loss[0]) if len(loss) else float("nan")
        with self._cond:
            self.steps.append(
                {"step": t.step, "epoch": t.epoch, "loss": loss0, "smooth": self.ewa.update(loss0), "lr": lr}
            )
            self.version += 1
            if t.K == 0 or not math.isfinite(loss0):
                self.status = DIVERGED_STATUS
                self._log("diverged", {"loss": loss0, "lr": lr}, step=t.step)
                self._cond.notify_all()
                return
            end_of_epoch = t.epoch_done
            self._cond.notify_all()
        if end_of_epoch:
            self._end_epoch()

    def _end_epoch(self) -> None:
        t, data = self.trainer, self.data
        has_val = len(data.y_val) > 0
        rows = t.end_epoch(data.X_val if has_val else None, data.y_val if has_val else None)
        if self._rows_hook is not None:  # the study's metric (a regression's: all of them) in the row
            self._rows_hook.on_epoch_end(t, rows)
        row = {**rows.get(0, {}), "step": t.step}
        with self._cond:
            self.epochs.append(row)
            self.storage.add_curve_rows(self.trial_id, [clean(row)], self.worker_id)
            self.storage.heartbeat([self.trial_id], self.worker_id)
            if self.checkpoint_every and t.epoch % self.checkpoint_every == 0:
                self._take_checkpoint("auto", auto=True)
            if t.epoch >= self.total_epochs and self.status == RUNNING:
                self.status = FINISHED
                self._log("finished", {"epochs": t.epoch})
            self._hp = self._read_hp()
            self.version += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------------------- the loop
    def start(self, paused: bool = False) -> PandaSession:
        """Train in a background thread until stopped; controls are applied between steps."""
        if self._thread is not None and self._thread.is_alive():
            return self
        with self._cond:
            if self.status == PAUSED and not paused:
                self.status = RUNNING
        self._thread = threading.Thread(target=self._loop, name=f"panda-{self.study_name}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    self._apply_pending()
                    if self.status == STOPPED:
                        return
                    if self.status != RUNNING:
                        self._cond.wait()
                        continue
                self._advance()
                if self.step_delay_s > 0:
                    with self._cond:  # a control wakes it early; the delay only throttles
                        if not self._pending:
                            self._cond.wait(self.step_delay_s)
        except Exception as exc:  # report, keep the server and the curves up
            with self._cond:
                self.status = FAILED_STATUS
                self.error = f"{type(exc).__name__}: {exc}"
                self._log("error", {"error": self.error})
                self._finish_trial()
                for c in self._pending:
                    c.error = ControlError(f"training failed: {self.error}")
                    c.done.set()
                self._pending.clear()
                self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Stop (if not stopped), wait for the loop and forks to end."""
        if self.status not in (STOPPED, FAILED_STATUS):
            self.stop().wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        for f in self.forks:
            f.join(timeout)

    def _finish_trial(self) -> None:
        """Close the session's trial in storage: COMPLETE with the last epoch's metrics, or DIVERGED/FAILED."""
        last = self.epochs[-1] if self.epochs else {}
        metrics: dict[str, Any] = {
            k: last[k] for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", *METRICS) if k in last
        }
        metrics.update(status="panda", epochs_run=len(self.epochs), steps=self.trainer.step)
        state = (
            TrialState.COMPLETE
            if self.status not in (DIVERGED_STATUS, FAILED_STATUS)
            else (TrialState.DIVERGED if self.status == DIVERGED_STATUS else TrialState.FAILED)
        )
        value = metrics.get(self.spec.search.metric)
        objective = self.spec.search.objective(value) if state == TrialState.COMPLETE and value is not None else None
        self._heartbeat.__exit__(None, None, None)
        self.storage.finish_trial(
            self.trial_id,
            self.worker_id,
            state,
            clean(metrics),
            objective,
            [clean(r) for r in self.epochs],
            error=self.error,
        )
        self.storage.set_study_status(self.study_id, StudyStatus.COMPLETE)

    def snapshot_path(self) -> Path | None:
        return self.spec.source
