"""Trainer features: learning-rate decay, live hyperparameter changes, checkpoints, batches, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from caviar.config import TrainConfig
from caviar.data.batches import minibatch_indices
from caviar.nn.losses import softmax_cross_entropy
from caviar.nn.network import Architecture, backward, forward
from caviar.optim.schedules import decayed_lr
from caviar.train.trainer import Trainer, hyperparameters_from

N_IN, C = 6, 3


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n)
    centers = np.random.default_rng(42).standard_normal((C, N_IN)) * 2
    return centers[y] + rng.standard_normal((n, N_IN)), y


X, Y = data(120)


def trainer(cfg: TrainConfig, values=({},), ids=None, arch=None, dtype=np.float64, **kw) -> Trainer:
    arch = arch or Architecture(n_in=N_IN, n_out=C, hidden=(10, 8))
    dropout = kw.pop("dropout", 0.0)
    ids = list(range(len(values))) if ids is None else ids
    return Trainer(
        arch, cfg, hyperparameters_from(list(values), cfg, dropout=dropout), member_ids=ids, seed=1, dtype=dtype, **kw
    )


# ---------------------------------------------------------------------------------------------
# Learning-rate decay
# ---------------------------------------------------------------------------------------------

LR0 = np.array([0.1, 0.02])
RATE = np.array([0.05, 0.3])


def formula(kind: str, e: int, epochs: int, every: int) -> np.ndarray:
    """The TrainConfig docstring's formulas, written out independently."""
    if kind == "none":
        return LR0
    if kind == "inverse_time":
        return LR0 / (1 + RATE * e)
    if kind == "exponential":
        return LR0 * (1 - RATE) ** e
    if kind == "step":
        return LR0 * (1 - RATE) ** (e // every)
    return LR0 * (1 + np.cos(np.pi * e / epochs)) / 2


@pytest.mark.parametrize("kind", ["none", "inverse_time", "exponential", "step", "cosine"])
def test_decayed_lr_formulas(kind: str) -> None:
    for e in range(12):
        np.testing.assert_allclose(decayed_lr(LR0, kind, RATE, e, 12, every=4), formula(kind, e, 12, 4), rtol=1e-14)
    # spot values by hand
    hand = {
        "none": 0.1,
        "inverse_time": 0.1 / 1.25,
        "exponential": 0.1 * 0.95**5,
        "step": 0.1 * 0.95,
        "cosine": 0.1 * (1 + np.cos(np.pi * 5 / 12)) / 2,
    }
    assert decayed_lr(LR0, kind, RATE, 5, 12, every=4)[0] == pytest.approx(hand[kind], rel=1e-14)


def test_decayed_lr_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown decay"):
        decayed_lr(LR0, "linear", RATE, 0, 10)


@pytest.mark.parametrize("kind", ["inverse_time", "exponential", "step", "cosine"])
def test_trainer_uses_decayed_lr_each_epoch(kind: str) -> None:
    epochs, every = 5, 2
    cfg = TrainConfig(optimizer="sgd", decay=kind, decay_every=every, epochs=epochs, batch_size=40)
    values = [{"learning_rate": lr, "lr_decay": r} for lr, r in zip(LR0, RATE, strict=True)]
    t = trainer(cfg, values, arch=Architecture(n_in=N_IN, n_out=C, hidden=(4,)))
    t.fit(X, Y)
    for k in range(2):
        got = t.histories[k].curve("lr")
        want = [formula(kind, e, epochs, every)[k] for e in range(epochs)]
        np.testing.assert_allclose(got, want, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Changing hyperparameters while training
# ---------------------------------------------------------------------------------------------


def sgd_expected(t: Trainer, xb: np.ndarray, yb: np.ndarray, lr: np.ndarray) -> dict[str, np.ndarray]:
    """Parameters after one plain SGD step with learning rates ``lr`` (K,), computed independently."""
    params = {n: a.copy() for n, a in t.params.items()}
    logits, caches, _ = forward(t.arch, params, t.state, xb, train=True, bn_momentum=t.hp["bn_momentum"])
    grads = backward(t.arch, params, caches, softmax_cross_entropy(logits, yb)[1])
    return {n: p - lr.reshape(-1, 1, 1) * grads[n] for n, p in params.items()}


def test_set_hyperparameter_takes_effect_next_step() -> None:
    cfg = TrainConfig(optimizer="sgd", learning_rate=0.1, batch_size=30)
    t = trainer(cfg, [{}, {}, {}])
    xb, yb = X[:30], Y[:30]
    t.train_step(xb, yb)
    t.set_hyperparameter("learning_rate", 0.5, members=[1])
    np.testing.assert_array_equal(t.lr, [0.1, 0.5, 0.1])
    want = sgd_expected(t, X[30:60], Y[30:60], np.array([0.1, 0.5, 0.1]))
    t.train_step(X[30:60], Y[30:60])
    for n, a in want.items():
        np.testing.assert_allclose(t.params[n], a, rtol=1e-12, atol=1e-14, err_msg=n)
    t.set_hyperparameter("learning_rate", 0.01)  # every member
    want = sgd_expected(t, xb, yb, np.full(3, 0.01))
    t.train_step(xb, yb)
    for n, a in want.items():
        np.testing.assert_allclose(t.params[n], a, rtol=1e-12, atol=1e-14, err_msg=n)


def test_set_hyperparameter_respects_decay_and_refuses_static_fields() -> None:
    cfg = TrainConfig(optimizer="sgd", decay="inverse_time", lr_decay=0.5, epochs=4, batch_size=60)
    t = trainer(cfg, [{}, {}])
    t.train_epoch(X, Y)
    t.end_epoch()
    t.set_hyperparameter("learning_rate", 0.3)
    np.testing.assert_allclose(t.lr, [0.3 / 1.5, 0.3 / 1.5])
    with pytest.raises(ValueError, match="cannot change during training"):
        t.set_hyperparameter("batch_size", 8)
    with pytest.raises(ValueError, match="not training"):
        t.set_hyperparameter("l2", 0.1, members=[7])


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def continuation(t: Trainer, epochs: int) -> tuple[dict[str, np.ndarray], list[list[dict]]]:
    for _ in range(epochs):
        t.train_epoch(X, Y)
        t.end_epoch(X[:40], Y[:40])
    return {n: a.copy() for n, a in t.params.items()}, [[dict(r) for r in h.rows] for h in t.histories]


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_checkpoint_restore_reproduces_continuation(optimizer: str, dropout: float) -> None:
    cfg = TrainConfig(optimizer=optimizer, learning_rate=1e-2, batch_size=32, epochs=10)
    t = trainer(cfg, [{}, {"learning_rate": 3e-3}], dropout=dropout)
    continuation(t, 2)
    ckpt = t.checkpoint()
    p1, h1 = continuation(t, 2)
    t.restore(ckpt)
    assert t.epoch == 2 and all(len(h.rows) == 2 for h in t.histories)
    p2, h2 = continuation(t, 2)
    assert h1 == h2, "curves after restore differ from the first continuation (member rngs not restored?)"
    for n in p1:
        np.testing.assert_array_equal(p1[n], p2[n], err_msg=f"{n}: restore did not reproduce the run")


def test_restore_rolls_back_the_best_epoch() -> None:
    """After going back to epoch 2, the best epoch must be one of the epochs that remain."""
    cfg = TrainConfig(optimizer="adam", learning_rate=1e-2, batch_size=32, epochs=10)
    t = trainer(cfg, [{}], restore_best=True)
    continuation(t, 2)
    ckpt = t.checkpoint()
    continuation(t, 3)  # the validation loss keeps improving: best epoch moves to 4
    assert t.histories[0].best_epoch == 4
    t.restore(ckpt)
    h = t.histories[0]
    assert h.best_epoch < len(h.rows), f"best_epoch {h.best_epoch} points past the {len(h.rows)} restored rows"
    assert h.best_score == min(r["val_loss"] for r in h.rows)


def test_checkpoint_is_a_deep_copy() -> None:
    t = trainer(TrainConfig(batch_size=40), [{}])
    ckpt = t.checkpoint()
    before = {n: a.copy() for n, a in ckpt.params.items()}
    continuation(t, 1)
    for n, a in ckpt.params.items():
        np.testing.assert_array_equal(a, before[n])


# ---------------------------------------------------------------------------------------------
# Mini-batches, callbacks, dtypes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "batch", "sizes"), [(129, 64, [64, 65]), (65, 64, [65]), (128, 64, [64, 64]), (7, 3, [3, 4]), (5, 8, [5])]
)
def test_last_batch_of_one_joins_the_previous(n: int, batch: int, sizes: list[int]) -> None:
    idx = minibatch_indices(n, batch, np.random.default_rng(0))
    assert [len(i) for i in idx] == sizes
    np.testing.assert_array_equal(np.sort(np.concatenate(idx)), np.arange(n))
    # the trainer with batch norm never sees a batch of one, so it trains without error
    Xn, yn = data(n, seed=n)
    t = trainer(TrainConfig(batch_size=batch), [{}])
    seen = []

    class Spy:
        def on_step_end(self, trainer, loss):
            seen.append(trainer.step)

    t.train_epoch(Xn, yn, callbacks=[Spy()])
    assert t.step == len(sizes) and seen == list(range(1, len(sizes) + 1))
    rows = t.end_epoch()
    assert np.isfinite(rows[0]["train_loss"])


def test_unshuffled_batches_are_in_order() -> None:
    idx = minibatch_indices(10, 4, shuffle=False)
    assert [i.tolist() for i in idx] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_callback_can_stop_the_fit() -> None:
    class StopAfterTwo:
        def on_epoch_end(self, trainer, rows):
            return trainer.epoch >= 2

    t = trainer(TrainConfig(epochs=10, batch_size=60), [{}, {}])
    t.fit(X, Y, callbacks=[StopAfterTwo()])
    assert [len(h.rows) for h in t.histories] == [2, 2]
    assert [h.status for h in t.histories] == ["done", "done"]


def test_float32_is_the_default_and_is_preserved() -> None:
    cfg = TrainConfig(optimizer="adam", l2=1e-3, batch_size=32, epochs=2)
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(8,))
    t = Trainer(arch, cfg, hyperparameters_from([{}, {}], cfg, dropout=0.2), member_ids=[0, 1], seed=0)
    assert t.dtype == np.float32
    t.fit(X.astype(np.float32), Y)
    params, state = t.stacked_kept()
    assert all(a.dtype == np.float32 for a in params.values())
    assert all(a.dtype == np.float32 for a in state.values())
    t2 = Trainer(arch, cfg, hyperparameters_from([{}], cfg), member_ids=[0], seed=0)
    t2.train_epoch(X.astype(np.float32), Y)
    assert all(a.dtype == np.float32 for a in t2.params.values())
    assert t2.logits(X.astype(np.float32)).dtype == np.float32


