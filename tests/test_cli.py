"""The `caviar` command: dry runs, the study commands on a finished study, train, and one-line errors.

Most commands run in this process through ``caviar.cli.main`` (the console script's entry point, so
errors go through the same one-line handler a user sees); one test runs the installed executable.
Every failing invocation is checked against a stored study: nothing already stored may be lost.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

import caviar
from caviar.prepared import prepare_data
from caviar.storage import open_storage
from caviar.tune.study import Study, run_study
from cli_runner import CliResult

CAVIAR = Path(sys.executable).parent / "caviar"

SPEC = """
[study]
name = "{name}"
seed = 0

[data]
dataset = "iris"

[model]
hidden = [8]

[training]
epochs = {epochs}
batch_size = 16

[search]
strategy = "coarse_to_fine"
trials = 4
rounds = 2

[space]
learning_rate = {{ low = 1e-3, high = 1e-1, scale = "log" }}
beta1 = {{ low = 0.8, high = 0.99, scale = "one_minus_log" }}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny study 'done' (4 trials, 2 rounds) and its spec file; returns (spec, db)."""
    folder = tmp_path_factory.mktemp("finished")
    spec = folder / "done.toml"
    spec.write_text(SPEC.format(name="done", epochs=2))
    run_study(spec)
    return spec, folder / "done.db"


def snapshot(db: Path) -> list[tuple]:
    """Everything stored about every trial that matters (to prove nothing was lost or changed)."""
    storage = open_storage(db)
    rows = []
    for record in storage.list_studies():
        for t in storage.trials(record.id):
            rows.append(
                (
                    record.name,
                    t.number,
                    t.state,
                    t.params,
                    t.metrics,
                    t.objective,
                    t.attempts,
                    t.finished_at,
                    storage.artifact_names(t.id),
                )
            )
    return rows


# ------------------------------------------------------------------------------------------- tune
def test_dry_run_prints_csv_and_stores_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "dry.toml"
    spec.write_text(SPEC.format(name="dry", epochs=2).replace("coarse_to_fine", "random"))
    done = subprocess.run(
        [str(CAVIAR), "tune", str(spec), "--dry-run", "-n", "5", "--format", "csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(done.stdout.strip().splitlines()) == 6
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3, 4]
    assert {"number", "round", "learning_rate", "beta1"} <= set(rows[0])
    assert all(1e-3 <= float(r["learning_rate"]) <= 1e-1 and 0.8 <= float(r["beta1"]) <= 0.99 for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dry.toml"]  # no storage file


def test_dry_run_json_matches_the_trials_run(cli, tmp_path: Path) -> None:
    spec = tmp_path / "same.toml"
    spec.write_text(SPEC.format(name="same", epochs=1))
    r = cli("tune", spec, "--dry-run", "-n", "2", "--format", "json")
    assert r.code == 0 and not (tmp_path / "same.db").exists()
    points = json.loads(r.out)
    r = cli("tune", spec)
    assert r.code == 0, r.err
    assert "best trial #" in r.out and "caviar show same" in r.out
    trials = Study.load("same", tmp_path / "same.db").trials
    assert [{"number": t.number, "round": t.round, **t.params} for t in trials[:2]] == points


# ----------------------------------------------------------------------- commands on a study
def test_studies_and_show(cli, finished) -> None:
    _, db = finished
    r = cli("studies", "--storage", db)
    assert r.code == 0 and "done" in r.out and "4" in r.out
    r = cli("show", "done", "--storage", db, "--top", "2")
    assert r.code == 0, r.err
    assert "top 2 of 4 trials" in r.out and "learning_rate" in r.out
    assert "round 0 box" in r.out and "round 1 box" in r.out


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export(cli, finished, fmt: str, tmp_path: Path) -> None:
    _, db = finished
    r = cli("export", "done", "--storage", db, "--format", fmt)
    assert r.code == 0, r.err
    records = list(csv.DictReader(io.StringIO(r.out))) if fmt == "csv" else json.loads(r.out)
    assert [int(rec["number"]) for rec in records] == [0, 1, 2, 3]
    assert all(rec["state"] == "COMPLETE" and "params_learning_rate" in rec for rec in records)
    out = tmp_path / f"trials.{fmt}"
    r = cli("export", "done", "--storage", db, "--format", fmt, "-o", out)
    assert r.code == 0 and out.exists() and "4 trials written" in r.out


def test_best_save_writes_a_model_that_scores_like_the_study(cli, finished, tmp_path: Path) -> None:
    _, db = finished
    out = tmp_path / "best.npz"
    r = cli("best", "done", "--storage", db, "--save", out)
    assert r.code == 0, r.err
    study = Study.load("done", db)
    assert f"best trial #{study.best_trial.number}" in r.out
    model = caviar.load(out)
    spec = study.spec
    d = spec.data
    raw = prepare_data(
        d.dataset,
        d.path,
        d.label,
        d.data_dir,
        d.validation_fraction,
        d.test_fraction,
        seed=spec.search.seed or 0,
        standardize=False,
    )
    with threadpool_limits(limits=1, user_api="blas"):
        score = model.score(raw.X_test, raw.classes[raw.y_test])
    assert score == study.best_trial.metrics["test_accuracy"]


def test_train_saves_a_model(cli, tmp_path: Path) -> None:
    out = tmp_path / "m.npz"
    r = cli("train", "digits", "--epochs", "2", "--hidden", "32", "--save", out)
    assert r.code == 0, r.err
    printed = float(re.search(r"test accuracy:\s+([0-9.]+)", r.out).group(1))
    model = caviar.load(out)
    data = prepare_data("digits", standardize=False)  # the command's split (seed 0, 0.2/0.2)
    assert model.score(data.X_test, data.classes[data.y_test]) == pytest.approx(printed, abs=5e-4)
    assert len(model.history_) == 2


# ---------------------------------------------------------------------------------- mistakes
MISTAKES = {
    "toml": ('[data]\ndataset = "iris"\n\n[search]\ntrials = = 4\n', r"invalid TOML: .*line 5"),
    "unknown key": (
        '[data]\ndataset = "iris"\n[training]\nlearnig_rate = 0.1\n',
        r"unknown key 'training\.learnig_rate' \(did you mean 'learning_rate'\?\)",
    ),
    "unknown space name": (
        '[data]\ndataset = "iris"\n[space]\nlearnig_rate = { low = 1e-3, high = 0.1 }\n',
        r"space\.learnig_rate: not a tunable hyperparameter \(did you mean 'learning_rate'\?\)",
    ),
    "impossible range": (
        '[data]\ndataset = "iris"\n[space]\nl2 = { low = 0.1, high = 0.01, scale = "log" }\n',
        r"space\.l2: needs low < high",
    ),
    "log from zero": (
        '[data]\ndataset = "iris"\n[space]\nlearning_rate = { low = 0.0, high = 0.1, scale = "log" }\n',
        r"space\.learning_rate: scale 'log' needs 0 < low",
    ),
    "scale it cannot take": (
        '[data]\ndataset = "iris"\n[space]\nbatchnorm = { low = 0, high = 1 }\n',
        r"space\.batchnorm: needs choices",
    ),
    "unknown scale": (
        '[data]\ndataset = "iris"\n[space]\nl2 = { low = 1e-6, high = 1e-2, scale = "logarithmic" }\n',
        r"space\.l2: unknown scale 'logarithmic'",
    ),
    "bad value": (
        '[data]\ndataset = "iris"\n[model]\nactivation = "relux"\n',
        r"model\.activation: 'relux' is not one of relu",
    ),
    "missing data file": ('[data]\npath = "missing.csv"\n', r"data\.path: file 'missing\.csv' does not exist"),
    "label column": (
        '[data]\npath = "table.csv"\nlabel = "label"\n[training]\nepochs = 1\n',
        r"label column 'label' not in .*table\.csv; columns: a, b, target",
    ),
}


@pytest.mark.parametrize("kind", list(MISTAKES))
def test_spec_mistake_is_one_line_and_loses_nothing(cli, finished, tmp_path: Path, kind: str) -> None:
    text, message = MISTAKES[kind]
    _, db = finished
    (tmp_path / "table.csv").write_text("a,b,target\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    before = snapshot(db)
    r = cli("tune", spec, "--storage", db)
    assert_one_line_error(r, message)
    assert snapshot(db) == before
    assert [s.name for s in open_storage(db).list_studies()] == ["done"]


@pytest.mark.parametrize(
    "case",
    [
        "unopenable storage",
        "not a database",
        "unknown scheme",
        "spec changed",
        "no spec file",
        "unknown study (show)",
        "unknown study (best)",
        "unknown study (export)",
        "bad export format",
        "unknown dataset",
    ],
)
def test_other_mistakes_are_one_line(cli, finished, tmp_path: Path, case: str) -> None:
    spec, db = finished
    changed = tmp_path / "done.toml"
    changed.write_text(SPEC.format(name="done", epochs=3))
    args, message = {
        "unopenable storage": (
            ["tune", spec, "--storage", tmp_path / "no" / "dir" / "x.db"],
            r"cannot open storage .*: directory .*no/dir does not exist",
        ),
        "not a database": (["studies", "--storage", tmp_path], r"cannot open storage .* is a directory"),
        "unknown scheme": (
            ["tune", spec, "--storage", "nosuchdb://host/x"],
            r"cannot open storage nosuchdb://host/x: unknown database scheme 'nosuchdb'",
        ),
        "spec changed": (
            ["tune", changed, "--storage", db],
            r"study 'done' .* was created with a different spec \(differs at: training\.epochs\)",
        ),
        "no spec file": (["tune", tmp_path / "nothere.toml"], r"spec file not found: .*nothere\.toml"),
        "unknown study (show)": (["show", "nope", "--storage", db], r"no study 'nope' in .*; known: done"),
        "unknown study (best)": (["best", "nope", "--storage", db], r"no study 'nope' in .*; known: done"),
        "unknown study (export)": (["export", "nope", "--storage", db], r"no study 'nope' in .*; known: done"),
        "bad export format": (
            ["export", "done", "--storage", db, "--format", "xml"],
            r"--format: 'xml' is not one of csv, json",
        ),
        "unknown dataset": (["train", "nosuchset"], r"unknown dataset 'nosuchset' \(known: digits, iris"),
    }[case]
    before = snapshot(db)
    r = cli(*args)
    assert_one_line_error(r, message)
    assert snapshot(db) == before
    assert not (tmp_path / "no").exists()


def assert_one_line_error(r: CliResult, message: str) -> None:
    """A non-zero exit and exactly one stderr line, 'error: ...', that names the problem."""
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert r.code != 0
    assert len(lines) == 1, r.err
    assert lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in r.err and "Traceback" not in r.out


def test_help_lists_every_command(cli) -> None:
    r = cli("--help")
    assert r.code == 0
    for command in ("train", "tune", "studies", "show", "export", "best", "panda", "ctl", "dashboard", "report"):
        assert re.search(rf"\b{command}\b", r.out), command


def test_best_of_a_study_without_completed_trials(cli, tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "empty.db")
    storage.get_or_create_study("empty", {"x": 1})
    r = cli("best", "empty", "--storage", tmp_path / "empty.db")
    assert_one_line_error(r, r"study 'empty' has no completed trial yet")
