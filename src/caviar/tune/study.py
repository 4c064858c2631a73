"""Tuning studies: plan trials round by round, train them as populations, keep everything in storage.

``run_study(spec)`` is the whole job. Trials are planned per round (one round for random, grid and
Sobol; several for coarse-to-fine; batches for TPE), packed into populations by static shape, and
enqueued with their population's key. Workers (this process, N processes or Ray tasks) claim one
population at a time, train it, stream its curves, and finish its trials. Everything is keyed by
trial number and population, so a study killed at any point resumes where it stood when run again.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caviar.errors import CaviarError, StorageError
from caviar.prepared import PreparedData
from caviar.tune.halving import SuccessiveHalving
from caviar.tune.planning import load_data, plan_from_record, plan_round, resolve_spec
from caviar.tune.runner import model_file_bytes, train_population
from caviar.tune.spec import StudySpec, load_spec
from caviar.tune.storage import (
    FAILED,
    RUNNING,
    WAITING,
    Storage,
    TrialEnd,
    TrialRecord,
    open_storage,
)

HEARTBEAT_EVERY_S = 5.0
STALE_AFTER_S = 60.0
MODEL_ARTIFACT = "model.npz"

Progress = Callable[[dict[str, int], "TrialRecord | None"], None]


# ------------------------------------------------------------------------------------------- study
class Study:
    """A study in storage: its spec, trials, best trial, boxes, curves and a DataFrame export."""

    def __init__(self, storage: Storage | str, study: int | str) -> None:
        self.storage = open_storage(storage)
        self.record = self.storage.get_study(study)
        self.id = self.record.id
        self.name = self.record.name

    @classmethod
    def load(cls, name: str | int, storage: Storage | str) -> Study:
        """Open an existing study by name or id."""
        return cls(storage, name)

    def refresh(self) -> Study:
        self.record = self.storage.get_study(self.id)
        return self

    @property
    def spec(self) -> StudySpec:
        return load_spec(self.record.spec)

    @property
    def trials(self) -> list[TrialRecord]:
        return self.storage.trials(self.id)

    @property
    def best_trial(self) -> TrialRecord | None:
        return self.storage.best_trial(self.id)

    @property
    def boxes(self) -> dict[int, dict[str, Any]]:
        return self.storage.boxes(self.id)

    def counts(self) -> dict[str, int]:
        return self.storage.counts(self.id)

    def curves(self, trial_ids: Sequence[int] | None = None) -> dict[int, list[dict[str, Any]]]:
        return self.storage.curves(self.id, trial_ids)

    def to_dataframe(self, states: Sequence[str] | None = None):
        """A pandas DataFrame: one row per trial, ``params_<name>`` columns and metrics."""
        return self.storage.trials_dataframe(self.id, states)

    def best_model(self):
        """The best trial's model as a fitted caviar.Classifier."""
        from caviar.model_io import load

        best = self.best_trial
        if best is None:
            raise StorageError(f"study '{self.name}' has no completed trial yet")
        if MODEL_ARTIFACT in self.storage.artifact_names(best.id):
            return load(io.BytesIO(self.storage.load_artifact(best.id, MODEL_ARTIFACT)))
        return self.retrain(best.number)  # e.g. killed between storing the trial and its model

    def retrain(self, number: int):
        """Train trial ``number`` again, alone, from the study's seed: the same weights it had.

        A member's randomness comes from (seed, trial number) and batches from the seed, so a trial
        trained alone repeats what it did in its population. Returns a fitted caviar.Classifier.
        """
        from caviar.model_io import load

        spec = self.spec
        records = {t.number: t for t in self.trials}
        if number not in records:
            raise StorageError(f"study '{self.name}' has no trial #{number}")
        plan = plan_from_record(spec, records[number])
        data = load_data(spec)
        seed = spec.search.seed or 0
        # No halving: a trial alone is never pruned, it runs the epochs it was given.
        (outcome,) = train_population([plan], data, seed=seed, metric=spec.search.metric)
        return load(io.BytesIO(model_file_bytes(plan, outcome, data, seed=seed)))

    def __repr__(self) -> str:
        return f"Study({self.name!r}, {self.counts()})"


