"""Engines: URLs, SQLite set for many processes (WAL, busy timeout, BEGIN IMMEDIATE), forks, open errors.

SQLite is opened in WAL mode with a 30 s busy timeout, and every write transaction starts with
``BEGIN IMMEDIATE``: writers queue for the lock up front instead of failing halfway with "database is
locked", so many processes can share one file. A forked child never reuses its parent's connections.

A read-only engine (``read_only=True``, what ``show``, ``studies``, ``export``, ``best``, ``report`` and
the dashboard use) never writes: SQLite is opened through a ``file:...?mode=ro`` URI (``immutable=1``
where the file or its folder cannot be written, e.g. read-only media), never switched to WAL, with
``PRAGMA query_only``; PostgreSQL sessions start with ``default_transaction_read_only = on``.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import re
import sqlite3
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from caviar.storage.codec import first_line

__all__ = [
    "BUSY_TIMEOUT_S",
    "READ",
    "insert_ignore",
    "make_engine",
    "open_reason",
    "read_only_sqlite_uri",
    "safe_url",
    "to_url",
]

BUSY_TIMEOUT_S = 30.0
#: Execution option of a read-only connection: SQLite begins it DEFERRED (it never blocks writers).
READ = "caviar_read"


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


# ------------------------------------------------------------------------------------------- SQLite


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


def _sqlite_read_only_on_connect(dbapi_conn: Any, _record: Any) -> None:
    """A read-only connection: wait for writers' locks, refuse any write, and change nothing (no WAL switch)."""
    dbapi_conn.isolation_level = None
    dbapi_conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    dbapi_conn.execute("PRAGMA query_only = ON")


def read_only_sqlite_uri(path: str) -> str:
    """The SQLite URI that opens ``path`` for reading only: ``mode=ro``, or ``immutable=1`` when the file
    or its folder cannot be written (read-only media: SQLite then needs no lock or -shm file)."""
    from urllib.parse import quote

    folder = os.path.dirname(path) or "."
    writable = os.access(path, os.W_OK) and os.access(folder, os.W_OK)
    return f"file:{quote(path)}?{'mode=ro' if writable else 'immutable=1'}"


def _sqlite_on_begin(conn: Connection) -> None:
    """Reads begin DEFERRED (they never block writers in WAL); writes take the lock up front."""
    mode = "DEFERRED" if conn.get_execution_options().get(READ) else "IMMEDIATE"
    conn.exec_driver_sql(f"BEGIN {mode}")


# ------------------------------------------------------------------------------------------ engines

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


def make_engine(url: URL, read_only: bool = False) -> Engine:
    """An engine for ``url``: SQLite set up for many processes, PostgreSQL with a 10 s connect timeout.

    ``read_only``: an engine that cannot write (see the module's docstring); a SQLite file must exist.
    """
    url = _default_driver(url)
    if url.get_backend_name() == "sqlite" and read_only:
        db = url.database or ""
        uri = read_only_sqlite_uri(db)
        # QueuePool, not the SingletonThreadPool a bare "sqlite://" gets: that one closes connections of
        # other threads beyond five, under their feet (the dashboard reads from many threads: a segfault)
        engine = sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False),
            poolclass=sa.pool.QueuePool,
        )
        event.listen(engine, "connect", _sqlite_read_only_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    elif url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        connect_args: dict[str, Any] = {}
        if url.get_driver_name() in ("psycopg2", "psycopg") and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = 10  # an unreachable host fails in 10 s, not minutes
        if read_only and url.get_backend_name() == "postgresql":
            options = str(url.query.get("options", ""))
            connect_args["options"] = f"{options} -c default_transaction_read_only=on".strip()
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    _ENGINES.add(engine)
    return engine


def open_reason(err: BaseException, url: str) -> str:
    """One line saying why a URL could not be opened (the password never shown)."""
    if isinstance(err, exc.NoSuchModuleError):
        return f"unknown database scheme '{make_url(url).drivername}'"
    if isinstance(err, ModuleNotFoundError):
        hint = "; pip install 'caviar[postgres]'" if url.startswith("postgres") else ""
        return f"database driver not installed ({err}){hint}"
    text = first_line(err.orig if isinstance(err, exc.DBAPIError) and err.orig is not None else err)
    if "unable to open database file" in text:
        db = make_url(url).database or ""
        parent = Path(db).parent
        if db and not parent.is_dir():
            return f"directory {parent} does not exist"
        if db and Path(db).is_dir():
            return f"{db} is a directory, not a database file"
    pw = _password(url)
    return text.replace(pw, "***") if pw else text


def insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """INSERT rows, skipping those that collide on the unique ``keys`` (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        conn.execute(table.insert(), rows)
        return
    conn.execute(insert(table).on_conflict_do_nothing(index_elements=keys), rows)
