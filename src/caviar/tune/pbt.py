"""Population-based training inside one population: exploit by an index copy, explore on each scale.

Every ``perturbation_interval`` epochs (never after the last one) the active members are ranked by the
study's metric on that epoch's row; each member of the bottom ``quantile_fraction`` becomes an exact
copy of a member of the top one (:meth:`caviar.train.trainer.Trainer.replace_members`: weights,
optimizer moments, batch-norm running statistics, dropout generator) and then explores: its
per-member hyperparameters are perturbed on their own scales or resampled
(:func:`caviar.tune.explore.explore`). Only per-member hyperparameters change; the shape is the
population's.

The choices are random but reproducible: the draws of target trial ``n`` at epoch ``e`` come from
(seed, n, e) alone. Each trial records its *lineage* (``{"epoch", "parent"}``: whom it copied, after
how many epochs) and its *schedule* (``{"epoch", <name>: value}``: its per-member values from that
epoch on, the first entry at epoch 0); every curve row carries the values trained with. Both go into
the trial's metrics, so they are stored with the trial in the same transaction.

:class:`ReplaySchedule` applies a stored lineage and schedule to a trainer of some of the
population's members (a trial and its ancestors): ``Study.retrain`` gets the same weights back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caviar.config import PER_MEMBER, ModelConfig, TrainConfig
from caviar.metrics import is_maximized
from caviar.tune.explore import explore
from caviar.tune.space import Space

_PBT_STREAM = 0x9B7

#: A trial's values -> its configs (``StudySpec.configs_for``).
ConfigsFor = Callable[[Mapping[str, Any]], tuple[ModelConfig, TrainConfig]]


def pbt_rng(seed: int, number: int, epoch: int) -> np.random.Generator:
    """The generator of trial ``number``'s exploit and explore after ``epoch`` epochs."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_PBT_STREAM, int(number), int(epoch))))


def per_member_names(space: Space) -> list[str]:
    """The names of ``space`` that set a per-member hyperparameter (bn_beta sets bn_momentum)."""
    from caviar.hparams import BY_NAME

    return [n for n in space.names if (BY_NAME[n].sets or n) in PER_MEMBER]


