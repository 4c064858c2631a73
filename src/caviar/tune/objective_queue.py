"""An external objective's trials in the storage work queue, for every way they are run.

``optimize`` (this process, worker processes, Ray tasks) and ask/tell share these steps: open (or
resume) the study of a spec, enqueue the sampler's points for trial numbers, turn a claimed record
into the :class:`Trial` the objective gets, and end it once from what the objective returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from caviar.storage import Storage, TrialEnd, TrialRecord, TrialState, open_storage
from caviar.tune.objective_spec import ObjectiveSpec, stored_spec_diff
from caviar.tune.planning import observations
from caviar.tune.pruning import Pruner
from caviar.tune.samplers import Sampler
from caviar.tune.trial import Trial, outcome_of


def open_objective_study(spec: ObjectiveSpec, storage: Storage | None = None) -> tuple[Storage, int]:
    """Create the spec's study, or resume it (a different experiment under the same name is refused)."""
    store = storage if storage is not None else open_storage(str(spec.search.storage))
    study_id = store.get_or_create_study(
        spec.study.name or "objective",
        spec.to_dict(),
        seed=spec.search.seed,
        metric=spec.search.metric,
        direction=spec.search.direction,
        differs=stored_spec_diff,
    )
    return store, study_id


def enqueue_points(
    storage: Storage, study_id: int, spec: ObjectiveSpec, sampler: Sampler, rnd: int, numbers: Sequence[int]
) -> None:
    """Enqueue trials ``numbers`` of round ``rnd`` that are not stored yet (idempotent).

    The sampler proposes ``numbers`` from the finished trials of earlier rounds, so a resumed round,
    or a number another asker enqueued first, gets the same points. The round's box is stored with
    its first trial.
    """
    records = storage.trials(study_id)
    have = {r.number for r in records}
    if all(n in have for n in numbers):
        return
    history = [o for o in observations(records) if o.round is None or o.round < rnd]
    if not any(r.round == rnd for r in records):
        box = sampler.round_box(rnd, history)
        if box is not None:
            storage.add_box(study_id, rnd, box.as_dict())
    units = sampler.propose(list(numbers), history)
    items = [
        {
            "number": int(n),
            "params": spec.space.decode(u),
            "unit": [float(x) for x in u],
            "round": rnd,
            "seed": spec.search.seed,
        }
        for n, u in zip(numbers, units, strict=True)
        if n not in have
    ]
    storage.enqueue_trials(study_id, items)


def pruner_for(spec: ObjectiveSpec) -> Pruner | None:
    """The rule ``trial.should_stop()`` answers from: ``[search.halving]``, ``[search.median]`` or none."""
    s = spec.search
    sign = 1.0 if s.maximize else -1.0
    if s.halving is not None:
        return Pruner("halving", s.metric, sign, eta=s.halving.eta, min_epochs=s.halving.min_epochs)
    if s.median is not None:
        m = s.median
        return Pruner("median", s.metric, sign, startup_trials=m.startup_trials, warmup_epochs=m.warmup_epochs)
    return None


def trial_for(spec: ObjectiveSpec, storage: Storage, record: TrialRecord, worker_id: str) -> Trial:
    """The Trial the objective (or the ask/tell user) gets for a claimed record."""
    name, metric = spec.study.name or "", spec.search.metric
    return Trial(storage, record, worker_id, study_name=name, metric=metric, pruner=pruner_for(spec))


def end_trial(
    storage: Storage,
    worker_id: str,
    spec: ObjectiveSpec,
    record: TrialRecord,
    returned: Any,
    trial: Trial | None = None,
    state: TrialState | None = None,
    error: str | None = None,
) -> TrialEnd | None:
    """Finish a RUNNING trial once with what the objective returned; the end stored, None if it was not ours.

    Without ``state`` (or with COMPLETE) the value is read by :func:`caviar.tune.trial.outcome_of`;
    a PRUNED or FAILED ``state`` keeps a number or dict as metrics, with ``error`` as the reason.
    """
    search = spec.search
    rows = trial.rows if trial is not None else []
    if state in (None, TrialState.COMPLETE):
        stop = trial.stop_reason if trial is not None else None
        end_state, metrics, objective, error = outcome_of(returned, search.metric, search.maximize, stop, len(rows))
    else:
        end_state, objective = state, None
        if isinstance(returned, Mapping):
            metrics = dict(returned)
        else:
            metrics = {} if returned is None else {search.metric: returned}
    end = TrialEnd(record.id, end_state, metrics, objective, rows, error)
    return end if storage.finish_trials(worker_id, [end])[0] else None
