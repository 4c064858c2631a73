"""Seeds: one root seed, and independent streams derived from it by name and trial number.

Data order comes from the root seed alone, so that every member of a population sees the same
batches; a member's own randomness (initial weights, dropout masks) comes from its trial number,
so a trial gives the same result whatever population it lands in.
"""

from __future__ import annotations

import numpy as np

_DATA_STREAM = 0x0DA7A
_MEMBER_STREAM = 0x3E3B


def data_rng(seed: int) -> np.random.Generator:
    """The generator that orders mini-batches (shared by a whole population)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_DATA_STREAM,)))


def member_rng(seed: int, trial: int) -> np.random.Generator:
    """The generator of one member: its weights and dropout masks."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_MEMBER_STREAM, int(trial))))
