"""A study read once from storage, and the JSON-able views the dashboard and the report show.

:class:`StudyData` is a snapshot: the record, the space (each parameter with its scale), the trials and
the coarse-to-fine boxes, read in a few queries; curves are read on demand for the trials asked for.
The figure functions and the HTTP API both work from it, so they never disagree.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caviar.metrics import CLASSIFICATION, METRICS, REGRESSION, TEST_HEADLINE
from caviar.storage import FINISHED_STATES, Storage, StudyRecord, TrialRecord, TrialState, open_storage
from caviar.tune.space import ChoiceParam, IntParam, Param, Space
from caviar.web.scales import NUMERIC_SCALES
from caviar.web.urls import name_segment

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class ParamInfo:
    """One hyperparameter of the space: its scale and range (or its choices)."""

    name: str
    scale: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def numeric(self) -> bool:
        """Whether values are numbers on a numeric scale (not a choice)."""
        return self.scale in NUMERIC_SCALES

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of a numeric parameter; a choice has none."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.name} is a choice: it has no numeric range")
        return float(self.low), float(self.high)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "scale": self.scale}
        if self.numeric:
            out.update(low=self.low, high=self.high)
        else:
            out["choices"] = list(self.choices)
        return out


def _param_info(p: Param) -> ParamInfo:
    if isinstance(p, ChoiceParam):
        return ParamInfo(p.name, "choice", choices=tuple(p.choices))
    if isinstance(p, IntParam):
        return ParamInfo(p.name, p.scale, float(p.low), float(p.high))
    return ParamInfo(p.name, p.scale, float(p.low), float(p.high))  # type: ignore[attr-defined]


def space_params(spec: dict[str, Any]) -> list[ParamInfo]:
    """The stored spec's ``space`` table as ParamInfo, without re-validating the whole spec
    (a spec whose data file has moved still draws)."""
    table = spec.get("space") or {}
    return [_param_info(p) for p in Space.from_dict(table, tunable=False)]


@dataclass
class StudyData:
    """Everything the figures need from one study, read at one moment."""

    storage: Storage
    record: StudyRecord
    params: list[ParamInfo]
    trials: list[TrialRecord]
    boxes: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name

    @functools.cached_property
    def seconds(self) -> dict[int, float | None]:
        """Each trial's own seconds (its share of its population's time), by trial id."""
        return own_seconds(self.trials)

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def maximize(self) -> bool:
        return self.record.direction != "minimize"

    @property
    def task(self) -> str:
        """``classification`` or ``regression``: a regression's stored spec always says so in [data] task."""
        return study_task(self.record)

    @property
    def test_metric(self) -> str:
        """The test metric shown beside the study's: test_accuracy, or test_r2 for a regression."""
        return TEST_HEADLINE[self.task]

    @property
    def score_metric(self) -> str:
        """What the curves' second panel draws: accuracy, or for a regression the study's metric when it
        is a regression one (val_rmse...), else val_r2."""
        if self.task != REGRESSION:
            return "accuracy"
        m = METRICS.get(self.metric)
        return self.metric if m is not None and m.task == REGRESSION else "val_r2"

    @property
    def numeric_params(self) -> list[ParamInfo]:
        return [p for p in self.params if p.numeric]

    def param(self, name: str) -> ParamInfo:
        """The param called ``name``; KeyError names the known ones."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(
            f"no hyperparameter '{name}' in study '{self.name}'; known: "
            f"{', '.join(p.name for p in self.params) or 'none'}"
        )

    def value(self, trial: TrialRecord) -> float | None:
        """The trial's study metric (val_accuracy, val_loss...) if finished and finite."""
        return metric_value(trial, self.metric)

    def scored(self) -> list[TrialRecord]:
        """Finished trials with a finite metric, by number: the ones the plots place."""
        return [t for t in self.trials if t.state in FINISHED_STATES and self.value(t) is not None]

    def top(self, k: int = DEFAULT_TOP_K) -> list[TrialRecord]:
        """The k best COMPLETE trials by the study's metric (ties: lower number first)."""
        done = [t for t in self.trials if t.state == TrialState.COMPLETE and self.value(t) is not None]
        sign = -1.0 if self.maximize else 1.0
        done.sort(key=lambda t: (sign * (self.value(t) or 0.0), t.number))
        return done[:k]

    def by_number(self, numbers: list[int]) -> list[TrialRecord]:
        """Trials with these numbers, in the order given; KeyError lists the unknown numbers."""
        known = {t.number: t for t in self.trials}
        missing = [n for n in numbers if n not in known]
        if missing:
            raise KeyError(f"no trial {', '.join(map(str, missing))} in study '{self.name}'")
        return [known[n] for n in numbers]

    def curves(self, trials: list[TrialRecord]) -> dict[int, list[dict[str, Any]]]:
        """Trial number -> its per-epoch rows (epoch, train/val loss and accuracy, extras)."""
        by_id = self.storage.curves(self.record.id, [t.id for t in trials]) if trials else {}
        return {t.number: by_id.get(t.id, []) for t in trials}


