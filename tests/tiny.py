"""The tiny coarse-to-fine study the dashboard, report and browser tests look at (a couple of seconds)."""

from __future__ import annotations

N_TRIALS = 6


def tiny_spec(storage: str, name: str = "tiny", seed: int = 1) -> dict:
    """Six trials of a small net on digits in two coarse-to-fine rounds, with log and one-minus-log axes."""
    return {
        "study": {"name": name, "seed": seed},
        "data": {"dataset": "digits"},
        "model": {"hidden": [32]},
        "training": {"epochs": 2, "batch_size": 128},
        "search": {"strategy": "coarse_to_fine", "trials": N_TRIALS, "rounds": 2, "storage": storage},
        "space": {
            "learning_rate": {"low": 1e-4, "high": 3e-2, "scale": "log"},
            "beta1": {"low": 0.8, "high": 0.999, "scale": "one_minus_log"},
            "l2": {"low": 1e-6, "high": 1e-2, "scale": "log"},
        },
    }
