"""Bring a database's schema to the one this caviar reads (Alembic), cheaply when it already is.

Opening a storage reads one row, the revision in ``caviar_alembic_version``; at ``HEAD`` nothing else
happens (alembic is not even imported). Otherwise, in one write transaction (SQLite's write lock,
or on PostgreSQL an advisory lock too, so concurrent processes migrate once), the state is read
again and:

- no caviar tables: a new database, created at head from ``caviar.storage.schema`` and stamped (as
  Optuna's storage does: the migrations' ~0.13 s, alembic's import included, are a twentieth of a
  small study; tests/test_migrations.py checks that both ways give the same tables);
- ``caviar_meta.schema_version = 1`` without a version table: a database made by caviar 0.1, stamped
  0001 (its schema) and upgraded to head;
- a known older revision: upgraded to head;
- a revision this caviar does not know (or a newer ``schema_version``): refused with one line, and the
  database is left as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from caviar.errors import StorageError
from caviar.storage.codec import first_line
from caviar.storage.engine import READ
from caviar.storage.schema import meta, metadata

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD",
    "SCHEMA_VERSION",
    "VERSION_TABLE",
    "alembic_config",
    "check_schema",
    "create_at_head",
    "ensure_schema",
    "revision_of",
]

#: The newest revision (tests check it is the script directory's head).
HEAD = "0002"
#: ``caviar_meta.schema_version`` at head: caviar 0.1 reads it and refuses a newer file.
SCHEMA_VERSION = 2
#: Alembic's version table, prefixed like caviar's tables (a shared database may hold another app's).
VERSION_TABLE = "caviar_alembic_version"
SCRIPTS = Path(__file__).with_name("migrations")
_LEGACY_REVISION = "0001"  # what a caviar 0.1 database (schema_version 1, no version table) is
_PG_SCHEMA_LOCK = 0x0CA71A2  # advisory lock id: one process migrates at a time


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for caviar's scripts, with no file: ``connection`` is what they run on."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def revision_of(conn: Connection) -> str | None:
    """The database's revision, or None when it has no version table (new, or made by caviar 0.1)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _legacy_version(conn: Connection) -> int | None:
    """``caviar_meta.schema_version`` (0.1's marker), or None when there is no such table."""
    if not sa.inspect(conn).has_table("caviar_meta"):
        return None
    value = conn.execute(sa.text("SELECT value FROM caviar_meta WHERE key = 'schema_version'")).scalar()
    return None if value is None else int(value)


def _has_caviar_tables(conn: Connection) -> bool:
    """Whether any of caviar's tables is in the database (another program's tables do not count)."""
    names = set(sa.inspect(conn).get_table_names())
    return any(table in names for table in metadata.tables)


def create_at_head(conn: Connection) -> None:
    """A new database's tables as the head schema describes them, stamped ``HEAD`` (what the
    migrations from nothing arrive at, without running them)."""
    metadata.create_all(conn)
    version = sa.Table(
        VERSION_TABLE,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), primary_key=True),  # alembic's own version table
    )
    version.create(conn)
    conn.execute(version.insert().values(version_num=HEAD))
    conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(SCRIPTS)).walk_revisions()}


def _refuse_newer(url: str, revision: str) -> StorageError:
    return StorageError(
        f"storage {url} has schema revision {revision!r}, which this caviar (schema {HEAD}) does not know: "
        "it was written by a newer caviar; upgrade caviar"
    )


def ensure_schema(engine: Engine, url: str) -> None:
    """Make the database's schema the head one, or refuse a database newer than this caviar."""
    with engine.connect() as conn:
        conn.execution_options(**{READ: True})
        revision = revision_of(conn)
    if revision == HEAD:
        return
    if revision is not None and revision not in _known_revisions():
        raise _refuse_newer(url, revision)  # before any lock is taken: the file stays as it was
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_SCHEMA_LOCK})")
        _migrate(conn, url)


def check_schema(engine: Engine, url: str) -> None:
    """For a read-only open: the schema must already be the head one; nothing is created or migrated.

    A database without caviar's tables (a typo'd URL, another program's SQLite file) is refused as
    "not a caviar database"; an older one must first be opened by a command that writes (caviar tune).
    """
    with engine.connect() as conn:
        conn.execution_options(**{READ: True})
        revision = revision_of(conn)
        if revision == HEAD:
            return
        if revision is not None and revision not in _known_revisions():
            raise _refuse_newer(url, revision)
        legacy = None if revision is not None else _legacy_version(conn)
    if revision is None and legacy is None:
        raise StorageError(f"storage {url} is not a caviar database (it has no caviar tables)")
    older = f"schema revision {revision!r}" if revision is not None else f"schema version {legacy} (caviar 0.1)"
    raise StorageError(
        f"storage {url} has {older}, older than this caviar's ({HEAD}); it is opened read-only here: "
        "run a command that writes to it (caviar tune) once to upgrade it"
    )


def _migrate(conn: Connection, url: str) -> None:
    """Inside the locked transaction: read the state again (another process may have migrated) and act."""
    revision = revision_of(conn)
    if revision == HEAD:
        return
    if revision is None and not _has_caviar_tables(conn):
        create_at_head(conn)
        return
    from alembic import command
    from alembic.util import CommandError

    if revision is not None and revision not in _known_revisions():
        raise _refuse_newer(url, revision)
    config = alembic_config(conn)
    legacy = None if revision is not None else _legacy_version(conn)  # 0.1's marker, without a revision
    if legacy is not None and legacy > SCHEMA_VERSION:
        raise StorageError(
            f"storage {url} has schema version {legacy}, newer than this caviar's ({SCHEMA_VERSION}); upgrade caviar"
        )
    if legacy is not None and legacy != 1:
        raise StorageError(f"storage {url} has schema version {legacy} but no {VERSION_TABLE} table")
    try:
        if legacy == 1:
            command.stamp(config, _LEGACY_REVISION)  # made by caviar 0.1: its schema is revision 0001
        command.upgrade(config, "head")
    except CommandError as err:  # e.g. an install without the scripts
        raise StorageError(f"storage {url}: cannot migrate its schema: {first_line(err)}") from err
