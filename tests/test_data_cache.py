"""The data cache: what it returns is what the computation gives, bit for bit; broken or foreign
entries are computed again; with a warm cache a bundled data set loads and splits without importing
scikit-learn; a trial's model file is written without it too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caviar.data import cache
from caviar.data.cache import cached
from caviar.prepared import prepare_data


def _arrays(calls: list[int]) -> dict[str, np.ndarray]:
    calls.append(1)
    return {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "names": np.array(["a", "bc"])}


def test_an_entry_is_computed_once_and_read_back_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAVIAR_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    first = cached("t", {"a": 1}, lambda: _arrays(calls))
    again = cached("t", {"a": 1}, lambda: _arrays(calls))
    other = cached("t", {"a": 2}, lambda: _arrays(calls))
    assert len(calls) == 2  # the second call read the entry; another key computed again
    for got in (again, other):
        assert got.keys() == first.keys()
        assert all(got[k].dtype == first[k].dtype and np.array_equal(got[k], first[k]) for k in first)


def test_a_broken_entry_is_computed_again_and_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAVIAR_CACHE_DIR", str(tmp_path))
    calls: list[int] = []
    cached("t", {"a": 1}, lambda: _arrays(calls))
    (entry,) = tmp_path.glob("t-*.npz")
    entry.write_bytes(b"not a zip file")
    got = cached("t", {"a": 1}, lambda: _arrays(calls))
    assert len(calls) == 2 and np.array_equal(got["x"], np.arange(6).reshape(2, 3))
    cached("t", {"a": 1}, lambda: _arrays(calls))
    assert len(calls) == 2  # the rewritten entry is read


def test_off_and_an_unwritable_folder_compute_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setenv("CAVIAR_CACHE_DIR", "off")
    assert cache.cache_dir() is None
    cached("t", {"a": 1}, lambda: _arrays(calls))
    cached("t", {"a": 1}, lambda: _arrays(calls))
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder would be")
    monkeypatch.setenv("CAVIAR_CACHE_DIR", str(blocker / "cache"))
    got = cached("t", {"a": 1}, lambda: _arrays(calls))
    assert len(calls) == 3 and got["names"].tolist() == ["a", "bc"]


def test_each_kind_keeps_its_newest_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAVIAR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    for i in range(5):
        cached("t", {"a": i}, lambda: {"x": np.zeros(1)})
    cached("u", {"a": 0}, lambda: {"x": np.zeros(1)})
    assert len(list(tmp_path.glob("t-*.npz"))) == 3 and len(list(tmp_path.glob("u-*.npz"))) == 1


@pytest.mark.parametrize("dataset", ["digits", "iris", "diabetes"])
def test_cached_data_and_splits_equal_the_computed_ones(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAVIAR_CACHE_DIR", "off")
    plain = prepare_data(dataset, seed=3)
    monkeypatch.setenv("CAVIAR_CACHE_DIR", str(tmp_path))
    cold = prepare_data(dataset, seed=3)
    warm = prepare_data(dataset, seed=3)
    assert len(list(tmp_path.glob("*.npz"))) == 3  # the data set and its two splits
    for got in (cold, warm):
        for part in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "classes"):
            a, b = getattr(got, part), getattr(plain, part)
            assert a.dtype == b.dtype and np.array_equal(a, b), part
        assert got.fingerprint() == plain.fingerprint()
    other_seed = prepare_data(dataset, seed=4)
    assert not np.array_equal(other_seed.y_val, warm.y_val) or not np.array_equal(other_seed.X_val, warm.X_val)


def test_a_study_on_a_warm_cache_never_imports_scikit_learn(tmp_path: Path) -> None:
    """The second process finds digits and its splits in the cache, trains, stores the best trial's
    model file (written without an estimator), and scikit-learn was never imported."""
    code = (
        "import sys; from caviar.tune.study import run_study; "
        "s = run_study({'study': {'name': 'c', 'seed': 0}, 'data': {'dataset': 'digits'}, "
        "'model': {'hidden': [16]}, 'training': {'epochs': 1}, "
        "'search': {'strategy': 'random', 'trials': 2, 'storage': sys.argv[1]}, "
        "'space': {'learning_rate': {'low': 1e-3, 'high': 1e-2, 'scale': 'log'}}}); "
        "imported = 'sklearn' in sys.modules; "
        "print(len(s.trials), imported, s.best_model().n_features_in_)"  # the stored file reads back
    )
    env = {**os.environ, "CAVIAR_CACHE_DIR": str(tmp_path / "cache")}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"s{i}.db")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        for i in range(2)
    ]
    assert runs[0].stdout.split() == ["2", "True", "64"], runs[0].stderr
    assert runs[1].stdout.split() == ["2", "False", "64"], runs[1].stderr
