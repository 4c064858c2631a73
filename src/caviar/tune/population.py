"""Packing trials into populations: trials that share a static shape train as one stacked network.

Trials whose static fields agree except their hidden widths (same depth) may share a population
padded to the widest width per layer (``caviar.nn.padding``: each member trains exactly as alone);
a cost model decides: shapes are merged only while the padded matmul work stays within
``pad_bound`` times the members' own. Packing is a pure function of the trial set (not its order),
so the same study gives the same populations (and so the same numbers, bit for bit) whether one
worker or many run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from caviar.config import PER_MEMBER, ModelConfig, TrainConfig, static_key

DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # bytes of arrays one population may hold
#: Merge shapes into one padded population while its matmul work is at most this times the members' own.
DEFAULT_PAD_BOUND = 1.5

Hidden = tuple[int, ...]


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

    @property
    def pad_key(self) -> tuple:
        """What must be equal to share a padded population: the static key with the widths reduced
        to the depth."""
        return static_key(replace(self.model, hidden=(0,) * len(self.model.hidden)), self.train)

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


def macs(n_in: int, n_out: int, hidden: Sequence[int]) -> int:
    """Matmul multiply-adds per sample of one forward pass at ``hidden`` (backward is twice that:
    the ratio between shapes is the same)."""
    widths = (n_in, *hidden, n_out)
    return sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False))


def padded_ratio(n_in: int, n_out: int, hiddens: Sequence[Sequence[int]]) -> float:
    """Matmul work of ``hiddens`` trained padded to the widest width per layer, over their own work."""
    widest = tuple(max(ws) for ws in zip(*hiddens, strict=True))
    return len(hiddens) * macs(n_in, n_out, widest) / sum(macs(n_in, n_out, h) for h in hiddens)


def merge_shapes(
    counts: dict[Hidden, int], n_in: int, n_out: int, pad_bound: float = DEFAULT_PAD_BOUND
) -> list[list[Hidden]]:
    """Clusters of hidden shapes (one depth) to train padded together, by greedy agglomeration.

    Start from one cluster per shape; repeatedly merge the two clusters whose union has the lowest
    padded-work ratio (``counts`` trials of each shape), while that ratio is at most ``pad_bound``.
    Deterministic in the set of shapes (ties broken by the sorted shapes).
    """
    clusters = [[h] for h in sorted(counts)]

    def ratio(shapes: list[Hidden]) -> float:
        return padded_ratio(n_in, n_out, [h for h in shapes for _ in range(counts[h])])

    while len(clusters) > 1:
        best = min(
            (
                (ratio(a + b), sorted(a + b), i, j)
                for i, a in enumerate(clusters)
                for j, b in enumerate(clusters)
                if i < j
            ),
        )
        if best[0] > pad_bound:
            break
        _, _, i, j = best
        clusters = [c for n, c in enumerate(clusters) if n not in (i, j)] + [sorted(clusters[i] + clusters[j])]
        clusters.sort()
    return clusters


def _chunks(members: list[TrialPlan], size: int) -> list[list[TrialPlan]]:
    """Balanced chunks of at most ``size``, sizes differing by at most one: 40 in 2 x 20 (not 32 + 8),
    13 in 4 + 3 x 3 (not 4 x 3 + 1)."""
    n_chunks = -(-len(members) // size)
    small, extra = divmod(len(members), n_chunks)
    bounds = np.cumsum([0] + [small + (i < extra) for i in range(n_chunks)])
    return [members[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def pack(
    plans: Sequence[TrialPlan],
    n_in: int,
    n_out: int,
    max_population: int = 64,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    pad_bound: float | None = DEFAULT_PAD_BOUND,
) -> list[list[TrialPlan]]:
    """Populations of ``plans``: grouped by static key up to the widths, shapes merged by the cost model
    (``merge_shapes``; ``pad_bound=None``: no padding, one shape per population), then chunked.

    A chunk holds at most ``max_population`` members and what fits in ``memory_budget`` (at its padded
    widths); a merged cluster is chunked in order of shape then trial number, and a chunk whose own
    padded ratio exceeds ``pad_bound`` is split back by shape. Clusters come in order of their first
    trial number, each one's chunks in turn (without merges: exactly the unpadded packing), members
    in trial-number order.
    """
    ordered = sorted(plans, key=lambda p: p.number)
    groups: dict[tuple, list[TrialPlan]] = {}
    for plan in ordered:
        groups.setdefault(plan.key if pad_bound is None else plan.pad_key, []).append(plan)
    populations: list[tuple[int, list[TrialPlan]]] = []  # (first trial number of its cluster, members)
    for members in groups.values():
        counts: dict[Hidden, int] = {}
        for p in members:
            counts[tuple(p.model.hidden)] = counts.get(tuple(p.model.hidden), 0) + 1
        clusters = [[h] for h in sorted(counts)] if pad_bound is None else merge_shapes(counts, n_in, n_out, pad_bound)
        for shapes in clusters:
            inside = sorted((p for p in members if tuple(p.model.hidden) in shapes), key=_shape_order)
            start = min(p.number for p in inside)
            widest = tuple(max(ws) for ws in zip(*shapes, strict=True))
            first = inside[0]
            fit = max(
                1, memory_budget // bytes_per_member(n_in, n_out, replace(first.model, hidden=widest), first.train)
            )
            for chunk in _chunks(inside, max(1, min(max_population, fit))):
                hiddens = [tuple(p.model.hidden) for p in chunk]
                if pad_bound is not None and padded_ratio(n_in, n_out, hiddens) > pad_bound:
                    populations += [
                        (start, [p for p in chunk if tuple(p.model.hidden) == h]) for h in sorted(set(hiddens))
                    ]
                else:
                    populations.append((start, chunk))
    populations.sort(key=lambda item: item[0])  # stable: a cluster's chunks stay in their order
    return [sorted(pop, key=lambda p: p.number) for _, pop in populations]


def _shape_order(plan: TrialPlan) -> tuple:
    return (tuple(plan.model.hidden), plan.number)
