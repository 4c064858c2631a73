"""Bad input at the door: one test per kind, each a one-line error, a non-zero exit, and storage untouched.

Every failing invocation runs against a storage holding a finished study: afterwards the row count of
every caviar table and the database file's bytes are what they were (nothing created, nothing written).
Commands run in this process through ``caviar.cli.main``, the console script's entry point.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from caviar.cli import failure_reasons
from caviar.data.checks import check_weights_fit, fingerprint_diff
from caviar.errors import DataError, StorageError
from caviar.storage import TrialEnd, TrialState, open_storage
from caviar.storage.engine import read_only_sqlite_uri
from caviar.tune.study import Study, run_study
from cli_runner import CliResult
from pg import fresh_schema, server_url

SPEC = """
[study]
name = "{name}"

[data]
path = "{data}"
{data_extra}

[model]
hidden = [4]
{model_extra}

[training]
epochs = 1
batch_size = 16
{training_extra}

[search]
trials = {trials}
storage = "{db}"
{search_extra}

[space]
learning_rate = {{ low = 1e-3, high = 1e-1, scale = "log" }}
"""


def one_line_error(r: CliResult, pattern: str, code: int = 2) -> None:
    """Exit code ``code``, exactly one stderr line ``error: ...`` matching ``pattern``, no traceback."""
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert r.code == code, (r.code, r.err)
    assert len(lines) == 1, r.err
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in r.err + r.out


def table(path: Path, rows: int = 60, **change) -> Path:
    """A two-class CSV (features a, b, c; label) of ``rows`` rows; ``change`` sets (row, column) cells."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["label"] = (X[:, 0] > 0).astype(int)
    for key, value in change.items():
        column, row = key.split("_")
        frame.loc[int(row), column] = value
    frame.to_csv(path, index=False)
    return path


def state_of(db: Path) -> tuple[dict[str, int], str]:
    """Row counts of every table and the SHA-256 of the database file (read without writing)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        conn.close()
    return counts, hashlib.sha256(db.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A folder with good.csv and good.db holding the finished study 'done' (2 trials)."""
    folder = tmp_path_factory.mktemp("stored")
    table(folder / "good.csv")
    spec = folder / "done.toml"
    write_spec(spec, name="done", data="good.csv")
    run_study(spec)
    with sqlite3.connect(folder / "good.db") as conn:  # the WAL into the file: its bytes say it all
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder


def write_spec(
    path: Path, name: str = "new", data: str = "good.csv", trials: int = 2, db: str = "good.db", **extra: str
) -> Path:
    keys = {f"{k}_extra": extra.get(f"{k}_extra", "") for k in ("data", "model", "training", "search")}
    path.write_text(SPEC.format(name=name, data=data, trials=trials, db=db, **keys))
    return path


