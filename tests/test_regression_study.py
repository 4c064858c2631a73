"""Regression studies end to end: the task told from the target (or ``[data] task``), diabetes and
files with a float target, the target standardized on the training part and mapped back, val_r2 /
val_rmse / val_mae with their directions honoured, the saved model predicting in the target's units,
data in memory equal to the same data in files, and one-line refusals that store nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.metrics import r2_score

import caviar
from caviar.data import fit_target_scaler, in_memory, infer_task, load_table, scale_target, target_task
from caviar.errors import DataError, SpecError, StorageError
from caviar.prepared import prepare_data
from caviar.storage import open_storage
from caviar.tune.handoff import read_prepared, write_prepared
from caviar.tune.spec import load_spec
from caviar.tune.study import Study, run_study


def diabetes_frame(fractional: bool = True) -> pd.DataFrame:
    """scikit-learn's diabetes as a DataFrame, target 'progression' (a quarter added: not whole numbers)."""
    bunch = load_diabetes(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "progression"})
    if fractional:
        frame["progression"] = frame["progression"] + 0.25
    return frame


def spec(db: Path, data: dict, name: str = "reg", trials: int = 4, **search) -> dict:
    return {
        "study": {"name": name, "seed": 2},
        "data": data,
        "model": {"hidden": [16]},
        "training": {"epochs": 6, "batch_size": 32},
        "search": {"strategy": "random", "trials": trials, "storage": str(db), **search},
        "space": {"learning_rate": {"low": 1e-3, "high": 3e-1, "scale": "log"}},
    }


def outcomes(study: Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.metrics, t.objective) for t in study.trials]


def rows_stored(db: Path) -> int:
    """Every trial row in the database (what a refused command must leave as it was)."""
    if not db.exists():
        return 0
    storage = open_storage(db)
    return sum(len(storage.trials(s.id)) for s in storage.list_studies())


