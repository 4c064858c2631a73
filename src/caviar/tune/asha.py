"""ASHA-style asynchronous promotion across populations: a rung judged against the whole study so far.

Inside one population, successive halving (:class:`caviar.tune.halving.SuccessiveHalving`) keeps the top
1/eta of the population's own members at each rung. With several workers, Hyperband's brackets run as
many populations at once; ASHA (Li et al. 2020, the stopping rule of Ray Tune's ``ASHAScheduler``)
judges a trial at a rung against *every* result recorded at that rung so far in its bracket, across
populations, without waiting for the rung to fill:

    the pool is this population's members at the rung plus every other trial of the bracket that
    already has a row at that rung in storage; a member goes on iff its rank in the pool (best first,
    a non-finite score last, ties by the lower trial number) is below ``ceil(len(pool) / eta)``.

Alone (nothing else stored at the rung yet) this is the in-population rule. With one worker the
populations run in a fixed order, so a study is reproducible bit for bit; with several, what a
population sees depends on which others reached the rung first (ASHA's asynchrony, by design).
Each trial's decisions are stored in its metrics (``rungs``: the rung, its rank, the pool's size,
whether it went on, the trial numbers it was compared with), so they can be checked afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from caviar.metrics import is_maximized
from caviar.tune.halving import SuccessiveHalving
from caviar.tune.hyperband import Bracket, bracket_of

#: epochs done at a rung -> {trial number: the metric at that rung} of trials outside the population.
RungResults = Callable[[int], Mapping[int, float]]


def ranked(pool: Mapping[int, float], maximize: bool) -> list[int]:
    """The trial numbers of ``pool`` best first: by score, non-finite scores last, ties by number."""
    sign = -1.0 if maximize else 1.0

    def key(n: int) -> tuple[float, int]:
        v = float(pool[n])
        return (sign * v if math.isfinite(v) else math.inf, int(n))

    return sorted(pool, key=key)


def promoted(own: Mapping[int, float], others: Mapping[int, float], eta: int, maximize: bool) -> set[int]:
    """The members of ``own`` that go on from a rung: in the top ``ceil(n / eta)`` of own and others."""
    pool = {**others, **own}
    keep = math.ceil(len(pool) / eta)
    return {n for n in ranked(pool, maximize)[:keep] if n in own}


class AsynchronousHalving(SuccessiveHalving):
    """A trainer callback: at each rung, retire the members outside the top 1/eta of the study's pool."""

    def __init__(self, eta: int, min_epochs: int, metric: str, results: RungResults) -> None:
        super().__init__(eta, min_epochs, metric)
        self.results = results
        self.decisions: dict[int, list[dict[str, Any]]] = {}

    def on_epoch_end(self, trainer: Any, rows: dict[int, dict[str, float]]) -> None:
        epoch = int(trainer.epoch)
        if not self.is_rung(epoch) or epoch >= trainer.config.epochs:
            return None
        members = [int(k) for k in trainer.active if int(k) in rows]
        if not members:
            return None
        number = {k: int(trainer.member_ids[k]) for k in members}
        own = {number[k]: float(rows[k].get(self.metric, math.nan)) for k in members}
        others = {n: v for n, v in self.results(epoch).items() if n not in own}
        pool = {**others, **own}
        order = {n: i for i, n in enumerate(ranked(pool, is_maximized(self.metric)))}
        going_on = promoted(own, others, self.eta, is_maximized(self.metric))
        for n in own:
            self.decisions.setdefault(n, []).append(
                {
                    "epoch": epoch,
                    "rank": order[n],
                    "of": len(pool),
                    "kept": n in going_on,
                    "against": sorted(m for m in pool if m != n),
                }
            )
        out = [k for k in members if number[k] not in going_on]
        if out:
            trainer.retire(out, "pruned")
        return None

    def record(self, number: int) -> dict[str, Any]:
        """Trial ``number``'s rung decisions, for its metrics."""
        return {"rungs": self.decisions.get(int(number), [])}


def stored_rung_results(
    storage: Any, study_id: int, metric: str, table: list[Bracket], bracket: Bracket
) -> RungResults:
    """The rung results of ``bracket``'s trials as stored now: each trial's curve row at the rung."""

    def results(epochs_done: int) -> dict[int, float]:
        records = [r for r in storage.trials(study_id) if bracket_of(r.number, table).s == bracket.s]
        if not records:
            return {}
        number = {r.id: r.number for r in records}
        out: dict[int, float] = {}
        for trial_id, rows in storage.curves(study_id, list(number)).items():
            for row in rows:
                if int(row["epoch"]) == epochs_done - 1 and isinstance(row.get(metric), (int, float)):
                    out[number[trial_id]] = float(row[metric])
        return out

    return results


def is_asynchronous(spec: Any) -> bool:
    """Whether a study's rungs are judged across populations: ``[search.hyperband] asynchronous``, by
    default when more than one worker runs."""
    h = spec.search.hyperband
    if h is None:
        return False
    return bool(h.asynchronous) if h.asynchronous is not None else spec.search.workers > 1


def halving_for(
    spec: Any, storage: Any, study_id: int, first_number: int
) -> SuccessiveHalving | AsynchronousHalving | None:
    """The halving callback of a population whose lowest trial number is ``first_number``: the spec's
    ``[search.halving]``, or Hyperband's at the population's bracket (asynchronous or not), or None."""
    metric = spec.search.metric
    table = spec.search.bracket_table(spec.training.epochs)
    if table:  # hyperband: this population's bracket says where its first rung is
        bracket = bracket_of(first_number, table)
        eta = spec.search.hyperband.eta
        if is_asynchronous(spec):
            return AsynchronousHalving(
                eta, bracket.min_epochs, metric, stored_rung_results(storage, study_id, metric, table, bracket)
            )
        return SuccessiveHalving(eta, bracket.min_epochs, metric)
    if spec.search.halving is not None:
        h = spec.search.halving
        return SuccessiveHalving(h.eta, h.min_epochs, metric)
    return None
