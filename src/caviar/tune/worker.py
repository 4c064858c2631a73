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
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from threadpoolctl import threadpool_limits

from caviar.errors import CaviarError, StorageError
from caviar.metrics import is_maximized
from caviar.prepared import PreparedData
from caviar.storage import Storage, TrialEnd, TrialRecord, TrialState, open_storage
from caviar.train.trainer import blas_threads
from caviar.tune.asha import AsynchronousHalving, halving_for, is_asynchronous
from caviar.tune.forked import can_fork, end_helpers, start_helpers
from caviar.tune.pbt import pbt_callback
from caviar.tune.planning import plan_from_record
from caviar.tune.population import TrialPlan
from caviar.tune.runner import load_kernels, model_file_bytes, population_architecture, train_population
from caviar.tune.spec import StudySpec

HEARTBEAT_EVERY_S = 5.0
STALE_AFTER_S = 60.0
MODEL_ARTIFACT = "model.npz"
#: A population's curve rows are written at its first epoch end, then at most this often, and at its
#: end: a write transaction per epoch cost a small population more than training it (~1.7 ms each,
#: 20 epochs x 8 populations of a 64-trial study); the live views see the rows at most this late.
CURVE_WRITE_EVERY_S = 0.5
#: How often the display hears of the study's counts (and reads the helpers' curves) while it trains.
REPORT_EVERY_S = 0.5

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
    #: False once a forked helper of this process died: the rest of the study trains without helpers
    #: (a helper that keeps dying, out of memory say, would otherwise be forked again and again)
    may_fork: bool = True


class _CurveWriter:
    """Curve rows of one population's trials, buffered and written at most every ``every_s``."""

    def __init__(self, storage: Storage, worker_id: str, every_s: float = CURVE_WRITE_EVERY_S) -> None:
        self.storage = storage
        self.worker_id = worker_id
        self.every_s = every_s
        self.pending: dict[int, list[dict]] = {}
        self.written_at = -math.inf  # the first epoch is written at once

    def add(self, rows_by_trial: Mapping[int, dict]) -> None:
        for trial_id, row in rows_by_trial.items():
            self.pending.setdefault(trial_id, []).append(row)
        if time.monotonic() - self.written_at >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.storage.add_curves(self.pending, self.worker_id)
            self.pending = {}
        self.written_at = time.monotonic()


def train_claimed(
    ctx: WorkerContext,
    claimed: list[TrialRecord],
    on_epoch: Callable[[PopulationEpoch], None] | None = None,
    threads: int | Callable[[], int] | None = None,
) -> None:
    """Train one claimed population and finish its trials (FAILED with the error if it breaks);
    ``on_epoch`` hears each of its epoch ends; ``threads`` as ``train_population``'s."""
    spec, storage = ctx.spec, ctx.storage
    by_number = {r.number: r for r in claimed}
    halving = halving_for(spec, storage, ctx.study_id, min(by_number))

    numbers = tuple(sorted(by_number))
    metric = spec.search.metric

    curves = _CurveWriter(storage, ctx.worker_id)

    def stream(rows: dict[int, dict]) -> None:
        curves.add({by_number[number].id: row for number, row in rows.items()})
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
                threads=threads,
                **extra,
            )
            curves.flush()  # every epoch stored before the trials end
            if pbt is not None:
                for k, outcome in enumerate(outcomes):
                    outcome.metrics.update(pbt.record(k))
            if isinstance(halving, AsynchronousHalving):  # its rung decisions, stored with each trial
                for outcome in outcomes:
                    outcome.metrics.update(halving.record(outcome.number))
        except StorageError:
            raise  # the storage, not the trial, failed (past its retries): the trials stay to be requeued
        except (CaviarError, ValueError, FloatingPointError, MemoryError) as exc:
            curves.flush()  # the epochs it trained stay to be seen beside the error
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