def test_a_blown_up_loss_kept_finite_by_batch_norm_is_diverged() -> None:
    """A member whose loss is finite but absurd (BN holds it at 1e30) is diverged, the others go on."""
    cfg = TrainConfig(optimizer="sgd", batch_size=32, epochs=3)
    t = trainer(cfg, [{"learning_rate": 1e-2}, {"learning_rate": 1e9}])
    continuation(t, 3)
    statuses = [h.status for h in t.histories]
    assert statuses[1] == "diverged", statuses
    assert t.histories[0].rows and all(np.isfinite(r["train_loss"]) for r in t.histories[0].rows)


# ---------------------------------------------------------------------------------------------
# Slices of the population on threads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_slices_give_the_same_bits_as_one_slice(dtype, engine_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """5 members on 3 threads (uneven slices), with dropout, L2 on some members only and one member
    diverging mid-run (the slices shrink): every number equals the single-slice run's."""
    import caviar.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "SPLIT_MIN_MACS", 0)  # split even these tiny networks
    values = [
        {"learning_rate": 0.05, "l2": 1e-3},
        {"learning_rate": 0.01},
        {"learning_rate": 1e4},
        {"learning_rate": 0.02, "l2": 1e-2},
        {"learning_rate": 0.1},
    ]
    cfg = TrainConfig(optimizer="adam", epochs=4, batch_size=16)
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(10, 8), batchnorm=False)
    runs = []
    for threads in (1, 3):
        t = trainer(cfg, values, arch=arch, dtype=dtype, threads=threads, dropout=0.2, backend=engine_path)
        assert len(t._spans(16)) == threads
        t.fit(X, Y, X[:40], Y[:40])
        runs.append(t)
    one, three = runs
    assert [h.status for h in one.histories] == [h.status for h in three.histories]
    assert "diverged" in [h.status for h in one.histories]
    for h1, h3 in zip(one.histories, three.histories, strict=True):
        assert h1.rows == h3.rows
    (p1, s1), (p3, s3) = one.stacked_kept(), three.stacked_kept()
    for name in p1:
        np.testing.assert_array_equal(p1[name], p3[name], err_msg=name)
    for name in s1:
        np.testing.assert_array_equal(s1[name], s3[name], err_msg=name)


