"""Mixed widths in one population (padding with masks) and the packer that decides it.

The invariant: a trial's result does not depend on which population it lands in. Members of one depth
but different hidden widths train padded to the widest width per layer (caviar.nn.padding); their
padded units are exactly inert, so each member computes exactly the sums it computes alone plus exact
zeros. Trained packed and trained alone, every trial here ends bit for bit the same (curves, fate,
kept weights, test metrics), in float32 and float64, on both engine paths, with dropout, L2 on some
members, batch norm or biases, a member that diverges, early stopping and successive halving.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from caviar.backend import Backend
from caviar.config import ModelConfig, TrainConfig
from caviar.nn import padding
from caviar.nn.network import Architecture
from caviar.prepared import PreparedData
from caviar.train.trainer import Trainer, hyperparameters_from
from caviar.tune.halving import SuccessiveHalving
from caviar.tune.population import TrialPlan, pack, padded_ratio
from caviar.tune.runner import TrialOutcome, train_population

pytestmark = pytest.mark.usefixtures("engine_path")

N_IN, C = 12, 4


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((C, N_IN)) * 1.5
    y = rng.integers(0, C, size=n)
    return (centers[y] + rng.standard_normal((n, N_IN))).astype(np.float32), y


def data(dtype: type = np.float32) -> PreparedData:
    (Xt, yt), (Xv, yv), (Xs, ys) = blobs(200, 0), blobs(60, 1), blobs(50, 2)
    return PreparedData(Xt.astype(dtype), yt, Xv.astype(dtype), yv, Xs.astype(dtype), ys, np.arange(C), None, "blobs")


def plan(number: int, hidden: tuple[int, ...], batchnorm: bool = True, activation: str = "relu", **values) -> TrialPlan:
    dropout = values.pop("dropout", 0.0)
    model = ModelConfig(hidden=hidden, activation=activation, batchnorm=batchnorm, dropout=dropout)
    train = TrainConfig(**{"epochs": 6, "batch_size": 32, "optimizer": "adam", **values})
    return TrialPlan(number, {}, model, train)


def mixed_plans(batchnorm: bool = True, activation: str = "relu", **train) -> list[TrialPlan]:
    """Widths 16-8, 24-8, 24-12, 10-4: dropout on some, L2 on some, one learning rate that diverges."""
    return [
        plan(0, (16, 8), batchnorm, activation, learning_rate=3e-3, dropout=0.2, **train),
        plan(1, (24, 8), batchnorm, activation, learning_rate=1e-2, l2=1e-3, **train),
        plan(2, (24, 12), batchnorm, activation, learning_rate=3e-3, dropout=0.3, l2=1e-2, **train),
        plan(3, (10, 4), batchnorm, activation, learning_rate=1e5, **train),  # diverges
        plan(4, (16, 12), batchnorm, activation, learning_rate=5e-3, **train),
    ]


def run(plans: list[TrialPlan], d: PreparedData, dtype: str, **kw) -> list[TrialOutcome]:
    """One population of ``plans`` through the study's runner (the engine path: ``_kernels_env``)."""
    return train_population(plans, d, seed=3, dtype=dtype, **kw)


def assert_same(packed: TrialOutcome, alone: TrialOutcome) -> None:
    assert packed.number == alone.number
    assert packed.state == alone.state, packed.number
    assert packed.curve == alone.curve, packed.number
    assert packed.metrics == alone.metrics, packed.number
    assert packed.params.keys() == alone.params.keys()
    for name in alone.params:
        assert packed.params[name].shape == alone.params[name].shape, name
        np.testing.assert_array_equal(packed.params[name], alone.params[name], err_msg=f"{packed.number} {name}")
    for name in alone.bn_state:
        np.testing.assert_array_equal(packed.bn_state[name], alone.bn_state[name], err_msg=f"{packed.number} {name}")


@pytest.fixture(autouse=True)
def _kernels_env(monkeypatch: pytest.MonkeyPatch, engine_path: Backend) -> None:
    """The runner builds its trainers with the environment's backend: this test's engine path."""
    monkeypatch.setenv("CAVIAR_KERNELS", "numba" if engine_path is Backend.NUMBA else "numpy")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "batchnorm, activation, train",
    [
        (True, "relu", {}),
        (False, "tanh", {}),
        (True, "sigmoid", {"early_stopping": True, "patience": 1}),
        (False, "sigmoid", {}),
    ],
)
def test_packed_members_end_exactly_as_alone(
    engine_path: Backend, dtype: str, batchnorm: bool, activation: str, train: dict
) -> None:
    d = data(np.float32 if dtype == "float32" else np.float64)
    plans = mixed_plans(batchnorm, activation, **train)
    packed = run(plans, d, dtype)
    assert {o.state.value for o in packed} >= {"DIVERGED", "COMPLETE"}
    for p, o in zip(plans, packed, strict=True):
        (alone,) = run([p], d, dtype)
        assert_same(o, alone)