def work(ctx: WorkerContext, on_progress: Progress | None = None, helpers: bool = False) -> int:
    """Claim and train populations until none is waiting; returns how many trials this worker ran.

    With more cores than one (``concurrent_slots``) and at least two populations waiting, populations
    train side by side, one per core: with ``helpers`` (the study's own process, on Linux) in processes
    forked beside this one (``caviar.tune.forked``), else on threads. Each trains on the cores it has to
    itself: one while the others train, all of them once it is the last one left (its slices then run
    side by side, ``caviar.train.trainer.splits_across_threads``), from its next epoch on. A single
    population trains here on every core. Either way each trial's numbers are the same (a member's
    result does not depend on its population, nor on the process or threads that train it)."""
    slots = concurrent_slots(ctx.spec, ctx.storage)
    if slots < 2:
        return _work_alone(ctx, on_progress)
    if helpers and ctx.may_fork and can_fork() and _worth_helpers(ctx, slots):
        return _work_beside_helpers(ctx, on_progress, slots)
    return _work_side_by_side(ctx, on_progress, slots)


def _work_alone(
    ctx: WorkerContext,
    on_progress: Progress | None = None,
    threads: int | Callable[[], int] | None = None,
    claim: Callable[[WorkerContext], list[TrialRecord]] | None = None,
) -> int:
    """``work`` one population at a time, each on ``threads`` (None: every BLAS thread); ``claim`` picks
    the next (None: the one of the lowest trial number)."""
    claim = _claim if claim is None else claim
    done = 0
    while claimed := claim(ctx):
        train_claimed(ctx, claimed, getattr(on_progress, "on_epoch", None), threads=threads)
        done += len(claimed)
        _report(ctx, on_progress)
    return done


def _worth_helpers(ctx: WorkerContext, cores: int) -> bool:
    """Whether helpers would have work: two populations or more wait, or one that is shared between
    the cores (``_share_of``)."""
    groups = {t.group_key for t in ctx.storage.trials(ctx.study_id, [TrialState.WAITING])}
    if len(groups) != 1 or None in groups:
        return len(groups) >= 2
    share, size = _share_of(ctx, str(groups.pop()), cores)
    return share < size


def _work_beside_helpers(ctx: WorkerContext, on_progress: Progress | None, slots: int) -> int:
    """``work`` here, beside ``slots - 1`` forked helpers doing the same on the same queue.

    The helpers' epochs reach the display through storage (its curves): ``on_progress`` runs at this
    process's epoch ends too, at most every ``REPORT_EVERY_S``. Once they end, the trials of one that
    died are requeued (and trained by the round's loop, ``caviar.tune.executors.until_finished``)."""
    _load_kernels(ctx)  # once, here: the helpers inherit them instead of each loading them again
    helpers = start_helpers(slots - 1, _helper, (ctx, slots))
    hear = getattr(on_progress, "on_epoch", None)
    reported = [time.monotonic()]

    def on_epoch(ev: PopulationEpoch) -> None:
        if hear is not None:
            hear(ev)
        if on_progress is not None and time.monotonic() - reported[0] >= REPORT_EVERY_S:
            reported[0] = time.monotonic()
            _report(ctx, on_progress)

    def share() -> int:
        """This process's threads: the cores the helpers still training leave."""
        return max(1, slots - sum(h.is_alive() for h in helpers))

    try:
        done = 0
        per_member: dict[str, float] = {}
        while claimed := _claim_longest(ctx, slots, per_member):
            train_claimed(ctx, claimed, on_epoch, threads=share)
            done += len(claimed)
            _report(ctx, on_progress)
        while any(h.is_alive() for h in helpers):  # the helpers' last populations
            for h in helpers:
                h.join(REPORT_EVERY_S / len(helpers))
            _report(ctx, on_progress)
        return done
    finally:
        end_helpers(helpers, timeout_s=0)  # on an error or Ctrl-C here: they end with this call
        if any(h.exitcode != 0 for h in helpers):
            ctx.may_fork = False
        recover_zombies(ctx.storage, ctx.study_id)


def _load_kernels(ctx: WorkerContext) -> None:
    """The kernels of every kind of population waiting (optimizer, activation, batch norm, depth: a
    population's members share them), loaded here."""
    firsts: dict[str | None, TrialRecord] = {}
    for r in ctx.storage.trials(ctx.study_id, [TrialState.WAITING]):
        firsts.setdefault(r.group_key, r)
    kinds: dict[tuple, TrialPlan] = {}
    for r in firsts.values():
        plan = plan_from_record(ctx.spec, r)
        kind = (plan.train.optimizer, plan.model.activation, plan.model.batchnorm, len(plan.model.hidden))
        kinds.setdefault(kind, plan)
    for plan in kinds.values():
        try:
            load_kernels([plan], ctx.data)
        except (CaviarError, ValueError, FloatingPointError):
            continue  # only a head start: each process then loads them itself


