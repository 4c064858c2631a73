"""The metrics a study tunes for (caviar.metrics): values equal scikit-learn's, each metric's direction
honoured end to end (stored direction, objective, best trial, halving), one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from caviar.errors import SpecError
from caviar.metrics import METRICS, check_metric_for_task, direction_of, get_metric, metric_values
from caviar.tune.halving import SuccessiveHalving
from caviar.tune.spec import load_spec
from caviar.tune.study import run_study


def _spec(db: Path, metric: str, **search) -> dict:
    return {
        "study": {"name": f"m_{metric}", "seed": 0},
        "data": {"dataset": "iris"},
        "model": {"hidden": [8]},
        "training": {"epochs": 3, "batch_size": 32},
        "search": {"strategy": "random", "trials": 5, "storage": str(db), "metric": metric, **search},
        "space": {"learning_rate": {"low": 1e-4, "high": 3e-1, "scale": "log"}},
    }


def test_every_metric_has_a_task_and_direction():
    for m in METRICS.values():
        assert m.task in ("classification", "regression")
        assert m.direction in ("maximize", "minimize")
    assert [n for n, m in METRICS.items() if not m.maximize] == ["val_loss", "val_log_loss", "val_rmse", "val_mae"]
    assert direction_of("my_error") == "minimize" and direction_of("score") == "maximize"


def test_values_equal_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    p = rng.dirichlet(np.ones(3), 50)
    got = metric_values(["val_balanced_accuracy", "val_f1_macro", "val_log_loss"], y, p)
    assert got["val_balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p.argmax(1)))
    assert got["val_f1_macro"] == pytest.approx(skm.f1_score(y, p.argmax(1), average="macro"))
    assert got["val_log_loss"] == pytest.approx(skm.log_loss(y, p))
    yb = rng.integers(0, 2, 40)
    pb = rng.dirichlet(np.ones(2), 40)
    assert metric_values(["val_auc"], yb, pb)["val_auc"] == pytest.approx(skm.roc_auc_score(yb, pb[:, 1]))
    t, pred = rng.normal(size=30), rng.normal(size=30)
    reg = metric_values(["val_r2", "val_rmse", "val_mae"], t, pred)
    assert reg["val_r2"] == pytest.approx(skm.r2_score(t, pred))
    assert reg["val_rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(t, pred)))
    assert reg["val_mae"] == pytest.approx(skm.mean_absolute_error(t, pred))
    with pytest.raises(ValueError, match="two classes"):
        metric_values(["val_auc"], y, p)


def test_metric_that_does_not_fit_the_task():
    with pytest.raises(ValueError, match="'val_r2' is for regression, the study is classification"):
        check_metric_for_task("val_r2", "classification")
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("val_nope")


def test_unknown_metric_in_spec(tmp_path):
    with pytest.raises(SpecError, match="search.metric"):
        load_spec(_spec(tmp_path / "s.db", "val_nope"))


def test_log_loss_study_picks_the_lowest(tmp_path):
    study = run_study(_spec(tmp_path / "s.db", "val_log_loss"))
    done = [t for t in study.trials if t.metrics.get("val_log_loss") is not None]
    assert len(done) == 5
    assert study.record.direction == "minimize"
    lowest = min(done, key=lambda t: t.metrics["val_log_loss"])
    assert study.best_trial.number == lowest.number
    curves = study.curves()
    for t in done:  # the objective is minus the metric, and every epoch's row has it
        assert t.objective == pytest.approx(-t.metrics["val_log_loss"])
        assert len(curves[t.id]) == 3 and all("val_log_loss" in row for row in curves[t.id])


def test_balanced_accuracy_study_ranks_by_it(tmp_path):
    study = run_study(_spec(tmp_path / "s.db", "val_balanced_accuracy"))
    done = [t for t in study.trials if t.metrics.get("val_balanced_accuracy") is not None]
    assert study.record.direction == "maximize"
    best = max(done, key=lambda t: t.metrics["val_balanced_accuracy"])
    assert study.best_trial.metrics["val_balanced_accuracy"] == best.metrics["val_balanced_accuracy"]
    assert [t.objective for t in done] == [t.metrics["val_balanced_accuracy"] for t in done]


class _Trainer:
    def __init__(self, epoch: int) -> None:
        self.K, self.epoch, self.active = 3, epoch, np.arange(3)
        self.config = type("C", (), {"epochs": 10})()
        self.retired: list[int] = []

    def retire(self, members, status):
        self.retired += [int(m) for m in members]


def test_halving_keeps_the_lowest_of_a_metric_to_minimize():
    trainer = _Trainer(epoch=3)
    rows = {0: {"val_log_loss": 0.2}, 1: {"val_log_loss": 0.9}, 2: {"val_log_loss": 0.5}}
    SuccessiveHalving(eta=3, min_epochs=1, metric="val_log_loss").on_epoch_end(trainer, rows)
    assert sorted(trainer.retired) == [1, 2]
    trainer = _Trainer(epoch=3)
    rows = {0: {"val_f1_macro": 0.2}, 1: {"val_f1_macro": 0.9}, 2: {"val_f1_macro": 0.5}}
    SuccessiveHalving(eta=3, min_epochs=1, metric="val_f1_macro").on_epoch_end(trainer, rows)
    assert sorted(trainer.retired) == [0, 2]


def test_a_regression_metric_in_a_classification_study_is_one_line(tmp_path):
    with pytest.raises(SpecError, match="'val_r2' is for regression, the study is classification"):
        load_spec(_spec(tmp_path / "s.db", "val_r2"))
    assert not (tmp_path / "s.db").exists()