# ----------------------------------------------------------------------------------------- workers
def new_worker_id() -> str:
    """host:pid:random, so a dead local worker can be recognized by its pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _is_dead_local(worker_id: str | None) -> bool:
    if not worker_id or worker_id.count(":") < 2:
        return False
    host, pid, _ = worker_id.rsplit(":", 2)
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def recover_zombies(storage: Storage, study_id: int, stale_after_s: float = STALE_AFTER_S) -> int:
    """Requeue RUNNING trials of workers that died (dead local pid, or a stale heartbeat)."""
    n = 0
    dead = {t.worker_id for t in storage.trials(study_id, [RUNNING]) if _is_dead_local(t.worker_id)}
    for worker in dead:
        n += storage.requeue_worker(study_id, worker)
    return n + storage.requeue_stale(study_id, stale_after_s)


class _Heartbeat:
    """Refreshes the heartbeat of the trials a worker trains, from a background thread."""

    def __init__(self, storage: Storage, trial_ids: list[int], worker_id: str) -> None:
        self.storage, self.trial_ids, self.worker_id = storage, trial_ids, worker_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            try:
                self.storage.heartbeat(self.trial_ids, self.worker_id)
            except Exception:  # a missed beat is retried; the trainer must not die of it
                continue

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class WorkerContext:
    """What a worker needs: the spec, its data and storage, and who it is."""

    spec: StudySpec
    data: PreparedData
    storage: Storage
    study_id: int
    worker_id: str


def train_claimed(ctx: WorkerContext, claimed: list[TrialRecord]) -> None:
    """Train one claimed population and finish its trials (FAILED with the error if it breaks)."""
    spec, storage = ctx.spec, ctx.storage
    by_number = {r.number: r for r in claimed}
    halving = None
    if spec.search.halving is not None:
        h = spec.search.halving
        halving = SuccessiveHalving(h.eta, h.min_epochs, spec.search.metric)

    def stream(rows: dict[int, dict]) -> None:
        storage.add_curves({by_number[number].id: [row] for number, row in rows.items()}, ctx.worker_id)

    with _Heartbeat(storage, [r.id for r in claimed], ctx.worker_id):
        try:
            plans = [plan_from_record(spec, r) for r in claimed]
            outcomes = train_population(
                plans, ctx.data, seed=spec.search.seed or 0, metric=spec.search.metric, halving=halving, on_epoch=stream
            )
        except (CaviarError, ValueError, FloatingPointError, MemoryError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            storage.finish_trials(ctx.worker_id, [TrialEnd(r.id, FAILED, error=error) for r in claimed])
            return
    ends = [
        TrialEnd(by_number[p.number].id, o.state, o.metrics, o.objective, o.curve)
        for p, o in zip(plans, outcomes, strict=True)
    ]
    accepted = storage.finish_trials(ctx.worker_id, ends)  # the whole population in one transaction
    # Asked AFTER the population is stored, with the storage's own ranking (objective, then the lower
    # number on ties): whichever trial ends up best saw itself best here, so it has its model file,
    # even when a tying lower-numbered trial of a later population, or another worker, comes second.
    if any(ok and o.objective is not None for ok, o in zip(accepted, outcomes, strict=True)):
        best = storage.best_trial(ctx.study_id)
        mine = {end.trial_id: k for k, (end, ok) in enumerate(zip(ends, accepted, strict=True)) if ok}
        if best is not None and best.id in mine:
            k = mine[best.id]
            storage.save_artifact(
                best.id, MODEL_ARTIFACT, model_file_bytes(plans[k], outcomes[k], ctx.data, seed=spec.search.seed or 0)
            )


def work(ctx: WorkerContext, on_progress: Progress | None = None) -> int:
    """Claim and train populations until none is waiting; returns how many trials this worker ran."""
    done = 0
    while True:
        claimed = ctx.storage.claim_trials(
            ctx.study_id, ctx.worker_id, limit=ctx.spec.search.max_population, same_group=True
        )
        if not claimed:
            return done
        train_claimed(ctx, claimed)
        done += len(claimed)
        if on_progress is not None:
            on_progress(ctx.storage.counts(ctx.study_id), ctx.storage.best_trial(ctx.study_id))


def _die_with_parent() -> None:
    """On Linux, end this worker when the process that started it dies (even by SIGKILL).

    Its RUNNING trials are then requeued by the next run (their worker's pid is gone), instead
    of a headless worker finishing a study nobody watches.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def _process_worker(spec_dict: dict, study_id: int, threads: int) -> None:
    """Entry point of a worker process: it loads the data itself and works until nothing waits."""
    from threadpoolctl import threadpool_limits

    _die_with_parent()
    spec = load_spec(spec_dict)
    with threadpool_limits(limits=threads):
        storage = open_storage(spec.search.storage)
        ctx = WorkerContext(spec, load_data(spec), storage, study_id, new_worker_id())
        work(ctx)


# -------------------------------------------------------------------------------------------- runs
def _run_processes(
    spec: StudySpec, study_id: int, workers: int, storage: Storage, on_progress: Progress | None, poll_s: float = 0.5
) -> None:
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_process_worker, args=(spec.to_dict(), study_id, threads), daemon=True)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=poll_s / len(procs))
            if on_progress is not None:
                on_progress(storage.counts(study_id), storage.best_trial(study_id))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()


