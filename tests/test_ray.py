"""The Ray executor on a real local Ray cluster: worker tasks claim populations from shared storage."""

from __future__ import annotations

import os

import pytest
import ray

from caviar.tune.study import run_study


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_executor_runs_every_trial_once_in_ray_workers(tmp_path, local_cluster):
    spec = {
        "study": {"name": "ray-study", "seed": 3},
        "data": {"dataset": "iris"},
        "model": {"hidden": [16], "batchnorm": True},
        "training": {"epochs": 3, "batch_size": 16},
        "search": {
            "trials": 8,
            "workers": 2,
            "executor": "ray",
            "max_population": 2,
            "storage": str(tmp_path / "ray.db"),
        },
        "space": {"learning_rate": {"low": 1e-3, "high": 1e-1, "scale": "log"}},
    }
    study = run_study(spec)
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state == "COMPLETE" for t in trials)
    pids = {int(t.worker_id.split(":")[1]) for t in trials}
    assert os.getpid() not in pids, "trials ran in the driver, not in Ray worker processes"
    assert all(0.0 <= t.metrics["val_accuracy"] <= 1.0 for t in trials)
