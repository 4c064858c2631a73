"""Hyperband across populations: the bracket table, a study whose brackets prune at their own rungs and
never share a population, ASHA's promotion across populations with two worker processes on one SQLite
study (every trial once, every decision the rung rule's), and one-line refusals of a bad
[search.hyperband]."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from caviar.errors import SpecError
from caviar.tune.asha import promoted, ranked
from caviar.tune.hyperband import bracket_of, brackets, max_brackets
from caviar.tune.spec import load_spec
from caviar.tune.study import run_study


def test_brackets_split_the_trials_in_hyperbands_proportions() -> None:
    table = brackets(49, 27, 3)
    assert [(b.s, b.min_epochs, b.stop - b.start) for b in table] == [(3, 1, 27), (2, 3, 12), (1, 9, 6), (0, 27, 4)]
    assert max_brackets(27, 3) == 4 and max_brackets(26, 3) == 3 and max_brackets(9, 2) == 4
    for trials in (1, 7, 40, 100):
        t = brackets(trials, 9, 3)
        assert t[0].start == 0 and t[-1].stop == trials
        assert all(a.stop == b.start for a, b in zip(t[:-1], t[1:], strict=True))
        assert sum(b.stop - b.start for b in t) == trials
    assert bracket_of(0, table).s == 3 and bracket_of(48, table).s == 0 and bracket_of(99, table).s == 0


def _spec(db: Path, **hyperband: Any) -> dict[str, Any]:
    return {
        "study": {"name": "hb", "seed": 0},
        "data": {"dataset": "digits"},
        "model": {"hidden": [16]},
        "training": {"epochs": 4, "batch_size": 128},
        "search": {"strategy": "random", "trials": 12, "storage": str(db), "hyperband": hyperband},
        "space": {"learning_rate": {"low": 1e-4, "high": 3e-2, "scale": "log"}},
    }


def test_a_hyperband_study_prunes_each_bracket_at_its_rungs(tmp_path: Path) -> None:
    study = run_study(_spec(tmp_path / "s.db", max_epochs=9, eta=3))
    spec = study.spec
    assert spec.training.epochs == 9  # max_epochs is every trial's budget
    table = spec.search.bracket_table(9)
    assert [b.min_epochs for b in table] == [1, 3, 9]
    keys: dict[str, set[int]] = defaultdict(set)
    for t in study.trials:
        b = bracket_of(t.number, table)
        keys[t.group_key].add(b.s)
        rungs = {b.min_epochs * 3**i for i in range(3) if b.min_epochs * 3**i <= 9}
        assert t.metrics["epochs_run"] in rungs, (t.number, b, t.metrics["epochs_run"])
    assert all(len(s) == 1 for s in keys.values())  # a population holds one bracket
    by_bracket = defaultdict(list)
    for t in study.trials:
        by_bracket[bracket_of(t.number, table).s].append(t)
    full = {s: sum(t.metrics["epochs_run"] == 9 for t in ts) for s, ts in by_bracket.items()}
    assert full[0] == len(by_bracket[0])  # bracket 0 trains all of its trials fully
    assert full[2] == math.ceil(math.ceil(len(by_bracket[2]) / 3) / 3)  # two rungs of 1/3
    assert any(t.state.value == "PRUNED" for t in by_bracket[2])


def test_the_rung_rule_ranks_a_population_against_the_whole_pool() -> None:
    own = {1: 0.9, 2: 0.5}
    assert promoted(own, {}, 3, maximize=True) == {1}  # alone: the in-population rule, ceil(2 / 3) = 1
    assert promoted(own, {3: 0.95, 4: 0.1, 5: 0.2}, 3, maximize=True) == {1}  # 2 of 5 go on: #3 and #1
    assert promoted(own, {3: 0.95, 6: 0.97}, 3, maximize=True) == set()  # 2 of 4: both others are better
    assert promoted({1: 0.2, 2: 0.5}, {3: 0.3}, 3, maximize=False) == {1}  # a loss: the smaller goes on
    assert ranked({4: float("nan"), 2: 0.5, 7: 0.5, 1: 0.1}, maximize=True) == [2, 7, 1, 4]  # ties: lower number


def test_asynchronous_promotion_with_one_worker_is_reproducible(tmp_path: Path) -> None:
    """One worker runs the populations in a fixed order: ASHA's decisions, and so the trials, repeat."""

    def run(name: str) -> list[tuple]:
        raw = _spec(tmp_path / f"{name}.db", max_epochs=9, eta=3, asynchronous=True)
        raw["search"].update(trials=12, max_population=3)
        study = run_study(raw)
        curves = study.curves()
        return [(t.number, t.state, t.objective, t.metrics, curves[t.id]) for t in study.trials]

    a, b = run("a"), run("b")
    assert a == b
    # later populations of a bracket were judged against earlier ones: the pool outgrows a population
    assert any(d["of"] > 3 for *_, metrics, _ in a for d in metrics["rungs"])