def load_study(study: Any, storage: Storage | str | None = None) -> StudyData:
    """A StudyData from a caviar Study, a StudyData, or a study name/id with its storage."""
    if isinstance(study, StudyData):
        return study
    if hasattr(study, "storage") and hasattr(study, "id") and storage is None:
        store, key = study.storage, study.id
    else:
        if storage is None:
            raise TypeError("load_study(name_or_id) needs the storage it lives in")
        store, key = open_storage(storage), study
    record = store.get_study(key)
    return StudyData(store, record, space_params(record.spec), store.trials(record.id), store.boxes(record.id))


def study_task(record: StudyRecord) -> str:
    """A stored study's task (``[data] task`` of its spec; classification when it has none)."""
    data = (record.spec or {}).get("data") or {}
    return REGRESSION if isinstance(data, dict) and data.get("task") == REGRESSION else CLASSIFICATION


def metric_value(trial: TrialRecord, metric: str) -> float | None:
    """A finite float metric of a trial, or None."""
    value = trial.metrics.get(metric) if trial.metrics else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def jsonable(value: Any) -> Any:
    """Plain JSON data: non-finite floats become None, datetimes ISO text, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return jsonable(value.item())
    return value


# ------------------------------------------------------------------------------------------- views


def study_summary(record: StudyRecord) -> dict[str, Any]:
    """One line of the study list: name, status, counts per state, best metric."""
    best = record.best_objective
    if best is not None and record.direction == "minimize":
        best = -best  # the objective is maximized; show the metric itself
    return jsonable(
        {
            "name": record.name,
            "id": record.id,
            "kind": record.kind,  # 'session': a panda's (listed apart, its page is its trial's)
            "status": record.status,
            "metric": record.metric,
            "direction": record.direction,
            "task": study_task(record),
            "counts": record.counts,
            "n_trials": record.n_trials,
            "best": best,
            "created_at": record.created_at,
        }
    )


def study_detail(data: StudyData) -> dict[str, Any]:
    """The study's summary, what its spec asks for, and its space with each scale."""
    spec = data.record.spec
    search = spec.get("search", {})
    best = data.top(1)
    return jsonable(
        {
            **study_summary(data.record),
            "spec": {
                "data": spec.get("data", {}),
                "model": spec.get("model", {}),
                "training": spec.get("training", {}),
                "search": {
                    k: search.get(k)
                    for k in ("strategy", "trials", "rounds", "seed", "metric", "workers")
                    if k in search
                },
            },
            "space": [p.as_dict() for p in data.params],
            "rounds": sorted({t.round for t in data.trials}),
            "best_trial": trial_row(data, best[0]) if best else None,
        }
    )


def own_seconds(trials: list[TrialRecord]) -> dict[int, float | None]:
    """Each trial's own seconds, by trial id: the trials of a population train together and are
    stored at once, so each has the population's whole time as its duration; a trial's own time is
    its share of that, in proportion to the epochs it trained (a pruned member leaves early)."""
    groups: dict[tuple[Any, ...], list[TrialRecord]] = {}
    for t in trials:
        if t.duration is None or t.started_at is None:
            continue
        groups.setdefault((t.worker_id, t.started_at, t.finished_at), []).append(t)
    out: dict[int, float | None] = {t.id: None for t in trials}
    for members in groups.values():
        weights = [_epochs_run(t) for t in members]
        total = sum(weights)
        for t, w in zip(members, weights, strict=True):
            out[t.id] = float(t.duration or 0.0) * w / total if total else t.duration
    return out


def _epochs_run(t: TrialRecord) -> float:
    n = t.metrics.get("epochs_run")
    return float(n) if isinstance(n, (int, float)) and n > 0 else 1.0


def trial_row(data: StudyData, trial: TrialRecord) -> dict[str, Any]:
    """One row of the trials table."""
    return jsonable(
        {
            "number": trial.number,
            "round": trial.round,
            "state": trial.state,
            "value": data.value(trial),
            "objective": trial.objective,
            "duration": data.seconds.get(trial.id),
            "population_seconds": trial.duration,
            "params": trial.params,
            "metrics": {k: v for k, v in trial.metrics.items() if isinstance(v, (int, float, str, type(None)))},
            "error": trial.error,
        }
    )


#: Columns the trials endpoint sorts on, besides params (``params.NAME``) and metrics (``metrics.NAME``).
SORT_KEYS = ("number", "round", "state", "value", "objective", "duration")


def sort_rows(rows: list[dict[str, Any]], key: str, descending: bool = False) -> list[dict[str, Any]]:
    """Rows sorted on a column; missing values always go last. Unknown column -> KeyError."""
    getter = _row_getter(rows, key)
    present = [r for r in rows if getter(r) is not None]
    absent = [r for r in rows if getter(r) is None]
    present.sort(key=lambda r: _sortable(getter(r)), reverse=descending)
    return present + absent


