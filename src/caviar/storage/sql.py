"""The SQLAlchemy storage: any database SQLAlchemy reaches (SQLite files and PostgreSQL are tested).

``SqlStorage`` opens the transactions and turns database errors into one-line ``StorageError``s; the
work queue's rules live in caviar.storage.queue, the read queries in caviar.storage.reads. On
PostgreSQL, trials are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED``. An instance pickles by its
URL, so it can be handed to worker processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, make_url

from caviar.errors import StorageError
from caviar.storage import queue, reads
from caviar.storage.base import DataDiff, SpecDiff, Storage
from caviar.storage.codec import canonical, dumps, first_line, int64_seed, loads, utc_now
from caviar.storage.engine import READ, insert_ignore, make_engine, open_reason, safe_url, to_url
from caviar.storage.migrate import check_schema, ensure_schema
from caviar.storage.names import check_study_name
from caviar.storage.records import EventRecord, StudyRecord, TrialEnd, TrialRecord
from caviar.storage.retry import retrying
from caviar.storage.schema import artifacts, boxes, curves, events, studies, trials
from caviar.storage.states import StudyStatus, TrialState

__all__ = ["SqlStorage", "open_storage"]


class SqlStorage(Storage):
    """A study database reached through SQLAlchemy; a plain path means a SQLite file."""

    def __init__(self, url: str | os.PathLike[str], read_only: bool = False) -> None:
        self._raw_url = to_url(url)
        self.url = safe_url(self._raw_url)
        self.read_only = read_only
        if read_only:
            _check_exists(self._raw_url, self.url)
        try:
            self._engine = make_engine(make_url(self._raw_url), read_only=read_only)
        except (exc.SQLAlchemyError, ImportError, ValueError) as err:
            raise StorageError(f"cannot open storage {self.url}: {open_reason(err, self._raw_url)}") from err
        try:
            (check_schema if read_only else ensure_schema)(self._engine, self.url)
        except StorageError:
            self._engine.dispose()
            raise
        except (exc.SQLAlchemyError, OSError) as err:
            self._engine.dispose()
            raise StorageError(f"cannot open storage {self.url}: {open_reason(err, self._raw_url)}") from err

    # ---- plumbing

    def __repr__(self) -> str:
        return f"SqlStorage({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (SqlStorage, (self._raw_url, self.read_only))

    def close(self) -> None:
        self._engine.dispose()

    @property
    def dialect(self) -> str:
        """'sqlite', 'postgresql', ..."""
        return self._engine.dialect.name

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it holds the write lock from its start: BEGIN IMMEDIATE)."""
        if self.read_only:
            raise StorageError(f"storage {self.url} is opened read-only; this command does not write to it")
        try:
            with self._engine.begin() as conn:
                yield conn
        except exc.DBAPIError as err:
            raise StorageError(f"storage {self.url}: {first_line(err.orig or err)}") from err

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read transaction (deferred: it never blocks writers)."""
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ: True})
                yield conn
        except exc.DBAPIError as err:
            raise StorageError(f"storage {self.url}: {first_line(err.orig or err)}") from err

    # ---- studies

    def create_study(
        self,
        name: str,
        spec: Mapping[str, Any],
        seed: int | None = None,
        metric: str = "val_accuracy",
        direction: str = "maximize",
        kind: str = "study",
        now: datetime | None = None,
    ) -> int:
        row = {**_study_row(name, spec, seed, metric, direction, now), "kind": str(kind)}
        with self._write() as conn:
            if conn.execute(sa.select(studies.c.id).where(studies.c.name == name)).first():
                raise StorageError(f"study '{name}' already exists in {self.url}; resume it or choose another name")
            return _new_id(conn.execute(studies.insert().values(**row)))

    def get_or_create_study(
        self,
        name: str,
        spec: Mapping[str, Any],
        seed: int | None = None,
        metric: str = "val_accuracy",
        direction: str = "maximize",
        differs: SpecDiff | None = None,
        now: datetime | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        data_differs: DataDiff | None = None,
    ) -> int:
        new = _study_row(name, spec, seed, metric, direction, now)
        if fingerprint is not None:
            new["fingerprint"] = dumps(dict(fingerprint))
        with self._write() as conn:
            row = conn.execute(sa.select(studies).where(studies.c.name == name)).first()
            if row is None:
                insert_ignore(conn, studies, [new], ["name"])
                return int(conn.execute(sa.select(studies.c.id).where(studies.c.name == name)).scalar_one())
            old_spec, new_spec = loads(row.spec, {}), canonical(dict(spec))
            if differs is not None:
                diff = list(differs(old_spec, new_spec))
            else:
                diff = [] if old_spec == new_spec else ["spec"]
            diff += [key for key in ("seed", "metric", "direction") if getattr(row, key) != new[key]]
            if diff:
                raise StorageError(
                    f"study '{name}' in {self.url} was created with a different spec "
                    f"(differs at: {', '.join(diff)}); use another study name or the original spec"
                )
            changes: dict[str, Any] = {"spec": new["spec"]}
            if fingerprint is not None:
                if row.fingerprint is None:
                    changes["fingerprint"] = new["fingerprint"]
                else:
                    old_fp, new_fp = loads(row.fingerprint, {}), canonical(dict(fingerprint))
                    what = data_differs(old_fp, new_fp) if data_differs is not None else []
                    if not what and old_fp != new_fp:
                        what = ["content"]
                    if what:
                        raise StorageError(
                            f"study '{name}' in {self.url} was created with other data "
                            f"(changed: {'; '.join(what)}); use another study name or the original data"
                        )
            conn.execute(studies.update().where(studies.c.id == row.id).values(**changes))
            return int(row.id)

    def get_study(self, name_or_id: str | int) -> StudyRecord:
        with self._read() as conn:
            return reads.study_record(conn, reads.find_study(conn, name_or_id, self.url))

    def list_studies(self) -> list[StudyRecord]:
        with self._read() as conn:
            rows = conn.execute(sa.select(studies).order_by(studies.c.id)).all()
            return [reads.study_record(conn, row) for row in rows]

    def set_study_status(self, study_id: int, status: StudyStatus | str) -> None:
        try:
            value = StudyStatus(status).value
        except ValueError:
            known = ", ".join(s.value for s in StudyStatus)
            raise StorageError(f"a study's status is one of {known}, not {str(status)!r}") from None
        with self._write() as conn:
            conn.execute(studies.update().where(studies.c.id == study_id).values(status=value))

    def delete_study(self, name_or_id: str | int) -> None:
        with self._write() as conn:
            sid = reads.find_study(conn, name_or_id, self.url).id
            trial_ids = sa.select(trials.c.id).where(trials.c.study_id == sid).scalar_subquery()
            conn.execute(artifacts.delete().where(artifacts.c.trial_id.in_(trial_ids)))
            conn.execute(curves.delete().where(curves.c.trial_id.in_(trial_ids)))
            for table in (events, boxes, trials):
                conn.execute(table.delete().where(table.c.study_id == sid))
            conn.execute(studies.delete().where(studies.c.id == sid))

    # ---- the work queue (rules in caviar.storage.queue)

    def enqueue_trials(self, study_id: int, items: Iterable[Mapping[str, Any]], now: datetime | None = None) -> int:
        rows = queue.trial_rows(study_id, items, utc_now(now))
        if not rows:
            return 0
        with self._write() as conn:
            return queue.enqueue(conn, study_id, rows)

    def claim_trials(
        self,
        study_id: int,
        worker_id: str,
        limit: int = 1,
        group_key: str | None = None,
        same_group: bool = False,
        now: datetime | None = None,
    ) -> list[TrialRecord]:
        if limit < 1:
            return []
        with self._write() as conn:
            return queue.claim(conn, study_id, worker_id, limit, group_key, same_group, utc_now(now))

    def heartbeat(self, trial_ids: Sequence[int], worker_id: str, now: datetime | None = None) -> list[int]:
        if not trial_ids:
            return []
        with self._write() as conn:
            return queue.heartbeat(conn, trial_ids, worker_id, utc_now(now))

    def requeue_stale(self, study_id: int, timeout_s: float, now: datetime | None = None) -> int:
        t = utc_now(now)
        with self._write() as conn:
            return queue.requeue(conn, study_id, queue.stale(timeout_s, t), "stale heartbeat", t)

    def requeue_worker(self, study_id: int, worker_id: str, now: datetime | None = None) -> int:
        with self._write() as conn:
            return queue.requeue(conn, study_id, queue.of_worker(worker_id), "worker released", utc_now(now))

    def finish_trials(self, worker_id: str, ends: Sequence[TrialEnd], now: datetime | None = None) -> list[bool]:
        queue.check_ends(ends)
        if not ends:
            return []
        with self._write() as conn:
            return queue.finish(conn, worker_id, ends, utc_now(now))

    def add_curves(
        self, rows_by_trial: Mapping[int, Sequence[Mapping[str, Any]]], worker_id: str | None = None
    ) -> list[int]:
        ids = list(rows_by_trial)
        if not ids:
            return []
        with self._write() as conn:
            if worker_id is not None:
                ids = queue.owned_ids(conn, ids, worker_id)
            queue.put_curves(conn, {trial_id: rows_by_trial[trial_id] for trial_id in ids})
            return sorted(ids)

    def drop_curve_after(self, trial_id: int, epoch: int) -> int:
        with self._write() as conn:
            gone = conn.execute(curves.delete().where(curves.c.trial_id == trial_id, curves.c.epoch > int(epoch)))
            return int(gone.rowcount or 0)

    # ---- boxes, events, artifacts

    def add_box(self, study_id: int, round: int, box: Mapping[str, Any], now: datetime | None = None) -> None:
        with self._write() as conn:
            conn.execute(boxes.delete().where(boxes.c.study_id == study_id, boxes.c.round == int(round)))
            conn.execute(
                boxes.insert().values(
                    study_id=study_id, round=int(round), box=dumps(dict(box)), created_at=utc_now(now)
                )
            )

    def boxes(self, study_id: int) -> dict[int, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(boxes.c.round, boxes.c.box).where(boxes.c.study_id == study_id).order_by(boxes.c.round)
            )
            return {row.round: loads(row.box, {}) for row in rows}

    def add_event(
        self,
        study_id: int,
        kind: str,
        payload: Any = None,
        trial_id: int | None = None,
        step: int | None = None,
        now: datetime | None = None,
    ) -> int:
        values = {
            "study_id": study_id,
            "trial_id": trial_id,
            "step": None if step is None else int(step),
            "kind": kind,
            "payload": dumps(payload),
            "created_at": utc_now(now),
        }
        with self._write() as conn:
            return _new_id(conn.execute(events.insert().values(**values)))

    def events(
        self, study_id: int, trial_id: int | None = None, since_id: int | None = None, kind: str | None = None
    ) -> list[EventRecord]:
        query = sa.select(events).where(events.c.study_id == study_id).order_by(events.c.id)
        if trial_id is not None:
            query = query.where(events.c.trial_id == trial_id)
        if since_id is not None:
            query = query.where(events.c.id > since_id)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self._read() as conn:
            return [EventRecord.from_row(row._mapping) for row in conn.execute(query)]

    def save_artifact(self, trial_id: int, name: str, data: bytes, now: datetime | None = None) -> None:
        with self._write() as conn:
            conn.execute(artifacts.delete().where(artifacts.c.trial_id == trial_id, artifacts.c.name == name))
            conn.execute(
                artifacts.insert().values(trial_id=trial_id, name=name, data=bytes(data), created_at=utc_now(now))
            )

    def load_artifact(self, trial_id: int, name: str) -> bytes:
        with self._read() as conn:
            data = conn.execute(
                sa.select(artifacts.c.data).where(artifacts.c.trial_id == trial_id, artifacts.c.name == name)
            ).scalar()
        if data is None:
            raise StorageError(f"no artifact '{name}' for trial {trial_id} in {self.url}")
        return bytes(data)

    def artifact_names(self, trial_id: int) -> list[str]:
        with self._read() as conn:
            query = sa.select(artifacts.c.name).where(artifacts.c.trial_id == trial_id).order_by(artifacts.c.name)
            return list(conn.execute(query).scalars())

    # ---- reads (queries in caviar.storage.reads)

    def trials(self, study_id: int, states: Collection[TrialState] | None = None) -> list[TrialRecord]:
        with self._read() as conn:
            return reads.trial_list(conn, study_id, states)

    def trial(self, trial_id: int) -> TrialRecord:
        with self._read() as conn:
            record = reads.trial(conn, trial_id)
        if record is None:
            raise StorageError(f"no trial with id {trial_id} in {self.url}")
        return record

    def best_trial(self, study_id: int) -> TrialRecord | None:
        with self._read() as conn:
            return reads.best_trial(conn, study_id)

    def counts(self, study_id: int) -> dict[TrialState, int]:
        with self._read() as conn:
            return reads.counts(conn, study_id)

    def next_number(self, study_id: int) -> int:
        with self._read() as conn:
            return reads.next_number(conn, study_id)

    def curves(self, study_id: int, trial_ids: Collection[int] | None = None) -> dict[int, list[dict[str, Any]]]:
        with self._read() as conn:
            return reads.curve_rows(conn, study_id, trial_ids)


#: The methods that talk to the database. Each is one transaction, so each is run again when the database
#: blinks (a restart, a dropped connection, a lock held past the timeout): see caviar.storage.retry.
TRANSACTIONS = (
    "create_study",
    "get_or_create_study",
    "get_study",
    "list_studies",
    "set_study_status",
    "delete_study",
    "enqueue_trials",
    "claim_trials",
    "heartbeat",
    "requeue_stale",
    "requeue_worker",
    "finish_trials",
    "add_curves",
    "add_box",
    "boxes",
    "add_event",
    "events",
    "save_artifact",
    "load_artifact",
    "artifact_names",
    "trials",
    "trial",
    "best_trial",
    "counts",
    "next_number",
    "curves",
    "drop_curve_after",
)
for _name in TRANSACTIONS:
    setattr(SqlStorage, _name, retrying(getattr(SqlStorage, _name)))


def _new_id(result: sa.CursorResult[Any]) -> int:
    """The id an INSERT of one row gave it."""
    key = result.inserted_primary_key
    if key is None:
        raise StorageError("the database did not return the new row's id")
    return int(key[0])


def _study_row(
    name: str, spec: Mapping[str, Any], seed: Any, metric: str, direction: str, at: datetime | None
) -> dict[str, Any]:
    """A new study's row (status 'created'); a direction other than maximize/minimize is an error."""
    check_study_name(name)
    if direction not in ("maximize", "minimize"):
        raise StorageError(f"direction must be 'maximize' or 'minimize', not {direction!r}")
    return {
        "name": name,
        "spec": dumps(dict(spec)),
        "seed": int64_seed(seed),
        "metric": metric,
        "direction": direction,
        "status": StudyStatus.CREATED.value,
        "created_at": utc_now(at),
    }