def test_two_workers_promote_across_populations_by_the_rung_rule(tmp_path: Path) -> None:
    raw = _spec(tmp_path / "asha.db", max_epochs=9, eta=3)
    raw["search"].update(trials=18, workers=2, max_population=3)
    raw["training"]["batch_size"] = 16  # populations long enough for both workers to train at once
    study = run_study(raw)
    spec = study.spec
    table = spec.search.bracket_table(9)
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(18))  # every trial, once
    assert all(t.attempts == 1 and t.state.value in ("COMPLETE", "PRUNED") for t in trials), [
        (t.number, t.state, t.attempts) for t in trials
    ]
    curves = study.curves()
    at = {t.number: {int(r["epoch"]): r["val_accuracy"] for r in curves[t.id]} for t in trials}
    group = {t.number: t.group_key for t in trials}
    across = 0
    for t in trials:
        b = bracket_of(t.number, table)
        rungs = [b.min_epochs * 3**i for i in range(3) if b.min_epochs * 3**i < 9]
        decisions = t.metrics["rungs"]
        assert len(at[t.number]) == t.metrics["epochs_run"]  # a curve row per epoch trained, none twice
        assert [d["epoch"] for d in decisions] == [r for r in rungs if r <= t.metrics["epochs_run"]]
        for i, d in enumerate(decisions):
            pool = [t.number, *d["against"]]
            assert all(bracket_of(n, table).s == b.s for n in pool)  # judged inside its bracket
            values = {n: at[n][d["epoch"] - 1] for n in pool}  # every one of them reached the rung
            rank = ranked(values, maximize=True).index(t.number)
            assert (d["rank"], d["of"]) == (rank, len(pool))
            assert d["kept"] == (rank < math.ceil(len(pool) / 3))
            assert d["kept"] == (i < len(decisions) - 1 or t.metrics["epochs_run"] > d["epoch"])
            across += any(group[n] != t.group_key for n in d["against"])
        if decisions and not decisions[-1]["kept"]:
            assert t.state.value == "PRUNED" and t.metrics["epochs_run"] == decisions[-1]["epoch"]
    # bracket 2 has four populations for two workers: the third one claimed sees another's rung results
    assert across > 0
    assert len({t.group_key for t in trials if bracket_of(t.number, table).s == 2}) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"hyperband": {"brackets": 4, "max_epochs": 9}},
            "search.hyperband.brackets: 4 brackets need max_epochs >= eta**3 = 27",
        ),
        ({"hyperband": {"eta": 1}}, "search.hyperband.eta: 1 should be greater than or equal to 2"),
        ({"halving": {"eta": 3}}, "search.hyperband: give [search.hyperband] or [search.halving], not both"),
        ({"space": {"epochs": {"low": 2, "high": 5}}}, "space.epochs: hyperband sets every trial's budget"),
    ],
)
def test_bad_hyperband_input_is_one_clear_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    raw = _spec(tmp_path / "s.db")
    if "hyperband" in change:
        raw["search"]["hyperband"] = change["hyperband"]
    if "halving" in change:
        raw["search"]["halving"] = change["halving"]
    if "space" in change:
        raw["space"].update(change["space"])
    with pytest.raises(SpecError) as info:
        load_spec(raw)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