def _helper(ctx: WorkerContext, cores: int) -> None:
    """A forked helper's life: its own storage connection and worker id, one BLAS thread, the work loop.
    Interrupted (Ctrl-C reaches the whole process group), it puts its trials back in the queue."""
    storage = open_storage(ctx.storage.url)
    mine = replace(ctx, storage=storage, worker_id=new_worker_id())
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            per_member: dict[str, float] = {}
            _work_alone(mine, threads=1, claim=lambda c: _claim_longest(c, cores, per_member))
    except KeyboardInterrupt:
        storage.requeue_worker(mine.study_id, mine.worker_id)
    finally:
        storage.close()


def concurrent_slots(spec: StudySpec, storage: Storage) -> int:
    """How many small populations this process trains at once: one per BLAS thread (its cores);
    1 where populations must see each other's results in order (asynchronous halving judges a rung
    against the results stored so far), for a population-based search, and for a storage that one
    thread cannot share with another (an in-memory SQLite database is one per connection)."""
    if is_asynchronous(spec) or spec.search.pbt_settings is not None or not _shared_by_threads(storage):
        return 1
    return blas_threads()


def _shared_by_threads(storage: Storage) -> bool:
    """Whether threads of this process see the same data through ``storage``: not an in-memory SQLite
    database (each connection of the pool opens its own); a storage without a URL is not assumed to."""
    from sqlalchemy.engine import make_url

    url = getattr(storage, "url", None)
    if not isinstance(url, str):
        return False
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    db = parsed.database or ""
    return bool(db) and db != ":memory:" and "mode=memory" not in db and "mode=memory" not in str(parsed.query)


def _claim(ctx: WorkerContext) -> list[TrialRecord]:
    return ctx.storage.claim_trials(ctx.study_id, ctx.worker_id, limit=ctx.spec.search.max_population, same_group=True)


def _claim_longest(ctx: WorkerContext, cores: int, per_member: dict[str, float]) -> list[TrialRecord]:
    """The waiting population with the most work, for populations side by side: longest first, so the
    last to start are short and no core waits long for the last one to end. With fewer populations
    waiting than ``cores``, the longest is shared: this worker takes its share of it, the lowest trial
    numbers left (``_share_of``). Which trials train together, where and when changes no number (ties,
    and trials without a population, go by trial number). ``per_member``: each population's work per
    member, filled here and kept by the caller's loop."""
    groups: dict[str, list[TrialRecord]] = {}
    for r in ctx.storage.trials(ctx.study_id, [TrialState.WAITING]):
        if r.group_key is None:
            return _claim(ctx)
        groups.setdefault(r.group_key, []).append(r)
    for g, members in groups.items():
        if g not in per_member:  # once per population: a claim looks at every one, a big study has hundreds
            per_member[g] = _seconds_of_work(ctx, members) / len(members)
    order = sorted(groups, key=lambda g: (-per_member[g] * len(groups[g]), min(r.number for r in groups[g])))
    for i, group in enumerate(order):
        limit = ctx.spec.search.max_population
        if i == 0 and len(groups) < cores:
            limit = min(limit, _share_of(ctx, group, cores)[0])
        if claimed := ctx.storage.claim_trials(ctx.study_id, ctx.worker_id, limit=limit, group_key=group):
            return claimed
    return []


def splittable(spec: StudySpec) -> bool:
    """Whether a population may train in parts without changing a number: not when members are ranked
    against each other (successive halving, Hyperband's brackets) or copied onto each other (PBT)."""
    ranked = spec.search.halving is not None or bool(spec.search.bracket_table(spec.training.epochs))
    return not ranked and spec.search.pbt_settings is None


#: A population is shared between cores only when each part keeps at least this many members and the
#: whole has at least this much work (``_seconds_of_work``): a part's steps cost a fixed overhead each.
MIN_PART_MEMBERS = 4
MIN_SHARED_WORK_S = 0.5


