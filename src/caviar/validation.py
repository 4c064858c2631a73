"""Checks of model and training configurations: one rule per field, one line per failure.

The Classifier, the study spec and panda's controls all go through these rules, so a value is
accepted or refused with the same words wherever it is given.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from caviar.config import ACTIVATIONS, DECAYS, OPTIMIZERS, ModelConfig, TrainConfig
from caviar.errors import CaviarError


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# name -> (predicate, what is allowed)
RULES: dict[str, tuple[Any, str]] = {
    "activation": (lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    "batchnorm": (lambda v: isinstance(v, bool), "true or false"),
    "dropout": (lambda v: _finite(v) and 0 <= v < 1, "a rate in [0, 1)"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "learning_rate": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "momentum": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta1": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta2": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "rho": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "epsilon": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "l2": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "decay": (lambda v: v in DECAYS, f"one of {', '.join(DECAYS)}"),
    "lr_decay": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "decay_every": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2, "an integer >= 2"),
    "epochs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "bn_momentum": (lambda v: _finite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "early_stopping": (lambda v: isinstance(v, bool), "true or false"),
    "patience": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "min_delta": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
}


def check_value(name: str, value: Any, where: str = "") -> Any:
    """Return ``value`` if field ``name`` may take it, else raise a one-line CaviarError."""
    if name == "hidden":
        ok = isinstance(value, (tuple, list)) and all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value
        )
        allowed = "a list of positive integer widths (may be empty)"
    elif name in RULES:
        pred, allowed = RULES[name]
        if isinstance(value, float) and value.is_integer() and "integer" in allowed:
            value = int(value)
        try:
            ok = bool(pred(value))
        except TypeError:
            ok = False
    else:
        return value
    if not ok:
        raise CaviarError(f"{where}{name}: {value!r} is not allowed; expected {allowed}")
    return value


def check_model_config(model: ModelConfig, where: str = "") -> ModelConfig:
    """Validate every field of a ModelConfig."""
    for f in fields(model):
        check_value(f.name, getattr(model, f.name), where)
    return model


def check_train_config(train: TrainConfig, where: str = "") -> TrainConfig:
    """Validate every field of a TrainConfig, and the decay rate against its kind."""
    for f in fields(train):
        check_value(f.name, getattr(train, f.name), where)
    if train.decay in ("exponential", "step") and not train.lr_decay < 1:
        raise CaviarError(f"{where}lr_decay: {train.lr_decay!r} must be < 1 for {train.decay} decay")
    return train