def quantile_size(k: int, fraction: float) -> int:
    """Members in the top (and in the bottom) quantile of ``k``: ceil(k * fraction), at most k // 2."""
    return min(int(math.ceil(k * fraction - 1e-12)), k // 2)


def member_hyperparameters(configs_for: ConfigsFor, values: Mapping[str, Any]) -> dict[str, float]:
    """The per-member hyperparameters (trainer names) that a trial's ``values`` give."""
    model, train = configs_for(values)
    out = {name: float(getattr(train, name)) for name in PER_MEMBER if name != "dropout"}
    out["dropout"] = float(model.dropout)
    return out


def apply_exploit(
    trainer: Any, sources: Sequence[int], targets: Sequence[int], hyperparameters: Sequence[Mapping[str, float]]
) -> None:
    """Members ``targets`` (original indices) become copies of ``sources`` and then train with
    ``hyperparameters`` (one dict per target): the one mutation, shared by PBT and its replay."""
    trainer.replace_members(sources, targets)
    for target, hp in zip(targets, hyperparameters, strict=True):
        for name, value in hp.items():
            trainer.set_hyperparameter(name, value, [target])


@dataclass
class PBTSettings:
    """``[search.pbt]``, as the callback needs it."""

    perturbation_interval: int = 2
    quantile_fraction: float = 0.25
    mutations: Sequence[str] = ()
    perturbation_factors: Sequence[float] = (1.2, 0.8)
    resample_probability: float = 0.25


@dataclass
class PopulationBasedTraining:
    """A trainer callback: exploit and explore at each interval (see the module's docstring).

    ``numbers`` are the trials of the trainer's members in order, ``values`` their starting values.
    """

    space: Space
    configs_for: ConfigsFor
    numbers: Sequence[int]
    values: Sequence[Mapping[str, Any]]
    settings: PBTSettings
    seed: int
    total_epochs: int
    metric: str = "val_accuracy"
    current: list[dict[str, Any]] = field(init=False)
    lineage: list[list[dict[str, int]]] = field(init=False)
    schedule: list[list[dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self.names = list(self.settings.mutations) or per_member_names(self.space)
        self.tracked = per_member_names(self.space)
        self.current = [dict(v) for v in self.values]
        self.lineage = [[] for _ in self.numbers]
        self.schedule = [[{"epoch": 0, **{n: v[n] for n in self.tracked}}] for v in self.current]

    def on_epoch_end(self, trainer: Any, rows: dict[int, dict[str, float]]) -> None:
        for k, row in rows.items():  # the curve carries the values this epoch trained with
            row.update({n: self.current[k][n] for n in self.tracked})
        epoch = int(trainer.epoch)
        if epoch % self.settings.perturbation_interval or epoch >= self.total_epochs:
            return None
        members = sorted(int(k) for k in trainer.active if int(k) in rows)
        n = quantile_size(len(members), self.settings.quantile_fraction)
        if n == 0:
            return None
        sign = 1.0 if is_maximized(self.metric) else -1.0
        score = {k: sign * float(rows[k].get(self.metric, np.nan)) for k in members}
        ranked = sorted(members, key=lambda k: (-score[k] if math.isfinite(score[k]) else math.inf, k))
        top, bottom = ranked[:n], sorted(ranked[-n:])
        sources, hps = [], []
        for target in bottom:
            rng = pbt_rng(self.seed, self.numbers[target], epoch)
            source = top[int(rng.integers(n))]
            s = self.settings
            new = explore(
                self.space, self.current[source], self.names, rng, s.perturbation_factors, s.resample_probability
            )
            sources.append(source)
            hps.append(member_hyperparameters(self.configs_for, new))
            self.current[target] = new
            self.lineage[target].append({"epoch": epoch, "parent": int(self.numbers[source])})
            self.schedule[target].append({"epoch": epoch, **{name: new[name] for name in self.tracked}})
        apply_exploit(trainer, sources, bottom, hps)
        return None

    def record(self, k: int) -> dict[str, Any]:
        """Member ``k``'s lineage and schedule, for its trial's metrics."""
        return {"lineage": self.lineage[k], "schedule": self.schedule[k]}


def ancestry(number: int, lineages: Mapping[int, Sequence[Mapping[str, int]]]) -> list[int]:
    """Trial ``number`` and every trial whose weights flowed into it (through copies), sorted."""
    needed = {number}
    frontier = [number]
    while frontier:
        m = frontier.pop()
        for event in lineages.get(m, ()):
            parent = int(event["parent"])
            if parent not in needed:
                needed.add(parent)
                frontier.append(parent)
    return sorted(needed)


@dataclass
class ReplaySchedule:
    """A trainer callback that repeats stored PBT events on a subset of a population.

    ``numbers`` are the trainer's members in order (a trial and its ancestors), ``values`` their
    starting values, ``records`` each trial's stored ``{"lineage", "schedule"}``.
    """

    configs_for: ConfigsFor
    numbers: Sequence[int]
    values: Sequence[Mapping[str, Any]]
    records: Mapping[int, Mapping[str, Any]]

    def on_epoch_end(self, trainer: Any, rows: dict[int, dict[str, float]]) -> None:
        epoch = int(trainer.epoch)
        index = {int(n): k for k, n in enumerate(self.numbers)}
        sources, targets, hps = [], [], []
        for k, number in enumerate(self.numbers):
            rec = self.records.get(int(number), {})
            parents = [e["parent"] for e in rec.get("lineage", ()) if int(e["epoch"]) == epoch]
            if not parents:
                continue
            entry = next(e for e in rec["schedule"] if int(e["epoch"]) == epoch)
            values = {**self.values[k], **{n: v for n, v in entry.items() if n != "epoch"}}
            sources.append(index[int(parents[0])])
            targets.append(k)
            hps.append(member_hyperparameters(self.configs_for, values))
        if targets:
            apply_exploit(trainer, sources, targets, hps)
        return None


def pbt_callback(spec: Any, plans: Sequence[Any]) -> PopulationBasedTraining | None:
    """The PBT callback of a population of ``plans`` under a study spec, or None without PBT."""
    pbt = spec.search.pbt_settings
    if pbt is None:
        return None
    settings = PBTSettings(
        perturbation_interval=pbt.perturbation_interval,
        quantile_fraction=pbt.quantile_fraction,
        mutations=[canonical_name(n) for n in pbt.hyperparam_mutations or ()],
        perturbation_factors=list(pbt.perturbation_factors),
        resample_probability=pbt.resample_probability,
    )
    return PopulationBasedTraining(
        spec.space,
        spec.configs_for,
        [p.number for p in plans],
        [p.values for p in plans],
        settings,
        seed=spec.search.seed or 0,
        total_epochs=plans[0].train.epochs,
        metric=spec.search.metric,
    )


def canonical_name(name: str) -> str:
    """The registered name of a space name or alias (``lr`` -> ``learning_rate``)."""
    from caviar.hparams import canonical

    return canonical(name)
