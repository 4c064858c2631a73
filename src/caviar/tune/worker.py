"""A worker: who it is, how it shows it is alive, and its loop (claim a population, train it, finish it).

A worker id is ``host:pid:random``, so a worker that died on this host is recognized by its pid
and its RUNNING trials requeued at once; a worker elsewhere is recognized by a stale heartbeat.
The loop is the same in the process that runs the study, in worker processes and in Ray tasks.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from caviar.errors import CaviarError, StorageError
from caviar.metrics import is_maximized
from caviar.prepared import PreparedData
from caviar.storage import Storage, TrialEnd, TrialRecord, TrialState
from caviar.tune.asha import AsynchronousHalving, halving_for
from caviar.tune.pbt import pbt_callback
from caviar.tune.planning import plan_from_record
from caviar.tune.runner import model_file_bytes, train_population
from caviar.tune.spec import StudySpec

HEARTBEAT_EVERY_S = 5.0
STALE_AFTER_S = 60.0
MODEL_ARTIFACT = "model.npz"

#: Called after each population with the study's counts per state and its best trial. A progress
#: callback that also has an ``on_epoch(PopulationEpoch)`` method hears every epoch end of the
#: populations this process trains (worker processes' epochs are in storage's curves).
Progress = Callable[[dict[TrialState, int], "TrialRecord | None"], None]


@dataclass(frozen=True)
class PopulationEpoch:
    """One epoch end of a population this worker trains, for a live display."""

    numbers: tuple[int, ...]  # the population's trial numbers
    epoch: int  # epochs done, 1 to ``epochs``
    epochs: int  # the epochs its trials were given
    members_left: int  # members that trained this epoch
    best: float | None  # the best ``metric`` among this epoch's rows
    metric: str


def best_of(rows: Iterable[Mapping[str, Any]], metric: str) -> float | None:
    """The best finite ``metric`` among curve rows (the larger, or the smaller for a loss)."""
    values = [float(v) for r in rows if isinstance(v := r.get(metric), (int, float)) and math.isfinite(v)]
    if not values:
        return None
    return max(values) if is_maximized(metric) else min(values)


# ----------------------------------------------------------------------------------------- liveness
def new_worker_id() -> str:
    """host:pid:random, so a dead local worker can be recognized by its pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def is_dead_local(worker_id: str) -> bool:
    """Whether ``worker_id`` names a process of this host that no longer exists."""
    if worker_id.count(":") < 2:
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
    dead = {w for t in storage.trials(study_id, [TrialState.RUNNING]) if (w := t.worker_id) and is_dead_local(w)}
    for worker in dead:
        n += storage.requeue_worker(study_id, worker)
    return n + storage.requeue_stale(study_id, stale_after_s)


class Heartbeat:
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

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------- loop
@dataclass
class WorkerContext:
    """What a worker needs: the spec, its data and storage, and who it is."""

    spec: StudySpec
    data: PreparedData
    storage: Storage
    study_id: int
    worker_id: str


def train_claimed(
    ctx: WorkerContext, claimed: list[TrialRecord], on_epoch: Callable[[PopulationEpoch], None] | None = None
) -> None:
    """Train one claimed population and finish its trials (FAILED with the error if it breaks);
    ``on_epoch`` hears each of its epoch ends."""
    spec, storage = ctx.spec, ctx.storage
    by_number = {r.number: r for r in claimed}
    halving = halving_for(spec, storage, ctx.study_id, min(by_number))

    numbers = tuple(sorted(by_number))
    metric = spec.search.metric

    def stream(rows: dict[int, dict]) -> None:
        storage.add_curves({by_number[number].id: [row] for number, row in rows.items()}, ctx.worker_id)
        if on_epoch is not None and rows:
            epoch = 1 + max(int(r["epoch"]) for r in rows.values())
            on_epoch(PopulationEpoch(numbers, epoch, epochs, len(rows), best_of(rows.values(), metric), metric))

    with Heartbeat(storage, [r.id for r in claimed], ctx.worker_id):
        try:
            plans = [plan_from_record(spec, r) for r in claimed]
            epochs = max(p.train.epochs for p in plans)
            pbt = pbt_callback(spec, plans)
            extra: dict[str, Any] = {} if pbt is None else {"callbacks": [pbt]}
            outcomes = train_population(
                plans,
                ctx.data,
                seed=spec.search.seed or 0,
                metric=spec.search.metric,
                halving=halving,
                on_epoch=stream,
                **extra,
            )
            if pbt is not None:
                for k, outcome in enumerate(outcomes):
                    outcome.metrics.update(pbt.record(k))
            if isinstance(halving, AsynchronousHalving):  # its rung decisions, stored with each trial
                for outcome in outcomes:
                    outcome.metrics.update(halving.record(outcome.number))
        except StorageError:
            raise  # the storage, not the trial, failed (past its retries): the trials stay to be requeued
        except (CaviarError, ValueError, FloatingPointError, MemoryError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            storage.finish_trials(ctx.worker_id, [TrialEnd(r.id, TrialState.FAILED, error=error) for r in claimed])
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
        train_claimed(ctx, claimed, getattr(on_progress, "on_epoch", None))
        done += len(claimed)
        if on_progress is not None:
            on_progress(ctx.storage.counts(ctx.study_id), ctx.storage.best_trial(ctx.study_id))
