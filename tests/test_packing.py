"""Population packing (which trials train together) and successive halving (which members stop when).

Packing must be a pure, deterministic function of the trial list: that is what makes a study give
the same numbers whatever the number of workers. Halving is checked on a fake trainer (exact rung
arithmetic) and on a real tiny Trainer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from caviar.config import ModelConfig, TrainConfig
from caviar.nn.network import Architecture
from caviar.train.trainer import Trainer, hyperparameters_from
from caviar.tune.halving import SuccessiveHalving
from caviar.tune.population import TrialPlan, bytes_per_member, pack

N_IN, N_OUT = 64, 10


def plan(
    number: int, hidden: tuple[int, ...] = (32,), batch_size: int = 64, lr: float = 1e-3, dropout: float = 0.0
) -> TrialPlan:
    """A trial plan with the given static shape and per-member values."""
    model = ModelConfig(hidden=hidden, dropout=dropout)
    train = TrainConfig(batch_size=batch_size, learning_rate=lr)
    return TrialPlan(number, {"learning_rate": lr}, model, train)


def numbers(populations: list[list[TrialPlan]]) -> list[list[int]]:
    return [[p.number for p in members] for members in populations]


# ------------------------------------------------------------------------------------------ packing
def test_pack_groups_by_static_key_in_order_of_first_number() -> None:
    plans = [
        plan(0, (32,)),
        plan(1, (64,)),
        plan(2, (32,), lr=0.1, dropout=0.3),
        plan(3, (32,), batch_size=32),
        plan(4, (64,), lr=0.01),
    ]
    populations = pack(plans, N_IN, N_OUT, pad_bound=None)  # no padding: one static shape each
    assert numbers(populations) == [[0, 2], [1, 4], [3]]
    for members in populations:
        assert len({p.key for p in members}) == 1  # per-member values (lr, dropout) may differ inside
    # padded (tests/test_mixed_packing.py): widths 32 and 64 train together at 1.33x their own work
    assert numbers(pack(plans, N_IN, N_OUT)) == [[0, 1, 2, 4], [3]]


def test_pack_balances_chunks_under_max_population() -> None:
    plans = [plan(n) for n in range(40)]
    sizes = [len(m) for m in pack(plans, N_IN, N_OUT, max_population=32)]
    assert sizes == [20, 20]  # not 32 + 8
    sizes = [len(m) for m in pack(plans, N_IN, N_OUT, max_population=16)]
    assert sizes == [14, 13, 13]
    assert [len(m) for m in pack(plans[:13], N_IN, N_OUT, max_population=4)] == [4, 3, 3, 3]  # not 4, 4, 4, 1
    assert [len(m) for m in pack(plans, N_IN, N_OUT, max_population=64)] == [40]
    assert [len(m) for m in pack(plans[:5], N_IN, N_OUT, max_population=1)] == [1] * 5


def test_pack_respects_the_memory_budget() -> None:
    plans = [plan(n, (256, 256)) for n in range(10)]
    one = bytes_per_member(N_IN, N_OUT, plans[0].model, plans[0].train)
    populations = pack(plans, N_IN, N_OUT, max_population=64, memory_budget=4 * one)
    assert [len(m) for m in populations] == [4, 3, 3]
    assert all(len(m) * one <= 4 * one for m in populations)
    tiny = pack(plans, N_IN, N_OUT, memory_budget=1)  # less than one member: still one each
    assert [len(m) for m in tiny] == [1] * 10


def test_bytes_per_member_grows_with_widths_and_batch() -> None:
    small = plan(0, (32,))
    assert bytes_per_member(N_IN, N_OUT, plan(0, (64,)).model, small.train) > bytes_per_member(
        N_IN, N_OUT, small.model, small.train
    )
    assert bytes_per_member(N_IN, N_OUT, small.model, plan(0, batch_size=256).train) > bytes_per_member(
        N_IN, N_OUT, small.model, small.train
    )


def test_pack_is_deterministic_whatever_the_input_order() -> None:
    rng = random.Random(0)
    plans = [plan(n, rng.choice([(16,), (32,), (32, 16)]), rng.choice([32, 64]), lr=rng.random()) for n in range(50)]
    reference = numbers(pack(plans, N_IN, N_OUT, max_population=8))
    for seed in range(5):
        shuffled = plans[:]
        random.Random(seed).shuffle(shuffled)
        assert numbers(pack(shuffled, N_IN, N_OUT, max_population=8)) == reference
    assert sorted(n for members in reference for n in members) == list(range(50))
    assert all(members == sorted(members) for members in reference)


# ------------------------------------------------------------------------------------------ halving
@pytest.mark.parametrize(
    "eta, min_epochs, rungs",
    [(2, 1, [1, 2, 4, 8, 16]), (3, 1, [1, 3, 9, 27]), (3, 2, [2, 6, 18]), (2, 3, [3, 6, 12, 24])],
)
def test_rungs(eta: int, min_epochs: int, rungs: list[int]) -> None:
    h = SuccessiveHalving(eta, min_epochs)
    assert [e for e in range(1, 30) if h.is_rung(e)] == rungs


@pytest.mark.parametrize("eta, min_epochs", [(1, 1), (2, 0)])
def test_halving_rejects_bad_settings(eta: int, min_epochs: int) -> None:
    with pytest.raises(ValueError):
        SuccessiveHalving(eta, min_epochs)


@dataclass
class FakeTrainer:
    """What SuccessiveHalving uses of a Trainer: K, epoch, active, config.epochs and retire()."""

    active: np.ndarray
    epochs: int
    epoch: int = 0
    retired: dict[int, str] = field(default_factory=dict)

    @property
    def K(self) -> int:
        return len(self.active)

    @property
    def config(self) -> SimpleNamespace:
        return SimpleNamespace(epochs=self.epochs)

    def retire(self, members: np.ndarray, status: str) -> None:
        self.retired.update({int(k): status for k in members})
        self.active = np.array([k for k in self.active if int(k) not in self.retired])


def run_fake(h: SuccessiveHalving, scores: dict[int, float], epochs: int, metric: str = "val_accuracy") -> dict:
    """Epoch by epoch, every active member reports its fixed score; returns member -> epoch it left."""
    trainer = FakeTrainer(np.array(sorted(scores)), epochs)
    left: dict[int, int] = {}
    for epoch in range(1, epochs + 1):
        trainer.epoch = epoch
        h.on_epoch_end(trainer, {int(k): {metric: scores[int(k)]} for k in trainer.active})
        left.update({k: epoch for k in trainer.retired if k not in left})
    return left


def test_halving_keeps_the_best_fraction_at_each_rung() -> None:
    scores = {k: k / 10 for k in range(9)}  # member 8 is the best
    left = run_fake(SuccessiveHalving(eta=3, min_epochs=1), scores, epochs=9)
    assert left == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 3, 7: 3}  # 9 -> 3 at epoch 1, 3 -> 1 at 3


def test_halving_never_prunes_at_the_last_epoch() -> None:
    scores = {k: float(k) for k in range(8)}
    left = run_fake(SuccessiveHalving(eta=2, min_epochs=1), scores, epochs=4)
    assert sorted(left.values()) == [1, 1, 1, 1, 2, 2]  # epoch 4 is a rung, but the budget is spent
    assert set(scores) - set(left) == {6, 7}


def test_halving_on_a_loss_keeps_the_lowest_and_drops_non_finite_first() -> None:
    scores = {0: 0.5, 1: float("nan"), 2: 0.1, 3: 0.3}
    left = run_fake(SuccessiveHalving(eta=2, min_epochs=1, metric="val_loss"), scores, epochs=3, metric="val_loss")
    assert left == {1: 1, 0: 1, 3: 2}  # 4 -> 2 by lowest loss (NaN first), 2 -> 1 at epoch 2


def test_halving_rounds_the_survivors_up() -> None:
    scores = {k: float(k) for k in range(5)}
    left = run_fake(SuccessiveHalving(eta=2, min_epochs=1), scores, epochs=2)
    assert sorted(left) == [0, 1]  # ceil(5 / 2) = 3 stay


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1).standard_normal((3, 6)) * 2
    y = rng.integers(0, 3, n)
    return centers[y] + rng.standard_normal((n, 6)), y


def test_halving_with_a_real_trainer() -> None:
    X, y = blobs(96, 0)
    X_val, y_val = blobs(48, 1)
    cfg = TrainConfig(epochs=4, batch_size=32, optimizer="sgd")
    lrs = [1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1e-5, 3e-3]
    hp = hyperparameters_from([{"learning_rate": lr} for lr in lrs], cfg)
    trainer = Trainer(
        Architecture(6, 3, (8,), "relu", True), cfg, hp, member_ids=list(range(8)), seed=0, dtype=np.float64
    )
    trainer.fit(X, y, X_val, y_val, callbacks=[SuccessiveHalving(eta=2, min_epochs=1)])
    runs = {k: len(h.rows) for k, h in enumerate(trainer.histories)}
    status = {k: h.status for k, h in enumerate(trainer.histories)}
    assert sorted(runs.values()) == [1, 1, 1, 1, 2, 2, 4, 4]
    assert all((status[k] == "pruned") == (runs[k] < 4) for k in runs)
    assert all(status[k] == "done" for k in runs if runs[k] == 4)
    first = {k: h.rows[0]["val_accuracy"] for k, h in enumerate(trainer.histories)}
    dropped = [first[k] for k in runs if runs[k] == 1]
    assert max(dropped) <= min(first[k] for k in runs if runs[k] > 1)
