"""Study storage: studies, trials, curves, boxes, events and artifacts in one SQL database.

Any SQLAlchemy URL works; a plain path means a SQLite file. SQLite is opened in WAL mode with a
30 s busy timeout, and every write transaction starts with ``BEGIN IMMEDIATE``: writers queue for
the lock up front instead of failing halfway with "database is locked", so many processes can share
one file. On PostgreSQL, trials are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED``.

Trial states: WAITING -> RUNNING (claimed by a worker, which sends heartbeats) -> COMPLETE, DIVERGED,
PRUNED or FAILED. A RUNNING trial whose heartbeat is too old goes back to WAITING (zombie recovery);
a finish from a worker that no longer owns the trial is refused, so no trial is counted twice.
See docs/storage.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import math
import os
import random
import re
import sqlite3
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from caviar.errors import StorageError

__all__ = [
    "FINISHED_STATES",
    "NONMATERIAL_SPEC_KEYS",
    "SCHEMA_VERSION",
    "STATES",
    "EventRecord",
    "Storage",
    "StudyRecord",
    "TrialRecord",
    "open_storage",
    "safe_url",
    "to_url",
]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
WAITING, RUNNING, COMPLETE, DIVERGED, PRUNED, FAILED = (
    "WAITING",
    "RUNNING",
    "COMPLETE",
    "DIVERGED",
    "PRUNED",
    "FAILED",
)
STATES = (WAITING, RUNNING, COMPLETE, DIVERGED, PRUNED, FAILED)
FINISHED_STATES = (COMPLETE, DIVERGED, PRUNED, FAILED)
CURVE_COLUMNS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
#: Spec keys (at any depth) that may change when a study is resumed: budget and execution settings.
NONMATERIAL_SPEC_KEYS = frozenset(
    {"trials", "n_trials", "budget", "workers", "n_workers", "executor", "storage", "timeout", "description"}
)
_PG_SCHEMA_LOCK = 0x0CA71A2  # advisory lock id: one process creates the tables at a time

# --------------------------------------------------------------------------------------------- tables

metadata = sa.MetaData()
_ID = sa.Integer
_TS = sa.DateTime(timezone=True)

meta_table = sa.Table(
    "caviar_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
studies = sa.Table(
    "caviar_studies",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger),
    sa.Column("metric", sa.String(128), nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)
trials = sa.Table(
    "caviar_trials",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("study_id", _ID, sa.ForeignKey("caviar_studies.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("unit", sa.Text),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("seed", sa.BigInteger),
    sa.Column("group_key", sa.Text),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("worker_id", sa.String(255)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("heartbeat_at", _TS),
    sa.Column("started_at", _TS),
    sa.Column("finished_at", _TS),
    sa.Column("duration", sa.Float),
    sa.Column("metrics", sa.Text),
    sa.Column("objective", sa.Float),
    sa.Column("error", sa.Text),
    sa.UniqueConstraint("study_id", "number", name="uq_caviar_trials_number"),
    sa.Index("ix_caviar_trials_state", "study_id", "state"),
)
curves = sa.Table(
    "caviar_curves",
    metadata,
    sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    *(sa.Column(name, sa.Float) for name in CURVE_COLUMNS),
    sa.Column("extra", sa.Text),
)
boxes = sa.Table(
    "caviar_boxes",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("study_id", _ID, sa.ForeignKey("caviar_studies.id"), nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("box", sa.Text, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.UniqueConstraint("study_id", "round", name="uq_caviar_boxes_round"),
)
events = sa.Table(
    "caviar_events",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("study_id", _ID, sa.ForeignKey("caviar_studies.id"), nullable=False),
    sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id")),
    sa.Column("step", sa.Integer),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Index("ix_caviar_events_study", "study_id", "id"),
)
artifacts = sa.Table(
    "caviar_artifacts",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.UniqueConstraint("trial_id", "name", name="uq_caviar_artifacts_name"),
)

# -------------------------------------------------------------------------------------------- records


@dataclass
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
    state: str
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
        return self.state in FINISHED_STATES


@dataclass
class StudyRecord:
    """One study, with its trial counts per state and its best objective so far."""

    id: int
    name: str
    spec: dict[str, Any]
    seed: int | None
    metric: str
    direction: str
    status: str
    created_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    best_objective: float | None = None

    @property
    def n_trials(self) -> int:
        """All trials of the study, whatever their state."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class TrialEnd:
    """How one trial ended, for ``Storage.finish_trials``."""

    trial_id: int
    state: str
    metrics: Mapping[str, Any] | None = None
    objective: float | None = None
    curve: Sequence[Mapping[str, Any]] | None = None
    error: str | None = None


