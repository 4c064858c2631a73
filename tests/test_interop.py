"""Studies to and from Optuna, and the MLflow and TensorBoard loggers, read back by their own libraries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from caviar import Classifier
from caviar.cli import app
from caviar.errors import StorageError
from caviar.interop.loggers import MLflowLogger, TensorBoardLogger
from caviar.interop.optuna_io import export_optuna_study, import_optuna_study
from caviar.storage import TrialState, open_storage
from caviar.tune import Study, optimize
from objectives import quadratic

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------------------------------ Optuna
def _optuna_study(url: str) -> optuna.Study:
    """An Optuna study made by Optuna: every kind of distribution, intermediate values, each final state."""

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        layers = trial.suggest_int("layers", 1, 4)
        width = trial.suggest_int("width", 16, 256, log=True)
        act = trial.suggest_categorical("act", ["relu", "tanh"])
        value = -math.log10(lr) / 4 + dropout + layers / 10 + width / 1000 + (act == "relu")
        for step in range(3):
            trial.report(value * (step + 1) / 3, step)
        if trial.number == 3:
            raise optuna.TrialPruned()
        if trial.number == 5:
            raise ValueError("boom")
        return value

    study = optuna.create_study(
        study_name="opt", storage=url, direction="maximize", sampler=optuna.samplers.RandomSampler(0)
    )
    study.optimize(objective, n_trials=8, catch=(ValueError,))
    return study


def test_an_optuna_study_imports_with_the_same_params_values_curves_and_states(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    source = _optuna_study(url)
    cli = CliRunner().invoke(app, ["import-optuna", url, "opt", "--storage", str(tmp_path / "cli.db")])
    assert cli.exit_code == 0 and "imported 8 trials of Optuna study 'opt'" in cli.output, cli.output
    done = import_optuna_study(url, "opt", str(tmp_path / "caviar.db"))
    assert done.n_trials == 8 and done.scales == {
        "act": "choice",
        "dropout": "linear",
        "layers": "int",
        "lr": "log",
        "width": "int_log",
    }
    study = Study(str(tmp_path / "caviar.db"), "opt")
    trials = {t.number: t for t in study.trials}
    curves = study.curves()
    states = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAILED}
    for ot in source.trials:
        ct = trials[ot.number]
        assert ct.params == ot.params
        assert ct.state == states[ot.state.name]
        assert ct.metrics.get("value") == ot.value
        assert [(r["epoch"], r["value"]) for r in curves[ct.id]] == sorted(ot.intermediate_values.items())
    assert study.best_trial.number == source.best_trial.number
    assert study.best_trial.metrics["value"] == source.best_value
    assert {p.name: p.scale for p in study.spec.space} == done.scales
    assert all(t.unit is not None and len(t.unit) == 5 for t in study.trials)


def test_an_exported_caviar_study_loads_in_optuna_with_the_same_best_value(tmp_path: Path) -> None:
    space = {"x": {"low": 0.0, "high": 1.0}, "beta": {"low": 0.9, "high": 0.999, "scale": "one_minus_log"}}
    study = optimize(quadratic, space, trials=6, storage=str(tmp_path / "c.db"), name="mine", metric="val_accuracy")
    url = f"sqlite:///{tmp_path / 'out.db'}"
    result = CliRunner().invoke(
        app, ["export", "mine", "--storage", str(tmp_path / "c.db"), "--format", "optuna", "--to", url]
    )
    assert result.exit_code == 0, result.output
    loaded = optuna.load_study(study_name="mine", storage=url)
    assert loaded.direction == optuna.study.StudyDirection.MAXIMIZE
    assert loaded.best_value == study.best_value == study.best_trial.metrics["val_accuracy"]
    assert loaded.best_trial.params == study.best_trial.params
    assert loaded.user_attrs["caviar.scales"] == {"beta": "one_minus_log"}
    assert isinstance(loaded.best_trial.distributions["beta"], optuna.distributions.FloatDistribution)
    assert [t.number for t in loaded.trials] == [t.number for t in study.trials]
    assert loaded.trials[0].intermediate_values == {
        r["epoch"]: r["val_accuracy"] for r in study.curves()[study.trials[0].id]
    }
    # and back again: the one-minus-log scale returns from the study's user attributes
    back = import_optuna_study(url, "mine", str(tmp_path / "back.db"), name="again")
    assert back.scales == {"beta": "one_minus_log", "x": "linear"}
    again = Study(str(tmp_path / "back.db"), "again")
    assert again.best_trial.params == study.best_trial.params
    with pytest.raises(StorageError, match=r"already has a study 'mine'"):
        export_optuna_study(str(tmp_path / "c.db"), "mine", url)


def _dump(db: Path) -> str:
    """A SQLite file's content as SQL text (its bytes move when another connection checkpoints the WAL)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return "\n".join(conn.iterdump())


