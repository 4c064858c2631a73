"""The work queue in SQL: enqueue, claim, heartbeat, requeue and finish trials, each on one connection.

The caller (``SqlStorage``) opens the transaction; these functions hold the rules. Ownership is the
invariant: a trial is changed by a worker only while it is RUNNING under that worker's id, so a worker
presumed dead that comes back cannot overwrite the trial's next run, and no trial is counted twice.
Claims are safe with many processes: SQLite serializes writers (BEGIN IMMEDIATE), PostgreSQL skips
locked rows (``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from caviar.errors import StorageError
from caviar.storage.codec import dumps, finite, int64_seed, utc_or_none
from caviar.storage.engine import insert_ignore
from caviar.storage.records import TrialEnd, TrialRecord, curve_row
from caviar.storage.schema import curves, events, trials
from caviar.storage.states import FINISHED_STATES, TrialState

#: The stored values (bound in SQL as plain strings, whatever the driver makes of str subclasses).
WAITING, RUNNING = TrialState.WAITING.value, TrialState.RUNNING.value


def trial_rows(study_id: int, items: Iterable[Mapping[str, Any]], now: datetime) -> dict[int, dict[str, Any]]:
    """Number -> the WAITING row of each item (the first item wins when a number repeats)."""
    rows: dict[int, dict[str, Any]] = {}
    for item in items:
        for key in ("number", "params"):
            if key not in item:
                raise StorageError(f"a trial to enqueue needs '{key}' (got keys {sorted(item)})")
        unit, group = item.get("unit"), item.get("group_key")
        rows.setdefault(
            int(item["number"]),
            {
                "study_id": study_id,
                "number": int(item["number"]),
                "params": dumps(dict(item["params"])),
                "unit": None if unit is None else dumps([float(u) for u in unit]),
                "round": int(item.get("round", 0)),
                "seed": int64_seed(item.get("seed")),
                "group_key": None if group is None else str(group),
                "state": WAITING,
                "attempts": 0,
                "created_at": now,
            },
        )
    return rows


def enqueue(conn: Connection, study_id: int, rows: Mapping[int, dict[str, Any]]) -> int:
    """Insert the rows whose number the study does not have yet; returns how many were added."""
    if not rows:
        return 0
    existing = set(
        conn.execute(
            sa.select(trials.c.number).where(trials.c.study_id == study_id, trials.c.number.in_(list(rows)))
        ).scalars()
    )
    new = [row for number, row in rows.items() if number not in existing]
    insert_ignore(conn, trials, new, ["study_id", "number"])
    return len(new)


def claim(
    conn: Connection,
    study_id: int,
    worker_id: str,
    limit: int,
    group_key: str | None,
    same_group: bool,
    now: datetime,
) -> list[TrialRecord]:
    """Move up to ``limit`` WAITING trials to RUNNING under ``worker_id``; their old curve rows go."""
    ids = _pick_waiting(conn, study_id, limit, group_key, same_group)
    if not ids:
        return []
    conn.execute(
        trials.update()
        .where(trials.c.id.in_(ids), trials.c.state == WAITING)
        .values(state=RUNNING, worker_id=worker_id, heartbeat_at=now, started_at=now, attempts=trials.c.attempts + 1)
    )
    conn.execute(curves.delete().where(curves.c.trial_id.in_(ids)))  # a re-run starts clean
    rows = conn.execute(
        sa.select(trials)
        .where(trials.c.id.in_(ids), trials.c.state == RUNNING, trials.c.worker_id == worker_id)
        .order_by(trials.c.number)
    ).all()
    return [TrialRecord.from_row(row._mapping) for row in rows]


def _pick_waiting(conn: Connection, study_id: int, limit: int, group_key: str | None, same_group: bool) -> list[int]:
    waiting = sa.select(trials.c.id, trials.c.group_key).where(trials.c.study_id == study_id, trials.c.state == WAITING)
    if group_key is None and same_group:
        first = conn.execute(waiting.order_by(trials.c.number).limit(1).with_for_update(skip_locked=True)).first()
        if first is None:
            return []
        group_key = first.group_key
        if group_key is None:
            waiting = waiting.where(trials.c.group_key.is_(None))
    if group_key is not None:
        waiting = waiting.where(trials.c.group_key == group_key)
    rows = conn.execute(waiting.order_by(trials.c.number).limit(limit).with_for_update(skip_locked=True))
    return [row.id for row in rows]


def _owned(trial_ids: Sequence[int], worker_id: str) -> tuple[Any, ...]:
    """The WHERE clauses of 'these trials, RUNNING under this worker'."""
    return (trials.c.id.in_(list(trial_ids)), trials.c.state == RUNNING, trials.c.worker_id == worker_id)


def heartbeat(conn: Connection, trial_ids: Sequence[int], worker_id: str, now: datetime) -> list[int]:
    """Refresh the heartbeat of the worker's RUNNING trials among ``trial_ids``; returns those ids."""
    conn.execute(trials.update().where(*_owned(trial_ids, worker_id)).values(heartbeat_at=now))
    return sorted(conn.execute(sa.select(trials.c.id).where(*_owned(trial_ids, worker_id))).scalars())


