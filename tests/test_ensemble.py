"""The population as an ensemble: Study.ensemble (top k trials, any shapes, or packed), its model file,
``caviar best --ensemble k --save``, and one-line refusals of a bad k."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caviar
from caviar.ensemble import EnsembleClassifier, save_ensemble
from caviar.errors import CaviarError, ModelFileError
from caviar.tune.ensemble import ensemble_report, top_trials, trial_model
from caviar.tune.study import Study, run_study

CAVIAR = Path(sys.executable).parent / "caviar"


def _spec(db: Path) -> dict:
    return {
        "study": {"name": "ens", "seed": 2},
        "data": {"dataset": "digits"},
        "model": {},
        "training": {"epochs": 3, "batch_size": 64},
        "search": {"strategy": "random", "trials": 6, "storage": str(db)},
        "space": {"learning_rate": {"low": 1e-3, "high": 3e-2, "scale": "log"}, "hidden": [[16], [24, 12]]},
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return run_study(_spec(tmp_path_factory.mktemp("ens") / "ens.db"))


def test_the_top_k_trials_of_any_shapes_averaged_in_probability(study: Study) -> None:
    ens = study.ensemble(4)
    top = top_trials(study, 4)
    assert [t.objective for t in top] == sorted((t.objective for t in study.trials), reverse=True)[:4]
    assert len({tuple(m.hidden) for m in ens.members}) == 2  # two shapes in one ensemble
    X = np.random.default_rng(0).normal(size=(50, 64)) * 4 + 5
    members = [trial_model(study, t).predict_proba(X) for t in top]
    assert np.allclose(ens.predict_proba(X), np.mean(members, axis=0), rtol=0, atol=1e-12)
    assert np.array_equal(ens.predict(X), ens.classes_[np.argmax(np.mean(members, axis=0), axis=1)])
    best = study.best_model()  # the stored best model is the ensemble's first member
    assert np.array_equal(ens.members[0].predict_proba(X), best.predict_proba(X))


def test_an_ensemble_file_round_trips(study: Study, tmp_path: Path) -> None:
    ens = study.ensemble(3)
    path = save_ensemble(ens, tmp_path / "m")
    assert path == tmp_path / "m.npz"
    back = caviar.load(path)
    assert isinstance(back, EnsembleClassifier) and len(back) == 3
    X = np.random.default_rng(1).normal(size=(40, 64)) * 4 + 5
    assert np.array_equal(back.predict_proba(X), ens.predict_proba(X))
    buffer = io.BytesIO()
    save_ensemble(ens, buffer)
    buffer.seek(0)
    assert np.array_equal(caviar.load(buffer).member_proba(X), ens.member_proba(X))


def test_a_broken_ensemble_file_is_one_line(study: Study, tmp_path: Path) -> None:
    path = save_ensemble(study.ensemble(2), tmp_path / "m.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("member1/")}
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ModelFileError, match=r"no arrays for ensemble member 1") as info:
        caviar.load(tmp_path / "broken.npz")
    assert "\n" not in str(info.value)


def test_the_report_puts_the_ensemble_beside_the_best_trial(study: Study) -> None:
    report = ensemble_report(study, study.ensemble(1))
    assert report["ensemble"] == report["best_trial"]
    best = study.best_trial
    assert report["best_trial"]["test_accuracy"] == pytest.approx(best.metrics["test_accuracy"], abs=1e-12)
    assert report["best_trial"]["val_accuracy"] == pytest.approx(best.metrics["val_accuracy"], abs=1e-12)


def test_a_packed_ensemble_trains_k_seeds_of_the_best_hyperparameters(study: Study) -> None:
    ens = study.ensemble(3, packed=True)
    best = study.best_trial
    assert len(ens) == 3 and all(tuple(m.hidden) == tuple(best.params["hidden"]) for m in ens.members)
    assert all(m.learning_rate == best.params["learning_rate"] for m in ens.members)
    w = [m.params_["out.W"] for m in ens.members]
    assert not np.array_equal(w[0], w[1]) and not np.array_equal(w[1], w[2])  # each its own seed
    report = ensemble_report(study, ens, packed=True)
    assert report["ensemble"]["val_accuracy"] is None and report["ensemble"]["test_accuracy"] > 0.5


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (0, "--ensemble: 0 members; give an integer of at least 1"),
        (7, "--ensemble: 7 members asked, but study 'ens' has 6 completed trials"),
    ],
)
def test_a_bad_k_is_one_clear_line(study: Study, k: int, message: str) -> None:
    with pytest.raises(CaviarError) as info:
        study.ensemble(k)
    assert str(info.value) == message


def test_caviar_best_ensemble_saves_and_reports(study: Study, tmp_path: Path) -> None:
    url = study.storage.url
    out = subprocess.run(
        [str(CAVIAR), "best", "ens", "--storage", url, "--ensemble", "3", "--save", str(tmp_path / "e.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "ensemble of top 3: val_accuracy = " in out.stdout and "best trial: val_accuracy = " in out.stdout
    assert isinstance(caviar.load(tmp_path / "e.npz"), EnsembleClassifier)
    for args, message in (
        (["--ensemble", "0"], "--ensemble: 0 members"),
        (["--ensemble", "9"], "9 members asked"),
        (["--packed"], "--packed needs --ensemble k"),
    ):
        bad = subprocess.run(
            [str(CAVIAR), "best", "ens", "--storage", url, *args], capture_output=True, text=True, timeout=120
        )
        assert bad.returncode != 0 and message in bad.stderr and bad.stderr.strip().count("\n") == 0, bad.stderr
