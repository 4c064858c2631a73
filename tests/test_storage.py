"""Study storage on real SQLite files and a real PostgreSQL: round trips, resume, zombies, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import random
import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

import pg
from caviar.errors import StorageError
from caviar.storage import SqlStorage, StudyStatus, TrialEnd, TrialState, open_storage
from caviar.storage.migrate import HEAD, SCHEMA_VERSION, VERSION_TABLE
from caviar.tune.spec import spec_diff
from caviar.tune.study import Study

SPEC = {"space": {"learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"}}, "trials": 10}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, empty database: a SQLite file, or a new schema on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
        return
    with pg.fresh_schema(pg.server_url()) as scoped:
        yield scoped


def _items(numbers, round_=0, group_key=None) -> list[dict]:
    return [
        {
            "number": n,
            "params": {"learning_rate": 10.0 ** -(1 + n % 3), "hidden": (16, 8)},
            "unit": [n / 100],
            "round": round_,
            "seed": 1000 + n,
            "group_key": group_key,
        }
        for n in numbers
    ]


def _utc_aware(dt: datetime) -> bool:
    return dt.tzinfo is not None and dt.utcoffset() == timedelta(0)


# ------------------------------------------------------------------------------------------ round trip


def test_round_trip(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("demo", SPEC, seed=7, metric="val_accuracy")
    assert s.get_study("demo").id == sid == s.get_study(sid).id == s.get_study(str(sid)).id
    study = s.get_study("demo")
    assert (study.spec, study.seed, study.metric, study.direction) == (SPEC, 7, "val_accuracy", "maximize")
    assert _utc_aware(study.created_at)

    items = _items(range(3))
    items[0]["params"]["learning_rate"] = np.float32(0.5)  # numpy values are stored as plain numbers
    assert s.enqueue_trials(sid, items) == 3
    waiting = s.trials(sid, [TrialState.WAITING])
    assert [t.number for t in waiting] == [0, 1, 2]
    assert waiting[1].params == {"learning_rate": 0.01, "hidden": [16, 8]}
    assert waiting[1].unit == [0.01] and waiting[1].seed == 1001 and waiting[1].attempts == 0

    (t0,) = s.claim_trials(sid, "w1", limit=1)
    assert (t0.number, t0.state, t0.worker_id, t0.attempts) == (0, TrialState.RUNNING, "w1", 1)
    assert _utc_aware(t0.heartbeat_at) and _utc_aware(t0.started_at)
    assert s.heartbeat([t0.id], "w1") == [t0.id]
    assert s.add_curve_rows(t0.id, [{"epoch": 0, "train_loss": 2.0, "val_accuracy": 0.3, "lr": 0.5}], "w1")
    curve = [
        {"epoch": e, "train_loss": 2.0 - e, "train_accuracy": 0.5, "val_loss": 1.5, "val_accuracy": 0.4 + e / 10}
        for e in range(3)
    ]
    metrics = {"val_accuracy": 0.6, "val_loss": 1.5, "test_accuracy": 0.55, "train_loss": 0.0, "epochs_run": 3}
    assert s.finish_trial(t0.id, "w1", TrialState.COMPLETE, metrics, objective=0.6, curve=curve)

    done = s.trial(t0.id)
    assert done.state == TrialState.COMPLETE and done.finished and done.metrics == metrics and done.objective == 0.6
    assert done.duration is not None and done.duration >= 0 and _utc_aware(done.finished_at)
    rows = s.curves(sid)[t0.id]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[0]["train_loss"] == 2.0 and "lr" not in rows[0]  # the streamed row was replaced
    assert rows[2]["val_accuracy"] == pytest.approx(0.6)

    (t1,) = s.claim_trials(sid, "w2")
    nan_curve = [{"epoch": 0, "train_loss": float("nan"), "train_accuracy": 0.1, "val_loss": None, "val_accuracy": 0.1}]
    assert s.finish_trial(t1.id, "w2", TrialState.DIVERGED, {"epochs_run": 1}, objective=float("nan"), curve=nan_curve)
    assert s.trial(t1.id).objective is None
    assert np.isnan(s.curves(sid, [t1.id])[t1.id][0]["train_loss"])

    assert s.best_trial(sid).id == t0.id
    assert s.counts(sid) == {
        TrialState.WAITING: 1,
        TrialState.RUNNING: 0,
        TrialState.COMPLETE: 1,
        TrialState.DIVERGED: 1,
        TrialState.PRUNED: 0,
        TrialState.FAILED: 0,
    }
    (listed,) = s.list_studies()
    assert listed.name == "demo" and listed.n_trials == 3 and listed.best_objective == 0.6

    box = {"learning_rate": {"lower": 1e-3, "upper": 1e-2, "unit": [0.25, 0.5]}}
    s.add_box(sid, 1, box)
    s.add_box(sid, 2, {"learning_rate": {"lower": 2e-3, "upper": 5e-3, "unit": [0.3, 0.4]}})
    s.add_box(sid, 1, box)  # replaces round 1
    assert list(s.boxes(sid)) == [1, 2] and s.boxes(sid)[1] == box

    e1 = s.add_event(sid, "change", {"learning_rate": 0.05}, trial_id=t0.id, step=2)
    e2 = s.add_event(sid, "note", "hello")
    assert [e.id for e in s.events(sid)] == [e1, e2]
    assert [e.kind for e in s.events(sid, since_id=e1)] == ["note"]
    (ev,) = s.events(sid, trial_id=t0.id)
    assert (ev.step, ev.payload, _utc_aware(ev.created_at)) == (2, {"learning_rate": 0.05}, True)

    blob = bytes(range(256)) * 10
    s.save_artifact(t0.id, "weights.npz", b"old")
    s.save_artifact(t0.id, "weights.npz", blob)
    assert s.load_artifact(t0.id, "weights.npz") == blob and s.artifact_names(t0.id) == ["weights.npz"]
    with pytest.raises(StorageError, match="no artifact 'nope'"):
        s.load_artifact(t0.id, "nope")

    df = Study(s, sid).to_dataframe()
    assert list(df["number"]) == [0, 1, 2] and list(df["state"]) == [
        TrialState.COMPLETE,
        TrialState.DIVERGED,
        TrialState.WAITING,
    ]
    assert df.loc[0, "params_learning_rate"] == pytest.approx(0.5) and df.loc[0, "params_hidden"] == (16, 8)
    assert df.loc[0, "test_accuracy"] == 0.55 and df.loc[0, "objective"] == 0.6

    s.delete_study("demo")
    assert s.list_studies() == []
    s.close()


def test_enqueue_is_idempotent(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("q", SPEC)
    assert s.enqueue_trials(sid, _items(range(5))) == 5
    assert s.enqueue_trials(sid, _items(range(3, 8)) + _items([8, 8])) == 4
    assert s.enqueue_trials(sid, []) == 0
    s.claim_trials(sid, "w", limit=2)
    assert s.enqueue_trials(sid, _items(range(9))) == 0  # a re-enqueue never resets a claimed trial
    assert [t.number for t in s.trials(sid)] == list(range(9))
    assert s.counts(sid)[TrialState.RUNNING] == 2 and s.next_number(sid) == 9


# ------------------------------------------------------------------------------- zombies and ownership


def test_finish_trials_records_a_population_and_refuses_what_it_does_not_own(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("p", SPEC)
    s.enqueue_trials(sid, _items([0, 1, 2]))
    mine = s.claim_trials(sid, "w1", limit=2)
    (theirs,) = s.claim_trials(sid, "w2")
    curve = [{"epoch": 0, "train_loss": 1.0, "val_accuracy": 0.5}, {"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.7}]
    ends = [
        TrialEnd(mine[0].id, TrialState.COMPLETE, {"val_accuracy": 0.7}, 0.7, curve),
        TrialEnd(theirs.id, TrialState.COMPLETE, {"val_accuracy": 0.9}, 0.9, curve),
        TrialEnd(mine[1].id, TrialState.DIVERGED, {"epochs_run": 1}, float("nan"), curve[:1]),
    ]
    assert s.finish_trials("w1", ends) == [True, False, True]
    by_id = {t.id: t for t in s.trials(sid)}
    assert (by_id[mine[0].id].state, by_id[mine[0].id].objective) == (TrialState.COMPLETE, 0.7)
    assert (by_id[mine[1].id].state, by_id[mine[1].id].objective) == (TrialState.DIVERGED, None)
    assert (by_id[theirs.id].state, by_id[theirs.id].worker_id) == (TrialState.RUNNING, "w2")  # untouched
    curves = s.curves(sid)
    assert [r["epoch"] for r in curves[mine[0].id]] == [0, 1]
    assert [r["epoch"] for r in curves[mine[1].id]] == [0]
    assert theirs.id not in curves
    with pytest.raises(StorageError, match="finishes as one of"):
        s.finish_trials("w2", [TrialEnd(theirs.id, TrialState.WAITING)])
    assert s.finish_trials("w2", []) == []


def test_stale_worker_cannot_finish(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("z", SPEC)
    s.enqueue_trials(sid, _items([0]))
    (old,) = s.claim_trials(sid, "dead")
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    assert s.requeue_stale(sid, timeout_s=60, now=later) == 1  # 'dead' was killed -9: no heartbeat for 2 min
    (new,) = s.claim_trials(sid, "alive")
    assert new.id == old.id and new.attempts == 2
    assert s.heartbeat([old.id], "dead") == []
    assert not s.add_curve_rows(old.id, [{"epoch": 0, "train_loss": 9.0}], worker_id="dead")
    assert not s.finish_trial(old.id, "dead", TrialState.COMPLETE, {"val_accuracy": 0.99}, objective=0.99)
    assert s.finish_trial(new.id, "alive", TrialState.COMPLETE, {"val_accuracy": 0.5}, objective=0.5)
    assert not s.finish_trial(new.id, "alive", TrialState.FAILED, error="twice")  # finished trials never change
    (t,) = s.trials(sid)
    assert (t.state, t.worker_id, t.objective, t.error) == (TrialState.COMPLETE, "alive", 0.5, None)
    assert s.claim_trials(sid, "other") == []
    (ev,) = s.events(sid, kind="requeue")
    assert ev.trial_id == old.id and ev.payload["worker_id"] == "dead"


def test_requeue_stale_keeps_fresh_heartbeats(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("h", SPEC)
    s.enqueue_trials(sid, _items(range(3)))
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    a, b, c = s.claim_trials(sid, "w", limit=3, now=t0)
    assert s.heartbeat([b.id, c.id], "w", now=t0 + timedelta(seconds=100)) == [b.id, c.id]
    assert s.requeue_stale(sid, timeout_s=60, now=t0 + timedelta(seconds=90)) == 1
    assert [t.id for t in s.trials(sid, [TrialState.WAITING])] == [a.id]
    assert s.requeue_stale(sid, timeout_s=0, now=t0 + timedelta(seconds=101)) == 2
    assert s.counts(sid)[TrialState.WAITING] == 3


def test_requeue_worker_and_rerun_starts_clean(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("r", SPEC)
    s.enqueue_trials(sid, _items(range(4)))
    mine = s.claim_trials(sid, "w1", limit=2)
    s.claim_trials(sid, "w2", limit=1)
    s.add_curve_rows(mine[0].id, [{"epoch": 0, "train_loss": 1.0}], "w1")
    assert s.requeue_worker(sid, "w1") == 2
    assert s.counts(sid) == {**s.counts(sid), TrialState.WAITING: 3, TrialState.RUNNING: 1}
    assert s.curves(sid) == {}  # partial curves of a requeued trial are dropped


def test_claim_by_group(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("g", SPEC)
    s.enqueue_trials(sid, _items([0, 2, 4], group_key="a") + _items([1, 3], group_key="b"))
    assert [t.number for t in s.claim_trials(sid, "w", limit=5, group_key="b")] == [1, 3]
    assert [t.number for t in s.claim_trials(sid, "w", limit=2, same_group=True)] == [0, 2]
    assert [t.group_key for t in s.claim_trials(sid, "w", limit=9, same_group=True)] == ["a"]
    assert s.claim_trials(sid, "w", limit=3) == []


def test_finish_needs_a_final_state(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("f", SPEC)
    s.enqueue_trials(sid, _items([0]))
    (t,) = s.claim_trials(sid, "w")
    with pytest.raises(StorageError, match="not 'WAITING'"):
        s.finish_trial(t.id, "w", TrialState.WAITING)
    assert s.finish_trial(t.id, "w", TrialState.FAILED, error="ValueError: boom")
    assert s.trial(t.id).error == "ValueError: boom" and s.best_trial(sid) is None


# ------------------------------------------------------------------------------------ studies, resume


def test_resume_and_material_changes(url: str) -> None:
    s = SqlStorage(url)
    sid = s.get_or_create_study("res", SPEC, seed=1, differs=spec_diff)
    grown = {**SPEC, "trials": 50}  # a bigger budget is not a different study
    assert s.get_or_create_study("res", grown, seed=1, differs=spec_diff) == sid
    assert s.get_study(sid).spec["trials"] == 50
    changed = {**SPEC, "space": {"learning_rate": {"low": 1e-5, "high": 1e-1, "scale": "log"}}}
    with pytest.raises(StorageError, match=r"different spec \(differs at: space\.learning_rate\.low\)"):
        s.get_or_create_study("res", changed, seed=1, differs=spec_diff)
    with pytest.raises(StorageError, match="differs at: seed"):
        s.get_or_create_study("res", grown, seed=2, differs=spec_diff)
    with pytest.raises(StorageError, match=r"differs at: spec\)"):  # storage alone knows no budget keys
        s.get_or_create_study("res", SPEC, seed=1)
    assert s.get_or_create_study("res", grown, seed=1) == sid  # the same spec, compared whole
    with pytest.raises(StorageError, match="already exists"):
        s.create_study("res", SPEC, seed=1)


def test_study_status(url: str) -> None:
    s = SqlStorage(url)
    sid = s.create_study("st", SPEC)
    assert s.get_study(sid).status is StudyStatus.CREATED and str(StudyStatus.CREATED) == "created"
    s.set_study_status(sid, StudyStatus.RUNNING)
    assert s.get_study(sid).status is StudyStatus.RUNNING
    s.set_study_status(sid, "COMPLETE")  # the stored value is accepted too
    assert s.list_studies()[0].status is StudyStatus.COMPLETE
    with pytest.raises(StorageError, match="status is one of created, RUNNING, COMPLETE, not 'paused'"):
        s.set_study_status(sid, "paused")


def test_states_are_the_stored_strings() -> None:
    """The enums change nothing stored or shown: str() and format() give the bare value, == the string."""
    for state in TrialState:
        assert str(state) == f"{state}" == state.value == state and state.finished == (
            state.value not in {"WAITING", "RUNNING"}
        )
    assert [str(s) for s in TrialState] == ["WAITING", "RUNNING", "COMPLETE", "DIVERGED", "PRUNED", "FAILED"]
    assert [str(s) for s in StudyStatus] == ["created", "RUNNING", "COMPLETE"]
    assert StudyStatus("running") is StudyStatus.RUNNING  # another case (a hand-edited 0.1 file) reads too
    with pytest.raises(ValueError):
        TrialState("complete")
    assert pickle.loads(pickle.dumps(TrialState.PRUNED)) is TrialState.PRUNED


def test_unknown_study_lists_known(url: str) -> None:
    s = SqlStorage(url)
    with pytest.raises(StorageError, match="known: none"):
        s.get_study("x")
    s.create_study("alpha", SPEC)
    s.create_study("beta", SPEC)
    with pytest.raises(StorageError) as info:
        s.get_study("gamma")
    assert str(info.value) == f"no study 'gamma' in {s.url}; known: alpha, beta"
    with pytest.raises(StorageError, match="no study '999'"):
        s.get_study(999)


# ------------------------------------------------------------------------------- opening, SQLite set-up


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("sqlite:////nonexistent/dir/x.db", "directory /nonexistent/dir does not exist"),
        ("postgresql://u:secret@127.0.0.1:1/db", "Connection refused"),
        ("postgresql+psycopg2://u:secret@127.0.0.1:1/db", "Connection refused"),
        ("nosuchdb://u:secret@host/db", "unknown database scheme 'nosuchdb'"),
        ("TEXTFILE", "file is not a database"),
        ("DIRECTORY", "is a directory"),
    ],
)
def test_unopenable_urls(target: str, reason: str, tmp_path) -> None:
    if target == "TEXTFILE":
        target = str(tmp_path / "notes.txt")
        (tmp_path / "notes.txt").write_text("these are my notes, not a database\n" * 20)
    elif target == "DIRECTORY":
        target = str(tmp_path)
    with pytest.raises(StorageError) as info:
        SqlStorage(target)
    message = str(info.value)
    assert "\n" not in message and reason in message and "secret" not in message
    assert message.startswith("cannot open storage ")
    shown = target.replace(":secret@", ":***@") if "://" in target else target
    assert shown in message


def test_plain_path_wal_and_schema_version(tmp_path) -> None:
    path = tmp_path / "plain.db"
    s = open_storage(path)
    assert s.url == f"sqlite:///{path}" and s.dialect == "sqlite" and open_storage(s) is s
    s.create_study("one", SPEC)
    s.close()
    again = pickle.loads(pickle.dumps(SqlStorage(str(path))))  # pickles by URL, reopens idempotently
    assert [st.name for st in again.list_studies()] == ["one"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = conn.execute("SELECT value FROM caviar_meta WHERE key = 'schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION
        assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(HEAD,)]
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = '0099'")
    with pytest.raises(StorageError, match="schema revision '0099', which this caviar .* upgrade caviar"):
        SqlStorage(path)  # newer files are refused (tests/test_migrations.py: and left untouched)


def test_writes_begin_immediate(tmp_path) -> None:
    """A write transaction holds the write lock from its first statement (BEGIN IMMEDIATE)."""
    s = SqlStorage(tmp_path / "lock.db")
    sid = s.create_study("l", SPEC)
    other = sqlite3.connect(tmp_path / "lock.db", timeout=0, isolation_level=None)
    with s._write() as conn:
        conn.execute(sa.text("SELECT 1"))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # released at commit
    other.execute("ROLLBACK")
    with s._read() as conn:  # reads do not take it
        conn.execute(sa.text("SELECT 1"))
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    other.close()
    assert s.get_study(sid).name == "l"


# ------------------------------------------------------------------------------------------ concurrency


@pytest.fixture(scope="module")
def workers():
    """Four spawned processes (started once: importing caviar dominates) and a manager for barriers."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(4) as pool:
        yield pool, manager