def file_bytes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` but the tests' own inputs (specs, bad CSVs; good.csv, the stored
    study's data, is kept) and SQLite's -shm index (readers write their marks there)."""
    kept = [
        p
        for p in folder.iterdir()
        if (p.suffix not in (".toml", ".csv") or p.name == "good.csv") and not p.name.endswith("-shm")
    ]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in kept}


@pytest.fixture
def unchanged(stored):
    """Asserts, after the test, that good.db holds what it held (row counts, bytes), that every file that
    was there has the same bytes (``report -o good.csv`` must not overwrite it), and that no file but the
    test's own inputs (specs, CSVs) appeared."""
    db = stored / "good.db"
    before, files = state_of(db), file_bytes(stored)
    yield stored
    assert state_of(db) == before
    after = file_bytes(stored)
    assert {name: after.get(name) for name in files} == files
    assert [name for name in after if name not in files and not name.endswith(".csv")] == []


# ------------------------------------------------------------------------------------------- data
@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("one class", r"good-one: the training part holds one class only"),
        ("overflow in float32", r"column 'b' holds 1 value\(s\) that are not finite in float32 \(first at row 5\)"),
        ("too few rows", r"the training part has 1 row\(s\); training needs at least 2"),
        ("no validation part", r"metric val_accuracy needs a validation part, but validation_fraction = 0"),
    ],
)
def test_degenerate_data_is_refused_before_anything_is_stored(cli, unchanged, case, pattern) -> None:
    folder = unchanged
    data, extra = {
        "one class": (table(folder / "good-one.csv", label_0=1).name, ""),
        "overflow in float32": (table(folder / "big.csv", b_5=1e308).name, ""),
        "too few rows": (table(folder / "tiny.csv", rows=3).name, ""),
        "no validation part": ("good.csv", "validation_fraction = 0"),
    }[case]
    if case == "one class":
        pd.read_csv(folder / data).assign(label=1).to_csv(folder / data, index=False)
    spec = write_spec(folder / "bad.toml", data=data, data_extra=extra)
    one_line_error(cli("tune", spec), pattern)


DEGENERATE = {  # data file (and [data] lines) -> what the error says
    "one class": ("one.csv", "", r"one: the training part holds one class only"),
    "too few rows": ("tiny.csv", "", r"the training part has 1 row\(s\); training needs at least 2"),
    "no validation part": ("good.csv", "validation_fraction = 0", r"metric val_accuracy needs a validation part"),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("where", ["a new path", "an existing database"])
def test_degenerate_data_creates_no_storage_and_prints_one_line(cli, tmp_path, monkeypatch, case, where) -> None:
    """The storage file is not created (a new path) or not touched (a database holding a study), and
    nothing but the error is printed: no study header, no empty progress display."""
    monkeypatch.chdir(tmp_path)
    table(tmp_path / "good.csv")
    table(tmp_path / "tiny.csv", rows=3)
    pd.read_csv(tmp_path / "good.csv").assign(label=1).to_csv(tmp_path / "one.csv", index=False)
    data, extra, pattern = DEGENERATE[case]
    db = tmp_path / "study.db"
    if where == "an existing database":
        run_study(write_spec(tmp_path / "kept.toml", name="kept", db=db.name))
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = state_of(db)
    spec = write_spec(tmp_path / "bad.toml", data=data, db=db.name, data_extra=extra)
    r = cli("tune", spec)
    one_line_error(r, pattern)
    assert r.out.strip() == ""
    if where == "a new path":
        assert not db.exists() and not list(tmp_path.glob("study.db*"))
    else:
        assert state_of(db) == before


def test_caviar_train_refuses_an_overflowing_column_in_one_line(cli, unchanged) -> None:
    data = table(unchanged / "big.csv", b_5=1e308)
    one_line_error(cli("train", "--file", data, "--epochs", "1"), r"column 'b' .* not finite in float32")


def test_estimator_refuses_values_that_overflow_its_dtype() -> None:
    from caviar import Classifier

    X = np.random.default_rng(0).normal(size=(20, 2))
    X[3, 1] = 1e308
    with pytest.raises(ValueError, match="infinity or a value too large for dtype\\('float32'\\)"):
        Classifier(hidden=(4,), epochs=1, dtype="float32").fit(X, np.arange(20) % 2)


def test_fewer_rows_than_a_batch_train_as_one_batch(tmp_path) -> None:
    """Deliberate: batch_size above the training rows means one batch of all of them, every epoch."""
    spec = write_spec(tmp_path / "small.toml", data=str(table(tmp_path / "small.csv", rows=12)), trials=1)
    spec.write_text(spec.read_text().replace("batch_size = 16", "batch_size = 64"))
    study = run_study(spec)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


# ------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        ("hidden = [1e12]", r"model\.hidden: widths must be integers in \[1, 1048576\]"),
        ("hidden = [1000000000000]", r"model\.hidden: widths must be integers in \[1, 1048576\]"),
        ("hidden = [1048576, 1048576]", r"model: hidden = \[1048576, 1048576\]: the weights of .* need about"),
    ],
)
def test_widths_that_cannot_fit_are_refused(cli, unchanged, model, pattern) -> None:
    spec = write_spec(unchanged / "wide.toml", model_extra=model)
    spec.write_text(spec.read_text().replace("hidden = [4]\n", ""))
    one_line_error(cli("tune", spec), pattern)


def test_check_weights_fit_sizes_the_population() -> None:
    check_weights_fit(784, (128, 64), 10, members=64)
    with pytest.raises(DataError, match="a population of 4 need about"):
        check_weights_fit(10**6, (10**5,), 10, members=4)


def test_caviar_train_refuses_a_huge_width(cli, unchanged) -> None:
    r = cli("train", "--file", unchanged / "good.csv", "--hidden", "1000000000000")
    one_line_error(r, r"--hidden: .* expected a list of integer widths in \[1, 1048576\]")


# ----------------------------------------------------------------------------------- the command
@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["tune", "{spec}", "--trials", "1000000000000"], r"search\.trials: .* less than or equal to 100000"),
        (["tune", "{spec}", "--seed", "-1"], r"--seed: -1 is not allowed"),
        (["train", "--file", "good.csv", "--seed", "-1"], r"--seed: -1 is not allowed"),
        (["train", "--file", "good.csv", "--dtype", "float16"], r"--dtype: 'float16' is not one of float32, float64"),
        (["train", "--file", "good.csv", "--save", "nowhere/m.npz"], r"--save: folder .*nowhere does not exist"),
        (["best", "done", "--storage", "good.db", "--save", "nowhere/m.npz"], r"--save: folder .*nowhere does not"),
        (["report", "done", "--storage", "good.db", "-o", "good.csv"], r"--out: good\.csv is a file"),
        (["show", "done", "--storage", "typo.db"], r"no study storage at .*typo\.db: no such file"),
        (["show", "a\x00b", "--storage", "good.db"], r"no study 'a\\x00b' in .*: a study name never holds a NUL"),
    ],
)
def test_command_line_mistakes(cli, unchanged, monkeypatch, args, pattern) -> None:
    monkeypatch.chdir(unchanged)
    spec = write_spec(unchanged / "ok.toml")
    one_line_error(cli(*(a.format(spec=spec) for a in args)), pattern)


def test_a_spec_that_is_not_utf8(cli, unchanged) -> None:
    spec = unchanged / "latin1.toml"
    spec.write_bytes(write_spec(spec).read_bytes().replace(b'name = "new"', b'name = "caf\xe9"'))
    one_line_error(cli("tune", spec), r"spec file '.*latin1\.toml' is not UTF-8 text \(byte \d+ is 0xe9\)")


def test_a_missing_data_table_is_printed_as_text_not_markup(cli, unchanged) -> None:
    spec = unchanged / "nodata.toml"
    spec.write_text("[training]\nepochs = 1\n")
    one_line_error(cli("tune", spec), r"data: is missing \(add a \[data\] table: dataset = one of")


def test_a_nul_in_a_study_name_is_refused_in_the_spec(cli, unchanged) -> None:
    spec = write_spec(unchanged / "nul.toml", name="a\\u0000b")
    one_line_error(cli("tune", spec), r"study\.name: .*control character '\\x00'")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_nul_in_a_study_name_is_refused_by_storage(tmp_path, backend) -> None:
    def check(url: str) -> None:
        storage = open_storage(url)
        storage.create_study("kept", {"x": 1})
        with pytest.raises(StorageError, match=r"control character '\\x00'"):
            storage.create_study("a\x00b", {"x": 1})
        with pytest.raises(StorageError, match=r"control character '\\x00'"):
            storage.get_or_create_study("a\x00b", {"x": 1})
        with pytest.raises(StorageError, match="never holds a NUL"):
            storage.get_study("a\x00b")
        assert [s.name for s in storage.list_studies()] == ["kept"]
        storage.close()

    if backend == "sqlite":
        check(str(tmp_path / "nul.db"))
    else:
        with fresh_schema(server_url()) as url:
            check(url)


def test_a_nul_in_a_study_name_on_postgresql_is_one_line_and_writes_nothing(cli, stored, tmp_path) -> None:
    """The PostgreSQL case of the issue, through the command line: `caviar tune` with such a name and
    `caviar show` of it each give one line and exit 2; every table keeps its rows."""
    import sqlalchemy as sa

    with fresh_schema(server_url()) as url:
        storage = open_storage(url)
        storage.create_study("kept", {"x": 1})
        storage.close()
        engine = sa.create_engine(url)

        def counts() -> dict[str, int]:
            with engine.connect() as conn:
                names = sa.inspect(conn).get_table_names()
                return {n: conn.execute(sa.text(f'SELECT COUNT(*) FROM "{n}"')).scalar_one() for n in names}

        before = counts()
        spec = write_spec(tmp_path / "nul.toml", name="a\\u0000b", data=str(stored / "good.csv"))
        one_line_error(cli("tune", spec, "--storage", url), r"study\.name: .*control character '\\x00'")
        one_line_error(
            cli("show", "a\x00b", "--storage", url), r"no study 'a\\x00b' in .*: a study name never holds a NUL"
        )
        assert counts() == before and before["caviar_studies"] == 1
        engine.dispose()


# ------------------------------------------------------------------------------ data fingerprint
def test_resume_with_changed_data_is_refused_and_writes_nothing(cli, unchanged) -> None:
    spec = unchanged / "done.toml"
    original = (unchanged / "good.csv").read_bytes()
    try:
        table(unchanged / "good.csv", rows=59)
        one_line_error(cli("tune", spec), r"study 'done' .* was created with other data \(changed: rows 60 -> 59\)")
        table(unchanged / "good.csv", a_3=0.5)
        one_line_error(cli("tune", spec), r"created with other data \(changed: content \(same shape and classes")
        (unchanged / "good.csv").write_bytes(original)
        scaled = pd.read_csv(unchanged / "good.csv")  # standardized, a column times 2 is the same: its scale tells
        scaled["b"] *= 2
        scaled.to_csv(unchanged / "good.csv", index=False)
        one_line_error(cli("tune", spec), r"created with other data \(changed: content \(same shape and classes")
    finally:
        (unchanged / "good.csv").write_bytes(original)


def test_fingerprint_is_stored_and_says_what_changed(stored) -> None:
    import json

    record = open_storage(stored / "good.db", read_only=True).get_study("done")
    fp = json.loads(record.fingerprint)
    assert fp["rows"] == 60 and fp["features"] == 3 and fp["classes"] == [0, 1] and len(fp["sha256"]) == 64
    assert fingerprint_diff(fp, {**fp, "classes": [0, 1, 2]}) == ["classes [0, 1] -> [0, 1, 2]"]
    assert fingerprint_diff(fp, dict(fp)) == []


# ------------------------------------------------------------------------------------ exit codes
def test_tune_exits_non_zero_when_no_trial_completed(cli, tmp_path) -> None:
    table(tmp_path / "d.csv")
    spec = tmp_path / "diverge.toml"
    spec.write_text(
        SPEC.format(
            name="diverge",
            data="d.csv",
            trials=2,
            db="d.db",
            data_extra="",
            model_extra="",
            training_extra="optimizer = 'sgd'",
            search_extra="",
        ).replace(
            'learning_rate = { low = 1e-3, high = 1e-1, scale = "log" }', "learning_rate = { low = 1e12, high = 1e13 }"
        )
    )
    r = cli("tune", spec)
    assert r.code == 1, r.err
    assert r.err.strip().splitlines()[-1].startswith("error: study 'diverge': no trial completed")


def test_failure_reasons_are_counted_first_failure_first(tmp_path) -> None:
    storage = open_storage(tmp_path / "f.db")
    sid = storage.create_study("f", {"x": 1})
    storage.enqueue_trials(sid, [{"number": n, "params": {}} for n in range(3)])
    claimed = storage.claim_trials(sid, "w", limit=3)
    errors = [
        "ValueError: batch norm needs at least 2 samples",
        "MemoryError: big",
        "ValueError: batch norm needs at least 2 samples",
    ]
    storage.finish_trials(
        "w", [TrialEnd(t.id, TrialState.FAILED, error=e) for t, e in zip(claimed, errors, strict=True)]
    )
    reasons = failure_reasons(Study(storage, sid))
    assert reasons == {"ValueError: batch norm needs at least 2 samples": 2, "MemoryError: big": 1}
    assert next(iter(reasons)).startswith("ValueError")


# ------------------------------------------------------------------------------- read-only opens
def test_read_only_commands_never_create_or_add_tables(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    before = state_of(other)
    for args in (["studies"], ["show", "x"], ["export", "x"], ["best", "x"], ["report", "x", "-o", "r"]):
        one_line_error(cli(*args, "--storage", other), r"storage .*other\.db is not a caviar database")
    assert state_of(other) == before
    for args in (["studies"], ["show", "x"], ["export", "x"], ["best", "x"]):
        one_line_error(cli(*args, "--storage", "typo.db"), r"no study storage at .*typo\.db: no such file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_dashboard_refuses_an_unrelated_sqlite_file(tmp_path) -> None:
    from caviar.web.app import create_app

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (body TEXT)").connection.close()
    before = state_of(other)
    with pytest.raises(StorageError, match="not a caviar database"):
        create_app(other)
    assert state_of(other) == before


def test_reads_from_a_read_only_folder_change_no_byte(cli, stored, tmp_path, monkeypatch) -> None:
    """Root ignores permissions (SQLite may then add its -shm/-wal beside the file, empty of data), so
    the test checks the read-only URI is the one taken and the bytes; then it reads as a user would
    (``os.access`` says nothing is writable): immutable, and not one file added."""
    import caviar.storage.engine as engine

    folder = tmp_path / "media"
    folder.mkdir()
    db = folder / "good.db"
    shutil.copy(stored / "good.db", db)
    db.chmod(stat.S_IRUSR | stat.S_IRGRP)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    uris: list[str] = []
    real = engine.read_only_sqlite_uri
    monkeypatch.setattr(engine, "read_only_sqlite_uri", lambda p: uris.append(real(p)) or uris[-1])
    before = db.read_bytes()
    try:
        r = cli("show", "done", "--storage", db)
        assert r.code == 0, r.err
        assert "2 complete" in r.out
        assert uris and all(u.startswith(f"file:{db}?") and ("mode=ro" in u or "immutable=1" in u) for u in uris)
        assert db.read_bytes() == before
        assert all((folder / f"good.db{x}").stat().st_size == 0 for x in ("-wal",) if (folder / f"good.db{x}").exists())
        for extra in folder.glob("good.db-*"):
            folder.chmod(stat.S_IRWXU)
            extra.unlink()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        monkeypatch.setattr(engine.os, "access", lambda path, mode: False)
        uris.clear()
        r = cli("studies", "--storage", db)
        assert r.code == 0, r.err
        assert "done" in r.out
        assert uris == [f"file:{db}?immutable=1"]
        assert db.read_bytes() == before
        assert sorted(p.name for p in folder.iterdir()) == ["good.db"]
    finally:
        folder.chmod(stat.S_IRWXU)


def test_read_only_uri_is_immutable_where_nothing_can_be_written(tmp_path, monkeypatch) -> None:
    db = tmp_path / "x.db"
    db.touch()
    assert read_only_sqlite_uri(str(db)) == f"file:{db}?mode=ro"
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert read_only_sqlite_uri(str(db)) == f"file:{db}?immutable=1"


def test_a_read_only_storage_refuses_writes(stored) -> None:
    storage = open_storage(stored / "good.db", read_only=True)
    with pytest.raises(StorageError, match="is opened read-only"):
        storage.create_study("x", {})


# ------------------------------------------------------------------------------- names are data
def test_a_study_name_is_text_in_figure_titles(stored, tmp_path) -> None:
    """Plotly reads titles as HTML-ish markup: a name holding a link must be shown, not followed."""
    from caviar.web.data import load_study
    from caviar.web.figures import figure

    db = tmp_path / "copy.db"
    shutil.copy(stored / "good.db", db)
    name = "<a href='https://example.com'>x</a> & $y$"
    with sqlite3.connect(db) as conn:  # a copy of 'done' under a hostile name
        conn.execute("UPDATE caviar_studies SET name = ? WHERE name = 'done'", (name,))
    data = load_study(name, open_storage(db, read_only=True))
    title = figure(data, "history").layout.title.text
    assert "&lt;a href='https://example.com'&gt;x&lt;/a&gt; &amp; $y$" in title and "<a " not in title
