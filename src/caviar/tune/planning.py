"""Planning a study: the resolved spec, its data, and each round's trials packed and enqueued.

Everything here is a function of the spec, the sampler and the stored trials, so every process
that plans the same round enqueues the same trials with the same population keys (enqueueing is
idempotent: a trial number already stored is left as it is).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caviar.data.checks import check_weights_fit
from caviar.errors import DataError
from caviar.prepared import PreparedData, prepare_data
from caviar.storage import Storage, TrialRecord, TrialState
from caviar.tune.population import DEFAULT_PAD_BOUND, TrialPlan, pack
from caviar.tune.samplers import Observation, Sampler
from caviar.tune.spec import StudySpec, load_spec


def resolve_spec(
    spec: StudySpec | str | os.PathLike | Mapping[str, Any],
    trials: int | None = None,
    workers: int | None = None,
    storage: str | None = None,
    seed: int | None = None,
    settings: Mapping[str, Any] | None = None,
    data: Any = None,
) -> StudySpec:
    """A validated spec with command-line style overrides applied (``settings``: dotted keys);
    ``data``: the study's data in memory (see ``load_spec``), kept by a spec that already holds it."""
    overrides: dict[str, Any] = dict(settings or {})
    if trials is not None:
        overrides["search.trials"] = trials
    if workers is not None:
        overrides["search.workers"] = workers
    if storage is not None:
        overrides["search.storage"] = storage if "://" in storage else str(Path(storage).resolve())
    if seed is not None:
        overrides["study.seed"] = seed
        overrides["search.seed"] = seed
    if isinstance(spec, StudySpec):
        if data is None and spec.memory_data is not None:
            data = spec.memory_data
        if not overrides and (data is None or data is spec.memory_data):
            return spec
        spec = spec.to_dict()
        if data is not None:
            spec["data"] = {k: v for k, v in spec["data"].items() if k != "in_memory"}
    return load_spec(spec, overrides or None, data=data)


def load_data(spec: StudySpec) -> PreparedData:
    """The study's data, split and standardized the same way by every worker, and checked
    (caviar.data.checks): a validation metric needs a validation part."""
    d = spec.data
    if d.in_memory and spec.memory_data is None:
        raise DataError(f"study '{spec.name}': its data was given in memory; pass it again (run_study(spec, data=...))")
    return prepare_data(
        d.dataset,
        d.path,
        d.label,
        d.data_dir,
        d.validation_fraction,
        d.test_fraction,
        seed=spec.search.seed or 0,
        standardize=d.standardize,
        source=spec.memory_data,
        metric=spec.search.metric,
        task=spec.task,
    )


def check_first_round(spec: StudySpec, data: PreparedData) -> None:
    """Refuse, before the study is stored, a first round whose populations' weights cannot fit in memory.

    The first round is known before anything trains (what ``--dry-run`` shows); its populations are
    packed as :func:`plan_round` packs them, and each one's weights are sized from its shape. A sampler
    of its own proposes them, so the study's sampler (Optuna's keeps state) is left untouched.
    """
    sampler = spec.sampler()
    numbers = sampler.round_numbers(spec.search.trials)[0]
    plans = plans_for(spec, numbers, sampler.propose(numbers, []), 0)
    for members in pack(plans, data.n_features, data.n_outputs, spec.search.max_population):
        widths = [m.model.hidden for m in members]  # a padded population is as wide as its widest member
        hidden = tuple(max(w) for w in zip(*widths, strict=True)) if len({len(w) for w in widths}) == 1 else widths[0]
        check_weights_fit(data.n_features, hidden, data.n_outputs, len(members), where="model: ")


def plans_for(spec: StudySpec, numbers: Sequence[int], units: Sequence[np.ndarray], rnd: int) -> list[TrialPlan]:
    """Turn unit points into trial plans (values on each parameter's scale, full configs)."""
    plans = []
    for n, u in zip(numbers, units, strict=True):
        values = spec.space.decode(u)
        model, train = spec.configs_for(values)
        plans.append(TrialPlan(int(n), values, model, train, rnd, tuple(float(x) for x in u)))
    return plans


def plan_from_record(spec: StudySpec, rec: TrialRecord) -> TrialPlan:
    """Rebuild a stored trial's plan (its values are stored in the user's variables)."""
    model, train = spec.configs_for(rec.params)
    return TrialPlan(rec.number, dict(rec.params), model, train, rec.round, tuple(rec.unit or ()))


def observations(records: Sequence[TrialRecord]) -> list[Observation]:
    """Finished trials as samplers see them (failed, diverged and pruned ones score None)."""
    return [
        Observation(
            r.number,
            np.asarray(r.unit or [], dtype=float),
            r.objective if r.state == TrialState.COMPLETE else None,
            r.round,
        )
        for r in sorted(records, key=lambda r: r.number)
        if r.finished
    ]


def preview(spec: StudySpec, n: int) -> list[dict[str, Any]]:
    """The first ``n`` points the sampler would try (round 0, nothing trained): a dry run.

    An adaptive sampler proposes later rounds from the results of earlier ones, so only its first
    round is known; the others give any number of points.
    """
    sampler = spec.sampler()
    numbers = sampler.round_numbers(spec.search.trials)[0][:n] if sampler.adaptive else list(range(n))
    rows = []
    for plan in plans_for(spec, numbers, sampler.propose(numbers, []), 0):
        rows.append({"number": plan.number, "round": plan.round, **plan.values})
    return rows


def _by_bracket(spec: StudySpec, plans: Sequence[TrialPlan]) -> list[list[TrialPlan]]:
    """``plans`` split by hyperband bracket (one part without hyperband), brackets in order."""
    table = spec.search.bracket_table(spec.training.epochs)
    if not table:
        return [list(plans)]
    from caviar.tune.hyperband import bracket_of

    parts: dict[int, list[TrialPlan]] = {}
    for p in plans:
        parts.setdefault(bracket_of(p.number, table).s, []).append(p)
    return [parts[s] for s in sorted(parts, reverse=True)]


def plan_round(
    storage: Storage,
    study_id: int,
    spec: StudySpec,
    sampler: Sampler,
    data: PreparedData,
    rnd: int,
    numbers: Sequence[int],
) -> None:
    """Enqueue round ``rnd``'s trials that are not stored yet (idempotent), and store its box.

    The sampler sees the finished trials of earlier rounds; the plans are packed into populations
    by static shape (widths padded where the cost model says it pays), each enqueued under the key
    ``r<round>-p<population>``.
    """
    records = storage.trials(study_id)
    have = {r.number for r in records}
    if all(n in have for n in numbers):
        return
    history = [o for o in observations(records) if o.round is None or o.round < rnd]
    box = sampler.round_box(rnd, history)
    if box is not None:
        storage.add_box(study_id, rnd, box.as_dict())
    plans = plans_for(spec, numbers, sampler.propose(numbers, history), rnd)
    # PBT copies members onto each other: they must share their widths, so no padding under it
    pad_bound = None if spec.search.pbt_settings is not None else DEFAULT_PAD_BOUND
    populations = []
    for part in _by_bracket(spec, plans):  # hyperband's brackets never share a population
        populations += pack(part, data.n_features, data.n_outputs, spec.search.population_cap, pad_bound=pad_bound)
    items = [
        {
            "number": p.number,
            "params": p.values,
            "unit": list(p.unit),
            "round": rnd,
            "seed": spec.search.seed,
            "group_key": f"r{rnd}-p{i}",
        }
        for i, members in enumerate(populations)
        for p in members
        if p.number not in have
    ]
    storage.enqueue_trials(study_id, items)