def test_threads_changed_between_epochs_change_no_number(engine_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker hands a population more (or fewer) threads at an epoch end when other populations
    finish (or start): the run equals one that kept its threads throughout."""
    import caviar.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "SPLIT_MIN_MACS", 0)
    values = [{"learning_rate": 0.05, "l2": 1e-3}, {"learning_rate": 0.01}, {"learning_rate": 0.02}, {}]
    cfg = TrainConfig(optimizer="adam", epochs=4, batch_size=16)

    class Alternate:
        def on_epoch_end(self, t: Trainer, rows: dict) -> None:
            t.set_threads(3 if t.threads == 1 else 1)

    steady = trainer(cfg, values, threads=1, dropout=0.1, backend=engine_path)
    steady.fit(X, Y, X[:40], Y[:40])
    moving = trainer(cfg, values, threads=1, dropout=0.1, backend=engine_path)
    moving.fit(X, Y, X[:40], Y[:40], callbacks=[Alternate()])
    assert moving.threads == 1 and len(moving._spans(16)) == 1  # 1, 3, 1, 3 and back to 1
    for h1, h2 in zip(steady.histories, moving.histories, strict=True):
        assert h1.rows == h2.rows
    (p1, _), (p2, _) = steady.stacked_kept(), moving.stacked_kept()
    for name in p1:
        np.testing.assert_array_equal(p1[name], p2[name], err_msg=name)
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            moving.set_threads(bad)  # type: ignore[arg-type]


def test_small_populations_are_not_split() -> None:
    """Handing a slice to a thread costs more than a tiny population's step: one slice then."""
    t = trainer(TrainConfig(epochs=1), [{}] * 4, threads=2)
    assert t._spans(16) == [(0, 4)]
    big = trainer(TrainConfig(epochs=1), [{}] * 4, threads=2, arch=Architecture(n_in=784, n_out=10, hidden=(128, 64)))
    assert big._spans(256) == [(0, 2), (2, 4)]


def test_evaluate_on_threaded_slices_with_labels_per_member(engine_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import caviar.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "SPLIT_MIN_MACS", 0)
    t = trainer(TrainConfig(epochs=1, batch_size=16), [{}] * 4, threads=2, backend=engine_path)
    t.train_epoch(X, Y)  # still training: evaluate sees all 4 members
    assert len(t._spans(len(X))) == 2
    rng = np.random.default_rng(3)
    labels = np.stack([Y, rng.permutation(Y), Y, rng.integers(0, C, len(Y))])  # (K, N): one row per member
    loss, acc = t.evaluate(X, labels)
    logits = t.logits(X)
    want_loss, _ = softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_array_equal(acc, (logits.argmax(-1) == labels).mean(-1))
    for k in range(4):  # each member is judged on its own row, whatever slice it sits in
        shared_loss, shared_acc = t.evaluate(X, labels[k])
        assert (loss[k], acc[k]) == (shared_loss[k], shared_acc[k])
    assert len(set(loss.round(12))) == 4


# ---------------------------------------------------------------------------------------------
# The stepping API and starting points: warm start, replicate, replace members
# ---------------------------------------------------------------------------------------------

ADAM_BN = TrainConfig(optimizer="adam", learning_rate=1e-2, batch_size=32, epochs=10)


def assert_rows_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray], ra: int, rb: int) -> None:
    for n in a:
        np.testing.assert_array_equal(a[n][ra], b[n][rb], err_msg=n)


