"""Tuning studies end to end: run_study, storage round trip, kill and resume, concurrent processes,
determinism across worker counts, divergence, successive halving, every strategy, several populations.

Studies are tiny (digits or iris, a few epochs, narrow layers) so the whole file runs in well under a
minute on two cores. Subprocesses are synchronized by polling the SQLite storage, never by sleeping
a fixed time.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import caviar.tune.worker as worker_mod
from caviar.prepared import prepare_data
from caviar.storage import open_storage
from caviar.tune.executors import EXECUTORS, executor_for
from caviar.tune.planning import load_data
from caviar.tune.runner import TrialOutcome
from caviar.tune.spec import load_spec
from caviar.tune.study import Study, run_study
from caviar.tune.worker import MODEL_ARTIFACT, is_dead_local, new_worker_id

CAVIAR = Path(sys.executable).parent / "caviar"
LR = {"low": 1e-4, "high": 3e-2, "scale": "log"}
POLL_S = 0.05
DEADLINE_S = 120.0


# ------------------------------------------------------------------------------------------ helpers
def tiny_spec(
    db: Path,
    name: str = "tiny",
    dataset: str = "digits",
    hidden: list[int] | None = None,
    epochs: int = 2,
    space: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    **search: Any,
) -> dict[str, Any]:
    """A dict spec small enough to train in a second or two."""
    model = dict(model or {})
    if not {"depth", "width"} & model.keys():
        model["hidden"] = hidden or [16]
    return {
        "study": {"name": name, "seed": 0},
        "data": {"dataset": dataset},
        "model": model,
        "training": {"epochs": epochs, "batch_size": 64, **(training or {})},
        "search": {"strategy": "random", "trials": 6, "storage": str(db), **search},
        "space": space or {"learning_rate": LR},
    }


def write_toml(path: Path, name: str, epochs: int, trials: int, max_population: int) -> Path:
    """A TOML spec for the subprocess tests: digits, several populations of a few members each."""
    path.write_text(f"""
[study]
name = "{name}"
seed = 1

[data]
dataset = "digits"

[model]
hidden = [64, 32]

[training]
epochs = {epochs}
batch_size = 64

[search]
strategy = "random"
trials = {trials}
max_population = {max_population}

[space]
learning_rate = {{ low = 1e-4, high = 3e-2, scale = "log" }}
l2 = {{ low = 1e-6, high = 1e-2, scale = "log" }}
""")
    return path


def sql(db: Path, query: str) -> list[tuple]:
    """Rows of a read-only query on the SQLite file (what the storage really holds)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute(query).fetchall()


def state_counts(db: Path) -> Counter:
    """Trials per state; empty while the study's tables do not exist yet."""
    if not db.exists():
        return Counter()
    try:
        return Counter(dict(sql(db, "SELECT state, COUNT(*) FROM caviar_trials GROUP BY state")))
    except sqlite3.OperationalError:  # the schema is being created
        return Counter()


def assert_each_number_once(db: Path, trials: int, epochs: int) -> None:
    """Every trial number exactly once, finished, with exactly one curve row per epoch."""
    per_number = dict(sql(db, "SELECT number, COUNT(*) FROM caviar_trials GROUP BY number"))
    assert per_number == dict.fromkeys(range(trials), 1)
    states = Counter(s for (s,) in sql(db, "SELECT state FROM caviar_trials"))
    assert states == {"COMPLETE": trials}
    rows = sql(
        db,
        "SELECT t.number, c.epoch, COUNT(*) FROM caviar_curves c JOIN caviar_trials t "
        "ON t.id = c.trial_id GROUP BY t.number, c.epoch",
    )
    assert all(count == 1 for _, _, count in rows)
    epochs_of = Counter(number for number, _, _ in rows)
    assert epochs_of == dict.fromkeys(range(trials), epochs)


