"""What ``trial.should_stop()`` answers for an external objective: asynchronous successive halving
(``[search.halving]``) or a median pruner (``[search.median]``), as pure functions over curves.

Values are "higher is better" here (a minimized metric is negated by the caller). Trials of an
external objective run one by one, so halving is the asynchronous kind (ASHA): at a rung a trial
goes on only if it is among the top 1/eta of the trials that reached that rung so far.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from caviar.tune.halving import SuccessiveHalving


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def halving_stops(mine: float | None, others: Sequence[float | None], eta: int) -> bool:
    """At a rung: stop unless ``mine`` is among the top ceil(n / eta) of ``others`` + itself."""
    if mine is None or not math.isfinite(mine):
        return True
    pool = _finite(others)
    if not pool:
        return False
    n_keep = max(1, math.ceil((len(pool) + 1) / eta))
    better = sum(1 for v in pool if v > mine)
    return better >= n_keep


def median_stops(best_so_far: float | None, completed_at_epoch: Sequence[float | None]) -> bool:
    """Stop when the trial's best value so far is below the median of completed trials at this epoch."""
    pool = sorted(_finite(completed_at_epoch))
    if not pool:
        return False
    if best_so_far is None or not math.isfinite(best_so_far):
        return True
    mid = len(pool) // 2
    median = pool[mid] if len(pool) % 2 else (pool[mid - 1] + pool[mid]) / 2
    return best_so_far < median


@dataclass(frozen=True)
class Pruner:
    """The rule of a study (``halving`` or ``median``), over its metric; ``sign`` makes it 'higher is better'."""

    kind: str  # "halving" or "median"
    metric: str
    sign: float
    eta: int = 3
    min_epochs: int = 1
    startup_trials: int = 5
    warmup_epochs: int = 0

    def is_rung(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based, so epochs_done = epoch + 1) ends a halving rung."""
        return SuccessiveHalving(self.eta, self.min_epochs, self.metric).is_rung(epoch + 1)

    def value(self, row: Mapping[str, float]) -> float | None:
        """A curve row's metric, higher is better; None when missing or not a number."""
        v = row.get(self.metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            return None
        return self.sign * float(v)

    def stops(
        self,
        epoch: int,
        mine: Sequence[Mapping[str, float]],
        others: Mapping[int, Sequence[Mapping[str, float]]],
        completed: set[int],
    ) -> bool:
        """Whether the trial with rows ``mine`` (up to ``epoch``) should stop, given the others' rows by trial id."""
        row = next((r for r in mine if r.get("epoch") == epoch), None)
        if row is None or self.metric not in row:
            return False  # nothing to judge by: the objective did not report the study's metric
        at = {tid: next((self.value(r) for r in rows if r.get("epoch") == epoch), None) for tid, rows in others.items()}
        current = self.value(row)
        if self.kind == "halving":
            if not self.is_rung(epoch):
                return False
            return halving_stops(current, [v for tid, v in at.items() if v is not None], self.eta)
        if epoch < self.warmup_epochs or len(completed) < self.startup_trials:
            return False
        values = [v for r in mine if (v := self.value(r)) is not None]
        return median_stops(max(values) if values else None, [at[t] for t in completed if t in at])
