"""Running the user's own training code: the study's rounds, in this process, worker processes or Ray tasks.

``objective(trial)`` reads ``trial.params`` (drawn by caviar's samplers on each parameter's scale),
may ``trial.report(epoch, **metrics)`` each epoch and ask ``trial.should_stop()``, and returns the
metric (or a dict holding it). The study runs the way caviar's own do: per round, the sampler's
trials are enqueued in storage; workers (this process, ``workers`` spawned processes that die with
their parent, or Ray tasks) claim one trial at a time through the storage work queue, with
heartbeats, run the objective and finish the trial. A study killed at any point resumes when run
again: a trial whose process died is requeued and run again, and a trial is never finished twice.
The user's entry points (``optimize``, ``create_study``) are in :mod:`caviar.tune.asktell`.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import pickle
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caviar.errors import CaviarError, SpecError
from caviar.storage import Storage, StudyStatus, TrialRecord, TrialState, open_storage
from caviar.tune.executors import (
    RAY_RETRIES,
    connect_ray,
    die_with_parent,
    drive_processes,
    drive_ray_tasks,
    import_ray,
    requeue_slot,
    until_finished,
)
from caviar.tune.objective_queue import end_trial, enqueue_points, open_objective_study, trial_for
from caviar.tune.objective_spec import ObjectiveSpec, check_target, load_objective_spec
from caviar.tune.trial import Trial, TrialPruned, error_line
from caviar.tune.worker import Heartbeat, Progress, new_worker_id, recover_zombies

Objective = Callable[[Trial], Any]
#: Called in the process that ran it after each trial is stored: ``callback(storage, trial_record)``.
TrialCallback = Callable[[Storage, TrialRecord], None]

ROUND_POLL_S = 0.5  # how often a round another process is finishing is looked at again


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


def run_trial(ctx: ObjectiveContext, record: TrialRecord) -> TrialState | None:
    """Run the objective on one claimed trial and finish it; the state stored (None: no longer ours).

    An exception, or a return value that is not a finite number, ends it FAILED with a one-line
    reason; the study goes on. KeyboardInterrupt and SystemExit go up (the trial is requeued).
    """
    storage = ctx.storage
    trial = trial_for(ctx.spec, storage, record, ctx.worker_id)
    returned: Any = None
    state: TrialState | None = None
    error: str | None = None
    with Heartbeat(storage, [record.id], ctx.worker_id):
        try:
            returned = ctx.objective(trial)
        except TrialPruned:
            state = TrialState.PRUNED
        except Exception as exc:  # the user's code: any error ends this trial, not the study
            state, error = TrialState.FAILED, error_line(exc)
        finally:
            trial.close()
    end = end_trial(storage, ctx.worker_id, ctx.spec, record, returned, trial, state, error)
    if end is None:
        return None
    if ctx.callbacks:
        finished = storage.trial(record.id)
        for callback in ctx.callbacks:
            callback(storage, finished)
    return end.state


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
def finish_round(ctx: ObjectiveContext, numbers: Sequence[int], on_progress: Progress | None) -> None:
    """Until every trial of the round is finished: run waiting ones, wait for others' running ones."""
    until_finished(ctx.storage, ctx.study_id, numbers, lambda: work_trials(ctx, on_progress), ROUND_POLL_S)