def env_for_cli() -> dict[str, str]:
    """The environment of a `caviar` subprocess: one BLAS thread each, so two of them share 2 cores."""
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


# ------------------------------------------------------------------------------------ run_study
def test_run_study_with_a_dict_spec(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    spec = tiny_spec(db, strategy="coarse_to_fine", trials=8, rounds=2)
    study = run_study(spec)

    trials = study.trials
    assert [t.number for t in trials] == list(range(8))
    assert all(t.state == "COMPLETE" for t in trials)
    assert [t.round for t in trials] == [0] * 4 + [1] * 4
    best = study.best_trial
    assert best is not None and best.objective == max(t.objective for t in trials)
    assert best.objective == best.metrics["val_accuracy"]

    df = study.to_dataframe()
    assert len(df) == 8 and "params_learning_rate" in df.columns
    assert df["state"].eq("COMPLETE").all()

    boxes = study.boxes
    assert sorted(boxes) == [0, 1]
    assert boxes[0]["lower"] == [0.0] and boxes[0]["upper"] == [1.0]
    round1 = [t.params["learning_rate"] for t in trials if t.round == 1]
    assert all(boxes[1]["low"]["learning_rate"] <= v <= boxes[1]["high"]["learning_rate"] for v in round1)


def test_best_model_scores_its_stored_test_accuracy(tmp_path: Path) -> None:
    study = run_study(tiny_spec(tmp_path / "s.db", trials=4))
    spec = study.spec
    data = load_data(spec)
    d = spec.data
    raw = prepare_data(
        d.dataset,
        d.path,
        d.label,
        d.data_dir,
        d.validation_fraction,
        d.test_fraction,
        seed=spec.search.seed or 0,
        standardize=False,
    )
    assert np.array_equal(raw.y_test, data.y_test)  # the very split the study used
    clf = study.best_model()
    with threadpool_limits(limits=1, user_api="blas"):  # the study evaluates on one BLAS thread
        score = clf.score(raw.X_test, data.classes[data.y_test])
    assert score == study.best_trial.metrics["test_accuracy"]


def test_retrain_reproduces_a_trial_exactly_and_backs_a_missing_model(tmp_path: Path) -> None:
    """A trial trained again alone, from the study's seed, has the weights it had in its population."""
    space = {"learning_rate": LR, "dropout": {"low": 0.0, "high": 0.3}}
    study = run_study(tiny_spec(tmp_path / "r.db", trials=5, space=space))
    best = study.best_trial
    stored = study.best_model()
    again = study.retrain(best.number)
    assert stored.params_.keys() == again.params_.keys()
    for name, array in stored.params_.items():
        np.testing.assert_array_equal(array, again.params_[name])
    with sqlite3.connect(tmp_path / "r.db") as conn:  # as if killed between storing the trial and its model
        conn.execute("DELETE FROM caviar_artifacts")
    rebuilt = study.best_model()
    np.testing.assert_array_equal(rebuilt.params_["out.W"], stored.params_["out.W"])


def test_storage_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    first = run_study(tiny_spec(db, name="trip", trials=4))
    again = Study.load("trip", f"sqlite:///{db}")
    assert again.name == "trip" and again.id == first.id
    assert [(t.number, t.params, t.metrics, t.state) for t in again.trials] == [
        (t.number, t.params, t.metrics, t.state) for t in first.trials
    ]
    assert again.best_trial.number == first.best_trial.number
    assert again.spec.to_dict() == first.spec.to_dict()
    assert again.to_dataframe().equals(first.to_dataframe())
    assert Study.load(first.id, str(db)).name == "trip"  # by id, and from a plain path


def test_rerunning_a_finished_study_trains_nothing(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "s.db", trials=3)
    before = [(t.id, t.finished_at) for t in run_study(spec).trials]
    after = [(t.id, t.finished_at) for t in run_study(spec).trials]
    assert after == before


def test_best_trial_tied_by_a_later_population_has_its_model(tmp_path: Path, monkeypatch) -> None:
    """Ties go to the lower number; a later population may hold it, and it must still get its file."""

    def fake_train(plans, data, seed, metric="val_accuracy", halving=None, on_epoch=None, threads=None):
        return [TrialOutcome(p.number, "COMPLETE", {"val_accuracy": 0.5}, 0.5, [{"epoch": 0}]) for p in plans]

    monkeypatch.setattr(worker_mod, "train_population", fake_train)
    monkeypatch.setattr(worker_mod, "model_file_bytes", lambda plan, *a, **k: f"trial {plan.number}".encode())
    space = {"learning_rate": LR, "depth": {"low": 1, "high": 3}}
    study = run_study(tiny_spec(tmp_path / "s.db", trials=8, space=space, model={"width": 8}))
    first_population = [t for t in study.trials if t.group_key == "r0-p0"]
    assert len(first_population) < 8  # populations hold interleaved numbers
    best = study.best_trial
    assert best.number == 0
    assert study.storage.load_artifact(best.id, MODEL_ARTIFACT) == b"trial 0"


def test_data_mistake_stores_no_study(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,target\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    spec = tiny_spec(tmp_path / "s.db")
    spec["data"] = {"path": str(csv), "label": "label"}
    with pytest.raises(Exception, match="label column 'label'"):
        run_study(spec)
    assert open_storage(tmp_path / "s.db").list_studies() == []


def test_the_spec_picks_its_executor_by_name(tmp_path: Path) -> None:
    def pick(**search: Any):
        return executor_for(load_spec(tiny_spec(tmp_path / "s.db", **search)))

    assert pick() is EXECUTORS["local"]
    assert pick(workers=2) is EXECUTORS["processes"]
    assert pick(executor="ray") is pick(executor="ray", workers=3) is EXECUTORS["ray"]


def test_a_worker_is_dead_when_its_local_pid_is_gone() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    assert is_dead_local(f"{host}:{gone.pid}:abc123")
    assert not is_dead_local(new_worker_id())  # this very process
    assert not is_dead_local(f"elsewhere-{host}:{gone.pid}:abc123")  # another host: only heartbeats tell
    assert not is_dead_local("not-a-worker-id")


# -------------------------------------------------------------------------------- kill and resume
def test_kill_and_resume(tmp_path: Path) -> None:
    trials, epochs = 12, 10
    spec = write_toml(tmp_path / "killed.toml", "killed", epochs=epochs, trials=trials, max_population=3)
    db = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [str(CAVIAR), "tune", str(spec)],
        cwd=tmp_path,
        env=env_for_cli(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:  # freeze it, look, and kill it only in the state we want: some done, some running
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no trial completed in time"
            proc.send_signal(signal.SIGSTOP)
            counts = state_counts(db)
            if counts["COMPLETE"] >= 1 and counts["RUNNING"] >= 1:
                proc.kill()
                break
            proc.send_signal(signal.SIGCONT)
            time.sleep(POLL_S)  # polling interval, not a synchronization
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()

    zombies = state_counts(db)["RUNNING"]
    assert zombies >= 1 and state_counts(db)["COMPLETE"] < trials
    zombie_numbers = {n for (n,) in sql(db, "SELECT number FROM caviar_trials WHERE state = 'RUNNING'")}

    done = subprocess.run(
        [str(CAVIAR), "tune", str(spec)],
        cwd=tmp_path,
        env=env_for_cli(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    assert_each_number_once(db, trials, epochs)
    rerun = {n for n, a in sql(db, "SELECT number, attempts FROM caviar_trials") if a == 2}
    assert rerun == zombie_numbers
    requeued = sql(db, "SELECT COUNT(*) FROM caviar_events WHERE kind = 'requeue'")[0][0]
    assert requeued == zombies


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_killing_tune_ends_its_worker_processes(tmp_path: Path) -> None:
    """SIGKILL of `caviar tune --workers 2` takes its workers down; the next run requeues their trials."""
    trials, epochs = 12, 10
    spec = write_toml(tmp_path / "w.toml", "w", epochs=epochs, trials=trials, max_population=3)
    db = tmp_path / "w.db"
    proc = subprocess.Popen(
        [str(CAVIAR), "tune", str(spec), "--workers", "2"],
        cwd=tmp_path,
        env=env_for_cli(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not (db.exists() and state_counts(db)["RUNNING"] >= 1):  # a worker is training
            assert proc.poll() is None and time.monotonic() < deadline, "no trial started in time"
            time.sleep(POLL_S)  # polling interval, not a synchronization
        workers = {
            int(w.split(":")[1]) for (w,) in sql(db, "SELECT worker_id FROM caviar_trials WHERE state = 'RUNNING'")
        }
    finally:
        proc.kill()
        proc.wait()
    assert workers and proc.pid not in workers
    while any(_alive(pid) for pid in workers):  # each gets SIGTERM from the kernel as its parent dies
        assert time.monotonic() < deadline, f"workers {workers} outlived the killed `caviar tune`"
        time.sleep(POLL_S)
    assert state_counts(db)["COMPLETE"] < trials, "the workers finished the study instead of dying with it"
    done = subprocess.run(
        [str(CAVIAR), "tune", str(spec)],
        cwd=tmp_path,
        env=env_for_cli(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    assert_each_number_once(db, trials, epochs)


def test_two_processes_share_one_sqlite_study(tmp_path: Path) -> None:
    trials, epochs = 12, 4
    spec = write_toml(tmp_path / "shared.toml", "shared", epochs=epochs, trials=trials, max_population=2)
    procs = [
        subprocess.Popen(
            [str(CAVIAR), "tune", str(spec)],
            cwd=tmp_path,
            env=env_for_cli(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=DEADLINE_S) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "database is locked" not in err
    db = tmp_path / "shared.db"
    assert_each_number_once(db, trials, epochs)
    assert sql(db, "SELECT COUNT(*) FROM caviar_studies")[0][0] == 1


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_same_trials_whatever_the_workers(tmp_path: Path) -> None:
    space = {"learning_rate": LR, "width": {"low": 8, "high": 32, "scale": "log"}, "dropout": {"low": 0.0, "high": 0.3}}

    def run(workers: int):
        spec = tiny_spec(
            tmp_path / f"w{workers}.db", hidden=[32, 16], epochs=3, space=space, trials=10, max_population=4
        )
        return {t.number: t for t in run_study(spec, workers=workers, seed=3).trials}

    one, two = run(1), run(2)
    assert sorted(one) == sorted(two) == list(range(10))
    for n in one:
        a, b = one[n], two[n]
        assert a.params == b.params and a.unit == b.unit and a.group_key == b.group_key
        assert a.state == b.state == "COMPLETE"
        assert a.metrics.keys() == b.metrics.keys()
        for key, value in a.metrics.items():
            if isinstance(value, float):
                assert value == pytest.approx(b.metrics[key], rel=1e-12, abs=1e-12), (n, key)
            else:
                assert value == b.metrics[key], (n, key)
    assert len({t.group_key for t in one.values()}) > 2  # several populations, packed the same way


# ------------------------------------------------------------------------------ fates of trials
def test_divergence_is_recorded_not_failed(tmp_path: Path) -> None:
    space = {"learning_rate": {"low": 1e-3, "high": 1e4, "scale": "log"}}
    # without batch norm: BN rescales the activations, so a huge step gives a huge but finite loss
    study = run_study(
        tiny_spec(tmp_path / "s.db", trials=8, space=space, model={"batchnorm": False}, training={"optimizer": "sgd"})
    )
    by_state = Counter(t.state for t in study.trials)
    assert by_state["DIVERGED"] >= 1 and by_state["COMPLETE"] >= 1
    assert by_state["DIVERGED"] + by_state["COMPLETE"] == 8
    for t in study.trials:
        if t.state == "DIVERGED":
            assert t.objective is None and t.error is None and t.metrics["status"] == "diverged"
    diverged_lr = min(t.params["learning_rate"] for t in study.trials if t.state == "DIVERGED")
    complete_lr = min(t.params["learning_rate"] for t in study.trials if t.state == "COMPLETE")
    assert complete_lr < diverged_lr  # the small learning rates are the ones that train
    assert study.best_trial.state == "COMPLETE"


def test_successive_halving_prunes_per_rung(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "s.db", trials=8, epochs=4, halving={"eta": 2, "min_epochs": 1})
    study = run_study(spec)
    trials = study.trials
    assert len({t.group_key for t in trials}) == 1  # one population of 8
    epochs_run = Counter(t.metrics["epochs_run"] for t in trials if t.state == "PRUNED")
    assert epochs_run == {1: 4, 2: 2}  # 8 -> 4 at epoch 1, 4 -> 2 at epoch 2; none at the last epoch
    survivors = [t for t in trials if t.state == "COMPLETE"]
    assert len(survivors) == 2 and all(t.metrics["epochs_run"] == 4 for t in survivors)
    curves = study.curves()
    for t in trials:
        assert len(curves[t.id]) == t.metrics["epochs_run"]
        assert (t.objective is None) == (t.state == "PRUNED")
    pruned_at_1 = [t for t in trials if t.state == "PRUNED" and t.metrics["epochs_run"] == 1]
    first_epoch = {t.id: curves[t.id][0]["val_accuracy"] for t in trials}
    kept = [first_epoch[t.id] for t in trials if t not in pruned_at_1]
    assert max(first_epoch[t.id] for t in pruned_at_1) <= min(kept)  # the worse half went


@pytest.mark.parametrize("strategy, extra", [("tpe", {}), ("sobol", {}), ("grid", {"points_per_axis": 3})])
def test_strategies_run_end_to_end(tmp_path: Path, strategy: str, extra: dict) -> None:
    space = {"learning_rate": LR, "beta1": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"}}
    trials = 10 if strategy == "tpe" else 6
    study = run_study(
        tiny_spec(tmp_path / "s.db", dataset="iris", hidden=[8], space=space, trials=trials, strategy=strategy, **extra)
    )
    assert [t.number for t in study.trials] == list(range(trials))
    assert all(t.state == "COMPLETE" for t in study.trials)
    values = [(t.params["learning_rate"], t.params["beta1"]) for t in study.trials]
    assert len(set(values)) == trials  # every trial tries new values
    assert all(1e-4 <= lr <= 3e-2 and 0.8 <= b <= 0.99 for lr, b in values)
    if strategy == "tpe":
        assert {t.round for t in study.trials} == {0, 1}  # batches of 8, the second told the first


def test_depth_and_width_make_several_populations(tmp_path: Path) -> None:
    space = {"learning_rate": LR, "depth": {"low": 1, "high": 3}, "width": {"choices": [8, 16]}}
    study = run_study(tiny_spec(tmp_path / "s.db", dataset="iris", trials=12, space=space))
    trials = study.trials
    assert all(t.state == "COMPLETE" for t in trials) and len(trials) == 12
    shape_of_group: dict[str, set] = {}
    for t in trials:
        shape_of_group.setdefault(t.group_key, set()).add((t.params["depth"], t.params["width"]))
    assert len(shape_of_group) >= 3
    # one depth per population; widths may share one padded (tests/test_mixed_packing.py), the model
    # file of each trial is at its own widths
    assert all(len({depth for depth, _ in shapes}) == 1 for shapes in shape_of_group.values())
    model = study.best_model()
    assert model.hidden == (study.best_trial.params["width"],) * study.best_trial.params["depth"]
