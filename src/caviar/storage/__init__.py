"""Study storage: studies, trials, curves, boxes, events and artifacts in one SQL database.

Modules, one job each:
- ``states``: ``TrialState`` and ``StudyStatus``, str enums of the stored values.
- ``records``: the frozen records storage hands back (``TrialRecord``, ``StudyRecord``, ``EventRecord``)
  and takes (``TrialEnd``), and curve rows.
- ``base``: ``Storage``, the interface (what a storage does).
- ``sql``: ``SqlStorage``, the SQLAlchemy implementation, with ``queue`` (claims, heartbeats, requeue,
  ownership) and ``reads`` (queries) holding its SQL, ``schema`` its tables, ``engine`` the URL and
  SQLite/PostgreSQL set-up, ``codec`` the column encodings, ``migrate`` the schema versions.

``open_storage(url_or_path)`` is the entry point. See docs/storage.md.
"""

from __future__ import annotations

from caviar.errors import StorageError
from caviar.storage.base import DataDiff, SpecDiff, Storage
from caviar.storage.engine import safe_url, to_url
from caviar.storage.records import EventRecord, StudyRecord, TrialEnd, TrialRecord
from caviar.storage.sql import SqlStorage, open_storage
from caviar.storage.states import FINISHED_STATES, StudyStatus, TrialState

__all__ = [
    "FINISHED_STATES",
    "EventRecord",
    "DataDiff",
    "SpecDiff",
    "SqlStorage",
    "Storage",
    "StorageError",
    "StudyRecord",
    "StudyStatus",
    "TrialEnd",
    "TrialRecord",
    "TrialState",
    "open_storage",
    "safe_url",
    "to_url",
]
