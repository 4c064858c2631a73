"""The study of an external objective, as its user holds it: ``optimize``, ``create_study``, ``load_study``,
and ask/tell, where the user drives the loop: ``study.ask()`` hands out a trial, ``study.tell(trial, value)`` ends it.

Any number of processes may ask and tell on one storage. ``ask`` claims a WAITING trial through the
storage work queue (planning the next trial number from the study's sampler when none waits), so two
askers never get the same trial; while a trial is out, this process sends its heartbeat, and a trial
whose asking process died is requeued and handed out again. ``tell`` finishes a RUNNING trial
once: a second tell of the same trial (from anywhere) is a one-line error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from caviar.errors import CaviarError, StorageError
from caviar.storage import Storage, TrialRecord, TrialState
from caviar.tune.objective import Objective, TrialCallback, run_objective
from caviar.tune.objective_queue import end_trial, enqueue_points, open_objective_study, pruner_for, trial_for
from caviar.tune.objective_spec import ObjectiveSpec, load_objective_spec, resolve_objective_spec
from caviar.tune.samplers import Sampler, TPESampler
from caviar.tune.space import Space
from caviar.tune.study import Study
from caviar.tune.trial import Trial
from caviar.tune.worker import HEARTBEAT_EVERY_S, Progress, new_worker_id, recover_zombies


class _Beats:
    """One background thread that keeps the heartbeat of every trial this process has asked and not told."""

    def __init__(self, storage: Storage, worker_id: str) -> None:
        self.storage, self.worker_id = storage, worker_id
        self.ids: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, trial_id: int) -> None:
        with self._lock:
            self.ids.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="caviar-ask-heartbeat")
                self._thread.start()

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            with self._lock:
                ids = sorted(self.ids)
            if not ids:
                continue
            try:
                owned = set(self.storage.heartbeat(ids, self.worker_id))
            except Exception:  # a missed beat is retried
                continue
            with self._lock:
                self.ids &= owned | (self.ids - set(ids))

    def close(self) -> None:
        self._stop.set()


def round_of_number(sampler: Sampler, budget: int, number: int) -> int:
    """The round trial ``number`` belongs to (numbers past the budget: the last round, or TPE's next batch)."""
    rounds = sampler.round_numbers(max(budget, 1))
    for i, numbers in enumerate(rounds):
        if number in numbers:
            return i
    if isinstance(sampler, TPESampler):
        return number // sampler.batch
    return max(0, len(rounds) - 1)


class ObjectiveStudy(Study):
    """A study of an external objective: ``ask``/``tell``, ``optimize``, and every reader of :class:`Study`."""

    def __init__(self, storage: Storage | str, study: int | str) -> None:
        super().__init__(storage, study)
        self.worker_id = new_worker_id()
        self._beats = _Beats(self.storage, self.worker_id)
        self._sampler: Sampler | None = None

    @property
    def spec(self) -> ObjectiveSpec:  # type: ignore[override]
        """The spec the study was stored with."""
        return load_objective_spec(self.record.spec)

    @property
    def best_value(self) -> float | None:
        """The best trial's metric, as the objective returned it (None before any completes)."""
        best = self.best_trial
        return None if best is None else best.metrics.get(self.spec.search.metric)

    @property
    def best_params(self) -> dict[str, Any] | None:
        """The best trial's parameters."""
        best = self.best_trial
        return None if best is None else dict(best.params)

    # ---- ask / tell
    def ask(self) -> Trial:
        """A trial to evaluate: a waiting one, or the next number drawn by the study's sampler; stored RUNNING."""
        spec = self.spec
        if self._sampler is None:
            self._sampler = spec.sampler()
        recover_zombies(self.storage, self.id)
        while True:
            claimed = self.storage.claim_trials(self.id, self.worker_id, limit=1)
            if claimed:
                break
            self._plan_next(spec, self._sampler)
        record = claimed[0]
        self._beats.add(record.id)
        return trial_for(spec, self.storage, record, self.worker_id)

    def _plan_next(self, spec: ObjectiveSpec, sampler: Sampler) -> None:
        """Enqueue the next trial number with the sampler's point (idempotent: another asker may win it)."""
        number = max((r.number for r in self.storage.trials(self.id)), default=-1) + 1
        rnd = round_of_number(sampler, spec.search.trials, number)
        enqueue_points(self.storage, self.id, spec, sampler, rnd, [number])

    def _record(self, trial: Trial | TrialRecord | int) -> TrialRecord:
        if isinstance(trial, (Trial, TrialRecord)):
            return self.storage.trial(trial.id)
        if isinstance(trial, bool) or not isinstance(trial, int):
            raise CaviarError(f"tell: give a trial or its number, not {trial!r}")
        found = [t for t in self.storage.trials(self.id) if t.number == trial]
        if not found:
            raise StorageError(f"study '{self.name}' has no trial #{trial}")
        return found[0]

    def tell(
        self,
        trial: Trial | TrialRecord | int,
        value: Any = None,
        *,
        state: TrialState | str | None = None,
    ) -> TrialState:
        """End a trial once: with its value (a number, or a dict holding the metric), or a ``state``.

        ``state`` is COMPLETE (the default when a value is given), PRUNED or FAILED. A value that is
        not a finite number stores the trial FAILED with the reason (returned). Telling a trial that
        was never asked, or already told, is a one-line error.
        """
        record = self._record(trial)
        if record.state == TrialState.WAITING:
            raise CaviarError(f"tell: trial #{record.number} of study '{self.name}' was never asked")
        if record.finished:
            raise CaviarError(f"tell: trial #{record.number} of study '{self.name}' was already told ({record.state})")
        wanted = None if state is None else _final_state(state)
        error = "told FAILED" if wanted == TrialState.FAILED else None
        asked = trial if isinstance(trial, Trial) else None
        worker = record.worker_id or self.worker_id
        end = end_trial(self.storage, worker, self.spec, record, value, asked, wanted, error)
        if end is None:
            now = self.storage.trial(record.id)
            raise CaviarError(f"tell: trial #{record.number} of study '{self.name}' was already told ({now.state})")
        self._beats.discard(record.id)
        if asked is not None:
            asked.close()
        return end.state

    # ---- the whole loop
    def optimize(
        self,
        objective: Objective | str,
        *,
        trials: int | None = None,
        workers: int | None = None,
        callbacks: Sequence[TrialCallback] = (),
        on_progress: Progress | None = None,
    ) -> ObjectiveStudy:
        """Run (or resume) the study's rounds with ``objective``, up to ``trials`` in all."""
        spec = resolve_objective_spec(self.record.spec, trials=trials, workers=workers, storage=None)
        run_objective(spec, objective, callbacks=callbacks, on_progress=on_progress)
        return self.refresh()  # type: ignore[return-value]

    def best_model(self):
        """An external objective trains its own models: caviar has none to hand back."""
        raise StorageError(
            f"study '{self.name}' ran an external objective; its models are the objective's "
            "(store one with trial.save_artifact and read it with storage.load_artifact)"
        )

    def retrain(self, number: int):
        """An external objective's trial is retrained by running the objective with its params."""
        raise StorageError(f"study '{self.name}' ran an external objective: run it again with trial #{number}'s params")

    def close(self) -> None:
        """Stop the heartbeat thread of asked trials."""
        self._beats.close()


def _final_state(state: TrialState | str) -> TrialState:
    try:
        value = TrialState(str(state).upper())
    except ValueError:
        value = None
    if value is None or not value.finished:
        raise CaviarError(f"tell: state {str(state)!r} is not one of COMPLETE, PRUNED, FAILED")
    if value == TrialState.DIVERGED:
        raise CaviarError("tell: state 'DIVERGED' is caviar's own; tell FAILED or PRUNED")
    return value


def create_study(
    space_or_spec: ObjectiveSpec | Space | str | os.PathLike[str] | Mapping[str, Any],
    *,
    storage: str | None = None,
    name: str | None = None,
    strategy: str | None = None,
    seed: int | None = None,
    trials: int | None = None,
    metric: str | None = None,
    direction: str | None = None,
) -> ObjectiveStudy:
    """Create (or resume) a study of an external objective, for ``ask``/``tell`` or ``optimize``."""
    spec = resolve_objective_spec(
        space_or_spec,
        trials=trials,
        storage=storage,
        strategy=strategy,
        seed=seed,
        name=name,
        metric=metric,
        direction=direction,
    )
    store, study_id = open_objective_study(spec)
    return ObjectiveStudy(store, study_id)


def optimize(
    objective: Objective | str,
    space_or_spec: ObjectiveSpec | Space | str | os.PathLike[str] | Mapping[str, Any],
    *,
    trials: int | None = None,
    storage: str | None = None,
    workers: int | None = None,
    strategy: str | None = None,
    seed: int | None = None,
    name: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    executor: str | None = None,
    callbacks: Sequence[TrialCallback] = (),
    on_progress: Progress | None = None,
) -> ObjectiveStudy:
    """Tune ``objective(trial)`` over a space (or a spec's ``[space]`` and ``[search]``); returns the study.

    ``objective`` is a function or ``"module:function"`` (what worker processes and Ray tasks import).
    ``trials``, ``storage``, ``workers``, ``strategy`` (random, sobol, grid, coarse_to_fine, tpe),
    ``seed``, ``name``, ``metric`` (what it returns, default ``value``), ``direction`` and ``executor``
    (``local`` or ``ray``) override the spec. Run again on the same storage and name, it resumes the study.
    """
    spec = resolve_objective_spec(
        space_or_spec,
        trials=trials,
        storage=storage,
        workers=workers,
        strategy=strategy,
        seed=seed,
        name=name,
        metric=metric,
        direction=direction,
        executor=executor,
    )
    store, study_id = run_objective(spec, objective, callbacks=callbacks, on_progress=on_progress)
    return ObjectiveStudy(store, study_id)


def load_study(name: str | int, storage: Storage | str) -> ObjectiveStudy:
    """Open an existing study of an external objective (for ask/tell from another process)."""
    study = ObjectiveStudy(storage, name)
    if "objective" not in study.record.spec:
        raise StorageError(f"study '{study.name}' is caviar's own (no external objective): use caviar.tune.Study")
    return study


__all__ = ["ObjectiveStudy", "create_study", "load_study", "optimize", "pruner_for"]
