"""Schema migrations: a 0.1 database opens, migrates and resumes; new ones start at head; newer ones are refused.

tests/fixtures/release-0.1.sqlite was written by the 0.1 code (tests/fixtures/make_golden.py): study
'release', trials 0-2 finished, trial 3 WAITING, status 'running'. Tests copy it first; it never changes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import pg
from caviar.errors import StorageError
from caviar.storage import SqlStorage, StudyStatus, TrialState, open_storage
from caviar.storage.migrate import HEAD, SCHEMA_VERSION, SCRIPTS, VERSION_TABLE, alembic_config
from caviar.storage.schema import metadata

FIXTURES = Path(__file__).parent / "fixtures"
RELEASE = FIXTURES / "release-0.1.sqlite"
sys.path.insert(0, str(FIXTURES))

from make_golden import golden_spec  # noqa: E402

#: What 0.1 stored, table by table (the studies' new columns aside): it must read back exactly.
KEPT = {
    "caviar_trials": "SELECT * FROM caviar_trials ORDER BY id",
    "caviar_curves": "SELECT * FROM caviar_curves ORDER BY trial_id, epoch",
    "caviar_artifacts": "SELECT * FROM caviar_artifacts ORDER BY id",
    "caviar_boxes": "SELECT * FROM caviar_boxes ORDER BY id",
    "caviar_events": "SELECT * FROM caviar_events ORDER BY id",
    "caviar_studies": "SELECT id, name, spec, seed, metric, direction, status, created_at FROM caviar_studies",
}


def _rows(path: Path, query: str, *args: object) -> list[tuple]:
    """Rows of a query, read with plain sqlite3 (the fixture itself read-only)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True) if path == RELEASE else sqlite3.connect(path)
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


def _snapshot(path: Path) -> dict[str, list[tuple]]:
    return {table: _rows(path, query) for table, query in KEPT.items()}


def _release_copy(tmp_path: Path) -> Path:
    db = tmp_path / "release.sqlite"
    shutil.copyfile(RELEASE, db)
    return db


def _release_spec(db: Path) -> dict:
    """The spec that made the fixture (make_golden.main), pointed at the copy."""
    spec = golden_spec(str(db), name="release")
    spec["search"]["strategy"] = "random"
    spec["search"].pop("rounds")
    spec["search"]["trials"] = 4
    return spec


# ------------------------------------------------------------------------------------ a 0.1 database