@dataclass
class EventRecord:
    """One event: a requeue, a panda intervention, a note from the study loop."""

    id: int
    study_id: int
    trial_id: int | None
    step: int | None
    kind: str
    payload: Any
    created_at: datetime


# ------------------------------------------------------------------------------------------ helpers


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays, sets and paths JSON-friendly."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, (Path, datetime)):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} as JSON")


def _dumps(value: Any) -> str:
    """JSON text; NaN and infinities are kept (Python's json reads them back)."""
    return json.dumps(value, default=_json_default, sort_keys=True)


def _loads(text: str | None, empty: Any = None) -> Any:
    return empty if text is None else json.loads(text)


def _canonical(value: Any) -> Any:
    """The value as it reads back from storage (tuples become lists, numpy becomes Python)."""
    return json.loads(_dumps(value))


def _utc(dt: datetime | None) -> datetime | None:
    """Aware UTC datetime (SQLite hands naive ones back)."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _now(now: datetime | None = None) -> datetime:
    return _utc(now) if now is not None else datetime.now(timezone.utc)


def _finite(x: Any) -> float | None:
    """A float, or None for missing and non-finite values (they never win a study)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _seed(x: Any) -> int | None:
    if x is None:
        return None
    x = int(x)
    if not -(2**63) <= x < 2**63:
        raise StorageError(f"seed {x} does not fit in 64 bits")
    return x


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else "unknown error"


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _password(url: str) -> str | None:
    try:
        pw = make_url(url).password
    except Exception:
        return None
    return str(pw) if pw else None


