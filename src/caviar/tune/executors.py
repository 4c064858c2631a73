"""Executors: who trains a round's populations. Each returns once every trial of the round is finished.

- ``local``: the process that runs the study works through the round itself.
- ``processes`` (``search.workers`` > 1): that many spawned worker processes, which die with their
  parent (Linux: ``PR_SET_PDEATHSIG``), so a killed ``caviar tune`` leaves no headless workers.
- ``ray``: that many Ray tasks on ``search.ray_address`` (or a local cluster); every node must reach
  the storage (PostgreSQL, or SQLite on a shared disk).

Every worker runs the same loop (:func:`caviar.tune.worker.work`) on the shared storage. After the
processes or tasks end, the study's own process finishes the round in process: it trains what a
dead worker left waiting and waits for populations other processes are still training.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Protocol

from caviar.errors import CaviarError
from caviar.storage import TrialState, open_storage
from caviar.tune.handoff import read_prepared, write_prepared
from caviar.tune.planning import load_data
from caviar.tune.spec import StudySpec, load_spec
from caviar.tune.worker import Progress, WorkerContext, new_worker_id, recover_zombies, work

POLL_S = 0.5  # how often progress is reported while worker processes or tasks run
ROUND_POLL_S = 1.0  # how often the study looks again at a round another process is finishing


class Executor(Protocol):
    """Trains the waiting populations of a round; returns once every trial of ``numbers`` is finished."""

    def __call__(self, ctx: WorkerContext, numbers: Sequence[int], on_progress: Progress | None) -> None: ...


def run_in_process(ctx: WorkerContext, numbers: Sequence[int], on_progress: Progress | None) -> None:
    """Until every trial of the round is finished: help with waiting ones, wait for others' running ones."""
    storage, study_id = ctx.storage, ctx.study_id
    wanted = set(numbers)
    while True:
        recover_zombies(storage, study_id)
        pending = [t for t in storage.trials(study_id, [TrialState.WAITING, TrialState.RUNNING]) if t.number in wanted]
        if not pending:
            return
        if any(t.state == TrialState.WAITING for t in pending):
            work(ctx, on_progress)
        else:
            time.sleep(ROUND_POLL_S)  # another process is training this round's last population


def run_processes(ctx: WorkerContext, numbers: Sequence[int], on_progress: Progress | None) -> None:
    """``search.workers`` spawned processes share the cores; then the round is finished in process."""
    import multiprocessing as mp

    workers, storage, study_id = ctx.spec.search.workers, ctx.storage, ctx.study_id
    threads = max(1, (os.cpu_count() or 1) // workers)
    spawn = mp.get_context("spawn")
    handoff = tempfile.TemporaryDirectory(prefix="caviar-data-")  # the data, once, memory-mapped by each worker
    data_dir = str(write_prepared(ctx.data, handoff.name))
    procs = [
        spawn.Process(target=worker_process, args=(ctx.spec.to_dict(), study_id, threads, data_dir), daemon=True)
        for _ in range(workers)
    ]
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=POLL_S / len(procs))
            if on_progress is not None:
                on_progress(storage.counts(study_id), storage.best_trial(study_id))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
        handoff.cleanup()
    run_in_process(ctx, numbers, on_progress)


def run_ray(ctx: WorkerContext, numbers: Sequence[int], on_progress: Progress | None) -> None:
    """``search.workers`` Ray tasks (one CPU each) on ``search.ray_address``; then the round is finished in process."""
    try:
        import ray
    except ImportError:
        raise CaviarError("search.executor 'ray' needs ray: pip install 'caviar[ray]'") from None
    spec, storage, study_id = ctx.spec, ctx.storage, ctx.study_id
    if not ray.is_initialized():
        ray.init(address=spec.search.ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    task = ray.remote(num_cpus=1)(worker_process)
    pending = [task.remote(spec.to_dict(), study_id, 1) for _ in range(spec.search.workers)]
    while pending:
        done, pending = ray.wait(pending, timeout=POLL_S)
        ray.get(done)  # re-raise a worker's error here
        if on_progress is not None:
            on_progress(storage.counts(study_id), storage.best_trial(study_id))
    run_in_process(ctx, numbers, on_progress)


EXECUTORS: dict[str, Executor] = {"local": run_in_process, "processes": run_processes, "ray": run_ray}


def executor_for(spec: StudySpec) -> Executor:
    """The executor ``search.executor`` names; ``local`` with ``search.workers`` > 1 means worker processes."""
    name: str = spec.search.executor
    if name == "local" and spec.search.workers > 1:
        name = "processes"
    return EXECUTORS[name]


# ------------------------------------------------------------------------------- worker processes
def worker_process(spec_dict: dict, study_id: int, threads: int, data_dir: str | None = None) -> None:
    """Entry point of a worker process or Ray task: it memory-maps the data the study's process wrote
    into ``data_dir`` (or loads it itself, without one) and works until nothing waits."""
    from threadpoolctl import threadpool_limits

    _die_with_parent()
    spec = load_spec(spec_dict)
    with threadpool_limits(limits=threads):
        storage = open_storage(spec.storage_url)
        data = read_prepared(data_dir) if data_dir is not None else load_data(spec)
        ctx = WorkerContext(spec, data, storage, study_id, new_worker_id())
        work(ctx)


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