def test_the_fixture_is_a_0_1_database() -> None:
    """No version table, schema_version 1, a half-done study: what every test below starts from."""
    tables = {name for (name,) in _rows(RELEASE, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert VERSION_TABLE not in tables and "caviar_studies" in tables
    assert _rows(RELEASE, "SELECT value FROM caviar_meta WHERE key = 'schema_version'") == [("1",)]
    assert _rows(RELEASE, "SELECT number, state FROM caviar_trials ORDER BY number") == [
        (0, "COMPLETE"),
        (1, "COMPLETE"),
        (2, "PRUNED"),
        (3, "WAITING"),
    ]
    assert _rows(RELEASE, "SELECT status FROM caviar_studies") == [("running",)]


def test_a_0_1_database_is_migrated_keeping_every_row(tmp_path: Path) -> None:
    db = _release_copy(tmp_path)
    before = _snapshot(db)
    store = open_storage(db)
    assert _rows(db, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]
    assert _rows(db, "SELECT value FROM caviar_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert _rows(db, "SELECT kind, fingerprint FROM caviar_studies") == [("study", None)]
    assert _snapshot(db) == before  # every trial, curve, artifact, box and event as 0.1 stored it

    study = store.get_study("release")
    assert (study.status, study.kind, study.fingerprint) == (StudyStatus.RUNNING, "study", None)
    assert study.counts[TrialState.WAITING] == 1 and study.n_trials == 4
    trials = store.trials(study.id)
    assert [str(t.state) for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "WAITING"]
    assert store.artifact_names(trials[0].id) == ["model.npz"]
    store.close()


def test_a_0_1_study_resumes(tmp_path: Path) -> None:
    from caviar.tune.study import run_study

    db = _release_copy(tmp_path)
    done_before = _rows(db, "SELECT * FROM caviar_trials WHERE number < 3 ORDER BY number")
    curves_before = _rows(db, "SELECT * FROM caviar_curves ORDER BY trial_id, epoch")
    artifacts_before = _rows(db, "SELECT * FROM caviar_artifacts ORDER BY id")
    (waiting,) = _rows(db, "SELECT id, params, unit, seed, group_key FROM caviar_trials WHERE number = 3")

    study = run_study(_release_spec(db))

    trials = {t.number: t for t in study.trials}
    assert sorted(trials) == [0, 1, 2, 3]
    assert trials[3].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert trials[3].attempts == 2  # claimed once by 0.1 (then requeued), once now
    assert trials[3].metrics["epochs_run"] >= 1 and len(study.curves([trials[3].id])[trials[3].id]) >= 1
    assert _rows(db, "SELECT id, params, unit, seed, group_key FROM caviar_trials WHERE number = 3") == [waiting]
    assert _rows(db, "SELECT * FROM caviar_trials WHERE number < 3 ORDER BY number") == done_before  # untouched
    trial_3 = trials[3].id
    assert [r for r in _rows(db, "SELECT * FROM caviar_curves ORDER BY trial_id, epoch") if r[0] != trial_3] == (
        curves_before
    )
    assert [r for r in _rows(db, "SELECT * FROM caviar_artifacts ORDER BY id") if r[1] != trial_3] == artifacts_before
    assert study.refresh().record.status is StudyStatus.COMPLETE


def test_revision_0001_is_the_0_1_schema(tmp_path: Path) -> None:
    """Upgraded to 0001 only, a new file has exactly the tables and indexes 0.1 created."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'r1.db'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    engine.dispose()
    query = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name != ? ORDER BY name"
    made = _rows(tmp_path / "r1.db", query, VERSION_TABLE)
    assert len(made) == 15 and made == _rows(RELEASE, query, VERSION_TABLE)  # 7 tables, 8 indexes


# ------------------------------------------------------------------------------------- new databases


def _schema_diff(conn: sa.Connection) -> list:
    """What alembic's autogenerate sees between the database and caviar.storage.schema (types too)."""
    opts = {"version_table": VERSION_TABLE, "compare_type": True, "compare_server_default": True}
    return compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh, empty database: a SQLite file, or a new schema on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
        return
    with pg.fresh_schema(pg.server_url()) as scoped:
        yield scoped


def test_a_new_database_is_created_at_head(url: str) -> None:
    store = SqlStorage(url)
    sid = store.create_study("fresh", {"x": 1}, kind="session")
    assert store.get_study(sid).kind == "session"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [HEAD]
        version = conn.execute(sa.text("SELECT value FROM caviar_meta WHERE key = 'schema_version'")).scalar()
        assert version == str(SCHEMA_VERSION)
        # The migrations arrive at exactly the tables caviar.storage.schema describes.
        assert _schema_diff(conn) == []
    engine.dispose()
    store.close()


def test_the_migrations_from_nothing_arrive_at_the_tables_a_new_database_gets(url: str) -> None:
    """A new database is created from caviar.storage.schema; the migration chain run on an empty
    database must give the same tables, types and defaults, the same stamps and rows."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [HEAD]
        assert conn.execute(sa.text("SELECT key, value FROM caviar_meta")).all() == [
            ("schema_version", str(SCHEMA_VERSION))
        ]
        assert _schema_diff(conn) == []
        migrated = sorted(sa.inspect(conn).get_table_names())
    engine.dispose()
    if url.startswith("sqlite:///"):  # a second file, created the new way
        created_url = url.replace("new.db", "created.db")
        SqlStorage(created_url).close()
        created = sa.create_engine(created_url)
        with created.connect() as conn:
            assert sorted(sa.inspect(conn).get_table_names()) == migrated
            indexes = {t: sorted(i["name"] for i in sa.inspect(conn).get_indexes(t)) for t in migrated}
        created.dispose()
        with engine.connect() as conn:
            assert indexes == {t: sorted(i["name"] for i in sa.inspect(conn).get_indexes(t)) for t in migrated}
        engine.dispose()


def test_a_new_database_is_created_without_importing_alembic(tmp_path: Path) -> None:
    code = (
        "import sys; from caviar.storage import open_storage; s = open_storage(sys.argv[1]); "
        "s.create_study('x', {}); s.close(); assert 'alembic' not in sys.modules, 'alembic imported'"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "new.db")], check=True, timeout=120)
    with sqlite3.connect(tmp_path / "new.db") as conn:
        assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(HEAD,)]
        assert conn.execute("SELECT name FROM caviar_studies").fetchall() == [("x",)]


def test_head_is_the_newest_script() -> None:
    scripts = ScriptDirectory(str(SCRIPTS))
    assert scripts.get_heads() == [HEAD]
    assert [s.revision for s in scripts.walk_revisions()] == [f"{n:04d}" for n in range(int(HEAD), 0, -1)]


def test_opening_a_database_at_head_costs_two_reads(tmp_path: Path) -> None:
    """At head an open reads the revision and stops: no write, no alembic (not even imported)."""
    db = tmp_path / "head.db"
    open_storage(db).close()
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        open_storage(db).close()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    reads = [s for s in statements if not s.startswith(("BEGIN", "ROLLBACK"))]
    assert len(reads) == 2 and all(s.startswith(("PRAGMA", "SELECT")) for s in reads), statements
    code = (
        "import sys; from caviar.storage import open_storage; open_storage(sys.argv[1]).close(); "
        "assert 'alembic' not in sys.modules, 'alembic imported'"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, env={**os.environ}, timeout=120)


# -------------------------------------------------------------------------------------- newer databases


def test_a_newer_revision_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    open_storage(db).close()
    with sqlite3.connect(db) as con:
        con.execute(f"UPDATE {VERSION_TABLE} SET version_num = '0099'")
    con.close()
    before = db.read_bytes()
    with pytest.raises(StorageError) as info:
        open_storage(db)
    message = str(info.value)
    assert "\n" not in message and "'0099'" in message and message.endswith("upgrade caviar")
    assert db.read_bytes() == before


def test_a_newer_schema_version_without_alembic_is_refused(tmp_path: Path) -> None:
    """A file whose caviar_meta says a newer version and has no version table is not touched either."""
    db = tmp_path / "odd.db"
    open_storage(db).close()
    with sqlite3.connect(db) as con:
        con.execute(f"DROP TABLE {VERSION_TABLE}")
        con.execute("UPDATE caviar_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    before = db.read_bytes()
    with pytest.raises(StorageError, match=r"schema version 99, newer than this caviar's \(2\); upgrade caviar$"):
        open_storage(db)
    assert db.read_bytes() == before


# ----------------------------------------------------------------------------------------- concurrency


def _open(url: str, barrier) -> int:
    barrier.wait(timeout=120)
    store = SqlStorage(url)
    store.close()
    return os.getpid()


def _make_0_1(url: str) -> None:
    """Turn an empty database into what 0.1 made: the 0001 tables, schema_version 1, no version table."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("made_by", ["nothing", "0.1"])
def test_two_processes_open_a_postgres_database_at_once(made_by: str) -> None:
    ctx = mp.get_context("spawn")
    with pg.fresh_schema(pg.server_url()) as scoped, ctx.Manager() as manager, ctx.Pool(2) as pool:
        if made_by == "0.1":
            _make_0_1(scoped)
        barrier = manager.Barrier(2)
        pids = pool.starmap_async(_open, [(scoped, barrier)] * 2, chunksize=1).get(180)
        assert len(set(pids)) == 2  # two processes, both opened it
        engine = sa.create_engine(scoped)
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [HEAD]
            assert _schema_diff(conn) == []
        engine.dispose()
