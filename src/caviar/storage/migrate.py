"""Bring a database's schema to the one this caviar reads: create it when new, refuse it when newer."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from caviar.errors import StorageError
from caviar.storage.engine import READ
from caviar.storage.schema import meta, metadata

SCHEMA_VERSION = 1
_PG_SCHEMA_LOCK = 0x0CA71A2  # advisory lock id: one process creates the tables at a time


def _read_schema_version(conn: Connection) -> int | None:
    if not sa.inspect(conn).has_table(meta.name):
        return None
    value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return None if value is None else int(value)


def _create_schema(conn: Connection) -> None:
    """Create the tables (idempotent) and record the schema version."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_SCHEMA_LOCK})")
    metadata.create_all(conn, checkfirst=True)
    if _read_schema_version(conn) is None:
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))


def ensure_schema(engine: Engine, url: str) -> None:
    """Create the schema of a new database; a database newer than this caviar is refused."""
    with engine.connect() as conn:
        conn.execution_options(**{READ: True})
        version = _read_schema_version(conn)
    if version is None:
        with engine.begin() as conn:
            _create_schema(conn)
    elif version > SCHEMA_VERSION:
        raise StorageError(
            f"storage {url} has schema version {version}, newer than this caviar's ({SCHEMA_VERSION}); upgrade caviar"
        )
