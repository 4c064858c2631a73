"""Checks of model and training configurations: one rule per field, one line per failure.

The rules are :mod:`caviar.hparams`'s; the Classifier, the study spec and panda's controls all go
through them, so a value is accepted or refused with the same words wherever it is given.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from caviar.config import ModelConfig, TrainConfig
from caviar.errors import CaviarError
from caviar.hparams import broken_rule
from caviar.hparams import check_value as check_value


def _check_fields(config: ModelConfig | TrainConfig, where: str) -> None:
    for f in fields(config):
        check_value(f.name, getattr(config, f.name), where)


def _check_rules(values: dict[str, Any], where: str) -> None:
    broken = broken_rule(values)
    if broken:
        raise CaviarError(f"{where}{broken}")


def check_model_config(model: ModelConfig, where: str = "") -> ModelConfig:
    """Validate every field of a ModelConfig."""
    _check_fields(model, where)
    return model


def check_train_config(train: TrainConfig, where: str = "") -> TrainConfig:
    """Validate every field of a TrainConfig, and the rules among them (the decay rate against its kind)."""
    _check_fields(train, where)
    _check_rules(asdict(train), where)
    return train


def check_configs(model: ModelConfig, train: TrainConfig, where: str = "") -> tuple[ModelConfig, TrainConfig]:
    """Validate both configs and every rule between them (batch norm needs batches of 2 or more)."""
    check_model_config(model, where)
    check_train_config(train, where)
    _check_rules({**asdict(model), **asdict(train)}, where)
    return model, train


__all__ = ["check_configs", "check_model_config", "check_train_config", "check_value"]
