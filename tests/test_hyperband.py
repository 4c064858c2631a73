"""Hyperband across populations: the bracket table, a study whose brackets prune at their own rungs and
never share a population, and one-line refusals of a bad [search.hyperband]."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from caviar.errors import SpecError
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
