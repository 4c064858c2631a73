"""The Ray executor on real Ray clusters on this machine, bound to 127.0.0.1 only.

- a local cluster (``ray.init``): worker tasks claim populations from shared storage;
- two nodes (a head from ``ray start --head``, a second raylet from ``ray start --address``), the data
  file gone before any task runs: the data reaches tasks through the object store;
- the second node killed mid-study (found by polling storage for a trial RUNNING in one of its
  processes): its population re-runs on the cluster and the study ends within 15 s, every trial once;
- an unreachable ``ray_address``: one line, in seconds, nothing stored.

Ray is heavy on two cores: the tests are few and small.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

import caviar.tune.study as study_module
from caviar.errors import CaviarError
from caviar.storage import TrialState, open_storage
from caviar.tune.study import run_study

RAY = str(Path(sys.executable).parent / "ray")
LOOPBACK = "127.0.0.1"


def _spec(tmp_path: Path, name: str, **search) -> dict:
    return {
        "study": {"name": name, "seed": 3},
        "data": {"dataset": "iris"},
        "model": {"hidden": [16], "batchnorm": True},
        "training": {"epochs": 3, "batch_size": 16},
        "search": {
            "trials": 8,
            "workers": 2,
            "executor": "ray",
            "max_population": 2,
            "storage": str(tmp_path / f"{name}.db"),
            **search,
        },
        "space": {"learning_rate": {"low": 1e-3, "high": 1e-1, "scale": "log"}},
    }


def _group(pgid: int) -> set[int]:
    """The processes of process group ``pgid`` (read from /proc)."""
    pids = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.add(int(stat_file.parent.name))
    return pids


# ------------------------------------------------------------------------------------------ cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


#: ``ray``'s command line with Ray's rewrite of 127.0.0.1 into the machine's address turned off: Ray
#: 2.60 resolves a loopback node address to a routable one (ray._private.services.resolve_ip_for_localhost),
#: and its servers then listen on every interface. Without the rewrite every server listens on 127.0.0.1.
LOOPBACK_RAY = (
    "import ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; main()"
)
#: The nodes, and this driver, share no token file race: Ray 2.60's token authentication is off here.
HEAD_GROUP: list[int] = []  # the head's process group, set by the fixture
#: The GCS's node health check at 0.5 s x 3 misses (Ray's default is 3 s x 5, with a 5 s timeout): a killed node
#: is declared dead in about 2 s, as a cluster operator who wants fast failover configures it.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group (killing the group kills that node only)."""
    return subprocess.Popen(
        [sys.executable, "-c", LOOPBACK_RAY, "start", *args, "--node-ip-address", LOOPBACK, "--num-cpus", "1"]
        + ["--disable-usage-stats", "--block"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **RAY_ENV},
        start_new_session=True,
    )


def _stop(node: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)
    node.wait(30)


def _wait_for_nodes(n: int) -> None:
    deadline = time.monotonic() + 90
    while sum(1 for node in ray.nodes() if node["Alive"]) < n:  # poll Ray's state until they joined
        assert time.monotonic() < deadline, f"fewer than {n} Ray nodes joined"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Iterator[str]:
    """A Ray head (1 CPU) on 127.0.0.1; yields its address, with this process connected as the driver."""
    import ray._private.services as services

    if ray.is_initialized():
        ray.shutdown()
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host  # this driver too, as LOOPBACK_RAY does for nodes
    port = _free_port()
    log = tmp_path_factory.mktemp("ray") / "head.log"
    node = _start_node(["--head", "--port", str(port), "--include-dashboard=false"], log)
    HEAD_GROUP[:] = [node.pid]
    address = f"{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 120
        while "--block" not in log.read_text():  # ray start says so once the head is up
            assert time.monotonic() < deadline and node.poll() is None, "the Ray head did not start"
            time.sleep(0.2)
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        yield address
    finally:
        ray.shutdown()
        _stop(node)
        services.resolve_ip_for_localhost = resolve
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _listening_on_every_interface(pids: set[int]) -> list[str]:
    """Sockets of ``pids`` listening on 0.0.0.0, [::] or * (from ``ss -ltnp``)."""
    out = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        fields = line.split()
        owners = {int(p) for p in re.findall(r"pid=(\d+)", " ".join(fields[5:]))}
        if owners & pids and fields[3].startswith(("0.0.0.0:", "[::]:", "*:")):
            out.append(line)
    return out


def test_ray_executor_runs_every_trial_once_in_ray_workers(tmp_path, head):
    study = run_study(_spec(tmp_path, "ray-study", ray_address=head))
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state == "COMPLETE" for t in trials)
    pids = {int(t.worker_id.split(":")[1]) for t in trials}
    assert os.getpid() not in pids, "trials ran in the driver, not in Ray worker processes"
    assert all(0.0 <= t.metrics["val_accuracy"] <= 1.0 for t in trials)
    # Bound to loopback: every node says 127.0.0.1, and no Ray process (nor this driver) listens on all interfaces.
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {LOOPBACK}
    ray_pids = _group(HEAD_GROUP[0]) | {os.getpid()}  # the head's processes (its workers too) and this driver
    assert len(ray_pids) > 3
    assert _listening_on_every_interface(ray_pids) == []


