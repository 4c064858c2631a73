"""Tuning studies: ``run_study`` runs (or resumes) one, ``Study`` reads it back from storage.

``run_study(spec)`` is the whole job, in three parts: per round, :mod:`caviar.tune.planning` packs
the sampler's trials into populations and enqueues them; an executor (:mod:`caviar.tune.executors`:
this process, N processes or Ray tasks) has workers (:mod:`caviar.tune.worker`) claim one
population at a time, train it, stream its curves and finish its trials. Everything is keyed by
trial number and population, so a study killed at any point resumes where it stood when run again.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from caviar.data.checks import fingerprint_diff
from caviar.errors import StorageError
from caviar.storage import Storage, StudyStatus, TrialRecord, TrialState, open_storage
from caviar.tune.executors import executor_for, join_cluster
from caviar.tune.planning import check_first_round, load_data, plan_from_record, plan_round, resolve_spec
from caviar.tune.runner import model_file_bytes, train_population
from caviar.tune.spec import StudySpec, spec_diff
from caviar.tune.worker import MODEL_ARTIFACT, Progress, WorkerContext, new_worker_id, recover_zombies


class Study:
    """A study in storage: its spec, trials, best trial, boxes, curves and a DataFrame export."""

    def __init__(self, storage: Storage | str, study: int | str, data: Any = None) -> None:
        """``data``: the study's data when it was given in memory (``retrain`` needs it), as ``run_study`` takes it."""
        self.storage = open_storage(storage)
        self.data = data
        self.record = self.storage.get_study(study)
        self.id = self.record.id
        self.name = self.record.name

    @classmethod
    def load(cls, name: str | int, storage: Storage | str, data: Any = None) -> Study:
        """Open an existing study by name or id (``data``: its data, if it was given in memory)."""
        return cls(storage, name, data)

    def refresh(self) -> Study:
        """Read the study's record (status, spec) again from storage."""
        self.record = self.storage.get_study(self.id)
        return self

    @property
    def spec(self) -> StudySpec:
        """The spec the study was stored with (an external objective's study has an ObjectiveSpec)."""
        from caviar.tune.objective_spec import load_stored_spec

        return load_stored_spec(self.record.spec)  # type: ignore[return-value]

    @property
    def trials(self) -> list[TrialRecord]:
        """Every trial, in number order."""
        return self.storage.trials(self.id)

    @property
    def best_trial(self) -> TrialRecord | None:
        """The best completed trial (the lower number on ties), None before any completes."""
        return self.storage.best_trial(self.id)

    @property
    def boxes(self) -> dict[int, dict[str, Any]]:
        """Coarse-to-fine's box of each round, by round."""
        return self.storage.boxes(self.id)

    def counts(self) -> dict[TrialState, int]:
        """How many trials are in each state."""
        return self.storage.counts(self.id)

    def curves(self, trial_ids: Sequence[int] | None = None) -> dict[int, list[dict[str, Any]]]:
        """Per-epoch rows of each trial (all of them, or ``trial_ids``), by trial id."""
        return self.storage.curves(self.id, trial_ids)

    def to_dataframe(self, states: Sequence[str] | None = None):
        """A pandas DataFrame: one row per trial, bookkeeping columns, metrics, and ``params_<name>``."""
        import pandas as pd

        base = [
            "number",
            "id",
            "round",
            "state",
            "objective",
            "seed",
            "group_key",
            "worker_id",
            "attempts",
            "started_at",
            "finished_at",
            "duration",
            "error",
        ]
        records = []
        for tr in self.storage.trials(self.id, None if states is None else [TrialState(s) for s in states]):
            rec: dict[str, Any] = {name: getattr(tr, name) for name in base}
            rec["state"] = tr.state.value  # a plain string column, as pandas users compare it
            rec.update({k: v for k, v in tr.metrics.items() if k not in rec})
            rec.update({f"params_{k}": tuple(v) if isinstance(v, list) else v for k, v in tr.params.items()})
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=None if records else base)

    def best_model(self):
        """The best trial's model as a fitted caviar.Classifier (a caviar.Regressor for a regression study)."""
        from caviar.sklearn import load

        best = self.best_trial
        if best is None:
            raise StorageError(f"study '{self.name}' has no completed trial yet")
        if MODEL_ARTIFACT in self.storage.artifact_names(best.id):
            return load(io.BytesIO(self.storage.load_artifact(best.id, MODEL_ARTIFACT)))
        return self.retrain(best.number)  # e.g. killed between storing the trial and its model

    def retrain(self, number: int):
        """Train trial ``number`` again, alone, from the study's seed: the same weights it had.

        A member's randomness comes from (seed, trial number) and batches from the seed, so a trial
        trained alone repeats what it did in its population. Returns a fitted caviar.Classifier (or Regressor).
        """
        from caviar.sklearn import load

        spec = self.spec
        if self.data is not None:
            spec = resolve_spec(spec, data=self.data)
        records = {t.number: t for t in self.trials}
        if number not in records:
            raise StorageError(f"study '{self.name}' has no trial #{number}")
        plan = plan_from_record(spec, records[number])
        data = load_data(spec)
        seed = spec.search.seed or 0
        # No halving: a trial alone is never pruned, it runs the epochs it was given.
        if "lineage" in records[number].metrics:
            outcome = _replay_pbt(spec, records, number, data, seed)
        else:
            (outcome,) = train_population([plan], data, seed=seed, metric=spec.search.metric)
        return load(io.BytesIO(model_file_bytes(plan, outcome, data, seed=seed)))

    def ensemble(self, k: int, packed: bool = False):
        """The population as an ensemble (a ``caviar.ensemble.EnsembleClassifier``): the top ``k``
        trials averaged in probability, or with ``packed`` k members with the best trial's
        hyperparameters (different seeds) trained as one population on train + validation."""
        from caviar.tune.ensemble import packed_ensemble, study_ensemble

        return packed_ensemble(self, k) if packed else study_ensemble(self, k)

    def __repr__(self) -> str:
        return f"Study({self.name!r}, {self.counts()})"


