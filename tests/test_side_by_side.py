"""Populations side by side on the cores: the longest first, a lone population shared between the
cores (where no member is ranked against another), forked helpers; no number changes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from threadpoolctl import threadpool_limits

import caviar.tune.worker as worker
from caviar.storage import TrialState, open_storage
from caviar.tune.planning import load_data, plan_round, resolve_spec
from caviar.tune.study import run_study
from caviar.tune.worker import WorkerContext, splittable


def _spec(tmp_path: Path, name: str, trials: int, **search: Any) -> dict[str, Any]:
    return {
        "study": {"name": name, "seed": 0},
        "data": {"dataset": "digits"},
        "model": {"hidden": [16]},
        "training": {"epochs": 3},
        "search": {"strategy": "random", "trials": trials, "storage": str(tmp_path / f"{name}.db"), **search},
        "space": {
            "learning_rate": {"low": 1e-3, "high": 3e-2, "scale": "log"},
            "hidden": {"choices": [[8], [64, 32]]},
        },
    }


def _queued(tmp_path: Path, spec_dict: dict[str, Any]) -> WorkerContext:
    """A study stored and its first round enqueued, nothing trained: a worker's view of the queue."""
    spec = resolve_spec(spec_dict)
    data = load_data(spec)
    store = open_storage(spec.storage_url)
    study_id = store.create_study(spec.name, spec.to_dict(), seed=0, metric="val_accuracy")
    sampler = spec.sampler()
    plan_round(store, study_id, spec, sampler, data, 0, list(sampler.round_numbers(spec.search.trials))[0])
    return WorkerContext(spec, data, store, study_id, worker.new_worker_id())


def test_the_population_with_the_most_work_is_claimed_first(tmp_path: Path) -> None:
    ctx = _queued(tmp_path, _spec(tmp_path, "longest", trials=12))
    groups: dict[str, list[int]] = {}
    for r in ctx.storage.trials(ctx.study_id):
        groups.setdefault(str(r.group_key), []).append(r.number)
    assert len(groups) == 2  # one depth each: they cannot share a population
    work = {g: worker._seconds_of_work(ctx, [r for r in ctx.storage.trials(ctx.study_id) if r.group_key == g])
            for g in groups}  # fmt: skip
    claimed = worker._claim_longest(ctx, 1, {})
    assert {r.group_key for r in claimed} == {max(work, key=work.__getitem__)}
    assert sorted(r.number for r in claimed) == sorted(groups[claimed[0].group_key])  # all of it
    rest = worker._claim_longest(ctx, 1, {})
    assert {r.group_key for r in rest} == {min(work, key=work.__getitem__)}
    assert worker._claim_longest(ctx, 1, {}) == []


def test_a_lone_population_is_shared_between_the_cores_unless_members_are_ranked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "MIN_SHARED_WORK_S", 0.0)
    spec = _spec(tmp_path, "shared", trials=16)
    spec["space"].pop("hidden")  # one shape: one population of 16
    ctx = _queued(tmp_path, spec)
    first = worker._claim_longest(ctx, 2, {})
    other = WorkerContext(ctx.spec, ctx.data, ctx.storage, ctx.study_id, worker.new_worker_id())
    second = worker._claim_longest(other, 2, {})
    assert [r.number for r in first] == list(range(8)) and [r.number for r in second] == list(range(8, 16))
    ranked = {**_spec(tmp_path, "ranked", trials=16), "space": spec["space"]}
    ranked["search"]["halving"] = {"eta": 2, "min_epochs": 1}
    ctx = _queued(tmp_path, ranked)
    assert not splittable(ctx.spec) and splittable(resolve_spec(spec))
    assert len(worker._claim_longest(ctx, 2, {})) == 16  # halving ranks the members: kept whole


@pytest.mark.parametrize("halving", [False, True])
def test_a_shared_population_gives_the_numbers_of_a_one_core_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, halving: bool
) -> None:
    """On two cores a lone population trains in two parts, here and in a forked helper (one worker id
    and pid each); with halving it trains whole in one process. Either way every trial ran once, with
    the objective a one-core run gives it."""
    monkeypatch.setattr(worker, "MIN_SHARED_WORK_S", 0.0)
    spec = _spec(tmp_path, "two", trials=16)
    spec["space"].pop("hidden")
    if halving:
        spec["search"]["halving"] = {"eta": 2, "min_epochs": 1}
    with threadpool_limits(limits=2, user_api="blas"):
        two = run_study(spec)
    with threadpool_limits(limits=1, user_api="blas"):
        one = run_study(spec, storage=str(tmp_path / "one.db"))
    assert [(t.state, t.objective) for t in two.trials] == [(t.state, t.objective) for t in one.trials]
    records = two.storage.trials(two.id)
    assert all(r.attempts == 1 for r in records)
    assert {r.state for r in records} == (
        {TrialState.COMPLETE, TrialState.PRUNED} if halving else {TrialState.COMPLETE}
    )
    pids = {int(str(r.worker_id).split(":")[1]) for r in records}
    assert len(pids) == (1 if halving else 2) and (os.getpid() in pids)


def test_a_helper_that_dies_leaves_its_trials_to_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper killed while it holds a population (here: it exits at once after claiming it): the
    study's process requeues those trials once the helper has ended and trains them itself; every trial
    ends once, with the numbers of a one-core run."""
    parent = os.getpid()
    train = worker.train_claimed

    def dies_in_the_helper(ctx: WorkerContext, claimed: list, *args: Any, **kwargs: Any) -> None:
        if os.getpid() != parent:
            os._exit(1)  # killed holding its claimed trials RUNNING
        train(ctx, claimed, *args, **kwargs)

    monkeypatch.setattr(worker, "train_claimed", dies_in_the_helper)
    spec = _spec(tmp_path, "dies", trials=12)
    with threadpool_limits(limits=2, user_api="blas"):
        study = run_study(spec)
    monkeypatch.setattr(worker, "train_claimed", train)
    with threadpool_limits(limits=1, user_api="blas"):
        one = run_study(spec, storage=str(tmp_path / "one.db"))
    assert [t.objective for t in study.trials] == [t.objective for t in one.trials]
    records = study.storage.trials(study.id)
    assert {r.state for r in records} == {TrialState.COMPLETE}
    assert {int(str(r.worker_id).split(":")[1]) for r in records} == {parent}  # all trained here in the end
    assert sorted({r.attempts for r in records}) == [1, 2]  # the helper's population ran a second time