def test_an_unreachable_ray_address_fails_fast_and_stores_nothing(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    spec = _spec(tmp_path, "nowhere", ray_address=f"{LOOPBACK}:{port}")
    start = time.monotonic()
    with pytest.raises(CaviarError, match=rf"search\.ray_address '127\.0\.0\.1:{port}': nothing answers") as info:
        if ray.is_initialized():
            ray.shutdown()
        run_study(spec)
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value)
    assert not (tmp_path / "nowhere.db").exists()


def _node_pids(node: subprocess.Popen) -> set[int]:
    """The node's processes: ``ray start`` and its descendants (raylet, its workers), from /proc."""
    parent: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent[int(stat_file.parent.name)] = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
    found, grew = {node.pid}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found | _group(node.pid)


EPOCHS = 300  # per trial in the two-node test: about a second each, so the kill lands mid-training


def test_two_nodes_data_only_on_the_head_and_a_node_killed_mid_study(tmp_path, monkeypatch, head):
    data = tmp_path / "head-only.csv"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    pd.DataFrame(X, columns=list("abcd")).assign(label=(X[:, 0] + X[:, 1] > 0).astype(int)).to_csv(data, index=False)
    real_load = study_module.load_data

    def load_then_remove(spec):  # the driver reads the file; then it is gone, for every node
        loaded = real_load(spec)
        shutil.move(data, tmp_path / "moved-away.csv")
        return loaded

    monkeypatch.setattr(study_module, "load_data", load_then_remove)
    if not ray.is_initialized():  # the unreachable-address test left it
        ray.init(address=head, log_to_driver=False, configure_logging=False)
    node = _start_node(["--address", head], tmp_path / "node.log")
    try:
        _wait_for_nodes(2)
        spec = _spec(tmp_path, "two-nodes", ray_address=head, trials=4, max_population=1)
        spec["data"] = {"path": str(data)}
        spec["training"]["epochs"] = EPOCHS  # long enough that a quiet machine leaves time to pick a victim
        result: dict = {}

        def run() -> None:
            try:
                result["study"] = run_study(spec)
            except BaseException as exc:  # handed to the test thread
                result["error"] = exc

        runner = threading.Thread(target=run)
        runner.start()
        storage = None
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:  # poll storage until the second node trains a population
            assert time.monotonic() < deadline and runner.is_alive(), result.get("error")
            if storage is None and (tmp_path / "two-nodes.db").exists():
                storage = open_storage(tmp_path / "two-nodes.db")
            if storage is not None:
                with contextlib.suppress(Exception):
                    study_id = storage.get_study("two-nodes").id
                    pids = _node_pids(node)
                    for t in storage.trials(study_id, [TrialState.RUNNING]):  # the node's first population
                        early = len(storage.curves(study_id, [t.id]).get(t.id, [])) < EPOCHS // 3
                        if int(t.worker_id.split(":")[1]) in pids and early:
                            victim = t
            time.sleep(0.05)
        for pid in _node_pids(node):  # the whole node: ray start, its raylet and workers (some in own groups)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        runner.join(120)
        finished_in = time.monotonic() - killed_at
        assert "error" not in result, result.get("error")
        trials = result["study"].trials
        assert sorted(t.number for t in trials) == list(range(4))  # every trial exactly once
        assert all(t.state == TrialState.COMPLETE for t in trials)
        rerun = next(t for t in trials if t.number == victim.number)
        assert rerun.attempts >= 2 and int(rerun.worker_id.split(":")[1]) != os.getpid()  # on the cluster
        assert all(int(t.worker_id.split(":")[1]) != os.getpid() for t in trials), "trained on the driver"
        assert finished_in < 15, f"the study ended {finished_in:.1f}s after the node was killed"
        epochs = result["study"].curves()
        assert all(sorted(r["epoch"] for r in rows) == sorted({r["epoch"] for r in rows}) for rows in epochs.values())
    finally:
        _stop(node)


def test_an_objective_runs_as_ray_tasks_and_a_killed_task_is_run_again(tmp_path, monkeypatch, head):
    """``optimize`` with ``[search] executor = "ray"``: the trials of a user's objective run as Ray tasks on
    the cluster; the task whose process is SIGKILLed mid-trial is run again by Ray, its new attempt
    requeues the trial the dead one held, and every trial ends COMPLETE exactly once."""
    from caviar.tune import optimize

    monkeypatch.setenv("CAVIAR_TEST_DRIVER_PID", str(os.getpid()))
    spec = {
        "study": {"name": "ray-objective", "seed": 5},
        "search": {"trials": 6, "workers": 2, "executor": "ray", "ray_address": head, "metric": "val_accuracy"},
        "space": {"x": {"low": 0.0, "high": 1.0}},
    }
    study = optimize("objectives:dies_once", spec, storage=str(tmp_path / "ray-objective.db"))
    trials = {t.number: t for t in study.trials}
    assert sorted(trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    assert [trials[n].attempts for n in range(6)] == [1, 1, 2, 1, 1, 1]  # trial 2 ran again, once
    assert [r["epoch"] for r in study.curves([trials[2].id])[trials[2].id]] == [0, 1, 2]  # the rerun's curve only
    pids = {int(t.worker_id.split(":")[1]) for t in trials.values()}
    assert os.getpid() not in pids, "trials ran in the driver, not in Ray tasks"
    assert study.best_value == max(t.metrics["val_accuracy"] for t in trials.values())
    assert study.record.spec["search"]["executor"] == "ray"