def test_stepping_api_is_train_epoch_in_parts(engine_path) -> None:
    """begin_epoch + train_next_batch until epoch_done + end_epoch: the same bits as train_epoch + end_epoch."""
    whole = trainer(ADAM_BN, [{}, {"learning_rate": 3e-3}], dropout=0.2, backend=engine_path)
    parts = trainer(ADAM_BN, [{}, {"learning_rate": 3e-3}], dropout=0.2, backend=engine_path)
    for _ in range(2):
        whole.train_epoch(X, Y)
        whole.end_epoch(X[:40], Y[:40])
        assert not parts.in_epoch and parts.epoch_done
        n = parts.begin_epoch(len(Y))
        assert n == 4 and parts.in_epoch and not parts.epoch_done
        for _ in range(n):
            parts.train_next_batch(X, Y)
        assert parts.epoch_done
        parts.end_epoch(X[:40], Y[:40])
    assert [h.rows for h in whole.histories] == [h.rows for h in parts.histories]
    assert_rows_equal(whole.params, parts.params, slice(None), slice(None))
    with pytest.raises(RuntimeError, match="begin_epoch"):
        parts.train_next_batch(X, Y)
    parts.begin_epoch(len(Y))
    for _ in range(4):
        parts.train_next_batch(X, Y)
    with pytest.raises(RuntimeError, match="end_epoch"):
        parts.train_next_batch(X, Y)