# ------------------------------------------------------------------------------------- the task
def test_the_task_is_told_from_the_target():
    assert infer_task(np.array([1.5, 2.0, 3.25])) == "regression"
    assert infer_task(np.array([0, 1, 1])) == "classification"
    assert infer_task(np.array(["a", "b"])) == "classification"
    assert infer_task(np.array([True, False])) == "classification"
    assert infer_task(np.array([1, 2.5], dtype=object)) == "regression"
    with pytest.raises(
        DataError, match='whole numbers as floats.*set \\[data\\] task = "classification" or "regression"'
    ):
        infer_task(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(DataError, match="NaN/inf"):
        infer_task(np.array([1.5, np.nan]))


def test_spec_task_from_dataset_file_and_memory(tmp_path):
    frame = diabetes_frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    diabetes_frame(fractional=False).to_csv(tmp_path / "whole.csv", index=False)
    named = load_spec(spec(tmp_path / "a.db", {"dataset": "diabetes"}))
    assert (named.task, named.search.metric, named.search.maximize) == ("regression", "val_r2", True)
    assert named.to_dict()["data"]["task"] == "regression"  # stored: a reload need not read the data
    from_file = load_spec(spec(tmp_path / "a.db", {"path": str(tmp_path / "d.csv"), "label": "progression"}))
    assert from_file.task == "regression" and target_task(tmp_path / "d.csv", "progression") == "regression"
    mem = load_spec(spec(tmp_path / "a.db", {"label": "progression"}), data=frame)
    assert mem.task == "regression" and mem.memory_data.y.dtype == np.float64
    iris = load_spec(spec(tmp_path / "a.db", {"dataset": "iris"}))
    assert (iris.task, iris.search.metric) == ("classification", "val_accuracy")
    assert "task" not in iris.to_dict()["data"]  # a classification spec's stored form is as before
    with pytest.raises(SpecError, match="whole numbers as floats.*set \\[data\\] task"):
        load_spec(spec(tmp_path / "a.db", {"path": str(tmp_path / "whole.csv"), "label": "progression"}))
    whole = load_spec(
        spec(tmp_path / "a.db", {"path": str(tmp_path / "whole.csv"), "label": "progression", "task": "regression"})
    )
    assert whole.task == "regression"
    with pytest.raises(SpecError, match="data.task: 'classification', but dataset 'diabetes' is for regression"):
        load_spec(spec(tmp_path / "a.db", {"dataset": "diabetes", "task": "classification"}))


def test_the_target_is_standardized_on_the_training_part_by_the_regressors_rule():
    data = prepare_data("diabetes", seed=2)
    raw = prepare_data("diabetes", seed=2, standardize=False)
    assert data.is_regression and data.n_outputs == 1 and data.n_classes == 0 and data.loss == "squared_error"
    y_train = data.targets(data.y_train)  # back in the target's units
    assert abs(y_train.mean() - 152) < 10 and y_train.std() > 50
    assert abs(float(np.mean(data.y_train))) < 1e-6 and abs(float(np.std(data.y_train)) - 1) < 1e-6
    scaler = fit_target_scaler(y_train)  # the rule the Regressor fits on its training part
    np.testing.assert_allclose(scaler.mean, data.target_scaler.mean, rtol=1e-12)
    reg = caviar.Regressor(hidden=(4,), epochs=1).fit(raw.X_train, raw.targets(raw.y_train))
    np.testing.assert_allclose(reg.target_scaler_.mean, data.target_scaler.mean, rtol=1e-12)
    np.testing.assert_allclose(reg.target_scaler_.std, data.target_scaler.std, rtol=1e-12)
    np.testing.assert_array_equal(scale_target(scaler, y_train, "float32"), data.y_train.astype(np.float32))
    assert np.std(data.targets(data.y_val)) > 50  # validation: the training part's statistics, not its own
    np.testing.assert_allclose(raw.targets(raw.y_test), data.targets(data.y_test), rtol=1e-6)
    back = read_prepared(write_prepared(data, Path(__import__("tempfile").mkdtemp()) / "h"))
    assert back.task == "regression" and back.target_scaler.mean[0] == data.target_scaler.mean[0]
    assert back.fingerprint() == data.fingerprint()


# ------------------------------------------------------------------------------------- studies
def test_diabetes_study_maximizes_r2_and_its_model_predicts_in_the_targets_units(tmp_path):
    study = run_study(spec(tmp_path / "s.db", {"dataset": "diabetes"}, trials=5))
    assert (study.record.metric, study.record.direction) == ("val_r2", "maximize")
    done = [t for t in study.trials if t.objective is not None]
    assert len(done) == 5
    for t in done:
        assert t.objective == pytest.approx(t.metrics["val_r2"])
        assert {"val_r2", "val_rmse", "val_mae", "test_r2", "test_rmse", "test_mae", "val_loss"} <= set(t.metrics)
        assert not {"val_accuracy", "train_accuracy", "test_accuracy"} & set(t.metrics)
    assert study.best_trial.number == max(done, key=lambda t: t.metrics["val_r2"]).number
    model = study.best_model()
    assert isinstance(model, caviar.Regressor)
    data = prepare_data("diabetes", seed=2, standardize=False)
    X_test, y_test = data.X_test, data.targets(data.y_test)
    pred = model.predict(X_test)
    assert abs(pred.mean() - y_test.mean()) < 40  # the target's units (about 150), not standardized ones
    assert r2_score(y_test, pred) == pytest.approx(study.best_trial.metrics["test_r2"], abs=1e-5)
    again = study.retrain(study.best_trial.number)
    np.testing.assert_allclose(again.predict(X_test), pred, rtol=1e-6)
    curves = study.curves()[study.best_trial.id]
    assert len(curves) == 6 and all({"val_r2", "val_rmse", "val_mae"} <= set(row) for row in curves)


@pytest.mark.parametrize("metric", ["val_rmse", "val_mae"])
def test_a_regression_study_on_an_error_picks_the_lowest(tmp_path, metric):
    study = run_study(spec(tmp_path / "s.db", {"dataset": "diabetes"}, trials=5, metric=metric))
    done = [t for t in study.trials if t.objective is not None]
    assert study.record.direction == "minimize" and len(done) == 5
    assert [t.objective for t in done] == [-t.metrics[metric] for t in done]
    assert len({t.metrics[metric] for t in done}) == 5
    assert study.best_trial.number == min(done, key=lambda t: t.metrics[metric]).number


def test_halving_and_hyperband_on_val_rmse_keep_the_lowest(tmp_path):
    s = spec(
        tmp_path / "s.db", {"dataset": "diabetes"}, trials=9, metric="val_rmse", halving={"eta": 3, "min_epochs": 2}
    )
    study = run_study(s)
    curves = study.curves()
    at_rung = {t.number: curves[t.id][1]["val_rmse"] for t in study.trials}  # every trial's epoch 2
    survivors = [t.number for t in study.trials if t.metrics["epochs_run"] > 2]
    pruned = [t.number for t in study.trials if t.state == "PRUNED"]
    assert survivors and pruned
    assert max(at_rung[n] for n in survivors) <= min(at_rung[n] for n in pruned)
    hb = spec(tmp_path / "h.db", {"dataset": "diabetes"}, trials=6, metric="val_rmse", hyperband={"max_epochs": 6})
    best = run_study(hb).best_trial
    assert best.metrics["val_rmse"] == min(
        t.metrics["val_rmse"] for t in Study.load("reg", str(tmp_path / "h.db")).trials if t.objective is not None
    )


def test_pbt_on_val_rmse_copies_the_lowest_onto_the_highest(tmp_path):
    s = spec(tmp_path / "s.db", {"dataset": "diabetes"}, trials=4, metric="val_rmse", strategy="pbt")
    s["search"]["pbt"] = {"population_size": 4, "perturbation_interval": 2, "quantile_fraction": 0.25}
    study = run_study(s)
    curves = study.curves()
    by_number = {t.number: t for t in study.trials}
    copies = [(n, e) for n, t in by_number.items() for e in t.metrics.get("lineage", [])]
    assert copies, "PBT exploited nobody"
    for number, event in copies:
        epoch, source = int(event["epoch"]), int(event["parent"])
        row = {n: curves[by_number[n].id][epoch - 1]["val_rmse"] for n in by_number}
        assert row[source] == min(row.values()) and row[number] == max(row.values())


# ------------------------------------------------------------------------------------- data in memory
def test_a_dataframe_study_equals_csv_and_parquet(tmp_path):
    frame = diabetes_frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    mem = run_study(spec(tmp_path / "a.db", {"label": "progression"}), data=frame)
    csv = run_study(spec(tmp_path / "b.db", {"path": str(tmp_path / "d.csv"), "label": "progression"}))
    pq = run_study(spec(tmp_path / "c.db", {"path": str(tmp_path / "d.parquet"), "label": "progression"}))
    np.savez(tmp_path / "d.npz", **{c: frame[c].to_numpy() for c in frame.columns})
    npz = run_study(spec(tmp_path / "f.db", {"path": str(tmp_path / "d.npz"), "label": "progression"}))
    arrays = run_study(
        spec(tmp_path / "d.db", {}),
        data=(frame.drop(columns="progression").to_numpy(), frame["progression"].to_numpy()),
    )
    assert len(mem.trials) == 4 and mem.record.metric == "val_r2"
    assert outcomes(mem) == outcomes(csv) == outcomes(pq) == outcomes(npz) == outcomes(arrays)
    two = run_study(spec(tmp_path / "e.db", {"label": "progression"}, workers=2), data=frame)  # memory-mapped handoff
    assert outcomes(two) == outcomes(mem)


def test_a_resume_with_other_data_in_memory_is_refused_and_loses_nothing(tmp_path):
    frame = diabetes_frame()
    db = tmp_path / "a.db"
    run_study(spec(db, {"label": "progression"}, trials=2), data=frame)
    before = outcomes(Study.load("reg", str(db)))
    other = frame.assign(progression=frame["progression"] * 2)
    with pytest.raises(StorageError, match="created with other data \\(changed: content") as info:
        run_study(spec(db, {"label": "progression"}, trials=4), data=other)  # the same shape, the target x2
    assert "\n" not in str(info.value)
    assert outcomes(Study.load("reg", str(db))) == before
    resumed = run_study(spec(db, {"label": "progression"}, trials=4), data=frame)  # the same data resumes
    assert len(resumed.trials) == 4 and outcomes(resumed)[:2] == before


def test_bad_dataframes_are_one_line_and_store_nothing(tmp_path):
    frame = diabetes_frame()
    db = tmp_path / "a.db"
    run_study(spec(db, {"label": "progression"}, trials=2), data=frame)
    text = frame.assign(bmi=frame["bmi"].astype(object))
    text.loc[4, "bmi"] = "high"
    missing = frame.copy()
    missing.loc[9, "bp"] = np.nan
    words = frame.assign(progression=["low", "high"] * (len(frame) // 2) + ["low"] * (len(frame) % 2))
    cases = [
        (text, {}, "feature column 'bmi' in DataFrame is not numeric"),
        (missing, {}, "NaN/inf value.*row 9, column 'bp'"),
        (words, {"task": "regression"}, "a regression needs a numeric target; row 0 holds 'low'"),
        (frame, {"task": "classification"}, "whole-number classes"),  # a float target in a classification study
    ]
    for bad, extra, message in cases:
        with pytest.raises(DataError, match=message) as info:
            run_study(spec(db, {"label": "progression", **extra}, trials=4), data=bad)
        assert "\n" not in str(info.value)
        assert rows_stored(db) == 2
    with pytest.raises(SpecError, match="'val_accuracy' is for classification, the study is regression"):
        run_study(spec(db, {"label": "progression"}, trials=4, metric="val_accuracy"), data=frame)
    assert rows_stored(db) == 2


# ------------------------------------------------------------------------------------- the command line
TOML = """
[study]
name = "{name}"
seed = 1
[data]
{data}
[model]
hidden = [8]
[training]
epochs = 3
batch_size = 32
[search]
trials = 2
storage = "{db}"
{search}
[space]
learning_rate = {{ low = 1e-3, high = 1e-1, scale = "log" }}
"""


def write_spec(folder: Path, name: str, data: str, search: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(TOML.format(name=name, data=data, db=folder / "s.db", search=search))
    return path


def test_caviar_tune_train_and_best_on_regression_data(cli, tmp_path):
    frame = diabetes_frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    code, out, err = cli(
        "tune", write_spec(tmp_path, "csvreg", f'path = "{tmp_path / "d.csv"}"\nlabel = "progression"')
    )
    assert code == 0, err
    assert "val_r2" in out and "test r2" in out
    code, out, err = cli("show", "csvreg", "--storage", tmp_path / "s.db")
    assert code == 0 and "test_r2" in out and "accuracy" not in out, err
    code, out, err = cli("best", "csvreg", "--storage", tmp_path / "s.db", "--save", tmp_path / "m.npz")
    assert code == 0, err
    assert "val_rmse" in out and "accuracy" not in out
    model = caviar.load(tmp_path / "m.npz")
    assert (
        isinstance(model, caviar.Regressor)
        and abs(model.predict(frame.drop(columns="progression").to_numpy()).mean() - 152) < 40
    )
    code, out, err = cli("train", "diabetes", "--epochs", "5", "--hidden", "8", "--save", tmp_path / "t.npz")
    assert code == 0, err
    assert "test R²" in out and "accuracy" not in out
    assert isinstance(caviar.load(tmp_path / "t.npz"), caviar.Regressor)
    code, out, err = cli(
        "train", "--file", tmp_path / "d.csv", "--label", "progression", "--epochs", "2", "--hidden", "4"
    )
    assert code == 0 and "validation R²" in out, err


def test_bad_input_from_the_command_line_is_one_line_and_loses_nothing(cli, tmp_path):
    frame = diabetes_frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    words = frame.assign(progression=np.where(frame["progression"] > 150, "high", "low"))
    words.to_csv(tmp_path / "w.csv", index=False)
    code, _, err = cli("tune", write_spec(tmp_path, "ok", 'dataset = "diabetes"'))
    assert code == 0, err
    stored = rows_stored(tmp_path / "s.db")
    assert stored == 2
    cases = {
        "float_in_classification": (
            f'path = "{tmp_path / "d.csv"}"\nlabel = "progression"\ntask = "classification"',
            "",
            "whole-number classes",
        ),
        "text_in_regression": (
            f'path = "{tmp_path / "w.csv"}"\nlabel = "progression"\ntask = "regression"',
            "",
            "needs a numeric target",
        ),
        "r2_in_classification": ('dataset = "iris"', 'metric = "val_r2"', "'val_r2' is for regression"),
        "accuracy_in_regression": (
            'dataset = "diabetes"',
            'metric = "val_accuracy"',
            "'val_accuracy' is for classification",
        ),
        "log_loss_in_regression": (
            'dataset = "diabetes"',
            'metric = "val_log_loss"',
            "'val_log_loss' is for classification",
        ),
    }
    for name, (data, search, message) in cases.items():
        code, out, err = cli("tune", write_spec(tmp_path, name, data, search))
        assert code != 0, (name, out)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (name, err)
        assert rows_stored(tmp_path / "s.db") == stored
    code, _, err = cli("train", "--file", tmp_path / "w.csv", "--label", "progression", "--task", "regression")
    assert code != 0 and "needs a numeric target" in err
    code, _, err = cli("best", "ok", "--storage", tmp_path / "s.db", "--ensemble", "2")
    assert code != 0 and "regression" in err and len(err.strip().splitlines()) == 1
    assert rows_stored(tmp_path / "s.db") == stored


def test_in_memory_dataset_task_must_agree(tmp_path):
    ds = in_memory(diabetes_frame(), "progression")
    assert ds.task == "regression" and ds.n_classes == 0
    with pytest.raises(DataError, match="the Dataset is for regression, the study for classification"):
        in_memory(ds, task="classification")
    assert load_table is not None


def test_a_classification_resume_with_other_data_in_memory_is_refused(tmp_path):
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    db = tmp_path / "c.db"
    s = {**spec(db, {"label": "target"}, name="cls", trials=2), "training": {"epochs": 2, "batch_size": 16}}
    run_study(s, data=frame)
    before = outcomes(Study.load("cls", str(db)))
    fewer = frame.iloc[:-3]
    with pytest.raises(StorageError, match="created with other data \\(changed: rows 150 -> 147\\)") as info:
        run_study({**s, "search": {**s["search"], "trials": 4}}, data=fewer)
    assert "\n" not in str(info.value)
    other = frame.assign(target=frame["target"].to_numpy()[::-1])  # same shape and classes, other labels
    with pytest.raises(StorageError, match="changed: content"):
        run_study({**s, "search": {**s["search"], "trials": 4}}, data=other)
    assert outcomes(Study.load("cls", str(db))) == before


def test_a_stored_spec_without_task_is_a_classifications(tmp_path):
    from caviar.tune.objective_spec import load_stored_spec
    from caviar.tune.spec import spec_diff

    X = np.random.default_rng(0).normal(size=(40, 3))
    np.save(tmp_path / "d.npy", np.column_stack([X, np.arange(40) % 2]).astype(np.float64))  # labels 0.0/1.0
    old = spec(tmp_path / "a.db", {"path": str(tmp_path / "d.npy")})  # as a study stored before tasks existed
    with pytest.raises(SpecError, match="whole numbers as floats"):
        load_spec(old)  # a new spec must say which
    assert load_stored_spec(old).task == "classification"  # a stored one without task was a classification
    given = load_spec({**old, "data": {**old["data"], "task": "classification"}})
    assert "data.task" not in spec_diff(old, given.to_dict())
    assert spec_diff(old, {**old, "data": {**old["data"], "task": "regression"}}) == ["data.task"]