def _replay_pbt(spec: StudySpec, records: Mapping[int, TrialRecord], number: int, data: Any, seed: int) -> Any:
    """Trial ``number`` of a PBT study trained again with its ancestors (the trials whose weights it
    copied, recursively), their stored lineages and schedules replayed: the same weights."""
    from caviar.tune.pbt import ReplaySchedule, ancestry

    group = records[number].group_key
    lineages = {n: r.metrics.get("lineage", []) for n, r in records.items() if r.group_key == group}
    numbers = ancestry(number, lineages)
    plans = [plan_from_record(spec, records[n]) for n in numbers]
    replay = ReplaySchedule(
        spec.configs_for, numbers, [p.values for p in plans], {n: records[n].metrics for n in numbers}
    )
    outcomes = train_population(plans, data, seed=seed, metric=spec.search.metric, callbacks=[replay])
    return outcomes[numbers.index(number)]


def run_study(
    spec: StudySpec | str | os.PathLike | Mapping[str, Any],
    *,
    trials: int | None = None,
    workers: int | None = None,
    storage: str | None = None,
    seed: int | None = None,
    on_progress: Progress | None = None,
    data: Any = None,
    on_start: Callable[[], None] | None = None,
) -> Study:
    """Run (or resume) the study a spec describes, and return it.

    ``trials``, ``workers``, ``storage`` and ``seed`` override the spec's ``[search]`` values.
    ``data``: the study's data in memory, a pandas DataFrame (``[data] label`` names the label column)
    or a pair ``(X, y)``, in place of ``[data]``'s dataset or path. It is stored by its fingerprint, so
    resuming with other data is refused; pass the same data again to resume. ``on_start`` is called
    once the data passed its checks and the study is stored, before any trial trains (``caviar tune``
    draws its display then, so a refused study prints only its error).
    """
    spec = resolve_spec(spec, trials, workers, storage, seed, data=data)
    data = load_data(spec)  # before the storage is opened: a data mistake leaves it as it was
    check_first_round(spec, data)  # weights that cannot fit in memory: refused before it too
    join_cluster(spec)  # Ray joins its cluster here: an unreachable address stores nothing
    execute = executor_for(spec)
    store = open_storage(spec.storage_url)
    study_id = store.get_or_create_study(
        spec.name,
        spec.to_dict(),
        seed=spec.search.seed,
        metric=spec.search.metric,
        direction="maximize" if spec.search.maximize else "minimize",
        differs=spec_diff,
        fingerprint=data.fingerprint(),  # a resume with other data is refused, nothing written
        data_differs=fingerprint_diff,
    )
    sampler = spec.sampler()
    ctx = WorkerContext(spec, data, store, study_id, new_worker_id())
    store.set_study_status(study_id, StudyStatus.RUNNING)
    recover_zombies(store, study_id)
    if on_start is not None:
        on_start()
    try:
        for rnd, numbers in enumerate(sampler.round_numbers(spec.search.trials)):
            plan_round(store, study_id, spec, sampler, data, rnd, numbers)
            execute(ctx, numbers, on_progress)
    except BaseException:
        store.requeue_worker(study_id, ctx.worker_id)
        raise
    store.set_study_status(study_id, StudyStatus.COMPLETE)
    return Study(store, study_id, data=spec.memory_data)
