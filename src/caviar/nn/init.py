"""Initial weights: He normal for ReLU-like activations, Xavier uniform for tanh and sigmoid.

Fans come from the 2-D (n_in, n_out) shape of one member, never from the stacked 3-D array.
"""

from __future__ import annotations

import numpy as np


def init_weight(n_in: int, n_out: int, activation: str, rng: np.random.Generator) -> np.ndarray:
    """One member's (n_in, n_out) weight matrix."""
    if activation in ("relu", "leaky_relu"):
        return rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, size=(n_in, n_out))
