"""What storage hands back and takes: frozen records of studies, trials and events, a trial's end, curve rows.

Records are built from table rows here (JSON columns parsed, datetimes made UTC-aware, states made
enums), so every reader sees the same values whatever the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from caviar.errors import StorageError
from caviar.storage.codec import dumps, loads, nan_if_none, utc, utc_or_none
from caviar.storage.schema import CURVE_COLUMNS
from caviar.storage.states import StudyStatus, TrialState

__all__ = ["EventRecord", "StudyRecord", "TrialEnd", "TrialRecord", "curve_dict", "curve_row"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored, with its JSON columns parsed."""

    id: int
    study_id: int
    number: int
    params: dict[str, Any]
    unit: list[float] | None
    round: int
    seed: int | None
    group_key: str | None
    state: TrialState
    worker_id: str | None
    attempts: int
    created_at: datetime
    heartbeat_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    metrics: dict[str, Any]
    objective: float | None
    error: str | None

    @property
    def finished(self) -> bool:
        """Whether the trial reached a final state (it will never run again)."""
        return self.state.finished

    @classmethod
    def from_row(cls, m: Mapping[Any, Any]) -> TrialRecord:
        """The record of a ``caviar_trials`` row (a row's ``_mapping``)."""
        return cls(
            id=m["id"],
            study_id=m["study_id"],
            number=m["number"],
            params=loads(m["params"], {}),
            unit=loads(m["unit"]),
            round=m["round"],
            seed=m["seed"],
            group_key=m["group_key"],
            state=TrialState(m["state"]),
            worker_id=m["worker_id"],
            attempts=m["attempts"],
            created_at=utc(m["created_at"]),
            heartbeat_at=utc_or_none(m["heartbeat_at"]),
            started_at=utc_or_none(m["started_at"]),
            finished_at=utc_or_none(m["finished_at"]),
            duration=m["duration"],
            metrics=loads(m["metrics"], {}),
            objective=m["objective"],
            error=m["error"],
        )


@dataclass(frozen=True)
class StudyRecord:
    """One study, with its trial counts per state and its best objective so far."""

    id: int
    name: str
    spec: dict[str, Any]
    seed: int | None
    metric: str
    direction: str
    status: StudyStatus
    created_at: datetime
    kind: str = "study"  # 'session' for a panda's
    fingerprint: str | None = None  # the content hash of the study's data, when known
    counts: dict[TrialState, int] = field(default_factory=dict)
    best_objective: float | None = None

    @property
    def n_trials(self) -> int:
        """All trials of the study, whatever their state."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class TrialEnd:
    """How one trial ended, for ``Storage.finish_trials``."""

    trial_id: int
    state: TrialState
    metrics: Mapping[str, Any] | None = None
    objective: float | None = None
    curve: Sequence[Mapping[str, Any]] | None = None
    error: str | None = None


@dataclass(frozen=True)
class EventRecord:
    """One event: a requeue, a panda intervention, a note from the study loop."""

    id: int
    study_id: int
    trial_id: int | None
    step: int | None
    kind: str
    payload: Any
    created_at: datetime

    @classmethod
    def from_row(cls, m: Mapping[Any, Any]) -> EventRecord:
        """The record of a ``caviar_events`` row."""
        return cls(
            id=m["id"],
            study_id=m["study_id"],
            trial_id=m["trial_id"],
            step=m["step"],
            kind=m["kind"],
            payload=loads(m["payload"]),
            created_at=utc(m["created_at"]),
        )


def curve_row(trial_id: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """A curve dict as a table row: the four curves in columns (NaN as NULL), anything else in ``extra``."""
    if "epoch" not in row:
        raise StorageError("a curve row needs an 'epoch'")
    extra = {k: v for k, v in row.items() if k != "epoch" and k not in CURVE_COLUMNS}
    out: dict[str, Any] = {"trial_id": trial_id, "epoch": int(row["epoch"]), "extra": dumps(extra) if extra else None}
    for name in CURVE_COLUMNS:
        value = row.get(name)
        out[name] = None if value is None or math.isnan(float(value)) else float(value)
    return out


def curve_dict(m: Mapping[Any, Any]) -> dict[str, Any]:
    """A ``caviar_curves`` row as the dict readers get: epoch, the four curves (NaN if missing), extras."""
    out: dict[str, Any] = {"epoch": m["epoch"]}
    out.update({name: nan_if_none(m[name]) for name in CURVE_COLUMNS})
    out.update(loads(m["extra"], {}))
    return out