def test_restore_mid_epoch_goes_on_at_the_same_batch() -> None:
    t = trainer(ADAM_BN, [{}], dropout=0.3)
    t.begin_epoch(len(Y))
    t.train_next_batch(X, Y)
    ckpt = t.checkpoint()
    first = [t.train_next_batch(X, Y)[0] for _ in range(3)]
    rows = t.end_epoch()
    t.restore(ckpt)
    assert t.in_epoch and t.step == 1
    assert [t.train_next_batch(X, Y)[0] for _ in range(3)] == first
    assert t.end_epoch() == rows


def test_restore_brings_back_curves_of_another_branch() -> None:
    """The checkpoint holds the curves themselves: going back to a later point after an earlier one works."""
    t = trainer(ADAM_BN, [{}])
    continuation(t, 1)
    early = t.checkpoint()
    _, late_rows = continuation(t, 2)
    late = t.checkpoint()
    t.restore(early)
    continuation(t, 1)  # another branch, shorter
    t.restore(late)
    assert [[dict(r) for r in h.rows] for h in t.histories] == late_rows


def test_warm_start_equals_continuing(engine_path) -> None:
    """A fresh trainer (another seed even) warm-started from an epoch-end checkpoint goes on exactly as
    the source does: weights, Adam moments and step, running statistics, dropout streams, data order."""
    values = [{}, {"learning_rate": 3e-3, "l2": 1e-3}]
    source = trainer(ADAM_BN, values, dropout=0.3, backend=engine_path)
    continuation(source, 2)
    ckpt = source.checkpoint()
    params, rows = continuation(source, 2)
    fresh = Trainer(
        source.arch,
        ADAM_BN,
        hyperparameters_from(values, ADAM_BN, dropout=0.3),
        member_ids=[0, 1],
        seed=99,
        dtype=np.float64,
        backend=engine_path,
    )
    fresh.warm_start(ckpt)
    assert (fresh.epoch, fresh.step, fresh.opt_state.step) == (2, ckpt.step, ckpt.opt_state.step)
    assert all(not h.rows for h in fresh.histories)  # its own curves start here
    got_params, got_rows = continuation(fresh, 2)
    assert got_rows == [r[2:] for r in rows]
    for n in params:
        np.testing.assert_array_equal(got_params[n], params[n], err_msg=n)
    for slot in source.opt_state.slots:
        assert_rows_equal(source.opt_state.slots[slot], fresh.opt_state.slots[slot], slice(None), slice(None))
    with pytest.raises(ValueError, match="3 members, this trainer 2"):
        trainer(ADAM_BN, [{}, {}]).warm_start(trainer(ADAM_BN, [{}, {}, {}]).checkpoint())


