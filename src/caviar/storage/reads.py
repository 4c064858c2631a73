"""Read queries in SQL: studies with their counts, trials, the best trial, curves, each on one connection."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from caviar.errors import StorageError
from caviar.storage.codec import loads, utc
from caviar.storage.records import StudyRecord, TrialRecord, curve_dict
from caviar.storage.schema import curves, studies, trials
from caviar.storage.states import StudyStatus, TrialState

COMPLETE = TrialState.COMPLETE.value


def find_study(conn: Connection, name_or_id: str | int, url: str) -> Any:
    """The study row with that name (or id); unknown -> StorageError listing the known names."""
    row = None
    if isinstance(name_or_id, str) and "\x00" in name_or_id:  # no database holds it; PostgreSQL refuses to compare
        raise StorageError(f"no study {name_or_id!r} in {url}: a study name never holds a NUL")
    if isinstance(name_or_id, str):
        row = conn.execute(sa.select(studies).where(studies.c.name == name_or_id)).first()
    if row is None and str(name_or_id).isdigit():
        row = conn.execute(sa.select(studies).where(studies.c.id == int(name_or_id))).first()
    if row is None:
        names = conn.execute(sa.select(studies.c.name).order_by(studies.c.id)).scalars().all()
        known = ", ".join(names) if names else "none"
        raise StorageError(f"no study {str(name_or_id)!r} in {url}; known: {known}")
    return row


def study_record(conn: Connection, row: Any) -> StudyRecord:
    """The record of a study row, with its counts and best objective."""
    return StudyRecord(
        id=row.id,
        name=row.name,
        spec=loads(row.spec, {}),
        seed=row.seed,
        metric=row.metric,
        direction=row.direction,
        status=StudyStatus(row.status),
        created_at=utc(row.created_at),
        kind=row.kind,
        fingerprint=row.fingerprint,
        counts=counts(conn, row.id),
        best_objective=best_objective(conn, row.id),
    )


def counts(conn: Connection, study_id: int) -> dict[TrialState, int]:
    """Number of trials in each state, every state present (zeros included)."""
    query = sa.select(trials.c.state, sa.func.count()).where(trials.c.study_id == study_id).group_by(trials.c.state)
    out = dict.fromkeys(TrialState, 0)
    out.update({TrialState(state): int(n) for state, n in conn.execute(query)})
    return out


def best_objective(conn: Connection, study_id: int) -> float | None:
    """The highest objective of a COMPLETE trial, or None."""
    query = sa.select(sa.func.max(trials.c.objective)).where(trials.c.study_id == study_id, trials.c.state == COMPLETE)
    return conn.execute(query).scalar()


def trial_list(conn: Connection, study_id: int, states: Collection[TrialState] | None) -> list[TrialRecord]:
    """The study's trials by number, optionally only those in ``states``."""
    query = sa.select(trials).where(trials.c.study_id == study_id).order_by(trials.c.number)
    if states is not None:
        query = query.where(trials.c.state.in_([TrialState(s).value for s in states]))
    return [TrialRecord.from_row(row._mapping) for row in conn.execute(query)]


def trial(conn: Connection, trial_id: int) -> TrialRecord | None:
    """One trial by id, or None."""
    row = conn.execute(sa.select(trials).where(trials.c.id == trial_id)).first()
    return None if row is None else TrialRecord.from_row(row._mapping)


def best_trial(conn: Connection, study_id: int) -> TrialRecord | None:
    """The COMPLETE trial with the highest objective (lowest number on ties), or None."""
    query = (
        sa.select(trials)
        .where(trials.c.study_id == study_id, trials.c.state == COMPLETE, trials.c.objective.is_not(None))
        .order_by(trials.c.objective.desc(), trials.c.number)
        .limit(1)
    )
    row = conn.execute(query).first()
    return None if row is None else TrialRecord.from_row(row._mapping)


def next_number(conn: Connection, study_id: int) -> int:
    """One more than the highest trial number (0 for an empty study)."""
    top = conn.execute(sa.select(sa.func.max(trials.c.number)).where(trials.c.study_id == study_id)).scalar()
    return 0 if top is None else int(top) + 1


def curve_rows(conn: Connection, study_id: int, trial_ids: Collection[int] | None) -> dict[int, list[dict[str, Any]]]:
    """Trial id -> its per-epoch rows, by epoch."""
    query = (
        sa.select(curves)
        .join(trials, trials.c.id == curves.c.trial_id)
        .where(trials.c.study_id == study_id)
        .order_by(curves.c.trial_id, curves.c.epoch)
    )
    if trial_ids is not None:
        query = query.where(curves.c.trial_id.in_(list(trial_ids)))
    out: dict[int, list[dict[str, Any]]] = {}
    for row in conn.execute(query):
        out.setdefault(row.trial_id, []).append(curve_dict(row._mapping))
    return out
