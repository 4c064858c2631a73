"""Samplers: deterministic per (seed, trial), Sobol balanced, grid covering, coarse-to-fine zooming, TPE."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import numpy as np
import pytest

from caviar.errors import SpecError
from caviar.tune.samplers import (
    CoarseToFineSampler,
    GridSampler,
    Observation,
    RandomSampler,
    Sampler,
    SobolSampler,
    TPESampler,
    make_sampler,
    round_of,
)
from caviar.tune.space import Space

UNIT3 = Space.from_dict({n: {"low": 0.0, "high": 1.0} for n in "xyz"}, tunable=False)
MIXED = Space.from_dict(
    {
        "learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"},
        "beta2": {"low": 0.9, "high": 0.999, "scale": "one_minus_log"},
        "activation": ["relu", "tanh", "sigmoid"],
    }
)
LOG3 = Space.from_dict(
    {
        "learning_rate": {"low": 1e-5, "high": 1.0, "scale": "log"},
        "beta2": {"low": 0.9, "high": 0.9999, "scale": "one_minus_log"},
        "l2": {"low": 1e-6, "high": 1e-1, "scale": "log"},
    }
)


def run(sampler: Sampler, objective: Callable[[np.ndarray], float], trials: int) -> list[Observation]:
    """A study in miniature: each round is proposed once the earlier rounds are told."""
    history: list[Observation] = []
    for r, numbers in enumerate(sampler.round_numbers(trials)):
        for n, u in zip(numbers, sampler.propose(numbers, history), strict=True):
            history.append(Observation(n, u, objective(u), r))
    return history


def best(history: list[Observation]) -> float:
    return max(o.value for o in history if o.value is not None)


@pytest.mark.parametrize("strategy", ["random", "grid", "sobol", "coarse_to_fine"])
def test_same_seed_and_number_give_same_point_whatever_the_order(strategy) -> None:
    a = make_sampler(strategy, MIXED, 7, trials=16)
    b = make_sampler(strategy, MIXED, 7, trials=16)
    forward = dict(zip(range(16), a.propose(list(range(16))), strict=True))
    order = [9, 3, 15, 0, 4]
    for n, u in zip(order, b.propose(order), strict=True):
        np.testing.assert_array_equal(u, forward[n])
    np.testing.assert_array_equal(make_sampler(strategy, MIXED, 7, trials=16).propose([5])[0], forward[5])


@pytest.mark.parametrize("strategy", ["random", "grid", "sobol", "coarse_to_fine", "tpe"])
def test_points_lie_in_the_unit_cube_and_seeds_differ(strategy) -> None:
    p0 = np.array(make_sampler(strategy, MIXED, 0, trials=16).propose(list(range(16))))
    p1 = np.array(make_sampler(strategy, MIXED, 1, trials=16).propose(list(range(16))))
    assert p0.shape == (16, 3)
    assert p0.min() >= 0 and p0.max() <= 1
    assert not np.array_equal(p0, p1)


def test_random_point_depends_only_on_seed_and_number() -> None:
    u = RandomSampler(UNIT3, 3).point(11)
    expected = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(0x5A3D1E, 11))).random(3)
    np.testing.assert_array_equal(u, expected)


def test_sobol_is_balanced() -> None:
    points = np.array(SobolSampler(UNIT3, 0).propose(list(range(64))))
    for dim in range(3):  # each 1-D projection puts exactly one point in each 1/64 cell
        np.testing.assert_array_equal(np.sort(np.floor(points[:, dim] * 64)), np.arange(64))
    # later points extend the sequence without changing the first ones
    s = SobolSampler(UNIT3, 0)
    first = s.point(3)
    s.point(200)
    np.testing.assert_array_equal(s.point(3), first)


def test_grid_covers_every_combination_then_cycles() -> None:
    grid = GridSampler(MIXED, 0, points_per_axis=3)
    assert grid.size == 27
    points = grid.propose(list(range(27)))
    decoded = {tuple(np.round(np.log10([MIXED.decode(u)["learning_rate"]]), 6)) for u in points}
    assert decoded == {(-4.0,), (-2.5,), (-1.0,)}  # evenly spaced on the log scale
    assert len({tuple(u) for u in points}) == 27
    assert {MIXED.decode(u)["activation"] for u in points} == {"relu", "tanh", "sigmoid"}
    assert tuple(grid.point(27)) in {tuple(u) for u in points}


def test_grid_sizes_itself_to_the_budget() -> None:
    assert GridSampler(UNIT3, 0, trials=27).points_per_axis == 3
    assert GridSampler(UNIT3, 0, trials=28).points_per_axis == 4
    ints = Space.from_dict({"depth": {"low": 1, "high": 3}}, tunable=False)
    assert GridSampler(ints, 0, trials=100).size == 3  # all integers, then it stops growing


def test_round_of_splits_trials_evenly() -> None:
    rounds = [round_of(n, 32, 4) for n in range(32)]
    assert rounds == sorted(rounds)
    assert [rounds.count(r) for r in range(4)] == [8, 8, 8, 8]
    assert round_of(40, 32, 4) == 3
    assert CoarseToFineSampler(UNIT3, 0, trials=10, rounds=3).round_of(9) == 2


def test_each_sampler_says_its_rounds() -> None:
    """One round for the non-adaptive samplers, ``rounds`` for coarse-to-fine, batches of 8 for TPE."""
    for strategy in ("random", "grid", "sobol"):
        assert make_sampler(strategy, MIXED, 0, trials=10).round_numbers(10) == [list(range(10))]
        assert not make_sampler(strategy, MIXED, 0, trials=10).adaptive
    c2f = make_sampler("coarse_to_fine", MIXED, 0, trials=10, rounds=3)
    assert c2f.adaptive
    assert c2f.round_numbers(10) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [[c2f.round_of(n) for n in r] for r in c2f.round_numbers(10)] == [[0] * 4, [1] * 3, [2] * 3]
    assert make_sampler("coarse_to_fine", MIXED, 0, trials=4, rounds=4).round_numbers(4) == [[0], [1], [2], [3]]


def test_tpe_rounds_are_batches_of_eight() -> None:
    pytest.importorskip("optuna")
    tpe = make_sampler("tpe", MIXED, 0)
    assert tpe.adaptive and tpe.round_box(1, []) is None
    assert tpe.round_numbers(20) == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
    assert tpe.round_numbers(8) == [list(range(8))]


def test_only_coarse_to_fine_has_boxes() -> None:
    c2f = CoarseToFineSampler(UNIT3, 0, trials=12, rounds=2)
    history = run(c2f, lambda u: -float(np.sum(u**2)), 12)
    box = c2f.round_box(1, history)
    assert box is not None and box.as_dict() == c2f.box_for_round(1, history).as_dict()
    assert box.volume < 1.0
    assert all(make_sampler(s, UNIT3, 0).round_box(1, history) is None for s in ("random", "grid", "sobol"))


def test_coarse_to_fine_round_zero_is_random_search() -> None:
    c2f = CoarseToFineSampler(UNIT3, 5, trials=30, rounds=3)
    np.testing.assert_array_equal(c2f.propose(range(10)), RandomSampler(UNIT3, 5).propose(range(10)))


def test_coarse_to_fine_boxes_shrink_around_the_optimum() -> None:
    optimum = np.array([0.3, 0.7, 0.55])

    def objective(u: np.ndarray) -> float:
        return -float(np.sum((u - optimum) ** 2))

    good = 0
    for seed in range(10):
        sampler = CoarseToFineSampler(UNIT3, seed, trials=96, rounds=3)
        history = run(sampler, objective, 96)
        boxes = sampler.boxes(history)
        volumes = [b.volume for b in boxes]
        good += all(b.contains(optimum) for b in boxes) and all(np.diff(volumes) < 0)
        assert volumes[-1] < 0.3
        # the later rounds' trials sit inside their box
        for obs in history:
            assert boxes[obs.round].contains(obs.u)
    assert good >= 8


def test_coarse_to_fine_keeps_growing_toward_an_edge_optimum() -> None:
    def objective(u: np.ndarray) -> float:  # best at x = 1, the cube's edge
        return -3 * (1 - u[0]) - float(np.sum((u[1:] - [0.4, 0.5]) ** 2))

    reached = 0
    for seed in range(10):
        sampler = CoarseToFineSampler(UNIT3, seed, trials=96, rounds=3)
        boxes = sampler.boxes(run(sampler, objective, 96))
        reached += boxes[-1].upper[0] == 1.0
    assert reached >= 7


def test_box_grows_past_an_edge_the_best_point_sits_on() -> None:
    sampler = CoarseToFineSampler(UNIT3, 0, trials=40, rounds=3, margin=0.0)
    rng = np.random.default_rng(0)
    # round 0: the good trials have x in [0.4, 0.6]
    history = [Observation(n, np.array([0.4 + 0.2 * (n % 5) / 4, 0.5, 0.5]), 1.0, 0) for n in range(5)]
    history += [Observation(5 + n, rng.random(3) * [0.3, 1, 1], -1.0, 0) for n in range(15)]
    box1 = sampler.box_for_round(1, history)
    assert box1.lower[0] == pytest.approx(0.4) and box1.upper[0] == pytest.approx(0.6)
    # round 1: the best trial sits on the box's upper x edge
    history += [Observation(20 + n, np.array([0.45 + 0.01 * n, 0.5, 0.5]), 1.5, 1) for n in range(5)]
    history.append(Observation(30, np.array([0.6, 0.5, 0.5]), 2.0, 1))
    box2 = sampler.box_for_round(2, history)
    assert box2.upper[0] == pytest.approx(0.6 + 0.2)  # extended by the previous width
    assert box2.lower[0] >= 0.4


def test_coarse_to_fine_keeps_the_choices_of_the_top_trials() -> None:
    sampler = CoarseToFineSampler(MIXED, 0, trials=40, rounds=2)

    def objective(u: np.ndarray) -> float:
        values = MIXED.decode(u)
        return 10.0 * (values["activation"] == "tanh") - abs(np.log10(values["learning_rate"]) + 2.5)

    history = run(sampler, objective, 40)
    box = sampler.box_for_round(1, history)
    assert box.choices["activation"] == ["tanh"]
    assert all(MIXED.decode(o.u)["activation"] == "tanh" for o in history if o.round == 1)
    assert 1e-4 <= box.low["learning_rate"] < box.high["learning_rate"] <= 1e-1
    assert json.loads(json.dumps(box.as_dict()))["choices"] == {"activation": ["tanh"]}


def test_coarse_to_fine_ignores_failed_trials_and_history_order() -> None:
    sampler = CoarseToFineSampler(UNIT3, 1, trials=20, rounds=2)
    history = run(sampler, lambda u: -float(np.sum(u**2)), 20)
    failed = [Observation(100, np.ones(3), None, 0), Observation(101, np.ones(3), float("nan"), 0)]
    a = sampler.box_for_round(1, history + failed)
    b = sampler.box_for_round(1, list(reversed(history)))
    np.testing.assert_array_equal(a.lower, b.lower)
    np.testing.assert_array_equal(a.upper, b.upper)


def test_coarse_to_fine_beats_random_at_equal_budget() -> None:
    def objective(u: np.ndarray) -> float:  # a quadratic in log-lr, log(1 - beta2), log-l2
        v = LOG3.decode(u)
        return -(
            (np.log10(v["learning_rate"]) + 2.5) ** 2
            + (np.log10(1 - v["beta2"]) + 2.7) ** 2
            + 0.3 * (np.log10(v["l2"]) + 4) ** 2
        )

    c2f = [best(run(CoarseToFineSampler(LOG3, s, trials=48, rounds=3), objective, 48)) for s in range(8)]
    rnd = [best(run(RandomSampler(LOG3, s), objective, 48)) for s in range(8)]
    assert np.mean(c2f) > np.mean(rnd)


def test_tpe_runs_learns_and_is_deterministic() -> None:
    pytest.importorskip("optuna")
    optimum = np.array([0.2, 0.8, 0.5])

    def objective(u: np.ndarray) -> float:
        return -float(np.sum((u[:2] - optimum[:2]) ** 2))

    history = run(RandomSampler(MIXED, 0), objective, 20)
    a = TPESampler(MIXED, 3).propose([20, 21, 22, 23], history)
    b = TPESampler(MIXED, 3).propose([20, 21, 22, 23], history)
    np.testing.assert_array_equal(np.array(a), np.array(b))
    assert all(x.min() >= 0 and x.max() <= 1 for x in a)
    for u in a:
        assert MIXED.decode(u)["activation"] in ("relu", "tanh", "sigmoid")
    # asked in batches, it keeps improving on random points
    tpe = TPESampler(MIXED, 0)
    told = list(history)
    for start in range(20, 60, 4):
        numbers = list(range(start, start + 4))
        told += [Observation(n, u, objective(u)) for n, u in zip(numbers, tpe.propose(numbers, told), strict=True)]
    assert best(told) > best(history)


def test_tpe_without_optuna_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(SpecError, match=r"needs optuna: pip install 'caviar\[tpe\]'"):
        make_sampler("tpe", MIXED, 0)


def test_make_sampler_checks_strategy_and_options() -> None:
    assert isinstance(make_sampler("random", MIXED, 0, trials=10, rounds=3, points_per_axis=None), RandomSampler)
    assert make_sampler("coarse_to_fine", MIXED, 0, trials=10, rounds=2).rounds == 2
    with pytest.raises(SpecError, match="did you mean 'sobol'"):
        make_sampler("sobel", MIXED, 0)
    with pytest.raises(SpecError, match="did you mean 'top_fraction'"):
        make_sampler("coarse_to_fine", MIXED, 0, top_fractoin=0.2)
    with pytest.raises(SpecError, match="rounds"):
        make_sampler("coarse_to_fine", MIXED, 0, trials=2, rounds=3)


def test_empty_space_gives_empty_points() -> None:
    for strategy in ("random", "grid", "sobol", "coarse_to_fine"):
        points = make_sampler(strategy, Space(), 0, trials=4).propose([0, 1])
        assert [p.shape for p in points] == [(0,), (0,)]
