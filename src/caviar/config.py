"""The two configurations every training is made of: the model's shape and the way it is trained.

Fields split in two kinds. *Static* fields change an array's shape or the code path (hidden widths,
activation, batch norm on/off, optimizer, decay kind, batch size, epochs): trials that differ in one
of them train in different populations. *Per-member* fields are plain numbers (learning rate, betas,
epsilon, L2, decay rate, BN momentum, dropout rate): inside a population they are (K,) arrays.

Each field's default, bounds and kind live in :mod:`caviar.hparams`; the dataclasses below take their
defaults from it, and the import-time check at the bottom keeps their names and order equal to it.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any

from caviar.hparams import ACTIVATIONS, BY_NAME, DECAYS, MODEL, OPTIMIZERS, PER_MEMBER, TRAIN, HParam


def _default(name: str) -> Any:
    return BY_NAME[name].default


@dataclass(frozen=True)
class ModelConfig:
    """The network: hidden widths, activation, batch norm before each activation, dropout after it."""

    hidden: tuple[int, ...] = _default("hidden")
    activation: str = _default("activation")
    batchnorm: bool = _default("batchnorm")
    dropout: float = _default("dropout")

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch gradient descent and its hyperparameters.

    ``bn_momentum`` follows PyTorch: running = (1 - m) * running + m * batch, so the notes'
    averaging beta is 1 - bn_momentum. Decay kinds, with d = ``lr_decay`` and e the epoch (from 0):
    inverse_time lr / (1 + d e); exponential lr (1 - d)^e; step lr (1 - d)^(e // decay_every);
    cosine lr (1 + cos(pi e / epochs)) / 2.
    """

    optimizer: str = _default("optimizer")
    learning_rate: float = _default("learning_rate")
    momentum: float = _default("momentum")
    beta1: float = _default("beta1")
    beta2: float = _default("beta2")
    rho: float = _default("rho")
    epsilon: float = _default("epsilon")
    l2: float = _default("l2")
    decay: str = _default("decay")
    lr_decay: float = _default("lr_decay")
    decay_every: int = _default("decay_every")
    batch_size: int = _default("batch_size")
    epochs: int = _default("epochs")
    bn_momentum: float = _default("bn_momentum")
    early_stopping: bool = _default("early_stopping")
    patience: int = _default("patience")
    min_delta: float = _default("min_delta")


_TYPES = {"float": "float", "int": "int", "bool": "bool", "choice": "str", "widths": "tuple[int, ...]"}


def _check_matches_registry(cls: type, registered: tuple[HParam, ...]) -> None:
    """Fail at import when a dataclass's fields, types or defaults drift from the registry."""
    have = [(f.name, f.type, f.default) for f in fields(cls)]
    want = [(p.name, _TYPES[p.kind], p.default) for p in registered]
    if have != want or any(f.default is MISSING for f in fields(cls)):
        raise AssertionError(f"{cls.__name__} differs from caviar.hparams: {have} != {want}")


_check_matches_registry(ModelConfig, MODEL)
_check_matches_registry(TrainConfig, TRAIN)

MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig))
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))


def static_key(model: ModelConfig, train: TrainConfig) -> tuple[Any, ...]:
    """What must be equal for two trials to train in one population (every field not per-member)."""
    m = {k: v for k, v in asdict(model).items() if k not in PER_MEMBER}
    t = {k: v for k, v in asdict(train).items() if k not in PER_MEMBER}
    return tuple(sorted(m.items())) + tuple(sorted(t.items()))


def with_values(model: ModelConfig, train: TrainConfig, values: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Return copies of both configs with ``values`` applied to whichever holds each name."""
    mv = {k: v for k, v in values.items() if k in MODEL_FIELDS}
    tv = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
    unknown = set(values) - set(mv) - set(tv)
    if unknown:
        raise KeyError(f"not a model or training field: {sorted(unknown)}")
    return replace(model, **mv), replace(train, **tv)


__all__ = [
    "ACTIVATIONS",
    "DECAYS",
    "MODEL_FIELDS",
    "OPTIMIZERS",
    "PER_MEMBER",
    "TRAIN_FIELDS",
    "ModelConfig",
    "TrainConfig",
    "static_key",
    "with_values",
]
