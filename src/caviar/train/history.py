"""Per-member learning curves and fate (training, stopped early, diverged, done)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CURVE_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


@dataclass
class MemberHistory:
    """What happened to one member: a row per epoch, its status and its best epoch."""

    member_id: int
    rows: list[dict[str, float]] = field(default_factory=list)
    status: str = "training"
    best_epoch: int = -1
    best_score: float = np.inf
    stopped_epoch: int | None = None

    def curve(self, key: str) -> np.ndarray:
        return np.array([r.get(key, np.nan) for r in self.rows], dtype=float)

    def best_row(self) -> dict[str, float]:
        """The epoch whose weights were kept (the last one if none was ever scored)."""
        if not self.rows:
            return {}
        return self.rows[self.best_epoch] if self.best_epoch >= 0 else self.rows[-1]