def _drain(url: str, study_id: int, worker_id: str, barrier) -> tuple[int, list[int]]:
    """A worker process: claim 1-2 trials at a time, finish them, until none is left."""
    s = SqlStorage(url)
    rng = random.Random(worker_id)
    done: list[int] = []
    barrier.wait(timeout=120)  # all four start together
    while claimed := s.claim_trials(study_id, worker_id, limit=rng.randint(1, 2)):
        s.heartbeat([t.id for t in claimed], worker_id)
        for t in claimed:
            curve = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_accuracy": t.number / 200} for e in range(3)]
            ok = s.finish_trial(
                t.id,
                worker_id,
                TrialState.COMPLETE,
                {"val_accuracy": t.number / 200, "worker": worker_id},
                objective=t.number / 200,
                curve=curve,
            )
            assert ok, f"{worker_id} lost trial {t.number}"
            done.append(t.number)
    s.close()
    return os.getpid(), done


def _open_and_create(url: str, barrier) -> tuple[int, int]:
    barrier.wait(timeout=120)
    s = SqlStorage(url)
    study_id = s.get_or_create_study("shared", SPEC, seed=3)
    s.close()
    return os.getpid(), study_id


def test_many_processes_claim_each_trial_once(url: str, workers) -> None:
    pool, manager = workers
    s = SqlStorage(url)
    sid = s.create_study("crowd", SPEC)
    s.enqueue_trials(sid, _items(range(200)))
    barrier = manager.Barrier(4)
    results = pool.starmap_async(_drain, [(url, sid, f"w{i}", barrier) for i in range(4)], chunksize=1).get(180)
    assert len({pid for pid, _ in results}) == 4
    numbers = sorted(n for _, done in results for n in done)
    assert numbers == list(range(200))  # every trial finished, none twice
    trials = s.trials(sid)
    assert all(t.state == TrialState.COMPLETE and t.attempts == 1 for t in trials)
    assert {t.worker_id for t in trials} <= {f"w{i}" for i in range(4)}
    assert all(t.metrics["worker"] == t.worker_id for t in trials)
    all_curves = s.curves(sid)
    assert len(all_curves) == 200 and all(len(rows) == 3 for rows in all_curves.values())
    assert s.best_trial(sid).number == 199