def _share_of(ctx: WorkerContext, group: str, cores: int) -> tuple[int, int]:
    """How many trials of population ``group`` one worker takes when it is shared between ``cores``,
    and the population's whole size: its size over the cores (from its whole size, so the first part
    and the last are equal), or all of it where it may not be split or is too small to pay."""
    everyone = [r for r in ctx.storage.trials(ctx.study_id) if r.group_key == group]
    parts = min(cores, len(everyone) // MIN_PART_MEMBERS)
    if parts < 2 or not splittable(ctx.spec) or _seconds_of_work(ctx, everyone) < MIN_SHARED_WORK_S:
        return len(everyone), len(everyone)
    return math.ceil(len(everyone) / parts), len(everyone)


#: The cost model of ``_claim_longest``: a step's fixed cost (Python, calls) and one core's matmul rate.
STEP_OVERHEAD_S = 1e-4
CORE_FLOPS = 5e10


def _seconds_of_work(ctx: WorkerContext, records: list[TrialRecord]) -> float:
    """A population's training time on one core, roughly: its steps, each a fixed cost plus its matmuls
    (6 flops per multiply-add of a row's forward pass: 2 forward, 4 backward) at ``CORE_FLOPS``."""
    plans = [plan_from_record(ctx.spec, r) for r in records]
    widths = population_architecture(plans, ctx.data).widths
    train = plans[0].train
    rows = len(ctx.data.y_train)
    steps = train.epochs * max(1, math.ceil(rows / train.batch_size))
    per_step = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False)) * 6 * train.batch_size
    return steps * (STEP_OVERHEAD_S + len(plans) * per_step / CORE_FLOPS)


def _report(ctx: WorkerContext, on_progress: Progress | None) -> None:
    if on_progress is not None:
        on_progress(ctx.storage.counts(ctx.study_id), ctx.storage.best_trial(ctx.study_id))


class _Stopped(Exception):
    """Raised at a population's next epoch end once the worker is interrupted (Ctrl-C, or another
    population's storage failure): its trials stay RUNNING, requeued as a dead worker's."""


def _work_side_by_side(ctx: WorkerContext, on_progress: Progress | None, slots: int) -> int:
    """``work`` with up to ``slots`` populations training at once, the cores shared between them (a
    population asks at each epoch end, ``train_population``'s ``threads``).

    BLAS stays on one thread throughout (set once here, before any population starts: the
    populations' own limits, entered and left on different threads, then restore that same one).
    Epoch ends reach ``on_progress.on_epoch`` one at a time; ``on_progress`` itself runs here. An
    interrupt or an error here stops the other populations at their next epoch end, then goes up."""
    done = 0
    lock = threading.Lock()
    stop = threading.Event()
    hear = getattr(on_progress, "on_epoch", None)

    def on_epoch(ev: PopulationEpoch) -> None:
        if stop.is_set():
            raise _Stopped
        if hear is not None:
            with lock:
                hear(ev)

    running: set[Future[int]] = set()
    per_member: dict[str, float] = {}
    training = [0]  # populations training now (or about to start), as the main thread last counted

    def share() -> int:
        """A population's threads: the cores split between the populations training now."""
        return max(1, slots // max(1, training[0]))

    def train(claimed: list[TrialRecord]) -> int:
        train_claimed(ctx, claimed, on_epoch, threads=share)
        return len(claimed)

    def settle(futures: set[Future[int]]) -> int:
        n = 0
        for f in futures:
            running.discard(f)
            training[0] = len(running)
            n += f.result()  # a StorageError of a population's thread is raised here
            _report(ctx, on_progress)
        return n

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(slots, thread_name_prefix="pop") as pool:
        try:
            while True:
                if len(running) >= slots:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    done += settle(set(finished))
                batch: list[list[TrialRecord]] = []  # fill the free slots first: each starts on its share
                while len(running) + len(batch) < slots and (claimed := _claim_longest(ctx, slots, per_member)):
                    batch.append(claimed)
                if not batch:
                    break
                training[0] = len(running) + len(batch)
                for claimed in batch:
                    running.add(pool.submit(train, claimed))
            done += settle(set(running))
        except BaseException:
            stop.set()
            wait(running)
            raise
    return done
