"""SGD, momentum, Nesterov, RMSprop and Adam as (init, update) pairs over stacked parameters.

Every hyperparameter is a (K,) array (one value per member) reshaped to (K, 1, 1) so it
broadcasts over each member's arrays. Updates are written in place into the parameter arrays
(training touches every parameter every step; fresh arrays would double the memory traffic).
The numerics follow PyTorch (see docs/engine.md): momentum's first buffer is the gradient itself,
RMSprop adds eps after the square root, Adam adds eps outside the root of the bias-corrected v.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from caviar.config import OPTIMIZERS

Arrays = dict[str, np.ndarray]


def _col(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A (K,) hyperparameter as (K, 1, 1) in the dtype of the array it updates."""
    return np.asarray(v, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


@dataclass
class OptimizerState:
    """Slots (buffers named like the parameters) and the step counter t (from 1 after a step)."""

    step: int = 0
    slots: dict[str, Arrays] = field(default_factory=dict)

    def select(self, keep: np.ndarray) -> OptimizerState:
        """The state of the members ``keep`` (population compaction)."""
        return OptimizerState(self.step, {s: {n: a[keep] for n, a in d.items()} for s, d in self.slots.items()})

    def copy(self) -> OptimizerState:
        return OptimizerState(self.step, {s: {n: a.copy() for n, a in d.items()} for s, d in self.slots.items()})


@dataclass(frozen=True)
class Optimizer:
    """One optimizer kind; ``update`` mutates params in place and returns nothing."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.kind!r}; choose from {', '.join(OPTIMIZERS)}")

    def init(self, params: Arrays) -> OptimizerState:
        names = {
            "sgd": (),
            "momentum": ("buf",),
            "nesterov": ("buf",),
            "rmsprop": ("sq",),
            "adam": ("m", "v"),
        }[self.kind]
        return OptimizerState(0, {s: {n: np.zeros_like(p) for n, p in params.items()} for s in names})

    def update(
        self,
        params: Arrays,
        grads: Arrays,
        state: OptimizerState,
        lr: np.ndarray,
        hp: dict[str, np.ndarray],
        l2: np.ndarray | None = None,
        decayed: frozenset[str] = frozenset(),
    ) -> None:
        """One step: L2 (``l2`` (K,) times the weight) is added to the gradients of ``decayed``."""
        state.step += 1
        t = state.step
        for name, p in params.items():
            g = grads[name]
            if l2 is not None and name in decayed:
                g = g + _col(l2, p) * p
            lr_k = _col(lr, p)
            if self.kind == "sgd":
                p -= lr_k * g
            elif self.kind in ("momentum", "nesterov"):
                mu = _col(hp["momentum"], p)
                buf = state.slots["buf"][name]
                if t == 1:
                    buf[...] = g
                else:
                    buf *= mu
                    buf += g
                p -= lr_k * (g + mu * buf if self.kind == "nesterov" else buf)
            elif self.kind == "rmsprop":
                rho = _col(hp["rho"], p)
                sq = state.slots["sq"][name]
                sq *= rho
                sq += (1.0 - rho) * g * g
                p -= lr_k * g / (np.sqrt(sq) + _col(hp["epsilon"], p))
            else:
                b1, b2 = _col(hp["beta1"], p), _col(hp["beta2"], p)
                m, v = state.slots["m"][name], state.slots["v"][name]
                m *= b1
                m += (1.0 - b1) * g
                v *= b2
                v += (1.0 - b2) * g * g
                step_size = lr_k / (1.0 - b1**t)
                denom = np.sqrt(v) / np.sqrt(1.0 - b2**t) + _col(hp["epsilon"], p)
                p -= step_size * m / denom


def make_optimizer(kind: str) -> Optimizer:
    """The optimizer named ``kind`` (one of caviar.config.OPTIMIZERS)."""
    return Optimizer(kind)