def test_warm_start_from_mid_epoch_restarts_that_epoch() -> None:
    source = trainer(ADAM_BN, [{}])
    continuation(source, 1)
    source.begin_epoch(len(Y))
    batches = list(source._batches or [])
    source.train_next_batch(X, Y)
    fresh = trainer(ADAM_BN, [{}])
    fresh.warm_start(source.checkpoint())
    assert not fresh.in_epoch and fresh.epoch == 1
    fresh.begin_epoch(len(Y))
    assert [b.tolist() for b in fresh._batches or []] == [b.tolist() for b in batches]


def test_replicate_starts_every_member_from_one_model(engine_path) -> None:
    """K members from one member of a checkpoint: its weights, moments, step, statistics, counters and
    data order; their own hyperparameters and dropout streams. A copy with the source's
    hyperparameters then trains on exactly as the source does."""
    source = trainer(ADAM_BN, [{}, {"learning_rate": 5e-3}], backend=engine_path)
    continuation(source, 2)
    ckpt = source.checkpoint()
    values = [{"learning_rate": 1e-3}, {"learning_rate": 5e-3}, {"learning_rate": 5e-2}]
    pop = trainer(ADAM_BN, values, ids=[10, 11, 12], backend=engine_path)
    pop.replicate(ckpt, member=1)
    for k in range(3):
        assert_rows_equal(pop.params, ckpt.params, k, 1)
        assert_rows_equal(pop.state, ckpt.state, k, 1)
        for slot in ckpt.opt_state.slots:
            assert_rows_equal(pop.opt_state.slots[slot], ckpt.opt_state.slots[slot], k, 1)
    assert (pop.epoch, pop.step, pop.opt_state.step) == (2, ckpt.step, ckpt.opt_state.step)
    np.testing.assert_array_equal(pop.hp["learning_rate"], [1e-3, 5e-3, 5e-2])
    states = [r.bit_generator.state["state"]["state"] for r in pop.rngs]
    assert len(set(states)) == 3  # each member keeps its own stream
    source_params, _ = continuation(source, 1)
    pop_params, _ = continuation(pop, 1)
    assert_rows_equal(pop_params, source_params, 1, 1)  # the copy with the source's values goes on as it
    assert not np.array_equal(pop_params["out.W"][0], pop_params["out.W"][2])
    with pytest.raises(ValueError, match="member 5 was not training"):
        pop.replicate(ckpt, member=5)


