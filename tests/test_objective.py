"""caviar tuning the user's own training code: ``caviar.tune.optimize(objective, space)`` and
``caviar tune spec.toml --objective module:function`` (crash safety, worker processes, seeds, bad input)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caviar.cli import app
from caviar.errors import SpecError
from caviar.storage import TrialState, open_storage
from caviar.tune import Study, optimize
from caviar.tune.objective_spec import load_objective_spec
from objectives import barrier_quadratic, misbehaving, quadratic, torch_digits

CAVIAR = Path(sys.executable).parent / "caviar"
TESTS = Path(__file__).resolve().parent
DEADLINE_S = 240.0
POLL_S = 0.1
SPACE = {"x": {"low": 0.0, "high": 1.0}}


def sql(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(query).fetchall()


def poll_sql(db: Path, query: str) -> list[tuple]:
    """``sql`` while another process may still be creating the file's tables (then: no rows yet)."""
    try:
        return sql(db, query) if db.exists() else []
    except sqlite3.OperationalError:
        return []


def env_for_cli() -> dict[str, str]:
    """A `caviar` subprocess finds caviar in this tree and the test objectives beside the tests."""
    path = os.pathsep.join([str(TESTS.parent / "src"), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "200"}


# ------------------------------------------------------------------------------------------ optimize
def test_a_pytorch_objective_is_tuned_with_its_curves_stored(tmp_path: Path) -> None:
    space = {
        "lr": {"low": 1e-3, "high": 1e-1, "scale": "log"},
        "beta2": {"low": 0.9, "high": 0.999, "scale": "one_minus_log"},
    }
    study = optimize(
        torch_digits,
        space,
        trials=6,
        strategy="coarse_to_fine",
        storage=str(tmp_path / "torch.db"),
        name="torch",
        metric="val_accuracy",
    )
    trials = study.trials
    assert [t.number for t in trials] == list(range(6))
    assert [(t.state, t.error) for t in trials] == [(TrialState.COMPLETE, None)] * 6
    assert {t.round for t in trials} == {0, 1, 2} and sorted(study.boxes) == [0, 1, 2]
    for t in trials:
        assert 1e-3 <= t.params["lr"] <= 1e-1 and 0.9 <= t.params["beta2"] <= 0.999
        assert t.objective == pytest.approx(t.metrics["val_accuracy"])
        assert t.metrics["epochs_run"] == 3
    curves = study.curves()
    for t in trials:
        rows = curves[t.id]
        assert [r["epoch"] for r in rows] == [0, 1, 2]
        assert rows[-1]["val_accuracy"] == pytest.approx(t.metrics["val_accuracy"])
        assert all(r["train_loss"] > 0 and 0 <= r["val_accuracy"] <= 1 for r in rows)
    best = study.best_trial
    assert best is not None and study.best_value == max(t.metrics["val_accuracy"] for t in trials)
    assert study.best_params == best.params and best.metrics["val_accuracy"] > 0.5
    # Readers of caviar's own studies read this one too: Study, the DataFrame, `caviar show`.
    again = Study(str(tmp_path / "torch.db"), "torch")
    assert again.spec.space.names == ("beta2", "lr")
    assert list(again.to_dataframe()["params_lr"]) == [t.params["lr"] for t in trials]
    shown = CliRunner().invoke(app, ["show", "torch", "--storage", str(tmp_path / "torch.db")])
    assert shown.exit_code == 0, shown.output
    assert "top 6 of 6 trials by val_accuracy" in shown.output
    # ... and the dashboard draws it: each parameter on its scale, the curves the objective reported
    from fastapi.testclient import TestClient

    from caviar.web.app import create_app

    with TestClient(create_app(study.storage, poll_s=0.05)) as client:
        detail = client.get("/api/studies/torch").json()
        assert {p["name"]: p["scale"] for p in detail["space"]} == {"beta2": "one_minus_log", "lr": "log"}
        drawn = client.get("/api/studies/torch/curves", params={"trials": "0,1"}).json()["trials"]
        assert [r["val_accuracy"] for r in drawn["0"]["rows"]] == [r["val_accuracy"] for r in curves[trials[0].id]]
        for kind in ("curves", "boxes", "history", "slice"):
            assert client.get(f"/api/studies/torch/figures/{kind}").status_code == 200, kind


def test_the_same_seed_gives_the_same_params(tmp_path: Path) -> None:
    def params(db: str, seed: int) -> list[dict]:
        study = optimize(quadratic, SPACE, trials=9, strategy="coarse_to_fine", seed=seed, storage=db, name="s")
        return [t.params for t in study.trials]

    first = params(str(tmp_path / "a.db"), seed=3)
    assert params(str(tmp_path / "b.db"), seed=3) == first
    assert params(str(tmp_path / "c.db"), seed=4) != first


def test_a_study_run_again_resumes_and_a_bigger_budget_adds_trials(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    optimize(quadratic, SPACE, trials=4, storage=db, name="r")
    study = optimize(quadratic, SPACE, trials=6, storage=db, name="r")
    assert [t.number for t in study.trials] == list(range(6))
    assert all(t.attempts == 1 for t in study.trials)


def test_bad_objectives_fail_their_trial_with_the_reason_and_the_study_goes_on(tmp_path: Path) -> None:
    space = {"lr": {"low": 1e-4, "high": 1e-1, "scale": "log"}, "x": {"low": 0.0, "high": 1.0}}
    study = optimize(misbehaving, space, trials=8, storage=str(tmp_path / "bad.db"), name="bad")
    by_number = {t.number: t for t in study.trials}
    assert [by_number[n].state for n in range(6)] == [TrialState.FAILED] * 6
    assert by_number[6].state == by_number[7].state == TrialState.COMPLETE
    errors = [by_number[n].error for n in range(6)]
    assert errors[0] == "objective returned nan for 'value' (not finite)"
    assert errors[1] == "objective returned None; return value (a number) or a dict holding 'value'"
    assert errors[2] == "objective returned '0.9' (str), not a number for 'value'"
    assert errors[3] == "RuntimeError: CUDA out of memory"
    assert errors[4] == "ObjectiveError: report: epoch 0 after epoch 1; epochs must increase"
    assert errors[5] == "UnknownParameter: trial.params['lrr']: not in the space (did you mean 'lr'?); it has lr, x"
    assert all("\n" not in e for e in errors)
    assert by_number[4].objective is None and study.best_trial.number in (6, 7)
    assert [r["epoch"] for r in study.curves([by_number[4].id])[by_number[4].id]] == [1]


def test_successive_halving_and_the_median_pruner_stop_trials(tmp_path: Path) -> None:
    def slow_learner(trial):
        x = trial.params["x"]
        for epoch in range(9):
            trial.report(epoch, val_accuracy=x * (epoch + 1) / 9)
            if trial.should_stop():
                break
        return x

    spec = {"space": SPACE, "search": {"trials": 12, "metric": "val_accuracy", "halving": {"eta": 3, "min_epochs": 1}}}
    halved = optimize(slow_learner, spec, storage=str(tmp_path / "h.db"), name="h")
    pruned = [t for t in halved.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.objective is None for t in pruned)
    assert halved.best_trial.params["x"] == max(t.params["x"] for t in halved.trials)
    spec["search"] = {"trials": 12, "metric": "val_accuracy", "median": {"startup_trials": 3}}
    median = optimize(slow_learner, spec, storage=str(tmp_path / "m.db"), name="m")
    states = Counter(t.state for t in median.trials)
    assert states[TrialState.PRUNED] >= 1 and states[TrialState.COMPLETE] >= 3


def test_two_worker_processes_share_the_study_without_duplicates(tmp_path: Path) -> None:
    study = optimize(barrier_quadratic, SPACE, trials=8, workers=2, storage=str(tmp_path / "w.db"), name="w")
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state == TrialState.COMPLETE and t.attempts == 1 for t in trials)
    pids = {int(t.worker_id.split(":")[1]) for t in trials}
    assert len(pids) >= 2 and os.getpid() not in pids


def test_spec_of_an_external_objective(tmp_path: Path) -> None:
    path = tmp_path / "ext.toml"
    path.write_text(
        textwrap.dedent(
            """
            [search]
            strategy = "sobol"
            trials = 4
            metric = "loss"
            [space]
            lr = { low = 1e-4, high = 1e-1, scale = "log" }
            momentum = { low = 0.8, high = 0.99, scale = "one_minus_log" }
            layers = { low = 1, high = 4 }
            act = ["relu", "tanh"]
            [objective]
            target = "objectives:quadratic"
            """
        )
    )
    spec = load_objective_spec(path)
    assert spec.study.name == "ext" and not spec.search.maximize  # a loss is minimized
    assert {p.name: p.scale for p in spec.space} == {
        "act": "choice",
        "layers": "int",
        "lr": "log",
        "momentum": "one_minus_log",
    }
    assert spec.search.storage == f"sqlite:///{tmp_path / 'ext.db'}"
    with pytest.raises(SpecError, match=r"^\[data\] is not for an external objective"):
        load_objective_spec({"data": {"dataset": "digits"}, "space": SPACE})
    with pytest.raises(SpecError, match=r"^objective.target: 'nocolon' is not module:function"):
        load_objective_spec({"space": SPACE, "objective": {"target": "nocolon"}})
    with pytest.raises(SpecError, match=r"^unknown key 'search.stratgy' \(did you mean 'strategy'\?\)$"):
        load_objective_spec({"space": SPACE, "search": {"stratgy": "tpe"}})


# ------------------------------------------------------------------------------------------ the CLI
def _spec(tmp_path: Path, trials: int, workers: int = 1) -> Path:
    path = tmp_path / "ext.toml"
    path.write_text(
        f'[search]\ntrials = {trials}\nworkers = {workers}\nmetric = "val_accuracy"\n'
        "[space]\nx = { low = 0.0, high = 1.0 }\n"
    )
    return path


def test_caviar_tune_objective_cli(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=3)
    (tmp_path / "myobj.py").write_text("def f(trial):\n    return trial.params['x']\n")
    done = subprocess.run(
        [str(CAVIAR), "tune", str(spec), "--objective", "myobj:f"],
        cwd=TESTS,  # the module is found in the spec's folder
        env=env_for_cli(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    assert "3 complete" in done.stdout and "best trial #" in done.stdout
    bad = CliRunner().invoke(app, ["tune", str(spec), "--objective", "nomodule:f"])
    assert bad.exit_code != 0
    assert "cannot import 'nomodule'" in str(bad.exception) or "cannot import 'nomodule'" in bad.output


def test_killed_caviar_tune_objective_resumes_with_every_trial_once(tmp_path: Path) -> None:
    trials = 8
    spec = _spec(tmp_path, trials=trials, workers=2)
    db = tmp_path / "ext.db"
    command = [str(CAVIAR), "tune", str(spec), "--objective", "objectives:hang_at"]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**env_for_cli(), "CAVIAR_TEST_HANG_AT": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:  # killed once trial 3 is running (it reported an epoch) and others are done
            assert proc.poll() is None, f"ended before it could be killed: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "trial 3 never started"
            running = poll_sql(
                db,
                "SELECT t.worker_id FROM caviar_trials t JOIN caviar_curves c ON c.trial_id = t.id "
                "WHERE t.number = 3 AND t.state = 'RUNNING'",
            )
            if running and poll_sql(db, "SELECT COUNT(*) FROM caviar_trials WHERE state = 'COMPLETE'")[0][0] >= 1:
                break
            time.sleep(POLL_S)  # polling interval of the storage, not a synchronization
        worker_pid = int(running[0][0].split(":")[1])
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert worker_pid != proc.pid
    while True:  # the worker process dies with its parent (PR_SET_PDEATHSIG)
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the worker outlived the killed `caviar tune`"
        time.sleep(POLL_S)
    assert sql(db, "SELECT state FROM caviar_trials WHERE number = 3") == [("RUNNING",)]

    done = subprocess.run(command, cwd=tmp_path, env=env_for_cli(), capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    rows = sql(db, "SELECT number, state, attempts FROM caviar_trials ORDER BY number")
    assert [r[0] for r in rows] == list(range(trials))
    assert all(state == "COMPLETE" for _, state, _ in rows)
    assert dict((n, a) for n, _, a in rows)[3] == 2
    epochs = Counter(
        n for (n,) in sql(db, "SELECT t.number FROM caviar_curves c JOIN caviar_trials t ON t.id = c.trial_id")
    )
    assert epochs == dict.fromkeys(range(trials), 3)  # trial 3's epoch from the killed run is gone
    store = open_storage(str(db))
    (study,) = store.list_studies()
    assert any(e.kind == "requeue" for e in store.events(study.id))


def test_the_torch_cnn_example_runs_from_its_spec(tmp_path: Path) -> None:
    """examples/torch_cnn.toml with `caviar tune` (a small MNIST subset, one epoch, two trials)."""
    from shared_data import mnist_dir

    spec = TESTS.parent / "examples" / "torch_cnn.toml"
    env = {
        **env_for_cli(),
        "CAVIAR_SHARED_DATA": str(mnist_dir().parent),
        "CAVIAR_EXAMPLE_SUBSET": "600",
        "CAVIAR_EXAMPLE_EPOCHS": "2",
    }
    command = [str(CAVIAR), "tune", str(spec), "--trials", "2", "--workers", "1", "--set", "search.rounds=1"]
    done = subprocess.run(
        [*command, "--storage", str(tmp_path / "cnn.db")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0, done.stderr
    study = Study(str(tmp_path / "cnn.db"), "torch_cnn")
    first, second = study.trials
    assert first.state == TrialState.COMPLETE  # the second may be pruned by the spec's successive halving
    assert second.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert {p.name: p.scale for p in study.spec.space} == {
        "beta1": "one_minus_log",
        "beta2": "one_minus_log",
        "lr": "log",
    }
    assert [r["epoch"] for r in study.curves()[first.id]] == [0, 1]