def _row_getter(rows: list[dict[str, Any]], key: str):
    if key in SORT_KEYS:
        return lambda r: r.get(key)
    group, _, name = key.partition(".")
    if group in ("params", "metrics") and name and any(name in r[group] for r in rows):
        return lambda r: r[group].get(name)
    if group in ("params", "metrics") and name and not rows:
        return lambda r: None
    raise KeyError(f"cannot sort on '{key}': use one of {', '.join(SORT_KEYS)}, params.NAME or metrics.NAME")


def _sortable(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def curves_payload(data: StudyData, trials: list[TrialRecord]) -> dict[str, Any]:
    """Learning curves of the given trials, with their params, keyed by trial number (as text)."""
    curves = data.curves(trials)
    return jsonable(
        {
            "metric": data.metric,
            "task": data.task,
            "trials": {
                str(t.number): {"number": t.number, "state": t.state, "params": t.params, "rows": curves[t.number]}
                for t in trials
            },
        }
    )


def boxes_payload(data: StudyData) -> dict[str, Any]:
    """Each coarse-to-fine round's box in the user's variables, with the space's scales."""
    return jsonable(
        {
            "space": [p.as_dict() for p in data.params],
            "boxes": [
                {
                    "round": rnd,
                    "low": box.get("low", {}),
                    "high": box.get("high", {}),
                    "choices": box.get("choices", {}),
                }
                for rnd, box in sorted(data.boxes.items())
            ],
        }
    )


def fingerprint(record: StudyRecord) -> dict[str, Any]:
    """What the live page watches: status, counts and best; a change means 'fetch again'."""
    return study_summary(record) | {"created_at": None}


# ------------------------------------------------------------------------------------ trial detail


def trial_by_number(data: StudyData, number: int) -> TrialRecord:
    """The trial with that number; KeyError says which numbers the study has."""
    for t in data.trials:
        if t.number == number:
            return t
    numbers = [t.number for t in data.trials]
    known = f"its trials are #{min(numbers)} to #{max(numbers)}" if numbers else "it has no trials yet"
    raise KeyError(f"no trial #{number} in study '{data.name}': {known}")


def trial_lineage(data: StudyData, trial: TrialRecord) -> dict[str, Any] | None:
    """A PBT trial's lineage for the trial page: whom it copied and when (``copied``), the trials that
    copied it (``copied_by``), its ancestors' chain back to a trial that never copied (``ancestors``,
    newest first) and its hyperparameter schedule; None for a trial without a stored lineage."""
    if "lineage" not in trial.metrics:
        return None
    by_number = {t.number: t for t in data.trials}
    copied_by = [
        {"epoch": e["epoch"], "child": t.number}
        for t in data.trials
        for e in t.metrics.get("lineage") or ()
        if e.get("parent") == trial.number
    ]
    ancestors, seen, at = [], {trial.number}, trial
    while at.metrics.get("lineage"):
        last = at.metrics["lineage"][-1]
        ancestors.append({"epoch": last["epoch"], "parent": last["parent"], "child": at.number})
        nxt = by_number.get(last["parent"])
        if nxt is None or nxt.number in seen:
            break
        seen.add(nxt.number)
        at = nxt
    return {
        "copied": list(trial.metrics["lineage"]),
        "copied_by": sorted(copied_by, key=lambda e: (e["epoch"], e["child"])),
        "ancestors": ancestors,
        "schedule": list(trial.metrics.get("schedule") or ()),
        "epochs": trial.metrics.get("epochs_run"),
    }


def trial_detail(data: StudyData, number: int) -> dict[str, Any]:
    """Everything the trial page shows: the row, every metric, the run's bookkeeping, its per-epoch
    curve, its events (requeues, interventions) and the artifacts stored for it (the model file).
    ``lineage`` is a PBT trial's record (:func:`trial_lineage`), null for other trials."""
    trial = trial_by_number(data, number)
    events = data.storage.events(data.record.id, trial_id=trial.id)
    numbers = [t.number for t in data.trials]
    at = numbers.index(number)
    return jsonable(
        {
            "study": data.name,
            "kind": data.record.kind,  # 'session': a panda's; the page links back to the list, not a study view
            "metric": data.metric,
            "direction": data.record.direction,
            "task": data.task,
            "space": [p.as_dict() for p in data.params],
            "trial": {
                **trial_row(data, trial),
                "metrics": trial.metrics,
                "seed": trial.seed,
                "worker_id": trial.worker_id,
                "attempts": trial.attempts,
                "group_key": trial.group_key,
                "created_at": trial.created_at,
                "started_at": trial.started_at,
                "finished_at": trial.finished_at,
                "is_best": any(t.number == number for t in data.top(1)),
            },
            "curve": data.curves([trial])[trial.number],
            "events": [
                {"id": e.id, "kind": e.kind, "step": e.step, "payload": e.payload, "created_at": e.created_at}
                for e in events
            ],
            "artifacts": [
                {
                    "name": name,
                    "url": f"/api/studies/{name_segment(data.name)}/trials/{number}/artifacts/{name_segment(name)}",
                }
                for name in data.storage.artifact_names(trial.id)
            ],
            "lineage": trial_lineage(data, trial),
            "previous": numbers[at - 1] if at > 0 else None,
            "next": numbers[at + 1] if at + 1 < len(numbers) else None,
        }
    )