@pytest.mark.parametrize("optimizer", ["adam", "momentum", "rmsprop"])
def test_replace_members_makes_an_exact_copy(optimizer: str, engine_path) -> None:
    """Member 2 becomes member 0: weights, optimizer moments (and the shared step), batch-norm running
    statistics, dropout stream, hyperparameters; a step of both then gives identical bits."""
    cfg = TrainConfig(optimizer=optimizer, learning_rate=1e-2, batch_size=32, epochs=10)
    values = [{"learning_rate": 1e-2, "bn_momentum": 0.2}, {}, {"learning_rate": 3e-2, "l2": 1e-2}]
    t = trainer(cfg, values, dropout=0.3, backend=engine_path)
    continuation(t, 2)
    assert not np.array_equal(t.params["out.W"][0], t.params["out.W"][2])
    row_before = [dict(r) for r in t.histories[2].rows]
    member1 = {n: a[1].copy() for n, a in t.params.items()}
    t.replace_members([0], [2])
    assert_rows_equal(t.params, t.params, 0, 2)
    assert_rows_equal(t.state, t.state, 0, 2)
    for slot in t.opt_state.slots.values():
        assert_rows_equal(slot, slot, 0, 2)
    assert t.hyperparameters(2) == t.hyperparameters(0) and t.lr[2] == t.lr[0]
    assert t.rngs[2].bit_generator.state == t.rngs[0].bit_generator.state
    assert t.histories[2].rows == row_before and t.histories[2].best_epoch == -1  # its curve, no stale best
    loss, acc = t.train_step(X[:32], Y[:32])
    assert loss[0] == loss[2] and acc[0] == acc[2]
    assert_rows_equal(t.params, t.params, 0, 2)
    assert_rows_equal(t.state, t.state, 0, 2)
    for slot in t.opt_state.slots.values():
        assert_rows_equal(slot, slot, 0, 2)
    for n, a in member1.items():  # the bystander only took its step
        assert not np.array_equal(t.params[n][1], a) or n.startswith("bn")


def test_replace_members_reads_every_source_first_and_checks_its_input() -> None:
    t = trainer(ADAM_BN, [{"learning_rate": 1e-2}, {"learning_rate": 2e-2}, {"learning_rate": 3e-2}])
    continuation(t, 1)
    before = {n: a.copy() for n, a in t.params.items()}
    t.replace_members([0, 2], [2, 0])  # a swap
    assert_rows_equal(t.params, before, 0, 2)
    assert_rows_equal(t.params, before, 2, 0)
    np.testing.assert_array_equal(t.hp["learning_rate"], [3e-2, 2e-2, 1e-2])
    t.replace_members([1], [0], hyperparameters=False)
    assert t.hp["learning_rate"][0] == 3e-2
    with pytest.raises(ValueError, match="2 sources for 1 targets"):
        t.replace_members([0, 1], [2])
    with pytest.raises(ValueError, match="name a member twice"):
        t.replace_members([0, 1], [2, 2])
    with pytest.raises(ValueError, match="member 9 is not training"):
        t.replace_members([9], [0])


def test_load_weights_starts_from_given_arrays() -> None:
    source = trainer(ADAM_BN, [{}])
    continuation(source, 1)
    params, state = source.member_weights(0)
    t = trainer(ADAM_BN, [{}, {}])
    t.load_weights({n: a[None] for n, a in params.items()}, {n: a[None] for n, a in state.items()})
    for k in range(2):
        for n, a in params.items():
            np.testing.assert_array_equal(t.params[n][k], a)
    assert t.opt_state.step == 0 and t.epoch == 0  # a fresh optimizer
    stacked = {n: a[None] for n, a in params.items()}
    with pytest.raises(ValueError, match=r"parameters: out.W has shape \(1, 3, 3\), the architecture's is \(2, 8, 3\)"):
        t.load_weights({**stacked, "out.W": np.zeros((1, 3, 3))})
    with pytest.raises(ValueError, match="do not match the architecture"):
        t.load_weights({"out.W": stacked["out.W"]})
