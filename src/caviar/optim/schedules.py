"""Learning-rate decay by epoch, the notes' way: alpha = f(epoch) * alpha_0 per member."""

from __future__ import annotations

import numpy as np


def decayed_lr(lr0: np.ndarray, decay: str, rate: np.ndarray, epoch: int, epochs: int, every: int = 10) -> np.ndarray:
    """Learning rates (K,) at ``epoch`` (from 0) for base rates ``lr0`` and decay rates ``rate``.

    inverse_time: lr0 / (1 + rate * epoch); exponential: lr0 * (1 - rate)^epoch (the notes'
    0.95^epoch is rate 0.05); step: lr0 * (1 - rate)^(epoch // every); cosine: lr0 (1 + cos(pi e/E)) / 2.
    """
    lr0 = np.asarray(lr0, dtype=float)
    rate = np.asarray(rate, dtype=float)
    if decay == "none":
        return lr0.copy()
    if decay == "inverse_time":
        return lr0 / (1.0 + rate * epoch)
    if decay == "exponential":
        return lr0 * (1.0 - rate) ** epoch
    if decay == "step":
        return lr0 * (1.0 - rate) ** (epoch // max(1, every))
    if decay == "cosine":
        return lr0 * 0.5 * (1.0 + np.cos(np.pi * epoch / max(1, epochs)))
    raise ValueError(f"unknown decay {decay!r}")
