"""Tuning the user's own training code: ``optimize(objective, space_or_spec, ...)``.

``objective(trial)`` reads ``trial.params`` (drawn by caviar's samplers on each parameter's scale),
may ``trial.report(epoch, **metrics)`` each epoch and ask ``trial.should_stop()``, and returns the
metric (or a dict holding it). The study runs the way caviar's own do: per round, the sampler's
trials are enqueued in storage; workers (this process, or ``workers`` spawned processes that die with
their parent) claim one trial at a time through the storage work queue, with heartbeats, run the
objective and finish the trial. A study killed at any point resumes when run again: a trial whose
process died is requeued and run again, and a trial is never finished twice.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import pickle
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caviar.errors import CaviarError, SpecError
from caviar.storage import Storage, StudyStatus, TrialEnd, TrialRecord, TrialState, open_storage
from caviar.tune.objective_spec import ObjectiveSpec, check_target, load_objective_spec
from caviar.tune.planning import observations
from caviar.tune.pruning import Pruner
from caviar.tune.samplers import Sampler
from caviar.tune.space import Space
from caviar.tune.spec import NONMATERIAL_SPEC_KEYS, spec_diff
from caviar.tune.trial import Trial, TrialPruned, error_line, outcome_of
from caviar.tune.worker import Heartbeat, Progress, new_worker_id, recover_zombies

if TYPE_CHECKING:
    from caviar.tune.asktell import ObjectiveStudy

Objective = Callable[[Trial], Any]
#: Called in the process that ran it after each trial is stored: ``callback(storage, trial_record)``.
TrialCallback = Callable[[Storage, TrialRecord], None]

POLL_S = 0.5  # how often progress is reported while worker processes run
ROUND_POLL_S = 0.5  # how often a round another process is finishing is looked at again
#: Spec keys that may differ when a study is resumed (besides the budget and execution settings).
RESUMABLE_KEYS = NONMATERIAL_SPEC_KEYS | {"target"}


def stored_spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What makes two objective specs different experiments (the objective's import path does not)."""
    return spec_diff(old, new, RESUMABLE_KEYS)