def _run_ray(
    spec: StudySpec, study_id: int, workers: int, storage: Storage, on_progress: Progress | None, poll_s: float = 0.5
) -> None:
    """Run ``workers`` worker tasks on a Ray cluster (``search.ray_address``, or a local one).

    Each task is the same worker loop as a local process: it claims populations from the shared
    storage (which every node must reach: PostgreSQL, or SQLite on a shared disk) until none waits.
    """
    try:
        import ray
    except ImportError:
        raise CaviarError("search.executor 'ray' needs ray: pip install 'caviar[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=spec.search.ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    task = ray.remote(num_cpus=1)(_process_worker)
    pending = [task.remote(spec.to_dict(), study_id, 1) for _ in range(workers)]
    while pending:
        done, pending = ray.wait(pending, timeout=poll_s)
        ray.get(done)  # re-raise a worker's error here
        if on_progress is not None:
            on_progress(storage.counts(study_id), storage.best_trial(study_id))


def _wait_for_round(
    storage: Storage,
    study_id: int,
    numbers: list[int],
    ctx: WorkerContext,
    on_progress: Progress | None,
    poll_s: float = 1.0,
) -> None:
    """Until every trial of the round is finished: help with waiting ones, wait for others' running ones."""
    wanted = set(numbers)
    while True:
        recover_zombies(storage, study_id)
        pending = [t for t in storage.trials(study_id, [WAITING, RUNNING]) if t.number in wanted]
        if not pending:
            return
        if any(t.state == WAITING for t in pending):
            work(ctx, on_progress)
        else:
            time.sleep(poll_s)  # another process is training this round's last population


def run_study(
    spec: StudySpec | str | os.PathLike | Mapping[str, Any],
    *,
    trials: int | None = None,
    workers: int | None = None,
    storage: str | None = None,
    seed: int | None = None,
    on_progress: Progress | None = None,
) -> Study:
    """Run (or resume) the study a spec describes, and return it.

    ``trials``, ``workers``, ``storage`` and ``seed`` override the spec's ``[search]`` values.
    """
    spec = resolve_spec(spec, trials, workers, storage, seed)
    store = open_storage(spec.search.storage)
    data = load_data(spec)  # before the study is stored: a data mistake leaves the storage as it was
    study_id = store.get_or_create_study(
        spec.study.name,
        spec.to_dict(),
        seed=spec.search.seed,
        metric=spec.search.metric,
        direction="maximize" if spec.search.maximize else "minimize",
    )
    sampler = spec.sampler()
    ctx = WorkerContext(spec, data, store, study_id, new_worker_id())
    store.set_study_status(study_id, "RUNNING")
    recover_zombies(store, study_id)
    try:
        for rnd, numbers in enumerate(sampler.round_numbers(spec.search.trials)):
            plan_round(store, study_id, spec, sampler, data, rnd, numbers)
            if spec.search.executor == "ray":
                _run_ray(spec, study_id, spec.search.workers, store, on_progress)
            elif spec.search.workers > 1:
                _run_processes(spec, study_id, spec.search.workers, store, on_progress)
            _wait_for_round(store, study_id, numbers, ctx, on_progress)
    except BaseException:
        store.requeue_worker(study_id, ctx.worker_id)
        raise
    store.set_study_status(study_id, "COMPLETE")
    return Study(store, study_id)
