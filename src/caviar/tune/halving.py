"""Successive halving inside a population: at each rung keep the top 1/eta members, drop the rest.

Rungs sit at ``min_epochs * eta**i`` epochs. Dropped members leave the stacked arrays, so the
survivors train faster: the budget of Hyperband/ASHA, without leaving the population.
"""

from __future__ import annotations

import math

import numpy as np

from caviar.metrics import is_maximized


class SuccessiveHalving:
    """A trainer callback that prunes members at rungs by ``metric`` (its direction from caviar.metrics)."""

    def __init__(self, eta: int = 3, min_epochs: int = 1, metric: str = "val_accuracy") -> None:
        if eta < 2:
            raise ValueError(f"halving eta must be >= 2, got {eta}")
        if min_epochs < 1:
            raise ValueError(f"halving min_epochs must be >= 1, got {min_epochs}")
        self.eta = int(eta)
        self.min_epochs = int(min_epochs)
        self.metric = metric

    def is_rung(self, epochs_done: int) -> bool:
        if epochs_done < self.min_epochs:
            return False
        ratio = epochs_done / self.min_epochs
        power = round(math.log(ratio, self.eta))
        return ratio == self.eta**power

    def on_epoch_end(self, trainer, rows: dict[int, dict[str, float]]) -> None:
        if trainer.K <= 1 or not self.is_rung(trainer.epoch):
            return None
        if trainer.epoch >= trainer.config.epochs:  # the members already spent the full budget: keep them
            return None
        members = np.array([k for k in trainer.active if int(k) in rows])
        if len(members) <= 1:
            return None
        sign = 1.0 if is_maximized(self.metric) else -1.0
        scores = np.array([sign * rows[int(k)].get(self.metric, -np.inf) for k in members])
        scores = np.where(np.isfinite(scores), scores, -np.inf)
        n_keep = max(1, math.ceil(len(members) / self.eta))
        order = np.argsort(-scores, kind="stable")
        trainer.retire(members[order[n_keep:]], "pruned")
        return None