def test_packed_members_end_exactly_as_alone_under_halving(engine_path: Backend) -> None:
    d = data()
    plans = [replace(p, train=replace(p.train, epochs=8)) for p in mixed_plans()]

    def halving() -> SuccessiveHalving:
        return SuccessiveHalving(2, 1, "val_accuracy")

    packed = run(plans, d, "float32", halving=halving())
    assert any(o.state.value == "PRUNED" for o in packed)
    # halving ranks members against each other, so alone a trial is never pruned; its curve up to
    # where it was pruned, and its weights there, are what it has alone after as many epochs
    for p, o in zip(plans, packed, strict=True):
        epochs = o.metrics["epochs_run"] if o.state.value == "PRUNED" else p.train.epochs
        (alone,) = run([replace(p, train=replace(p.train, epochs=epochs))], d, "float32")
        assert o.curve == alone.curve, p.number
        for name in alone.params:
            np.testing.assert_array_equal(o.params[name], alone.params[name], err_msg=f"{p.number} {name}")


def test_padded_units_stay_exactly_zero(engine_path: Backend) -> None:
    arch = Architecture(N_IN, C, (24, 12), "sigmoid", True)
    hidden = [(16, 8), (24, 12), (10, 4)]
    cfg = TrainConfig(epochs=4, batch_size=32, l2=1e-2, optimizer="adam", learning_rate=1e-2)
    hp = hyperparameters_from([{}, {}, {}], cfg, dropout=0.3)
    t = Trainer(arch, cfg, hp, [0, 1, 2], seed=1, dtype=np.float64, backend=engine_path, member_hidden=hidden)
    X, y = blobs(200, 0)
    masks = padding.pad_masks(arch, hidden)
    assert set(masks) >= {"dense0.W", "dense1.W", "bn0.gamma", "bn1.beta", "out.W"}
    t.fit(X, y, epochs=4)
    t.fit(X, y, epochs=0)  # nothing more
    kept, _ = t.stacked_kept()
    for name, m in masks.items():
        assert np.all(kept[name][m] == 0), name
    for k, h in enumerate(hidden):
        params, state = t.kept_weights(k)
        assert params["dense0.W"].shape == (N_IN, h[0]) and params["out.W"].shape == (h[1], C)
        assert state["bn1.running_mean"].shape == (1, h[1])


def test_padding_rejects_mixed_depths_and_copies_across_widths() -> None:
    with pytest.raises(ValueError, match="one depth"):
        padding.padded_hidden([(8,), (8, 8)])
    arch = Architecture(N_IN, C, (16,), "relu", True)
    cfg = TrainConfig(epochs=1, batch_size=32)
    hp = hyperparameters_from([{}, {}], cfg)
    t = Trainer(arch, cfg, hp, [0, 1], seed=0, member_hidden=[(8,), (16,)])
    with pytest.raises(ValueError, match="widths"):
        t.replace_members([1], [0])


# ------------------------------------------------------------------------------------------ the packer
def study_plans(n: int, seed: int) -> list[TrialPlan]:
    """The issue's mixed space: hidden from {64, 128, 128-64, 256-128}, batch from {32, 64, 128}, dropout."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        hidden = rng.choice([(64,), (128,), (128, 64), (256, 128)])
        model = ModelConfig(hidden=hidden, dropout=rng.choice([0.0, 0.2]))
        train = TrainConfig(batch_size=rng.choice([32, 64, 128]), learning_rate=rng.random())
        out.append(TrialPlan(k, {}, model, train))
    return out


def numbers(populations: list[list[TrialPlan]]) -> list[list[int]]:
    return [[p.number for p in members] for members in populations]


def test_pack_is_a_pure_function_of_the_trial_set() -> None:
    plans = study_plans(64, 0)
    reference = numbers(pack(plans, 64, 10))
    for seed in range(5):
        shuffled = plans[:]
        random.Random(seed).shuffle(shuffled)
        assert numbers(pack(shuffled, 64, 10)) == reference
    assert sorted(n for members in reference for n in members) == list(range(64))


def test_pack_pads_within_the_bound_and_the_cap() -> None:
    plans = study_plans(64, 0)
    unpadded = pack(plans, 64, 10, pad_bound=None)
    padded = pack(plans, 64, 10)
    assert len(padded) < len(unpadded)
    for bound in (1.0, 1.25, 1.5, 2.0):
        for members in pack(plans, 64, 10, max_population=8, pad_bound=bound):
            assert len(members) <= 8
            assert len({p.pad_key for p in members}) == 1  # depth, batch size, optimizer... agree
            assert padded_ratio(64, 10, [p.model.hidden for p in members]) <= bound
    assert numbers(pack(plans, 64, 10, pad_bound=1.0)) == numbers(unpadded)


def test_pack_merges_the_cheap_and_keeps_the_costly_apart() -> None:
    near = [plan(0, (120,)), plan(1, (128,)), plan(2, (128,))]
    assert numbers(pack(near, 64, 10)) == [[0, 1, 2]]
    far = [plan(0, (16,)), plan(1, (256,))]
    assert numbers(pack(far, 64, 10)) == [[0], [1]]
    depth = [plan(0, (24,)), plan(1, (16, 16))]  # the golden study's two shapes: depths differ
    assert numbers(pack(depth, 64, 10)) == [[0], [1]]