def test_many_processes_open_a_new_database(url: str, workers) -> None:
    pool, manager = workers
    barrier = manager.Barrier(4)
    results = pool.starmap_async(_open_and_create, [(url, barrier)] * 4, chunksize=1).get(180)
    assert len({pid for pid, _ in results}) == 4
    assert len({sid for _, sid in results}) == 1
    assert [st.name for st in SqlStorage(url).list_studies()] == ["shared"]


def test_a_population_writes_its_curves_at_its_first_epoch_then_at_most_every_interval(tmp_path) -> None:
    """Curve rows are buffered: the first epoch goes to storage at once (the live views show a start),
    later ones wait for the interval or the population's end (one write instead of one per epoch)."""
    from caviar.tune.worker import _CurveWriter

    s = SqlStorage(f"sqlite:///{tmp_path / 'c.db'}")
    sid = s.create_study("c", {})
    s.enqueue_trials(sid, [{"number": n, "params": {}} for n in range(2)])
    t0, t1 = s.claim_trials(sid, "w", limit=2)
    writer = _CurveWriter(s, "w", every_s=3600.0)
    row = {"train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}
    writer.add({t0.id: {**row, "epoch": 0}, t1.id: {**row, "epoch": 0}})
    assert [len(c) for c in s.curves(sid).values()] == [1, 1]
    for epoch in (1, 2):
        writer.add({t0.id: {**row, "epoch": epoch}})
    assert sorted(len(c) for c in s.curves(sid).values()) == [1, 1]  # held back
    writer.flush()
    curves = s.curves(sid)
    assert [r["epoch"] for r in curves[t0.id]] == [0, 1, 2] and [r["epoch"] for r in curves[t1.id]] == [0]
    writer.flush()  # nothing pending: nothing written twice
    assert [r["epoch"] for r in s.curves(sid)[t0.id]] == [0, 1, 2]
    s.close()
