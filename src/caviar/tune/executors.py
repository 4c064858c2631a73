"""Executors: who trains a round's populations. Each returns once every trial of the round is finished.

- ``local``: the process that runs the study works through the round itself, with helpers forked
  beside it on the other cores (``caviar.tune.forked``) when populations can train side by side.
- ``processes`` (``search.workers`` > 1): that many spawned worker processes, which die with their
  parent (Linux: ``PR_SET_PDEATHSIG``), so a killed ``caviar tune`` leaves no headless workers.
- ``ray``: that many Ray tasks on ``search.ray_address`` (or a local cluster bound to 127.0.0.1);
  every node must reach the storage (PostgreSQL, or SQLite on a shared disk), not the data file: the
  data is shipped through Ray's object store. A lost task or node is rescheduled on the cluster.
  See docs/ray.md.

Every worker runs the same loop (:func:`caviar.tune.worker.work`) on the shared storage. After the
processes or tasks end, the study's own process finishes the round in process: it trains what a
dead worker left waiting and waits for populations other processes are still training.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from caviar.errors import CaviarError
from caviar.storage import TrialState, open_storage
from caviar.tune.forked import die_with_parent
from caviar.tune.handoff import read_prepared, write_prepared
from caviar.tune.planning import load_data
from caviar.tune.spec import StudySpec, load_spec
from caviar.tune.worker import Progress, WorkerContext, new_worker_id, recover_zombies, work

POLL_S = 0.5  # how often progress is reported while worker processes or tasks run
RAY_RETRIES = 3  # Ray reruns a task lost with its worker or node this many times, on the cluster
RAY_REPLACEMENTS = 3  # then the study starts new tasks, up to this many per worker
RAY_CONNECT_TIMEOUT_S = 5.0  # an unreachable ray_address fails after this long
ROUND_POLL_S = 1.0  # how often the study looks again at a round another process is finishing


class Executor(Protocol):
    """Trains the waiting populations of a round; returns once every trial of ``numbers`` is finished."""

    def __call__(self, ctx: WorkerContext, numbers: Sequence[int], on_progress: Progress | None) -> None: ...


def until_finished(
    storage: Any, study_id: int, numbers: Sequence[int], work_waiting: Callable[[], Any], poll_s: float = ROUND_POLL_S
) -> None:
    """Until every trial of ``numbers`` is finished: ``work_waiting()`` while some wait, else wait for
    the ones other processes are running (a dead one's trials are requeued, then worked here)."""
    wanted = set(numbers)
    while True:
        recover_zombies(storage, study_id)
        pending = [t for t in storage.trials(study_id, [TrialState.WAITING, TrialState.RUNNING]) if t.number in wanted]
        if not pending:
            return
        if any(t.state == TrialState.WAITING for t in pending):
            work_waiting()
        else:
            time.sleep(poll_s)  # another process is running this round's last trials


def run_in_process(
    ctx: WorkerContext, numbers: Sequence[int], on_progress: Progress | None, helpers: bool = False
) -> None:
    """Until every trial of the round is finished: help with waiting ones, wait for others' running ones.
    ``helpers``: populations side by side in processes forked beside this one (``caviar.tune.forked``)."""
    until_finished(ctx.storage, ctx.study_id, numbers, lambda: work(ctx, on_progress, helpers=helpers))


def run_locally(ctx: WorkerContext, numbers: Sequence[int], on_progress: Progress | None) -> None:
    """The ``local`` executor: this process trains the round, with forked helpers on the other cores
    (never after Ray or worker processes: a Ray driver, its gRPC threads among them, is not forked)."""
    run_in_process(ctx, numbers, on_progress, helpers=True)


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
        drive_processes(procs, storage, study_id, on_progress)
    finally:
        handoff.cleanup()
    run_in_process(ctx, numbers, on_progress)


def drive_processes(procs: Sequence[Any], storage: Any, study_id: int, on_progress: Progress | None) -> None:
    """Start worker processes and report progress until they all end; any left alive is ended on the way out."""
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


def run_ray(ctx: WorkerContext, numbers: Sequence[int], on_progress: Progress | None) -> None:
    """``search.workers`` Ray tasks (one CPU each) on ``search.ray_address``, until the round is trained.

    The study's data goes into Ray's object store once (``ray.put``): a node without the data file
    trains from it. Each task has a *slot*, the tail of its worker id; a task lost with its worker or
    node is retried by Ray (``max_retries``) on the cluster, and the new attempt first requeues what
    the lost one held. When Ray gives up on a task (its failure shows on the task's ObjectRef in
    ``ray.wait``), the study requeues the slot's trials and starts another task: a lost population is
    trained again on the cluster, within seconds, not on the driver after the heartbeat timeout.
    """
    ray = import_ray()
    spec, study_id = ctx.spec, ctx.study_id
    connect_ray(ray, spec.search.ray_address)
    data_ref = _data_ref(ray, ctx)
    task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES, retry_exceptions=False)(ray_worker)
    drive_ray_tasks(
        ray,
        ctx.storage,
        study_id,
        spec.search.workers,
        lambda slot: task.remote(spec, study_id, data_ref, slot),
        numbers,
        on_progress,
    )
    run_in_process(ctx, numbers, on_progress)


