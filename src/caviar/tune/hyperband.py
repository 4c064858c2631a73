"""Hyperband across populations: brackets of successive halving that share the study's trials.

Bracket ``s`` (``s_max`` down to 0, ``s_max = brackets - 1``) starts its trials at
``max_epochs / eta**s`` epochs and keeps the top 1/eta at every rung (``min_epochs * eta**i``) until
``max_epochs``: the most aggressive bracket tries many configurations cheaply, bracket 0 trains
every one of its trials fully. Hyperband gives bracket ``s`` ``ceil(brackets / (s + 1) * eta**s)``
configurations (Li et al. 2018); here the study's ``trials`` are split in those proportions, in
trial-number order (a pure function of the trial number, so any process knows a trial's bracket).

Each bracket's trials are packed into their own populations (the planner never mixes brackets), and
each population halves its members inside itself (:class:`caviar.tune.halving.SuccessiveHalving`),
so populations never wait for each other: with several workers every worker runs its population's
rungs as they come, ASHA's asynchrony without a barrier between workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bracket:
    """One bracket: its index ``s``, the epochs its trials start with, and its trial numbers [start, stop)."""

    s: int
    min_epochs: int
    start: int
    stop: int


def max_brackets(max_epochs: int, eta: int) -> int:
    """The most brackets ``max_epochs`` allows: the first rung of the last has at least one epoch."""
    return int(math.floor(math.log(max_epochs, eta) + 1e-9)) + 1


def brackets(trials: int, max_epochs: int, eta: int, n_brackets: int | None = None) -> list[Bracket]:
    """The brackets of a study of ``trials`` trials (most aggressive first), trial numbers in order."""
    n = max_brackets(max_epochs, eta) if n_brackets is None else int(n_brackets)
    s_max = n - 1
    weights = [math.ceil(n / (s + 1) * eta**s) for s in range(s_max, -1, -1)]
    total = sum(weights)
    cumulative = [sum(weights[: i + 1]) for i in range(len(weights))]
    bounds = [0] + [round(trials * c / total) for c in cumulative]  # rounded shares: each trial in one bracket
    out = []
    for i, s in enumerate(range(s_max, -1, -1)):
        min_epochs = max(1, int(max_epochs // eta**s))
        out.append(Bracket(s, min_epochs, bounds[i], bounds[i + 1]))
    return out


def bracket_of(number: int, table: list[Bracket]) -> Bracket:
    """The bracket of trial ``number`` (numbers past the budget join the last bracket)."""
    for b in table:
        if b.start <= number < b.stop:
            return b
    return table[-1]