def to_url(url_or_path: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL: strings with '://' are taken as they are, anything else is a SQLite path."""
    text = os.fspath(url_or_path)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().absolute()}"


# ------------------------------------------------------------------------------------ engine set-up


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    """Wait for locks instead of failing, use WAL, and let SQLAlchemy's 'begin' event emit BEGIN."""
    dbapi_conn.isolation_level = None
    dbapi_conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    _retry_busy(lambda: _use_wal(dbapi_conn))
    dbapi_conn.execute("PRAGMA synchronous = NORMAL")
    dbapi_conn.execute("PRAGMA foreign_keys = ON")


def _use_wal(dbapi_conn: Any) -> None:
    mode = str(dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode not in ("wal", "memory"):
        dbapi_conn.execute("PRAGMA journal_mode = WAL")


def _retry_busy(fn: Callable[[], None], budget_s: float = BUSY_TIMEOUT_S) -> None:
    """Call ``fn``, retrying while SQLite says busy/locked without having waited itself.

    Switching a new file to WAL while other processes open it can fail at once (SQLite skips the busy
    handler there to avoid deadlock); the retry plays the busy handler's role, with jittered backoff.
    """
    deadline = time.monotonic() + budget_s
    for attempt in itertools.count():
        try:
            fn()
            return
        except sqlite3.OperationalError as err:
            text = str(err).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
            time.sleep(min(0.5, 0.005 * 2**attempt) * (0.5 + random.random()))


def _sqlite_on_begin(conn: Connection) -> None:
    """Reads begin DEFERRED (they never block writers in WAL); writes take the lock up front."""
    mode = "DEFERRED" if conn.get_execution_options().get("caviar_read") else "IMMEDIATE"
    conn.exec_driver_sql(f"BEGIN {mode}")


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork() -> None:
    """A forked child must not reuse its parent's pooled connections."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _default_driver(url: URL) -> URL:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; fall back to psycopg2 when only it is installed."""
    if url.drivername != "postgresql" or importlib.util.find_spec("psycopg") is not None:
        return url
    return url.set(drivername="postgresql+psycopg2") if importlib.util.find_spec("psycopg2") else url


def _make_engine(url: URL) -> Engine:
    url = _default_driver(url)
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        connect_args: dict[str, Any] = {}
        if url.get_driver_name() in ("psycopg2", "psycopg") and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = 10  # an unreachable host fails in 10 s, not minutes
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    _ENGINES.add(engine)
    return engine


def _open_reason(err: BaseException, url: str) -> str:
    """One line saying why a URL could not be opened."""
    if isinstance(err, exc.NoSuchModuleError):
        return f"unknown database scheme '{make_url(url).drivername}'"
    if isinstance(err, ModuleNotFoundError):
        hint = "; pip install 'caviar[postgres]'" if url.startswith("postgres") else ""
        return f"database driver not installed ({err}){hint}"
    text = _first_line(err.orig if isinstance(err, exc.DBAPIError) and err.orig is not None else err)
    if "unable to open database file" in text:
        db = make_url(url).database or ""
        parent = Path(db).parent
        if db and not parent.is_dir():
            return f"directory {parent} does not exist"
        if db and Path(db).is_dir():
            return f"{db} is a directory, not a database file"
    pw = _password(url)
    return text.replace(pw, "***") if pw else text


def _read_schema_version(conn: Connection) -> int | None:
    if not sa.inspect(conn).has_table(meta_table.name):
        return None
    value = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
    return None if value is None else int(value)


def _create_schema(conn: Connection) -> None:
    """Create the tables (idempotent) and record the schema version."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_SCHEMA_LOCK})")
    metadata.create_all(conn, checkfirst=True)
    if _read_schema_version(conn) is None:
        conn.execute(meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """INSERT rows, skipping those that collide on the unique ``keys``."""
    if not rows:
        return
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        conn.execute(table.insert(), rows)
        return
    conn.execute(insert(table).on_conflict_do_nothing(index_elements=keys), rows)


def _spec_diff(old: Any, new: Any, ignore: Collection[str], path: str = "") -> list[str]:
    """Dotted paths where two specs differ, skipping keys in ``ignore`` at any depth."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            if key in ignore:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(sub)
            else:
                out.extend(_spec_diff(old[key], new[key], ignore, sub))
        return out
    return [] if old == new else [path or "<spec>"]


def _trial_record(row: Any) -> TrialRecord:
    m = row._mapping
    return TrialRecord(
        id=m["id"],
        study_id=m["study_id"],
        number=m["number"],
        params=_loads(m["params"], {}),
        unit=_loads(m["unit"]),
        round=m["round"],
        seed=m["seed"],
        group_key=m["group_key"],
        state=m["state"],
        worker_id=m["worker_id"],
        attempts=m["attempts"],
        created_at=_utc(m["created_at"]),
        heartbeat_at=_utc(m["heartbeat_at"]),
        started_at=_utc(m["started_at"]),
        finished_at=_utc(m["finished_at"]),
        duration=m["duration"],
        metrics=_loads(m["metrics"], {}),
        objective=m["objective"],
        error=m["error"],
    )


def _curve_row(trial_id: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """A curve dict as a table row: the four curves in columns, anything else in ``extra``."""
    if "epoch" not in row:
        raise StorageError("a curve row needs an 'epoch'")
    extra = {k: v for k, v in row.items() if k != "epoch" and k not in CURVE_COLUMNS}
    out: dict[str, Any] = {"trial_id": trial_id, "epoch": int(row["epoch"]), "extra": _dumps(extra) if extra else None}
    for name in CURVE_COLUMNS:
        value = row.get(name)
        out[name] = None if value is None or math.isnan(float(value)) else float(value)
    return out


def _curve_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"epoch": m["epoch"]}
    out.update({name: _nan_if_none(m[name]) for name in CURVE_COLUMNS})
    out.update(_loads(m["extra"], {}))
    return out


def _event_record(row: Any) -> EventRecord:
    m = row._mapping
    return EventRecord(
        id=m["id"],
        study_id=m["study_id"],
        trial_id=m["trial_id"],
        step=m["step"],
        kind=m["kind"],
        payload=_loads(m["payload"]),
        created_at=_utc(m["created_at"]),
    )


# ------------------------------------------------------------------------------------------ storage


class Storage:
    """A study database. Every method is one short transaction; instances are cheap to pickle."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        self._raw_url = to_url(url)
        self.url = safe_url(self._raw_url)
        try:
            self._engine = _make_engine(make_url(self._raw_url))
        except (exc.SQLAlchemyError, ImportError, ValueError) as err:
            raise StorageError(f"cannot open storage {self.url}: {_open_reason(err, self._raw_url)}") from err
        try:
            self._ensure_schema()
        except StorageError:
            self._engine.dispose()
            raise
        except (exc.SQLAlchemyError, OSError) as err:
            self._engine.dispose()
            raise StorageError(f"cannot open storage {self.url}: {_open_reason(err, self._raw_url)}") from err

    def _ensure_schema(self) -> None:
        with self._engine.connect() as conn:
            conn.execution_options(caviar_read=True)
            version = _read_schema_version(conn)
        if version is None:
            with self._engine.begin() as conn:
                _create_schema(conn)
        elif version > SCHEMA_VERSION:
            raise StorageError(
                f"storage {self.url} has schema version {version}, newer than this caviar's "
                f"({SCHEMA_VERSION}); upgrade caviar"
            )

    # ---- plumbing

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Storage, (self._raw_url,))

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections (the object can still be used; it reconnects)."""
        self._engine.dispose()

    @property
    def dialect(self) -> str:
        """'sqlite', 'postgresql', ..."""
        return self._engine.dialect.name

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except exc.DBAPIError as err:
            raise StorageError(f"storage {self.url}: {_first_line(err.orig or err)}") from err

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                conn.execution_options(caviar_read=True)
                yield conn
        except exc.DBAPIError as err:
            raise StorageError(f"storage {self.url}: {_first_line(err.orig or err)}") from err

    # ---- studies

    def create_study(
        self,
        name: str,
        spec: Mapping[str, Any],
        seed: int | None = None,
        metric: str = "val_accuracy",
        direction: str = "maximize",
        now: datetime | None = None,
    ) -> int:
        """Create a study and return its id; a name already taken is an error."""
        with self._write() as conn:
            if conn.execute(sa.select(studies.c.id).where(studies.c.name == name)).first():
                raise StorageError(f"study '{name}' already exists in {self.url}; resume it or choose another name")
            return self._insert_study(conn, name, spec, seed, metric, direction, now)

    def get_or_create_study(
        self,
        name: str,
        spec: Mapping[str, Any],
        seed: int | None = None,
        metric: str = "val_accuracy",
        direction: str = "maximize",
        ignore: Collection[str] = NONMATERIAL_SPEC_KEYS,
        now: datetime | None = None,
    ) -> int:
        """Resume the study of that name, or create it. A different spec, seed or metric is an error.

        Keys in ``ignore`` (budget, workers...) may differ; the stored spec is then updated.
        """
        with self._write() as conn:
            row = conn.execute(sa.select(studies).where(studies.c.name == name)).first()
            if row is None:
                _insert_ignore(conn, studies, [self._study_row(name, spec, seed, metric, direction, now)], ["name"])
                row = conn.execute(sa.select(studies).where(studies.c.name == name)).one()
                return int(row.id)
            diff = _spec_diff(_loads(row.spec, {}), _canonical(dict(spec)), ignore)
            diff += [
                k
                for k, old, new in (
                    ("seed", row.seed, _seed(seed)),
                    ("metric", row.metric, metric),
                    ("direction", row.direction, direction),
                )
                if old != new
            ]
            if diff:
                raise StorageError(
                    f"study '{name}' in {self.url} was created with a different spec "
                    f"(differs at: {', '.join(diff)}); use another study name or the original spec"
                )
            conn.execute(studies.update().where(studies.c.id == row.id).values(spec=_dumps(dict(spec))))
            return int(row.id)

    def _study_row(
        self, name: str, spec: Mapping[str, Any], seed: Any, metric: str, direction: str, now: datetime | None
    ) -> dict[str, Any]:
        if direction not in ("maximize", "minimize"):
            raise StorageError(f"direction must be 'maximize' or 'minimize', not {direction!r}")
        return {
            "name": name,
            "spec": _dumps(dict(spec)),
            "seed": _seed(seed),
            "metric": metric,
            "direction": direction,
            "status": "created",
            "created_at": _now(now),
        }

    def _insert_study(
        self,
        conn: Connection,
        name: str,
        spec: Mapping[str, Any],
        seed: Any,
        metric: str,
        direction: str,
        now: datetime | None,
    ) -> int:
        row = self._study_row(name, spec, seed, metric, direction, now)
        return int(conn.execute(studies.insert().values(**row)).inserted_primary_key[0])

    def get_study(self, name_or_id: str | int) -> StudyRecord:
        """The study with that name (or id), with its counts; unknown -> StorageError listing the known ones."""
        with self._read() as conn:
            row = self._find_study(conn, name_or_id)
            return self._study_record(conn, row)

    def _find_study(self, conn: Connection, name_or_id: str | int) -> Any:
        row = None
        if isinstance(name_or_id, str):
            row = conn.execute(sa.select(studies).where(studies.c.name == name_or_id)).first()
        if row is None and str(name_or_id).isdigit():
            row = conn.execute(sa.select(studies).where(studies.c.id == int(name_or_id))).first()
        if row is None:
            names = conn.execute(sa.select(studies.c.name).order_by(studies.c.id)).scalars().all()
            known = ", ".join(names) if names else "none"
            raise StorageError(f"no study '{name_or_id}' in {self.url}; known: {known}")
        return row

    def _study_record(self, conn: Connection, row: Any) -> StudyRecord:
        return StudyRecord(
            id=row.id,
            name=row.name,
            spec=_loads(row.spec, {}),
            seed=row.seed,
            metric=row.metric,
            direction=row.direction,
            status=row.status,
            created_at=_utc(row.created_at),
            counts=self._counts(conn, row.id),
            best_objective=self._best_objective(conn, row.id),
        )

    def list_studies(self) -> list[StudyRecord]:
        """All studies, oldest first, with counts per state and best objective."""
        with self._read() as conn:
            rows = conn.execute(sa.select(studies).order_by(studies.c.id)).all()
            return [self._study_record(conn, row) for row in rows]

    def set_study_status(self, study_id: int, status: str) -> None:
        """Record the study's status ('created', 'running', 'done', 'stopped'...)."""
        with self._write() as conn:
            conn.execute(studies.update().where(studies.c.id == study_id).values(status=status))

    def delete_study(self, name_or_id: str | int) -> None:
        """Delete a study and everything it holds."""
        with self._write() as conn:
            sid = self._find_study(conn, name_or_id).id
            trial_ids = sa.select(trials.c.id).where(trials.c.study_id == sid).scalar_subquery()
            conn.execute(artifacts.delete().where(artifacts.c.trial_id.in_(trial_ids)))
            conn.execute(curves.delete().where(curves.c.trial_id.in_(trial_ids)))
            for table in (events, boxes, trials):
                conn.execute(table.delete().where(table.c.study_id == sid))
            conn.execute(studies.delete().where(studies.c.id == sid))

    # ---- trials: queue, claim, heartbeat, finish

    def enqueue_trials(self, study_id: int, items: Iterable[Mapping[str, Any]], now: datetime | None = None) -> int:
        """Add WAITING trials; numbers already in the study are skipped. Returns how many were added.

        Each item: ``number``, ``params`` (user variables), optional ``unit`` (point in the unit cube),
        ``round`` (default 0), ``seed``, ``group_key`` (population/static key).
        """
        rows: dict[int, dict[str, Any]] = {}
        for item in items:
            row = self._trial_row(study_id, item, _now(now))
            rows.setdefault(row["number"], row)
        if not rows:
            return 0
        with self._write() as conn:
            existing = set(
                conn.execute(
                    sa.select(trials.c.number).where(trials.c.study_id == study_id, trials.c.number.in_(list(rows)))
                ).scalars()
            )
            new = [row for number, row in rows.items() if number not in existing]
            _insert_ignore(conn, trials, new, ["study_id", "number"])
            return len(new)

    @staticmethod
    def _trial_row(study_id: int, item: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        for key in ("number", "params"):
            if key not in item:
                raise StorageError(f"a trial to enqueue needs '{key}' (got keys {sorted(item)})")
        unit = item.get("unit")
        key = item.get("group_key")
        return {
            "study_id": study_id,
            "number": int(item["number"]),
            "params": _dumps(dict(item["params"])),
            "unit": None if unit is None else _dumps([float(u) for u in unit]),
            "round": int(item.get("round", 0)),
            "seed": _seed(item.get("seed")),
            "group_key": None if key is None else str(key),
            "state": WAITING,
            "attempts": 0,
            "created_at": now,
        }

    def claim_trials(
        self,
        study_id: int,
        worker_id: str,
        limit: int = 1,
        group_key: str | None = None,
        same_group: bool = False,
        now: datetime | None = None,
    ) -> list[TrialRecord]:
        """Atomically move up to ``limit`` WAITING trials (lowest numbers first) to RUNNING for this worker.

        ``group_key`` restricts the claim to one population key; ``same_group=True`` claims only trials
        sharing the key of the first waiting one (a population that can train together). Safe with many
        processes: SQLite serializes writers (BEGIN IMMEDIATE), PostgreSQL skips locked rows.
        """
        if limit < 1:
            return []
        t = _now(now)
        with self._write() as conn:
            ids = self._pick_waiting(conn, study_id, limit, group_key, same_group)
            if not ids:
                return []
            conn.execute(
                trials.update()
                .where(trials.c.id.in_(ids), trials.c.state == WAITING)
                .values(
                    state=RUNNING, worker_id=worker_id, heartbeat_at=t, started_at=t, attempts=trials.c.attempts + 1
                )
            )
            conn.execute(curves.delete().where(curves.c.trial_id.in_(ids)))  # a re-run starts clean
            rows = conn.execute(
                sa.select(trials)
                .where(trials.c.id.in_(ids), trials.c.state == RUNNING, trials.c.worker_id == worker_id)
                .order_by(trials.c.number)
            ).all()
            return [_trial_record(row) for row in rows]

    @staticmethod
    def _pick_waiting(
        conn: Connection, study_id: int, limit: int, group_key: str | None, same_group: bool
    ) -> list[int]:
        waiting = sa.select(trials.c.id, trials.c.group_key).where(
            trials.c.study_id == study_id, trials.c.state == WAITING
        )
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

    def heartbeat(self, trial_ids: Sequence[int], worker_id: str, now: datetime | None = None) -> list[int]:
        """Refresh the heartbeat of trials this worker runs; returns the ids it still owns.

        A trial missing from the answer was requeued (or finished) behind the worker's back: stop it.
        """
        if not trial_ids:
            return []
        owned = (trials.c.id.in_(list(trial_ids)), trials.c.state == RUNNING, trials.c.worker_id == worker_id)
        with self._write() as conn:
            conn.execute(trials.update().where(*owned).values(heartbeat_at=_now(now)))
            return sorted(conn.execute(sa.select(trials.c.id).where(*owned)).scalars())

    def requeue_stale(self, study_id: int, timeout_s: float, now: datetime | None = None) -> int:
        """Put RUNNING trials whose heartbeat is older than ``timeout_s`` back to WAITING. Returns how many."""
        cutoff = _now(now) - timedelta(seconds=float(timeout_s))
        stale = sa.or_(trials.c.heartbeat_at < cutoff, trials.c.heartbeat_at.is_(None))
        return self._requeue(study_id, stale, "stale heartbeat", now)

    def requeue_worker(self, study_id: int, worker_id: str, now: datetime | None = None) -> int:
        """Put the RUNNING trials of one worker back to WAITING (it stopped or died). Returns how many."""
        return self._requeue(study_id, trials.c.worker_id == worker_id, "worker released", now)

    def _requeue(self, study_id: int, condition: Any, reason: str, now: datetime | None) -> int:
        with self._write() as conn:
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
            t = _now(now)
            conn.execute(
                events.insert(),
                [
                    {
                        "study_id": study_id,
                        "trial_id": row.id,
                        "step": None,
                        "kind": "requeue",
                        "payload": _dumps({"worker_id": row.worker_id, "reason": reason}),
                        "created_at": t,
                    }
                    for row in rows
                ],
            )
            return len(ids)

    def finish_trial(
        self,
        trial_id: int,
        worker_id: str,
        state: str,
        metrics: Mapping[str, Any] | None = None,
        objective: float | None = None,
        curve: Sequence[Mapping[str, Any]] | None = None,
        error: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Record a trial's end in one transaction. Returns False (and changes nothing) unless the trial
        is still RUNNING and owned by ``worker_id``: a worker that lost its trial cannot overwrite it.

        ``objective`` is the value the study maximizes; non-finite values are stored as None.
        """
        end = TrialEnd(trial_id, state, metrics, objective, curve, error)
        return self.finish_trials(worker_id, [end], now)[0]

    def finish_trials(self, worker_id: str, ends: Sequence[TrialEnd], now: datetime | None = None) -> list[bool]:
        """``finish_trial`` for several trials (a population) in ONE transaction; one flag per end, in
        order: whether that trial was still RUNNING under ``worker_id`` and is now finished."""
        for end in ends:
            if end.state not in FINISHED_STATES:
                raise StorageError(f"a trial finishes as one of {', '.join(FINISHED_STATES)}, not {end.state!r}")
        if not ends:
            return []
        t = _now(now)
        ids = [end.trial_id for end in ends]
        with self._write() as conn:
            started = {
                row.id: _utc(row.started_at)
                for row in conn.execute(
                    sa.select(trials.c.id, trials.c.started_at)
                    .where(trials.c.id.in_(ids), trials.c.state == RUNNING, trials.c.worker_id == worker_id)
                    .with_for_update()
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
                        state=end.state,
                        finished_at=t,
                        heartbeat_at=t,
                        duration=(t - began).total_seconds() if began else None,
                        metrics=_dumps(dict(end.metrics or {})),
                        objective=_finite(end.objective),
                        error=None if end.error is None else str(end.error),
                    )
                )
            self._put_curves(conn, {end.trial_id: end.curve or [] for end in ends if end.trial_id in started})
            return [end.trial_id in started for end in ends]

    def add_curve_rows(self, trial_id: int, rows: Sequence[Mapping[str, Any]], worker_id: str | None = None) -> bool:
        """Write per-epoch rows (an epoch written twice is replaced). With ``worker_id``, only while that
        worker still owns the RUNNING trial; returns whether the rows were written."""
        return trial_id in self.add_curves({trial_id: rows}, worker_id)

    def add_curves(
        self, rows_by_trial: Mapping[int, Sequence[Mapping[str, Any]]], worker_id: str | None = None
    ) -> list[int]:
        """Write the rows of several trials in ONE transaction (a population's epoch); returns the ids
        written. With ``worker_id``, only trials that worker still owns (RUNNING) are written."""
        ids = list(rows_by_trial)
        if not ids:
            return []
        with self._write() as conn:
            if worker_id is not None:
                ids = list(
                    conn.execute(
                        sa.select(trials.c.id).where(
                            trials.c.id.in_(ids), trials.c.state == RUNNING, trials.c.worker_id == worker_id
                        )
                    ).scalars()
                )
            self._put_curves(conn, {trial_id: rows_by_trial[trial_id] for trial_id in ids})
            return sorted(ids)

    @staticmethod
    def _put_curves(conn: Connection, rows_by_trial: Mapping[int, Sequence[Mapping[str, Any]]]) -> None:
        """Replace the given epochs of each trial's curve: one DELETE per distinct epoch (a population's
        epoch is one) and one INSERT for all the rows, not two statements per trial."""
        new: dict[tuple[int, int], dict[str, Any]] = {}
        for trial_id, rows in rows_by_trial.items():
            for row in rows:
                r = _curve_row(trial_id, row)
                new[trial_id, r["epoch"]] = r
        if not new:
            return
        trials_by_epoch: dict[int, list[int]] = {}
        for trial_id, epoch in new:
            trials_by_epoch.setdefault(epoch, []).append(trial_id)
        for epoch, ids in trials_by_epoch.items():
            conn.execute(curves.delete().where(curves.c.epoch == epoch, curves.c.trial_id.in_(ids)))
        conn.execute(curves.insert(), list(new.values()))

    # ---- boxes, events, artifacts

    def add_box(self, study_id: int, round: int, box: Mapping[str, Any], now: datetime | None = None) -> None:
        """Store (or replace) the search box of one coarse-to-fine round."""
        with self._write() as conn:
            conn.execute(boxes.delete().where(boxes.c.study_id == study_id, boxes.c.round == int(round)))
            conn.execute(
                boxes.insert().values(study_id=study_id, round=int(round), box=_dumps(dict(box)), created_at=_now(now))
            )

    def boxes(self, study_id: int) -> dict[int, dict[str, Any]]:
        """Round -> box, in round order."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(boxes.c.round, boxes.c.box).where(boxes.c.study_id == study_id).order_by(boxes.c.round)
            )
            return {row.round: _loads(row.box, {}) for row in rows}

    def add_event(
        self,
        study_id: int,
        kind: str,
        payload: Any = None,
        trial_id: int | None = None,
        step: int | None = None,
        now: datetime | None = None,
    ) -> int:
        """Append an event (an intervention, a note) and return its id; ids only grow."""
        values = {
            "study_id": study_id,
            "trial_id": trial_id,
            "step": None if step is None else int(step),
            "kind": kind,
            "payload": _dumps(payload),
            "created_at": _now(now),
        }
        with self._write() as conn:
            return int(conn.execute(events.insert().values(**values)).inserted_primary_key[0])

    def events(
        self, study_id: int, trial_id: int | None = None, since_id: int | None = None, kind: str | None = None
    ) -> list[EventRecord]:
        """Events in the order they were added; ``since_id`` returns only newer ones (for polling)."""
        query = sa.select(events).where(events.c.study_id == study_id).order_by(events.c.id)
        if trial_id is not None:
            query = query.where(events.c.trial_id == trial_id)
        if since_id is not None:
            query = query.where(events.c.id > since_id)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self._read() as conn:
            return [_event_record(row) for row in conn.execute(query)]

    def save_artifact(self, trial_id: int, name: str, data: bytes, now: datetime | None = None) -> None:
        """Store bytes (e.g. a trial's weights as .npz) under a name, replacing any previous ones."""
        with self._write() as conn:
            conn.execute(artifacts.delete().where(artifacts.c.trial_id == trial_id, artifacts.c.name == name))
            conn.execute(
                artifacts.insert().values(trial_id=trial_id, name=name, data=bytes(data), created_at=_now(now))
            )

    def load_artifact(self, trial_id: int, name: str) -> bytes:
        """The bytes stored under that name; missing -> StorageError."""
        with self._read() as conn:
            data = conn.execute(
                sa.select(artifacts.c.data).where(artifacts.c.trial_id == trial_id, artifacts.c.name == name)
            ).scalar()
        if data is None:
            raise StorageError(f"no artifact '{name}' for trial {trial_id} in {self.url}")
        return bytes(data)

    def artifact_names(self, trial_id: int) -> list[str]:
        """Names of the artifacts stored for a trial."""
        with self._read() as conn:
            query = sa.select(artifacts.c.name).where(artifacts.c.trial_id == trial_id).order_by(artifacts.c.name)
            return list(conn.execute(query).scalars())

    # ---- queries

    def trials(self, study_id: int, states: Collection[str] | None = None) -> list[TrialRecord]:
        """The study's trials by number, optionally only those in ``states``."""
        query = sa.select(trials).where(trials.c.study_id == study_id).order_by(trials.c.number)
        if states is not None:
            query = query.where(trials.c.state.in_(list(states)))
        with self._read() as conn:
            return [_trial_record(row) for row in conn.execute(query)]

    def trial(self, trial_id: int) -> TrialRecord:
        """One trial by id; unknown -> StorageError."""
        with self._read() as conn:
            row = conn.execute(sa.select(trials).where(trials.c.id == trial_id)).first()
        if row is None:
            raise StorageError(f"no trial with id {trial_id} in {self.url}")
        return _trial_record(row)

    def best_trial(self, study_id: int) -> TrialRecord | None:
        """The COMPLETE trial with the highest objective (lowest number on ties), or None."""
        query = (
            sa.select(trials)
            .where(trials.c.study_id == study_id, trials.c.state == COMPLETE, trials.c.objective.is_not(None))
            .order_by(trials.c.objective.desc(), trials.c.number)
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _trial_record(row)

    @staticmethod
    def _best_objective(conn: Connection, study_id: int) -> float | None:
        query = sa.select(sa.func.max(trials.c.objective)).where(
            trials.c.study_id == study_id, trials.c.state == COMPLETE
        )
        return conn.execute(query).scalar()

    def counts(self, study_id: int) -> dict[str, int]:
        """Number of trials in each state (every state present, zeros included)."""
        with self._read() as conn:
            return self._counts(conn, study_id)

    @staticmethod
    def _counts(conn: Connection, study_id: int) -> dict[str, int]:
        query = sa.select(trials.c.state, sa.func.count()).where(trials.c.study_id == study_id).group_by(trials.c.state)
        out = dict.fromkeys(STATES, 0)
        out.update({state: int(n) for state, n in conn.execute(query)})
        return out

    def next_number(self, study_id: int) -> int:
        """One more than the highest trial number (0 for an empty study)."""
        with self._read() as conn:
            top = conn.execute(sa.select(sa.func.max(trials.c.number)).where(trials.c.study_id == study_id)).scalar()
        return 0 if top is None else int(top) + 1

    def curves(self, study_id: int, trial_ids: Collection[int] | None = None) -> dict[int, list[dict[str, Any]]]:
        """Trial id -> its per-epoch rows (dicts with epoch, the four curves as floats, and extras)."""
        query = (
            sa.select(curves)
            .join(trials, trials.c.id == curves.c.trial_id)
            .where(trials.c.study_id == study_id)
            .order_by(curves.c.trial_id, curves.c.epoch)
        )
        if trial_ids is not None:
            query = query.where(curves.c.trial_id.in_(list(trial_ids)))
        out: dict[int, list[dict[str, Any]]] = {}
        with self._read() as conn:
            for row in conn.execute(query):
                out.setdefault(row.trial_id, []).append(_curve_dict(row._mapping))
        return out

    def trials_dataframe(self, study_id: int, states: Collection[str] | None = None) -> Any:
        """A pandas DataFrame, one row per trial: bookkeeping columns, metrics, and ``params_<name>``."""
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
        for tr in self.trials(study_id, states):
            rec: dict[str, Any] = {name: getattr(tr, name) for name in base}
            rec.update({k: v for k, v in tr.metrics.items() if k not in rec})
            rec.update({f"params_{k}": tuple(v) if isinstance(v, list) else v for k, v in tr.params.items()})
            records.append(rec)
        return pd.DataFrame.from_records(records, columns=None if records else base)


def open_storage(url_or_path: str | os.PathLike[str] | Storage) -> Storage:
    """A Storage from a SQLAlchemy URL or a SQLite file path (a Storage passes through)."""
    return url_or_path if isinstance(url_or_path, Storage) else Storage(url_or_path)
