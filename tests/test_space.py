"""Scales: each hyperparameter's draws follow its law; bounds, integers and choices hold; errors are one line."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from caviar.errors import SpecError
from caviar.tune.samplers import RandomSampler
from caviar.tune.space import TUNABLE, ChoiceParam, FloatParam, IntParam, ScaleWarning, Space

N = 4000


def draws(space: Space, name: str, n: int = N, seed: int = 0) -> np.ndarray:
    """Values of ``name`` for trials 0..n-1 of a random search (the whole pipeline: sampler + space)."""
    sampler = RandomSampler(space, seed)
    return np.array([space.decode(u)[name] for u in sampler.propose(range(n))])


def test_log_scale_draws_are_log_uniform() -> None:
    space = Space.from_dict({"learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"}})
    values = draws(space, "learning_rate")
    assert values.min() >= 1e-4 and values.max() <= 1e-1
    assert stats.kstest(np.log10(values), stats.uniform(loc=-4, scale=3).cdf).pvalue > 0.01
    # each decade gets about a third of the draws
    assert abs(np.mean(values < 1e-3) - 1 / 3) < 0.03


def test_one_minus_log_draws_are_uniform_in_log_one_minus_beta() -> None:
    space = Space.from_dict({"beta2": {"low": 0.9, "high": 0.999, "scale": "one_minus_log"}})
    values = draws(space, "beta2")
    assert values.min() >= 0.9 and values.max() <= 0.999
    assert stats.kstest(np.log10(1 - values), stats.uniform(loc=-3, scale=2).cdf).pvalue > 0.01
    assert abs(np.mean(values > 0.99) - 0.5) < 0.03


def test_linear_beta_is_not_one_minus_log_uniform() -> None:
    """The same KS test rejects linear draws: it can fail, so its passing above means something."""
    with pytest.warns(ScaleWarning, match="one_minus_log"):
        space = Space.from_dict({"beta2": {"low": 0.9, "high": 0.999}})
    values = draws(space, "beta2")
    assert stats.kstest(np.log10(1 - values), stats.uniform(loc=-3, scale=2).cdf).pvalue < 1e-6
    assert np.mean(values > 0.99) < 0.15


def test_one_minus_log_is_monotone_and_hits_both_ends() -> None:
    p = FloatParam("beta1", 0.8, 0.99, "one_minus_log")
    u = np.linspace(0, 1, 101)
    values = [p.from_unit(x) for x in u]
    assert values[0] == pytest.approx(0.8) and values[-1] == pytest.approx(0.99)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert FloatParam("momentum", 0.0, 0.99, "one_minus_log").from_unit(0.0) == 0.0


@pytest.mark.parametrize(
    ("param", "lo", "hi"),
    [
        (FloatParam("dropout", 0.0, 0.5), 0.0, 0.5),
        (FloatParam("l2", 1e-6, 1e-2, "log"), 1e-6, 1e-2),
        (FloatParam("beta1", 0.5, 0.999, "one_minus_log"), 0.5, 0.999),
        (IntParam("epochs", 5, 50), 5, 50),
        (IntParam("batch_size", 16, 512, "int_log"), 16, 512),
    ],
)
def test_bounds_hold(param, lo, hi) -> None:
    u = np.random.default_rng(1).random(2000)
    values = np.array([param.from_unit(x) for x in [*u, 0.0, 1.0, 0.9999999]])
    assert values.min() >= lo and values.max() <= hi
    assert param.from_unit(0.0) == pytest.approx(lo) and param.from_unit(1.0) == pytest.approx(hi)


def test_int_scale_gives_every_integer_equal_chance() -> None:
    space = Space.from_dict({"depth": {"low": 1, "high": 4}})
    values = draws(space, "depth")
    assert all(isinstance(v, (int, np.integer)) for v in values)
    counts = np.bincount(values.astype(int), minlength=5)[1:]
    assert stats.chisquare(counts).pvalue > 0.01


def test_int_log_scale_is_log_uniform_over_integers() -> None:
    space = Space.from_dict({"width": {"low": 1, "high": 999, "scale": "int_log"}})
    values = draws(space, "width").astype(int)
    assert values.min() >= 1 and values.max() <= 999
    # P(value < 10) = log10(10) / log10(1000) = 1/3, P(value < 100) = 2/3
    assert abs(np.mean(values < 10) - 1 / 3) < 0.03
    assert abs(np.mean(values < 100) - 2 / 3) < 0.03


def test_integer_fields_turn_linear_and_log_into_integer_scales() -> None:
    space = Space.from_dict({"batch_size": {"low": 16, "high": 256, "scale": "log"}, "epochs": {"low": 5, "high": 20}})
    assert space["batch_size"].scale == "int_log"
    assert space["epochs"].scale == "int"


def test_choices_are_respected_and_all_reachable() -> None:
    space = Space.from_dict({"activation": ["relu", "tanh", "sigmoid"], "hidden": {"choices": [[128, 64], [256]]}})
    u = np.random.default_rng(2).random((600, 2))
    decoded = [space.decode(x) for x in u]
    assert {d["activation"] for d in decoded} == {"relu", "tanh", "sigmoid"}
    assert {tuple(d["hidden"]) for d in decoded} == {(128, 64), (256,)}
    assert ChoiceParam("activation", ["relu", "tanh"]).from_unit(0.49) == "relu"
    assert ChoiceParam("activation", ["relu", "tanh"]).from_unit(0.5) == "tanh"


def test_booleans_and_numbers_are_distinct_choices() -> None:
    p = ChoiceParam("x", [True, 1, False])
    assert [p.from_unit(p.to_unit(v)) for v in (True, 1, False)] == [True, 1, False]


def test_encode_decode_round_trip() -> None:
    space = Space.from_dict(
        {
            "learning_rate": {"low": 1e-5, "high": 1.0, "scale": "log"},
            "beta2": {"low": 0.9, "high": 0.9999, "scale": "one_minus_log"},
            "dropout": {"low": 0.0, "high": 0.5},
            "batch_size": {"low": 16, "high": 512, "scale": "int_log"},
            "depth": {"low": 1, "high": 5},
            "hidden": [[64], [128, 64]],
            "optimizer": ["adam", "momentum"],
        }
    )
    for u in np.random.default_rng(3).random((200, len(space))):
        values = space.decode(u)
        again = space.encode(values)
        assert space.decode(again) == values
        floats = [i for i, p in enumerate(space) if isinstance(p, FloatParam)]
        np.testing.assert_allclose(again[floats], u[floats], atol=1e-9)
    assert space.names == ("batch_size", "beta2", "depth", "dropout", "hidden", "learning_rate", "optimizer")  # by name
    assert Space.from_dict(space.as_dict()) == space


def test_linear_over_decades_warns_toward_log() -> None:
    with pytest.warns(ScaleWarning, match="log"):
        Space.from_dict({"learning_rate": {"low": 1e-5, "high": 1e-1}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Space.from_dict({"dropout": {"low": 0.1, "high": 0.5}})


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            {"learning_rate": {"low": 0.0, "high": 1.0, "scale": "log"}},
            "space.learning_rate: scale 'log' needs 0 < low < high, got low=0.0",
        ),
        (
            {"beta1": {"low": 0.9, "high": 1.0, "scale": "one_minus_log"}},
            "space.beta1: scale 'one_minus_log' needs 0 <= low < high < 1, got high=1.0",
        ),
        ({"dropout": {"low": 0.5, "high": 0.1}}, "space.dropout: needs low < high, got low=0.5, high=0.1"),
        (
            {"learnig_rate": {"low": 0.1, "high": 1.0}},
            "space.learnig_rate: not a tunable hyperparameter (did you mean 'learning_rate'?)",
        ),
        ({"activation": ["relu", "relux"]}, "space.activation: choice 'relux' is not allowed"),
        ({"activation": {"low": 0, "high": 1}}, "space.activation: needs choices"),
        ({"epochs": {"low": 1.0, "high": 5.5}}, "space.epochs: scale 'int' needs integer bounds, got high=5.5"),
        ({"dropout": {"low": 0.1, "hgh": 0.5}}, "space.dropout: unknown key 'hgh' (did you mean 'high'?)"),
        ({"dropout": {"low": 0.1, "high": 0.5, "scale": "logg"}}, "unknown scale 'logg' (did you mean 'log'?)"),
        ({"dropout": {"low": 0.1}}, "space.dropout: needs low and high"),
        (
            {"dropout": {"low": 0.0, "high": 1.0}},
            "space.dropout: high=1.0 is outside the allowed range 0 <= dropout < 1",
        ),
        ({"learning_rate": {"low": -1.0, "high": 1.0}}, "space.learning_rate: low=-1.0 is outside"),
        ({"batch_size": {"low": 0, "high": 64, "scale": "int_log"}}, "scale 'int_log' needs 1 <= low < high"),
        ({"activation": {"choices": []}}, "choices must be a non-empty list"),
        ({"activation": ["relu", "relu"]}, "choices must be distinct"),
        ({"hidden": [[128, 0]]}, "space.hidden: choice [128, 0] is not allowed"),
        ({"dropout": 0.3}, "space.dropout: expected a table"),
    ],
)
def test_bad_ranges_are_one_line_spec_errors(table, expected) -> None:
    with pytest.raises(SpecError) as info:
        Space.from_dict(table)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_any_name_when_not_checking_tunable() -> None:
    space = Space.from_dict({"x": {"low": 0, "high": 1.0}, "k": {"low": 1, "high": 3}}, tunable=False)
    assert space["x"].scale == "linear" and space["k"].scale == "int"


def test_every_config_field_and_shorthand_is_tunable() -> None:
    from caviar.config import MODEL_FIELDS, TRAIN_FIELDS

    assert set(MODEL_FIELDS) | set(TRAIN_FIELDS) | {"depth", "width", "bn_beta"} == set(TUNABLE)


def test_decode_checks_dimension_and_encode_needs_every_value() -> None:
    space = Space.from_dict({"dropout": {"low": 0.0, "high": 0.5}})
    with pytest.raises(ValueError):
        space.decode([0.1, 0.2])
    with pytest.raises(SpecError, match="dropout"):
        space.encode({})
    assert math.isclose(space.decode(space.encode({"dropout": 0.25}))["dropout"], 0.25)
