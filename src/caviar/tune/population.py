"""Packing trials into populations: trials that share a static shape train as one stacked network.

Packing is a pure function of the trial list, so the same study gives the same populations (and
so the same numbers, bit for bit) whether one worker or many run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caviar.config import PER_MEMBER, ModelConfig, TrainConfig, static_key

DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # bytes of arrays one population may hold


@dataclass(frozen=True)
class TrialPlan:
    """One trial ready to train: its number, its values, and the full configs they make."""

    number: int
    values: dict[str, Any]
    model: ModelConfig
    train: TrainConfig
    round: int = 0
    unit: tuple[float, ...] = field(default=())

    @property
    def key(self) -> tuple:
        return static_key(self.model, self.train)

    def member_values(self) -> dict[str, float]:
        """This trial's per-member hyperparameters (the (K,) arrays' entries)."""
        values = {name: getattr(self.train, name) for name in PER_MEMBER if name != "dropout"}
        values["dropout"] = self.model.dropout
        return values


def bytes_per_member(n_in: int, n_out: int, model: ModelConfig, train: TrainConfig, itemsize: int = 4) -> int:
    """Rough array bytes one member needs: weights x (param, grad, 2 slots, best copy) + activations."""
    widths = (n_in, *model.hidden, n_out)
    n_params = sum(a * b + 4 * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    activations = train.batch_size * sum(widths[1:]) * 6
    return itemsize * (5 * n_params + activations)


def pack(
    plans: Sequence[TrialPlan],
    n_in: int,
    n_out: int,
    max_population: int = 64,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> list[list[TrialPlan]]:
    """Group plans by static key (in order of first trial number), then chunk each group.

    A chunk holds at most ``max_population`` members and what fits in ``memory_budget``.
    """
    groups: dict[tuple, list[TrialPlan]] = {}
    for plan in sorted(plans, key=lambda p: p.number):
        groups.setdefault(plan.key, []).append(plan)
    populations = []
    for members in groups.values():
        first = members[0]
        fit = max(1, memory_budget // bytes_per_member(n_in, n_out, first.model, first.train))
        size = max(1, min(max_population, fit))
        n_chunks = -(-len(members) // size)
        # balanced chunks, sizes differing by at most one: 40 in 2 x 20 (not 32 + 8), 13 in 4 + 3 x 3 (not 4 x 3 + 1)
        small, extra = divmod(len(members), n_chunks)
        bounds = np.cumsum([0] + [small + (i < extra) for i in range(n_chunks)])
        populations += [members[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return populations
