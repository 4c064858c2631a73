"""Ask/tell: the user's loop asks caviar for trials and tells it their values, from several processes."""

from __future__ import annotations

import multiprocessing as mp
import socket
from pathlib import Path

import pytest

from caviar.errors import CaviarError, StorageError
from caviar.storage import TrialState
from caviar.tune import create_study, load_study, optimize
from caviar.tune.worker import recover_zombies
from objectives import ask_tell_worker, quadratic

SPACE = {"x": {"low": 0.0, "high": 1.0}}


def test_ask_and_tell_from_three_processes_tells_every_trial_once(tmp_path: Path) -> None:
    db = str(tmp_path / "at.db")
    create_study(SPACE, storage=db, name="shared", strategy="sobol", trials=16)
    spawn = mp.get_context("spawn")
    out = spawn.Queue()
    procs = [spawn.Process(target=ask_tell_worker, args=(db, "shared", 5, out)) for _ in range(3)]
    for p in procs:
        p.start()
    told = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    numbers = [n for one in told for n in one]
    assert sorted(numbers) == list(range(15)), told  # no trial handed out twice
    study = load_study("shared", db)
    trials = study.trials
    assert [t.number for t in trials] == list(range(15))
    assert all(t.state == TrialState.COMPLETE and t.attempts == 1 for t in trials)
    assert len({t.worker_id for t in trials}) == 3
    for t in trials:  # each value is the one its process told for its params
        assert t.metrics["value"] == pytest.approx(1.0 - (t.params["x"] - 0.3) ** 2)


def test_ask_draws_from_the_study_sampler_and_tell_ends_a_trial_once(tmp_path: Path) -> None:
    db = str(tmp_path / "one.db")
    reference = optimize(quadratic, SPACE, trials=3, seed=5, storage=str(tmp_path / "ref.db"), name="ref")
    study = create_study(SPACE, storage=db, name="loop", seed=5)
    asked = [study.ask() for _ in range(3)]
    assert [t.number for t in asked] == [0, 1, 2]
    assert [dict(t.params) for t in asked] == [t.params for t in reference.trials]  # random: (seed, number)
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 3

    for epoch in range(2):
        asked[0].report(epoch, val_accuracy=0.5 + epoch / 10)
    assert study.tell(asked[0], 0.7) == TrialState.COMPLETE
    assert study.tell(1, state="pruned") == TrialState.PRUNED
    assert study.tell(asked[2], float("nan")) == TrialState.FAILED
    trials = {t.number: t for t in study.trials}
    assert trials[0].objective == 0.7 and [r["epoch"] for r in study.curves()[trials[0].id]] == [0, 1]
    assert trials[1].state == TrialState.PRUNED and trials[1].objective is None
    assert trials[2].error == "objective returned nan for 'value' (not finite)"

    with pytest.raises(CaviarError, match=r"^tell: trial #0 of study 'loop' was already told \(COMPLETE\)$"):
        study.tell(asked[0], 0.9)
    with pytest.raises(CaviarError, match=r"^tell: trial #1 of study 'loop' was already told \(PRUNED\)$"):
        load_study("loop", db).tell(1, 0.9)  # from another Study object (another process) just the same
    with pytest.raises(StorageError, match=r"^study 'loop' has no trial #7$"):
        study.tell(7, 0.1)
    with pytest.raises(CaviarError, match=r"^tell: state 'RUNNING' is not one of COMPLETE, PRUNED, FAILED$"):
        study.tell(study.ask(), 0.1, state="RUNNING")
    assert study.best_trial.number == 0 and study.best_value == 0.7


def test_a_trial_asked_by_a_process_that_died_is_handed_out_again(tmp_path: Path) -> None:
    db = str(tmp_path / "dead.db")
    study = create_study(SPACE, storage=db, name="dead")
    trial = study.ask()
    dead_worker = f"{socket.gethostname()}:999999999:abcdef"  # a pid that does not exist here
    study.storage.requeue_worker(study.id, study.worker_id)  # as if the asker's process had gone:
    study.storage.claim_trials(study.id, dead_worker, limit=1)  # its trial is RUNNING under a dead pid
    other = load_study("dead", db)
    assert recover_zombies(other.storage, other.id) == 1
    again = other.ask()
    assert again.number == trial.number and dict(again.params) == dict(trial.params)
    assert other.tell(again, 0.5) == TrialState.COMPLETE
    assert other.trials[0].attempts == 3
