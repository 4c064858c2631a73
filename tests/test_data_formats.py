"""Data in memory and in more formats: a DataFrame or (X, y) in place of a path, CSV (plain and gzip),
parquet, NPY and NPZ read alike; worker processes get the prepared data once, memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from caviar.data import in_memory, load_table
from caviar.errors import DataError
from caviar.prepared import prepare_data
from caviar.tune.handoff import read_prepared, write_prepared
from caviar.tune.spec import load_spec
from caviar.tune.study import Study, run_study


def iris_frame() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "species"})
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    return frame


def spec(db: Path, data: dict, name: str = "fmt", **search) -> dict:
    return {
        "study": {"name": name, "seed": 3},
        "data": data,
        "model": {"hidden": [8]},
        "training": {"epochs": 3, "batch_size": 16},
        "search": {"strategy": "random", "trials": 4, "storage": str(db), **search},
        "space": {"learning_rate": {"low": 1e-3, "high": 1e-1, "scale": "log"}},
    }


def outcomes(study: Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.metrics) for t in study.trials]


def test_every_format_reads_the_same_table(tmp_path):
    frame = iris_frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.csv.gz", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    np.savez(tmp_path / "d.npz", **{c: frame[c].to_numpy() for c in frame.columns})
    np.save(tmp_path / "d.npy", frame.to_numpy())
    ref = in_memory(frame, "species")
    assert ref.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    for name in ("d.csv", "d.csv.gz", "d.parquet", "d.npz", "d.npy"):
        got = load_table(tmp_path / name, "species", task="classification")
        np.testing.assert_array_equal(got.X, ref.X)
        np.testing.assert_array_equal(got.y, ref.y)
        assert got.name == "d"
        if name != "d.npy":  # a plain array has no column names
            assert got.feature_names == ref.feature_names
    ask = 'whole numbers as floats.*set \\[data\\] task = "classification" or "regression"'
    with pytest.raises(DataError, match=ask):
        load_table(tmp_path / "d.npy", "species")  # a float array's last column: classes or a quantity?
    assert load_table(tmp_path / "d.csv", "species").task == "classification"  # integer labels tell
    xy = in_memory((frame.drop(columns="species"), frame["species"]))
    np.testing.assert_array_equal(xy.X, ref.X)
    assert xy.feature_names == ref.feature_names


def test_run_study_on_a_dataframe_equals_csv_and_parquet(tmp_path):
    frame = iris_frame()
    frame.to_csv(tmp_path / "iris.csv", index=False)
    frame.to_parquet(tmp_path / "iris.parquet")
    mem = run_study(spec(tmp_path / "a.db", {"label": "species"}), data=frame)
    csv = run_study(spec(tmp_path / "b.db", {"path": str(tmp_path / "iris.csv"), "label": "species"}))
    pq = run_study(spec(tmp_path / "c.db", {"path": str(tmp_path / "iris.parquet"), "label": "species"}))
    assert len(mem.trials) == 4
    assert outcomes(mem) == outcomes(csv) == outcomes(pq)
    X, y = frame.drop(columns="species").to_numpy(), frame["species"].to_numpy()
    arrays = run_study(spec(tmp_path / "d.db", {}), data=(X, y))
    assert outcomes(arrays) == outcomes(mem)
    assert mem.record.spec["data"]["in_memory"] is True
    assert "in_memory" not in csv.record.spec["data"]
    # retrain needs the data again: the Study run_study returns holds it
    model = mem.retrain(mem.best_trial.number)
    assert model.predict(X[:5]).shape == (5,)


def test_resume_of_an_in_memory_study_needs_its_data(tmp_path):
    frame = iris_frame()
    s = spec(tmp_path / "a.db", {"label": "species"})
    run_study(s, data=frame)
    stored = Study.load("fmt", str(tmp_path / "a.db")).spec
    with pytest.raises(DataError, match="given in memory; pass it again"):
        run_study(stored.to_dict())


def test_worker_processes_map_the_data_in(tmp_path):
    frame = iris_frame()
    one = run_study(spec(tmp_path / "a.db", {"label": "species"}), data=frame)
    two = run_study(spec(tmp_path / "b.db", {"label": "species"}, workers=2), data=frame)
    assert outcomes(one) == outcomes(two)


def test_handoff_round_trip(tmp_path):
    data = prepare_data("iris", seed=1)
    back = read_prepared(write_prepared(data, tmp_path / "h"))
    assert isinstance(back.X_train, np.memmap)
    for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "classes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    np.testing.assert_array_equal(back.standardizer.mean, data.standardizer.mean)
    assert back.name == data.name


def test_bad_in_memory_data_is_one_line(tmp_path):
    frame = iris_frame()
    text = frame.assign(sepal_length=frame["sepal_length"].astype(object))
    text.loc[3, "sepal_length"] = "n/a"
    with pytest.raises(DataError, match="feature column 'sepal_length' in DataFrame is not numeric"):
        run_study(spec(tmp_path / "a.db", {"label": "species"}), data=text)
    missing = frame.copy()
    missing.loc[7, "petal_width"] = np.nan
    with pytest.raises(DataError, match="NaN/inf value.*row 7, column 'petal_width'"):
        run_study(spec(tmp_path / "a.db", {"label": "species"}), data=missing)
    none = frame.assign(petal_width=frame["petal_width"].astype(object))
    none.loc[2, "petal_width"] = None
    with pytest.raises(DataError, match="'petal_width' in DataFrame has a missing value at row 2"):
        in_memory(none, "species")
    with pytest.raises(DataError, match="label column 'kind' not in DataFrame"):
        in_memory(frame, "kind")
    with pytest.raises(DataError, match="a DataFrame or a pair"):
        in_memory(np.zeros((3, 3)))
    with pytest.raises(DataError, match="whole-number classes"):  # a float target in a classification study
        in_memory((frame.drop(columns="species"), frame["sepal_length"]), task="classification")
    assert not (tmp_path / "a.db").exists() or Study.load("fmt", str(tmp_path / "a.db")).trials == []


def test_spec_accepts_csv_gz_and_refuses_both_sources(tmp_path):
    iris_frame().to_csv(tmp_path / "d.csv.gz", index=False)
    s = load_spec(spec(tmp_path / "a.db", {"path": str(tmp_path / "d.csv.gz"), "label": "species"}))
    assert s.data.path.endswith("d.csv.gz")
    from caviar.errors import SpecError

    with pytest.raises(SpecError, match="data is given in memory; the spec's \\[data\\] takes no dataset or path"):
        load_spec(spec(tmp_path / "a.db", {"dataset": "iris"}), data=iris_frame())
