"""Riding out storage outages: transient database errors retried with backoff for a bounded time.

A PostgreSQL restart, a dropped connection or SQLite still busy after its own timeout should not end a
study that has hours of training in it. Every ``SqlStorage`` method is one transaction, so a method
whose transaction failed on such an error is simply run again (:func:`retrying`), with jittered
exponential backoff, until it succeeds or the budget is spent; then the last error is raised as it was.
Anything else (a constraint, a bad query, a missing table) is raised at once.

The budget is ``CAVIAR_STORAGE_RETRY_S`` seconds (default 30; 0 turns retrying off).
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import exc

__all__ = ["DEFAULT_RETRY_S", "ENV", "is_transient", "retry_budget", "retrying"]

ENV = "CAVIAR_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 30.0
_MAX_SLEEP_S = 2.0

#: Words of the errors a server restart, a lost connection or a long lock give (lower case).
_TRANSIENT_TEXT = (
    "server closed the connection",
    "connection refused",
    "connection reset",
    "connection timed out",
    "could not connect to server",
    "connection to server",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "ssl connection has been closed",
    "broken pipe",
    "no connection to the server",
    "database is locked",
    "database is busy",
    "database table is locked",
)
#: SQLSTATE classes and codes that mean "try again": connection exceptions, operator intervention.
_TRANSIENT_SQLSTATE = ("08", "57P01", "57P02", "57P03", "40001", "40P01")

F = TypeVar("F", bound=Callable[..., Any])


def retry_budget() -> float:
    """Seconds to keep retrying (``CAVIAR_STORAGE_RETRY_S``, default 30)."""
    text = os.environ.get(ENV, "")
    try:
        return max(0.0, float(text)) if text.strip() else DEFAULT_RETRY_S
    except ValueError:
        return DEFAULT_RETRY_S


def _db_error(err: BaseException) -> exc.DBAPIError | None:
    """The SQLAlchemy DBAPIError behind ``err`` (storage wraps them in StorageError ``from`` them)."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, exc.DBAPIError):
            return seen
        seen = seen.__cause__
    return None


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` says the database blinked (worth trying again) rather than the request is wrong."""
    db = _db_error(err)
    if db is None:
        return False
    if db.connection_invalidated:
        return True
    code = getattr(db.orig, "pgcode", None) or getattr(getattr(db.orig, "diag", None), "sqlstate", None)
    if code and any(str(code).startswith(c) for c in _TRANSIENT_SQLSTATE):
        return True
    if not isinstance(db, (exc.OperationalError, exc.InterfaceError)):
        return False
    text = str(db.orig or db).lower()
    return any(t in text for t in _TRANSIENT_TEXT)


def retrying(method: F) -> F:
    """Run ``method`` again while it fails on a transient error, for at most :func:`retry_budget` seconds."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        deadline: float | None = None
        attempt = 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + retry_budget()
                if now >= deadline:
                    raise
                attempt += 1
                pause = min(_MAX_SLEEP_S, 0.05 * 2**attempt) * (0.5 + random.random())
                time.sleep(min(pause, max(0.0, deadline - now)))

    return wrapper  # type: ignore[return-value]