def drive_ray_tasks(
    ray: Any,
    storage: Any,
    study_id: int,
    workers: int,
    start: Callable[[str], Any],
    numbers: Sequence[int],
    on_progress: Progress | None,
) -> None:
    """Run ``workers`` Ray tasks (``start(slot)`` submits one and returns its ObjectRef) until they end.

    A task's own exception is the study's error. A task Ray gave up on (its worker or node died past
    the retries) has its slot's trials requeued and another task started, up to RAY_REPLACEMENTS per
    worker; a task that ends while trials of ``numbers`` wait again (requeued by a lost attempt)
    gets a successor.
    """
    from ray.exceptions import RayTaskError

    wanted = set(numbers)

    def submit() -> Any:
        slot = uuid.uuid4().hex[:12]
        ref = start(slot)
        slots[ref] = slot
        return ref

    slots: dict[Any, str] = {}
    for _ in range(workers):
        submit()
    lost = 0
    while slots:
        done, _ = ray.wait(list(slots), num_returns=1, timeout=POLL_S)
        for ref in done:
            slot = slots.pop(ref)
            try:
                ray.get(ref)
            except RayTaskError as err:  # the task's own exception (a CaviarError, say): the study's error
                cause = getattr(err, "cause", None)
                raise (cause if isinstance(cause, Exception) else err) from None
            except ray.exceptions.RayError as err:  # the worker or its node died and Ray gave up retrying
                lost += 1
                requeue_slot(storage, study_id, slot)
                if lost > RAY_REPLACEMENTS * workers:
                    raise CaviarError(f"Ray lost {lost} worker tasks; the last: {_first_line(err)}") from None
                submit()
                continue
            if _waiting(storage, study_id, wanted):  # requeued by a lost task's retry: more work
                submit()
        if on_progress is not None:
            on_progress(storage.counts(study_id), storage.best_trial(study_id))


def _waiting(storage: Any, study_id: int, wanted: set[int]) -> bool:
    return any(t.number in wanted for t in storage.trials(study_id, [TrialState.WAITING]))


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CaviarError("search.executor 'ray' needs ray: pip install 'caviar[ray]'") from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """The (host, port) a Ray address names: ``host:port`` (GCS, default 6379) or ``ray://host:port``."""
    client = address.startswith("ray://")
    rest = address[len("ray://") :] if client else address
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, 10001 if client else 6379
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise CaviarError(f"search.ray_address {address!r} is not HOST:PORT or ray://HOST:PORT") from None


def connect_ray(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (checked first: an unreachable one fails in seconds, in one line),
    or start a local one bound to 127.0.0.1 only; nothing when Ray is already initialized."""
    if ray.is_initialized():
        return
    quiet = {"log_to_driver": False, "configure_logging": False}
    if address is None or address == "local":
        # address="local": a new cluster even where /tmp/ray names an older (maybe dead) one
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
        return
    if address != "auto":
        host, port = _host_port(address)
        try:
            socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise CaviarError(
                f"search.ray_address {address!r}: nothing answers at {host}:{port} "
                f"({exc.strerror or exc}); start the head there with `ray start --head`"
            ) from None
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CaviarError(f"search.ray_address {address!r}: cannot join the Ray cluster: {_first_line(exc)}") from None


_DATA_REFS: dict[int, tuple[Any, Any]] = {}


def _data_ref(ray: Any, ctx: WorkerContext) -> Any:
    """The study's data in Ray's object store, put once per study run (every round reuses it)."""
    held = _DATA_REFS.get(id(ctx))
    if held is None or held[0] is not ctx:
        held = (ctx, ray.put(ctx.data))
        _DATA_REFS.clear()
        _DATA_REFS[id(ctx)] = held
    return held[1]


def requeue_slot(storage: Any, study_id: int, slot: str, keep: str | None = None) -> int:
    """Requeue the RUNNING trials of every attempt of a Ray task slot (worker ids ``host:pid:<slot>``)."""
    owners = {
        w for t in storage.trials(study_id, [TrialState.RUNNING]) if (w := t.worker_id) and w.endswith(f":{slot}")
    }
    return sum(storage.requeue_worker(study_id, w) for w in owners if w != keep)


def ray_worker(spec: StudySpec, study_id: int, data: Any, slot: str) -> None:
    """A Ray task: requeue what an earlier attempt of this slot held, then work until nothing waits.

    ``data`` comes from the object store, so the node needs no data file; the spec comes as it was
    validated (not re-read, which would look for the file).
    """
    from threadpoolctl import threadpool_limits

    storage = open_storage(spec.storage_url)
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{slot}"
    requeue_slot(storage, study_id, slot, keep=worker_id)
    with threadpool_limits(limits=1):
        work(WorkerContext(spec, data, storage, study_id, worker_id))


EXECUTORS: dict[str, Executor] = {"local": run_locally, "processes": run_processes, "ray": run_ray}


def executor_for(spec: StudySpec) -> Executor:
    """The executor ``search.executor`` names; ``local`` with ``search.workers`` > 1 means worker processes."""
    name: str = spec.search.executor
    if name == "local" and spec.search.workers > 1:
        name = "processes"
    return EXECUTORS[name]


def join_cluster(spec: StudySpec) -> None:
    """Before anything is stored: the Ray executor joins its cluster (an unreachable address is one line)."""
    if spec.search.executor == "ray":
        connect_ray(import_ray(), spec.search.ray_address)


# ------------------------------------------------------------------------------- worker processes
def worker_process(spec_dict: dict, study_id: int, threads: int, data_dir: str | None = None) -> None:
    """Entry point of a worker process or Ray task: it memory-maps the data the study's process wrote
    into ``data_dir`` (or loads it itself, without one) and works until nothing waits."""
    from threadpoolctl import threadpool_limits

    die_with_parent()
    spec = load_spec(spec_dict)
    with threadpool_limits(limits=threads):
        storage = open_storage(spec.storage_url)
        data = read_prepared(data_dir) if data_dir is not None else load_data(spec)
        ctx = WorkerContext(spec, data, storage, study_id, new_worker_id())
        work(ctx)
