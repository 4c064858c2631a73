"""Storage outages: transient errors are retried for a bounded time; a PostgreSQL restart mid-study is survived.

The restart test runs its own throwaway PostgreSQL (.ci/postgres.sh on another port and folder, via
CAVIAR_PG_PORT / CAVIAR_PG_DIR), since other tests share the default server; it stops and starts it
while the study trains, synchronized by polling storage, and checks the study finishes in the same
call (no resume) with every trial stored exactly once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import exc

from caviar.errors import StorageError
from caviar.storage import Storage, TrialState, open_storage
from caviar.storage import retry as retry_module
from caviar.storage.retry import is_transient, retrying
from caviar.storage.sql import TRANSACTIONS, SqlStorage
from caviar.tune.study import run_study

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"


class _Orig(Exception):
    pass


def _operational(text: str) -> exc.OperationalError:
    return exc.OperationalError("SELECT 1", {}, _Orig(text))


def test_transient_errors_are_told_from_real_ones() -> None:
    assert is_transient(_operational("server closed the connection unexpectedly"))
    assert is_transient(_operational("connection to server at 127.0.0.1 failed: Connection refused"))
    assert is_transient(_operational("database is locked"))
    wrapped = StorageError("storage x: server closed the connection")
    wrapped.__cause__ = _operational("server closed the connection unexpectedly")
    assert is_transient(wrapped)
    assert not is_transient(exc.IntegrityError("INSERT", {}, _Orig("UNIQUE constraint failed")))
    assert not is_transient(_operational("no such table: caviar_studies"))
    assert not is_transient(StorageError("no study 'x'"))


class _Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    @retrying
    def call(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_retrying_runs_again_until_it_works_or_the_budget_is_spent(monkeypatch) -> None:
    monkeypatch.setenv(retry_module.ENV, "30")
    flaky = _Flaky(3, _operational("terminating connection due to administrator command"))
    assert flaky.call() == "done" and flaky.calls == 4
    real = _Flaky(3, exc.IntegrityError("INSERT", {}, _Orig("UNIQUE constraint failed")))
    with pytest.raises(exc.IntegrityError):
        real.call()
    assert real.calls == 1  # not retried
    monkeypatch.setenv(retry_module.ENV, "0.3")
    down = _Flaky(10**9, _operational("Connection refused"))
    start = time.monotonic()
    with pytest.raises(exc.OperationalError):
        down.call()
    assert time.monotonic() - start < 3 and down.calls >= 2
    monkeypatch.setenv(retry_module.ENV, "0")
    off = _Flaky(1, _operational("Connection refused"))
    with pytest.raises(exc.OperationalError):
        off.call()
    assert off.calls == 1


def test_every_storage_transaction_is_retried() -> None:
    abstract = {n for n in Storage.__abstractmethods__ if n not in ("close",)}
    assert abstract <= set(TRANSACTIONS)
    public = {n for n, f in vars(SqlStorage).items() if callable(f) and not n.startswith("_") and n != "close"}
    assert public <= set(TRANSACTIONS)  # a method added later is retried too
    assert all(getattr(SqlStorage, n).__wrapped__ for n in TRANSACTIONS)


# --------------------------------------------------------------------------- a PostgreSQL restart
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg(port: int, folder: str, *args: str) -> None:
    env = {**os.environ, "CAVIAR_PG_PORT": str(port), "CAVIAR_PG_DIR": folder}
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def own_postgres():
    """A throwaway PostgreSQL cluster of this test alone; yields (url, restart)."""
    port = _free_port()
    folder = f"/tmp/caviar-pg-outage-{port}"  # the server's user must reach it: not under pytest's 0700 tmp
    _pg(port, folder)

    def restart() -> None:
        _pg(port, folder, "stop")
        _pg(port, folder)

    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/caviar_test", restart
    finally:
        _pg(port, folder, "stop")
        subprocess.run(["rm", "-rf", folder, f"{folder}.log", f"{folder}.log.init"], check=False)


def test_a_postgresql_restart_mid_study_is_survived_without_a_resume(own_postgres) -> None:
    url, restart = own_postgres
    spec = {
        "study": {"name": "blink", "seed": 1},
        "data": {"dataset": "iris"},
        "model": {"hidden": [8]},
        "training": {"epochs": 30, "batch_size": 16},
        "search": {"trials": 8, "max_population": 1, "storage": url},
        "space": {"learning_rate": {"low": 1e-3, "high": 1e-1, "scale": "log"}},
    }
    result: dict = {}

    def run() -> None:
        try:
            result["study"] = run_study(spec)
        except BaseException as err:  # handed to the test thread
            result["error"] = err

    runner = threading.Thread(target=run)
    runner.start()
    watcher = None
    deadline = time.monotonic() + 300
    while True:  # poll storage until the study has finished a trial and has more to train
        assert runner.is_alive() and time.monotonic() < deadline, result.get("error", "finished before the restart")
        try:
            watcher = watcher or open_storage(url)
            counts = watcher.counts(watcher.get_study("blink").id)
        except StorageError:
            counts = {}
        if counts.get(TrialState.COMPLETE, 0) >= 1 and counts.get(TrialState.WAITING, 0) >= 2:
            break
        time.sleep(0.05)
    watcher.close()
    restart()
    runner.join(300)
    assert not runner.is_alive()
    assert "error" not in result, result.get("error")
    trials = result["study"].trials
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state, t.error) for t in trials]
    curves = result["study"].curves()
    for rows in curves.values():  # every epoch stored once, none missing
        epochs = [r["epoch"] for r in rows]
        assert epochs == list(range(epochs[0], epochs[0] + len(epochs)))


# ------------------------------------------------------------------------------- panda heartbeats
def test_a_panda_session_beats_like_a_worker_even_when_paused(tmp_path, monkeypatch) -> None:
    """Its trial's heartbeat moves on while nothing trains (polled, bounded), under a host:pid:random id,
    so a killed session's trial goes stale (or its dead pid is seen) and is requeued like a worker's."""
    import caviar.tune.worker as worker
    from caviar.panda.session import PandaSession

    monkeypatch.setattr(worker, "HEARTBEAT_EVERY_S", 0.2)
    spec = {
        "study": {"name": "beats", "seed": 3},
        "data": {"dataset": "iris"},
        "model": {"hidden": [8]},
        "training": {"epochs": 3, "batch_size": 16},
        "search": {"storage": f"sqlite:///{tmp_path / 'panda.db'}"},
    }
    session = PandaSession(spec)  # created, not started: paused, no epoch ends
    try:
        storage = open_storage(tmp_path / "panda.db")
        first = storage.trial(session.trial_id)
        assert first.state == TrialState.RUNNING and first.worker_id == session.worker_id
        assert session.worker_id.split(":")[1] == str(os.getpid())
        deadline = time.monotonic() + 30
        while storage.trial(session.trial_id).heartbeat_at == first.heartbeat_at:
            assert time.monotonic() < deadline, "the session's trial never beat"
            time.sleep(0.05)
    finally:
        session.close()


def epochs_stored(db: Path) -> int:
    """Epochs the (only) panda session in ``db`` has stored; 0 while it is being created."""
    try:
        storage = open_storage(db, read_only=True)
    except StorageError:  # its tables are not there yet
        return 0
    try:
        sessions = [s for s in storage.list_studies() if s.kind == "session"]
        trials = storage.trials(sessions[0].id) if sessions else []
        return len(storage.curves(sessions[0].id, [trials[0].id]).get(trials[0].id, [])) if trials else 0
    except StorageError:
        return 0
    finally:
        storage.close()


def test_a_killed_panda_session_is_recovered_by_the_next_one(tmp_path) -> None:
    """`caviar panda` in its own process, SIGKILLed while it trains: its trial is left RUNNING (nothing in a
    killed process can close it); the next session on that storage sees the dead pid and closes it as
    FAILED with the reason, its stored epochs kept, its study COMPLETE; the new session runs as usual."""
    import signal
    import sys

    from caviar.panda.recovery import recover_dead_sessions
    from caviar.panda.session import PandaSession

    db = tmp_path / "panda.db"
    spec = {
        "study": {"name": "killed", "seed": 3},
        "data": {"dataset": "iris"},
        "model": {"hidden": [8]},
        "training": {"epochs": 100000, "batch_size": 16},
        "search": {"storage": f"sqlite:///{db}"},
    }
    path = tmp_path / "panda.toml"
    path.write_text(
        f'[study]\nname = "killed"\nseed = 3\n[data]\ndataset = "iris"\n[model]\nhidden = [8]\n'
        f'[training]\nepochs = 100000\nbatch_size = 16\n[search]\nstorage = "sqlite:///{db}"\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "caviar", "panda", str(path), "--step-delay", "0.01"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # until the session has stored two epochs (polled, bounded)
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the session never stored two epochs"
            if db.exists() and epochs_stored(db) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    storage = open_storage(db)
    (killed,) = [s for s in storage.list_studies() if s.kind == "session"]
    (trial,) = storage.trials(killed.id)
    assert trial.state == TrialState.RUNNING and trial.worker_id.split(":")[1] == str(proc.pid)
    stored = len(storage.curves(killed.id, [trial.id])[trial.id])

    session = PandaSession(spec, epochs=1)  # the next session on this storage
    try:
        assert session.recovered == [killed.name]
        closed = storage.trial(trial.id)
        assert closed.state == TrialState.FAILED
        assert f"worker {trial.worker_id}, killed or crashed" in (closed.error or "")
        assert closed.metrics["epochs_run"] == len(storage.curves(killed.id, [trial.id])[trial.id]) >= stored
        assert [e.kind for e in storage.events(killed.id, trial.id, kind="recovered")] == ["recovered"]
        assert storage.get_study(killed.name).status == "COMPLETE"
        session.run_epochs(1)
    finally:
        session.close()
    assert storage.trial(session.trial_id).state == TrialState.COMPLETE
    assert recover_dead_sessions(storage) == []  # nothing left to recover
    assert not [t for s in storage.list_studies() for t in storage.trials(s.id, [TrialState.RUNNING])]
