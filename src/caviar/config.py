"""The two configurations every training is made of: the model's shape and the way it is trained.

Fields split in two kinds. *Static* fields change an array's shape or the code path (hidden widths,
activation, batch norm on/off, optimizer, decay kind, batch size, epochs): trials that differ in one
of them train in different populations. *Per-member* fields are plain numbers (learning rate, betas,
epsilon, L2, decay rate, BN momentum, dropout rate): inside a population they are (K,) arrays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam")
DECAYS = ("none", "inverse_time", "exponential", "step", "cosine")

#: Hyperparameters that may differ between the members of one population.
PER_MEMBER = (
    "learning_rate",
    "momentum",
    "beta1",
    "beta2",
    "rho",
    "epsilon",
    "l2",
    "lr_decay",
    "bn_momentum",
    "dropout",
)


@dataclass(frozen=True)
class ModelConfig:
    """The network: hidden widths, activation, batch norm before each activation, dropout after it."""

    hidden: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    batchnorm: bool = True
    dropout: float = 0.0

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

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    rho: float = 0.99
    epsilon: float = 1e-8
    l2: float = 0.0
    decay: str = "none"
    lr_decay: float = 0.0
    decay_every: int = 10
    batch_size: int = 64
    epochs: int = 30
    bn_momentum: float = 0.1
    early_stopping: bool = False
    patience: int = 10
    min_delta: float = 0.0


MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig))
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))


def static_key(model: ModelConfig, train: TrainConfig) -> tuple[Any, ...]:
    """What must be equal for two trials to train in one population."""
    m = asdict(model)
    t = asdict(train)
    m.pop("dropout")
    for name in PER_MEMBER:
        t.pop(name, None)
    return tuple(sorted(m.items())) + tuple(sorted(t.items()))


def with_values(model: ModelConfig, train: TrainConfig, values: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Return copies of both configs with ``values`` applied to whichever holds each name."""
    mv = {k: v for k, v in values.items() if k in MODEL_FIELDS}
    tv = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
    unknown = set(values) - set(mv) - set(tv)
    if unknown:
        raise KeyError(f"not a model or training field: {sorted(unknown)}")
    return replace(model, **mv), replace(train, **tv)