def stale(timeout_s: float, now: datetime) -> Any:
    """The condition 'heartbeat older than ``timeout_s``' (or none at all)."""
    cutoff = now - timedelta(seconds=float(timeout_s))
    return sa.or_(trials.c.heartbeat_at < cutoff, trials.c.heartbeat_at.is_(None))


def of_worker(worker_id: str) -> Any:
    """The condition 'claimed by ``worker_id``'."""
    return trials.c.worker_id == worker_id


def requeue(conn: Connection, study_id: int, condition: Any, reason: str, now: datetime) -> int:
    """RUNNING trials meeting ``condition`` back to WAITING, their partial curves dropped, one
    ``requeue`` event each; returns how many."""
    rows = conn.execute(
        sa.select(trials.c.id, trials.c.worker_id)
        .where(trials.c.study_id == study_id, trials.c.state == RUNNING, condition)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return 0
    ids = [row.id for row in rows]
    conn.execute(
        trials.update()
        .where(trials.c.id.in_(ids), trials.c.state == RUNNING)
        .values(state=WAITING, worker_id=None, heartbeat_at=None, started_at=None)
    )
    conn.execute(curves.delete().where(curves.c.trial_id.in_(ids)))
    conn.execute(
        events.insert(),
        [
            {
                "study_id": study_id,
                "trial_id": row.id,
                "step": None,
                "kind": "requeue",
                "payload": dumps({"worker_id": row.worker_id, "reason": reason}),
                "created_at": now,
            }
            for row in rows
        ],
    )
    return len(ids)


def check_ends(ends: Sequence[TrialEnd]) -> None:
    """Every end names a final state (one line naming the wrong one otherwise)."""
    for end in ends:
        if end.state not in FINISHED_STATES:
            names = ", ".join(str(s) for s in FINISHED_STATES)
            raise StorageError(f"a trial finishes as one of {names}, not {str(end.state)!r}")


def finish(conn: Connection, worker_id: str, ends: Sequence[TrialEnd], now: datetime) -> list[bool]:
    """Write the ends of the trials ``worker_id`` still owns; one flag per end (was it written)."""
    ids = [end.trial_id for end in ends]
    started = {
        row.id: utc_or_none(row.started_at)
        for row in conn.execute(
            sa.select(trials.c.id, trials.c.started_at).where(*_owned(ids, worker_id)).with_for_update()
        )
    }
    for end in ends:
        if end.trial_id not in started:
            continue
        began = started[end.trial_id]
        conn.execute(
            trials.update()
            .where(trials.c.id == end.trial_id)
            .values(
                state=TrialState(end.state).value,
                finished_at=now,
                heartbeat_at=now,
                duration=(now - began).total_seconds() if began else None,
                metrics=dumps(dict(end.metrics or {})),
                objective=finite(end.objective),
                error=None if end.error is None else str(end.error),
            )
        )
    put_curves(conn, {end.trial_id: end.curve or [] for end in ends if end.trial_id in started})
    return [end.trial_id in started for end in ends]


def owned_ids(conn: Connection, trial_ids: Sequence[int], worker_id: str) -> list[int]:
    """The ids among ``trial_ids`` that ``worker_id`` still owns (RUNNING)."""
    return list(conn.execute(sa.select(trials.c.id).where(*_owned(trial_ids, worker_id))).scalars())


def put_curves(conn: Connection, rows_by_trial: Mapping[int, Sequence[Mapping[str, Any]]]) -> None:
    """Replace the given epochs of each trial's curve: one DELETE per distinct epoch (a population's
    epoch is one) and one INSERT for all the rows, not two statements per trial."""
    new: dict[tuple[int, int], dict[str, Any]] = {}
    for trial_id, rows in rows_by_trial.items():
        for row in rows:
            r = curve_row(trial_id, row)
            new[trial_id, r["epoch"]] = r
    if not new:
        return
    trials_by_epoch: dict[int, list[int]] = {}
    for trial_id, epoch in new:
        trials_by_epoch.setdefault(epoch, []).append(trial_id)
    for epoch, ids in trials_by_epoch.items():
        conn.execute(curves.delete().where(curves.c.epoch == epoch, curves.c.trial_id.in_(ids)))
    conn.execute(curves.insert(), list(new.values()))
