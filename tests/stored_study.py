"""Studies written straight into a storage, for the dashboard tests: no training, every state, known truth.

``synthetic_study`` stores trials over a space with every scale (log, one-minus-log, integer, a narrow
linear range, a choice) whose metric is decided by the learning rate alone, plus pruned trials with a
partial metric better than any complete one (so a best-so-far that counted them would show it), a
diverged trial without a finite metric, curves, an event and a model file for the best trial.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from caviar.storage import Storage, StudyStatus, TrialEnd, TrialState

SPACE: dict[str, Any] = {
    "learning_rate": {"low": 1e-5, "high": 1e-1, "scale": "log"},
    "beta2": {"low": 0.99, "high": 0.9999, "scale": "one_minus_log"},
    "depth": {"low": 1, "high": 4, "scale": "int"},
    "dropout": {"low": 0.1, "high": 0.1002, "scale": "linear"},
    "activation": {"choices": ["relu", "tanh", "gelu"]},
}
PRUNED_VALUE = 0.999  # better than any complete trial: it must never show as the best so far
MODEL = b"caviar model bytes"


def accuracy(lr: float) -> float:
    """The metric: a bump in log10(learning_rate) around 1e-3, nothing else matters."""
    return 0.97 - 0.05 * (math.log10(lr) + 3.0) ** 2


def synthetic_params(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "learning_rate": float(10 ** rng.uniform(-5, -1)),
        "beta2": float(1 - 10 ** rng.uniform(-4, -2)),
        "depth": int(rng.integers(1, 5)),
        "dropout": float(0.1 + 0.0002 * rng.uniform()),
        "activation": ["relu", "tanh", "gelu"][int(rng.integers(0, 3))],
    }


def synthetic_study(
    storage: Storage,
    name: str = "synthetic",
    n: int = 40,
    seed: int = 0,
    pruned: tuple[int, ...] = (3, 11, 19),
    diverged: tuple[int, ...] = (7,),
) -> dict[str, Any]:
    """Store the study; returns what the tests compare with: trial states, values and params by number."""
    spec = {
        "study": {"name": name, "seed": seed},
        "data": {"dataset": "digits"},
        "model": {"hidden": [16]},
        "training": {"epochs": 3, "batch_size": 64},
        "search": {"strategy": "random", "trials": n, "seed": seed},
        "space": SPACE,
    }
    sid = storage.create_study(name, spec, seed=seed)
    storage.set_study_status(sid, StudyStatus.RUNNING)
    rng = np.random.default_rng(seed)
    params = {k: synthetic_params(rng) for k in range(n)}
    storage.enqueue_trials(sid, [{"number": k, "params": p, "round": 0} for k, p in params.items()])
    claimed = storage.claim_trials(sid, "w", limit=n)
    states, values, ends = {}, {}, []
    for t in claimed:
        k = t.number
        acc = accuracy(params[k]["learning_rate"])
        state = TrialState.PRUNED if k in pruned else TrialState.DIVERGED if k in diverged else TrialState.COMPLETE
        value: float | None = {TrialState.PRUNED: PRUNED_VALUE, TrialState.DIVERGED: None}.get(state, acc)
        epochs = 1 if state != TrialState.COMPLETE else 3
        curve = [
            {
                "epoch": e,
                "train_loss": 1.0 / (e + 1),
                "val_loss": 1.2 / (e + 1),
                "train_accuracy": acc * (e + 1) / 3,
                "val_accuracy": acc * (e + 1) / 3,
            }
            for e in range(epochs)
        ]
        metrics = {"val_accuracy": value, "epochs_run": epochs}
        ends.append(TrialEnd(t.id, state, metrics, value, curve))
        states[k], values[k] = str(state), value
    storage.finish_trials("w", ends)
    storage.set_study_status(sid, StudyStatus.COMPLETE)
    best = storage.best_trial(sid)
    assert best is not None
    storage.save_artifact(best.id, "model.npz", MODEL)
    storage.add_event(sid, "requeue", {"reason": "heartbeat lost"}, trial_id=best.id)
    return {"id": sid, "states": states, "values": values, "params": params, "best": best.number}