def run_worker_processes(
    ctx: ObjectiveContext, target: Objective | str, numbers: Sequence[int], on_progress: Progress | None
) -> None:
    """``search.workers`` spawned processes (dying with this one) share the round; then it is finished here."""
    workers = ctx.spec.search.workers
    threads = max(1, (os.cpu_count() or 1) // workers)
    spawn = mp.get_context("spawn")
    args = (ctx.spec.to_dict(), ctx.study_id, target, search_paths(ctx.spec), threads, tuple(ctx.callbacks))
    procs = [spawn.Process(target=objective_worker, args=args, daemon=True) for _ in range(workers)]
    drive_processes(procs, ctx.storage, ctx.study_id, on_progress)
    finish_round(ctx, numbers, on_progress)


def run_ray_tasks(
    ctx: ObjectiveContext, target: Objective | str, numbers: Sequence[int], on_progress: Progress | None
) -> None:
    """``search.workers`` Ray tasks (one CPU each) on ``search.ray_address`` share the round; then it is
    finished here. A task whose process or node died is run again by Ray, and its new attempt first
    requeues what the lost one held (its slot), so a trial is never finished twice."""
    ray = import_ray()
    connect_ray(ray, ctx.spec.search.ray_address)
    task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES, retry_exceptions=False)(objective_ray_task)
    # the driver's import path goes along: on this machine's cluster the objective's module is found as here
    paths = [*search_paths(ctx.spec), *(p for p in sys.path if p)]
    args = (ctx.spec.to_dict(), ctx.study_id, target, paths)
    callbacks = tuple(ctx.callbacks)
    start = lambda slot: task.remote(*args, slot, callbacks)  # noqa: E731
    drive_ray_tasks(ray, ctx.storage, ctx.study_id, ctx.spec.search.workers, start, numbers, on_progress)
    finish_round(ctx, numbers, on_progress)


def _worker_context(
    spec_dict: dict[str, Any],
    study_id: int,
    target: Objective | str,
    paths: Sequence[str],
    worker_id: str,
    callbacks: Sequence[TrialCallback],
) -> ObjectiveContext:
    spec = load_objective_spec(spec_dict)
    objective = resolve_target(target, paths) if isinstance(target, str) else target
    storage = open_storage(str(spec.search.storage))
    return ObjectiveContext(spec, storage, study_id, worker_id, objective, callbacks)


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

    die_with_parent()
    ctx = _worker_context(spec_dict, study_id, target, paths, new_worker_id(), callbacks)
    if "torch" in sys.modules:  # one thread per process: the workers share the cores
        sys.modules["torch"].set_num_threads(threads)
    with threadpool_limits(limits=threads):
        work_trials(ctx)


def objective_ray_task(
    spec_dict: dict[str, Any],
    study_id: int,
    target: Objective | str,
    paths: Sequence[str],
    slot: str,
    callbacks: Sequence[TrialCallback] = (),
) -> None:
    """A Ray task: requeue what an earlier attempt of this slot held, then run trials until none waits."""
    from threadpoolctl import threadpool_limits

    worker_id = f"{socket.gethostname()}:{os.getpid()}:{slot}"
    ctx = _worker_context(spec_dict, study_id, target, paths, worker_id, callbacks)
    requeue_slot(ctx.storage, study_id, slot, keep=worker_id)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    with threadpool_limits(limits=1):
        work_trials(ctx)


def run_objective(
    spec: ObjectiveSpec,
    objective: Objective | str,
    *,
    callbacks: Sequence[TrialCallback] = (),
    on_progress: Progress | None = None,
) -> tuple[Storage, int]:
    """Run (or resume) the study: per round, enqueue the sampler's trials, then run them to the end.

    ``[search] executor = "ray"`` runs them as Ray tasks (the cluster is joined before anything is
    stored); ``workers`` > 1 as worker processes; else in this process.
    """
    search = spec.search
    func = resolve_target(objective, search_paths(spec)) if isinstance(objective, str) else objective
    remote = search.executor == "ray" or search.workers > 1
    target = portable(objective) if remote else objective
    if search.executor == "ray":
        connect_ray(import_ray(), search.ray_address)
    store, study_id = open_objective_study(spec)
    ctx = ObjectiveContext(spec, store, study_id, new_worker_id(), func, tuple(callbacks))
    sampler = spec.sampler()
    store.set_study_status(study_id, StudyStatus.RUNNING)
    recover_zombies(store, study_id)
    try:
        for rnd, numbers in enumerate(sampler.round_numbers(search.trials)):
            enqueue_points(store, study_id, spec, sampler, rnd, numbers)
            if search.executor == "ray":
                run_ray_tasks(ctx, target, numbers, on_progress)
            elif search.workers > 1:
                run_worker_processes(ctx, target, numbers, on_progress)
            else:
                finish_round(ctx, numbers, on_progress)
    except BaseException:
        store.requeue_worker(study_id, ctx.worker_id)
        raise
    store.set_study_status(study_id, StudyStatus.COMPLETE)
    return store, study_id