def test_bad_optuna_sources_are_one_line_errors_and_write_nothing(tmp_path: Path) -> None:
    target = tmp_path / "never.db"
    caviar_db = tmp_path / "caviar-own.db"
    optimize(quadratic, {"x": {"low": 0.0, "high": 1.0}}, trials=1, storage=str(caviar_db), name="c")
    before = _dump(caviar_db)
    cases = {
        f"sqlite:///{tmp_path / 'missing.db'}": r"^cannot open Optuna storage sqlite:///.*missing\.db: no such file",
        "postgresql+psycopg2://nobody@127.0.0.1:9/none": r"^cannot reach Optuna storage postgresql\+psycopg2://nobody@",
        f"sqlite:///{caviar_db}": r"is not an Optuna storage \(no studies, trials, trial_params, version_info tables",
        "not a url": r"^'not a url' is not a database URL",
    }
    for url, message in cases.items():
        with pytest.raises(StorageError, match=message) as info:
            import_optuna_study(url, "opt", str(target))
        assert "\n" not in str(info.value)
    assert not target.exists() and _dump(caviar_db) == before
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _optuna_study(url)
    with pytest.raises(StorageError, match=r"^Optuna storage sqlite:///.* has no study 'nope'; it has opt$"):
        import_optuna_study(url, "nope", str(target))
    assert not target.exists()
    result = CliRunner().invoke(
        app, ["import-optuna", f"sqlite:///{tmp_path / 'missing.db'}", "opt", "--storage", str(target)]
    )
    assert result.exit_code != 0 and not target.exists()


# ------------------------------------------------------------------------------------------ loggers
def _space() -> dict:
    return {"x": {"low": 0.0, "high": 1.0}, "lr": {"low": 1e-4, "high": 1e-1, "scale": "log"}}


def _saving(trial) -> float:
    trial.save_artifact("model.txt", f"x={trial.params['x']}".encode())
    return quadratic(trial)


def test_mlflow_receives_params_epochs_and_the_best_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its local file store behind this switch

    uri = (tmp_path / "mlruns").as_uri()
    logger = MLflowLogger(uri, experiment="objective")
    study = optimize(_saving, _space(), trials=3, storage=str(tmp_path / "m.db"), name="m", callbacks=[logger])
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("objective")
    runs = {int(r.data.tags["caviar.trial"]): r for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == [0, 1, 2]
    curves = study.curves()
    for t in study.trials:
        run = runs[t.number]
        assert float(run.data.params["x"]) == pytest.approx(t.params["x"])
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (r["epoch"], pytest.approx(r["val_accuracy"])) for r in curves[t.id]
        ]
    best = runs[study.best_trial.number]
    assert best.data.tags.get("caviar.best") == "true"
    assert "model.txt" in [a.path for a in client.list_artifacts(best.info.run_id)]

    # the estimator: epochs streamed as the model trains, then its params and model file
    X, y = np.random.default_rng(0).normal(size=(120, 4)), np.arange(120) % 3
    fit_logger = MLflowLogger(uri, experiment="fits")
    clf = Classifier(hidden=(8,), epochs=4, validation_fraction=0.25).fit(X, y, callbacks=[fit_logger])
    run_id = fit_logger.finish(clf)
    assert len(client.get_metric_history(run_id, "train_loss")) == 4
    assert client.get_run(run_id).data.params["epochs"] == "4"
    assert "model.npz" in [a.path for a in client.list_artifacts(run_id)]


def test_tensorboard_event_files_hold_params_and_epochs(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    study = optimize(_saving, _space(), trials=3, storage=str(tmp_path / "t.db"), name="t", callbacks=[logger])
    curves = study.curves()
    for t in study.trials:
        folder = tmp_path / "tb" / "t" / f"trial-{t.number}"
        events = EventAccumulator(str(folder))
        events.Reload()
        assert [(e.step, e.value) for e in events.Scalars("val_accuracy")] == [
            (r["epoch"], pytest.approx(r["val_accuracy"])) for r in curves[t.id]
        ]
        assert events.Scalars("params/lr")[0].value == pytest.approx(t.params["lr"])
        assert json.loads((folder / "params.json").read_text())["params"] == t.params
    assert (tmp_path / "tb" / "t" / "best" / "model.txt").read_bytes() == f"x={study.best_trial.params['x']}".encode()
    # any stored study, after the fact
    store = open_storage(str(tmp_path / "t.db"))
    assert TensorBoardLogger(tmp_path / "tb2").log_study(Study(store, "t")) == 3
    X, y = np.random.default_rng(0).normal(size=(120, 4)), np.arange(120) % 3
    fit_logger = TensorBoardLogger(tmp_path / "fit")
    clf = Classifier(hidden=(8,), epochs=3, validation_fraction=0.25).fit(X, y, callbacks=[fit_logger])
    folder = fit_logger.finish(clf)
    events = EventAccumulator(str(folder))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [0, 1, 2]
    assert (folder / "model.npz").is_file()