# ------------------------------------------------------------------------------------------ the spec
def resolve_objective_spec(
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
    target: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> ObjectiveSpec:
    """An objective's spec from a spec (file, dict, ObjectiveSpec) or a bare space (Space or table), with overrides.

    A mapping with a ``space`` key is a spec; any other mapping is a ``[space]`` table.
    """
    overrides: dict[str, Any] = dict(settings or {})
    for key, value in (
        ("search.trials", trials),
        ("search.workers", workers),
        ("search.strategy", strategy),
        ("study.name", name),
        ("search.metric", metric),
        ("search.direction", direction),
        ("objective.target", target),
    ):
        if value is not None:
            overrides[key] = value
    if storage is not None:
        overrides["search.storage"] = storage if "://" in storage else str(Path(storage).resolve())
    if seed is not None:
        overrides["study.seed"] = seed
        overrides["search.seed"] = seed
    source: str | os.PathLike[str] | Mapping[str, Any]
    if isinstance(space_or_spec, ObjectiveSpec):
        if not overrides:
            return space_or_spec
        source = space_or_spec.to_dict()
    elif isinstance(space_or_spec, Space):
        source = {"space": space_or_spec.as_dict()}
    elif isinstance(space_or_spec, Mapping):
        source = dict(space_or_spec) if "space" in space_or_spec else {"space": dict(space_or_spec)}
    else:
        source = space_or_spec
    return load_objective_spec(source, overrides or None)


def pruner_for(spec: ObjectiveSpec) -> Pruner | None:
    """The rule ``trial.should_stop()`` answers from: ``[search.halving]``, ``[search.median]`` or none."""
    s = spec.search
    sign = 1.0 if s.maximize else -1.0
    if s.halving is not None:
        return Pruner("halving", s.metric, sign, eta=s.halving.eta, min_epochs=s.halving.min_epochs)
    if s.median is not None:
        m = s.median
        return Pruner("median", s.metric, sign, startup_trials=m.startup_trials, warmup_epochs=m.warmup_epochs)
    return None


# ------------------------------------------------------------------------------------------ the objective
def search_paths(spec: ObjectiveSpec | None = None) -> list[str]:
    """Where ``module:function`` is imported from: the spec's folder, then the working directory."""
    paths = [str(spec.source.parent)] if spec is not None and spec.source is not None else []
    return [*paths, os.getcwd()]


def resolve_target(target: str, paths: Sequence[str] = ()) -> Objective:
    """Import ``module:function`` (the module found on ``paths`` or sys.path); one-line errors."""
    check_target(target)
    module_name, _, attr = target.partition(":")
    for p in reversed(list(paths)):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        where = ", ".join(paths) or "sys.path"
        raise SpecError(f"--objective {target}: cannot import {module_name!r} ({exc}); looked in {where}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(f"--objective {target}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError(f"--objective {target}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj


def portable(objective: Objective | str) -> Objective | str:
    """What worker processes get: ``module:function`` text, or the function when pickle can send it."""
    if isinstance(objective, str):
        return check_target(objective)
    module, qualname = getattr(objective, "__module__", None), getattr(objective, "__qualname__", "")
    if module and module != "__main__" and "<" not in qualname:
        return f"{module}:{qualname}"
    try:
        pickle.dumps(objective)
    except (pickle.PicklingError, AttributeError, TypeError):
        raise CaviarError(
            "worker processes cannot import this objective (a lambda or a function defined inside another); "
            "define it at the top of a module and pass it, or 'module:function'"
        ) from None
    return objective


# ------------------------------------------------------------------------------------------ one trial
@dataclass
class ObjectiveContext:
    """What a worker needs: the spec, storage and study, who it is, the objective and its callbacks."""

    spec: ObjectiveSpec
    storage: Storage
    study_id: int
    worker_id: str
    objective: Objective
    callbacks: Sequence[TrialCallback] = field(default_factory=tuple)

    def trial(self, record: TrialRecord) -> Trial:
        """The Trial object the objective gets for a claimed record."""
        name, metric, pruner = self.spec.study.name or "", self.spec.search.metric, pruner_for(self.spec)
        return Trial(self.storage, record, self.worker_id, study_name=name, metric=metric, pruner=pruner)


def run_trial(ctx: ObjectiveContext, record: TrialRecord) -> TrialState | None:
    """Run the objective on one claimed trial and finish it; the state stored (None: no longer ours).

    An exception, or a return value that is not a finite number, ends it FAILED with a one-line
    reason; the study goes on. KeyboardInterrupt and SystemExit go up (the trial is requeued).
    """
    storage, search = ctx.storage, ctx.spec.search
    trial = ctx.trial(record)
    with Heartbeat(storage, [record.id], ctx.worker_id):
        try:
            returned = ctx.objective(trial)
            state, metrics, objective, error = outcome_of(
                returned, search.metric, search.maximize, trial.stop_reason, len(trial.rows)
            )
        except TrialPruned:
            state, metrics, objective, error = TrialState.PRUNED, {}, None, None
        except Exception as exc:  # the user's code: any error ends this trial, not the study
            state, metrics, objective, error = TrialState.FAILED, {}, None, error_line(exc)
        finally:
            trial.close()
    end = TrialEnd(record.id, state, metrics, objective, trial.rows, error)
    if not storage.finish_trials(ctx.worker_id, [end])[0]:
        return None
    if ctx.callbacks:
        finished = storage.trial(record.id)
        for callback in ctx.callbacks:
            callback(storage, finished)
    return state


def work_trials(ctx: ObjectiveContext, on_progress: Progress | None = None) -> int:
    """Claim and run trials one at a time until none is waiting; returns how many this worker ran."""
    done = 0
    while True:
        claimed = ctx.storage.claim_trials(ctx.study_id, ctx.worker_id, limit=1)
        if not claimed:
            return done
        run_trial(ctx, claimed[0])
        done += 1
        if on_progress is not None:
            on_progress(ctx.storage.counts(ctx.study_id), ctx.storage.best_trial(ctx.study_id))


# ------------------------------------------------------------------------------------------ rounds
def enqueue_round(
    storage: Storage, study_id: int, spec: ObjectiveSpec, sampler: Sampler, rnd: int, numbers: Sequence[int]
) -> None:
    """Enqueue round ``rnd``'s trials that are not stored yet (idempotent), and store its box.

    The sampler proposes the whole round from the finished trials of earlier rounds, so a resumed
    round gets the same points as a fresh one.
    """
    records = storage.trials(study_id)
    have = {r.number for r in records}
    if all(n in have for n in numbers):
        return
    history = [o for o in observations(records) if o.round is None or o.round < rnd]
    box = sampler.round_box(rnd, history)
    if box is not None:
        storage.add_box(study_id, rnd, box.as_dict())
    units = sampler.propose(numbers, history)
    items = [
        {
            "number": int(n),
            "params": spec.space.decode(u),
            "unit": [float(x) for x in u],
            "round": rnd,
            "seed": spec.search.seed,
        }
        for n, u in zip(numbers, units, strict=True)
        if n not in have
    ]
    storage.enqueue_trials(study_id, items)


def finish_round(ctx: ObjectiveContext, numbers: Sequence[int], on_progress: Progress | None) -> None:
    """Until every trial of the round is finished: run waiting ones, wait for others' running ones."""
    storage, study_id, wanted = ctx.storage, ctx.study_id, set(numbers)
    while True:
        recover_zombies(storage, study_id)
        pending = [t for t in storage.trials(study_id, [TrialState.WAITING, TrialState.RUNNING]) if t.number in wanted]
        if not pending:
            return
        if any(t.state == TrialState.WAITING for t in pending):
            work_trials(ctx, on_progress)
        else:
            time.sleep(ROUND_POLL_S)  # another process is running this round's last trials


def run_worker_processes(
    ctx: ObjectiveContext, target: Objective | str, numbers: Sequence[int], on_progress: Progress | None
) -> None:
    """``search.workers`` spawned processes (dying with this one) share the round; then it is finished here."""
    workers = ctx.spec.search.workers
    threads = max(1, (os.cpu_count() or 1) // workers)
    spawn = mp.get_context("spawn")
    args = (ctx.spec.to_dict(), ctx.study_id, target, search_paths(ctx.spec), threads, tuple(ctx.callbacks))
    procs = [spawn.Process(target=objective_worker, args=args, daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=POLL_S / len(procs))
            if on_progress is not None:
                on_progress(ctx.storage.counts(ctx.study_id), ctx.storage.best_trial(ctx.study_id))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
    finish_round(ctx, numbers, on_progress)


def objective_worker(
    spec_dict: dict[str, Any],
    study_id: int,
    target: Objective | str,
    paths: Sequence[str],
    threads: int,
    callbacks: Sequence[TrialCallback] = (),
) -> None:
    """Entry point of a worker process: import the objective, then run trials until none waits."""
    from threadpoolctl import threadpool_limits

    from caviar.tune.executors import _die_with_parent

    _die_with_parent()
    spec = load_objective_spec(spec_dict)
    objective = resolve_target(target, paths) if isinstance(target, str) else target
    if "torch" in sys.modules:  # one thread per process: the workers share the cores
        sys.modules["torch"].set_num_threads(threads)
    with threadpool_limits(limits=threads):
        storage = open_storage(str(spec.search.storage))
        work_trials(ObjectiveContext(spec, storage, study_id, new_worker_id(), objective, callbacks))


# ------------------------------------------------------------------------------------------ a study
def open_objective_study(spec: ObjectiveSpec, storage: Storage | None = None) -> tuple[Storage, int]:
    """Create the spec's study, or resume it (a different experiment under the same name is refused)."""
    store = storage if storage is not None else open_storage(str(spec.search.storage))
    study_id = store.get_or_create_study(
        spec.study.name or "objective",
        spec.to_dict(),
        seed=spec.search.seed,
        metric=spec.search.metric,
        direction="maximize" if spec.search.maximize else "minimize",
        differs=stored_spec_diff,
    )
    return store, study_id


def run_objective(
    spec: ObjectiveSpec,
    objective: Objective | str,
    *,
    callbacks: Sequence[TrialCallback] = (),
    on_progress: Progress | None = None,
) -> tuple[Storage, int]:
    """Run (or resume) the study: per round, enqueue the sampler's trials, then run them to the end."""
    func = resolve_target(objective, search_paths(spec)) if isinstance(objective, str) else objective
    target = portable(objective) if spec.search.workers > 1 else objective
    store, study_id = open_objective_study(spec)
    ctx = ObjectiveContext(spec, store, study_id, new_worker_id(), func, tuple(callbacks))
    sampler = spec.sampler()
    store.set_study_status(study_id, StudyStatus.RUNNING)
    recover_zombies(store, study_id)
    try:
        for rnd, numbers in enumerate(sampler.round_numbers(spec.search.trials)):
            enqueue_round(store, study_id, spec, sampler, rnd, numbers)
            if spec.search.workers > 1:
                run_worker_processes(ctx, target, numbers, on_progress)
            else:
                finish_round(ctx, numbers, on_progress)
    except BaseException:
        store.requeue_worker(study_id, ctx.worker_id)
        raise
    store.set_study_status(study_id, StudyStatus.COMPLETE)
    return store, study_id


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
    callbacks: Sequence[TrialCallback] = (),
    on_progress: Progress | None = None,
) -> ObjectiveStudy:
    """Tune ``objective(trial)`` over a space (or a spec's ``[space]`` and ``[search]``); returns the study.

    ``objective`` is a function or ``"module:function"`` (what ``workers`` > 1 processes import).
    ``trials``, ``storage``, ``workers``, ``strategy`` (random, sobol, grid, coarse_to_fine, tpe),
    ``seed``, ``name``, ``metric`` (what it returns, default ``value``) and ``direction`` override the
    spec. Run again on the same storage and name, it resumes the study.
    """
    from caviar.tune.asktell import ObjectiveStudy

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
    )
    store, study_id = run_objective(spec, objective, callbacks=callbacks, on_progress=on_progress)
    return ObjectiveStudy(store, study_id)