def _check_exists(raw_url: str, url: str) -> None:
    """A read-only open of a SQLite file that is not there names the path (nothing is created)."""
    parsed = make_url(raw_url)
    if parsed.get_backend_name() != "sqlite":
        return
    db = parsed.database or ""
    if not db or db == ":memory:" or db.startswith("file:"):
        raise StorageError(f"storage {url}: a read-only open needs a SQLite file path")
    if os.path.isdir(db):
        raise StorageError(f"cannot open storage {url}: {db} is a directory, not a database file")
    if not os.path.isdir(os.path.dirname(db) or "."):
        raise StorageError(f"cannot open storage {url}: directory {os.path.dirname(db)} does not exist")
    if not os.path.isfile(db):
        raise StorageError(f"no study storage at {db}: no such file (run `caviar tune SPEC` first, or check --storage)")


def open_storage(url_or_path: str | os.PathLike[str] | Storage, read_only: bool = False) -> Storage:
    """A storage from a SQLAlchemy URL or a SQLite file path (a Storage passes through).

    ``read_only``: for commands that only read: nothing is created (a missing file is an error, a
    database without caviar's tables is "not a caviar database"), migrated or written, and SQLite files
    on read-only media open (see caviar.storage.engine).
    """
    return url_or_path if isinstance(url_or_path, Storage) else SqlStorage(url_or_path, read_only=read_only)
