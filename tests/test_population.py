"""Population equivalence (float64): K members trained together equal K solo runs.

A member's weights and dropout masks come from its id, the batch order from the seed, and every
hyperparameter is per member, so stacking members must not change any of them: not their weights,
not their curves, not their fate (diverged, stopped early, done) nor the weights they keep.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from caviar.backend import Backend
from caviar.config import TrainConfig
from caviar.nn.losses import softmax_cross_entropy
from caviar.nn.network import Architecture, forward
from caviar.panda import fork as fork_module
from caviar.panda.session import PandaSession
from caviar.train.trainer import Trainer, hyperparameters_from
from caviar.tune import runner
from caviar.tune.runner import TrialOutcome, population_outcomes
from caviar.tune.study import Study, run_study

#: Every test here runs on both engine paths (numba kernels, numpy passes): see conftest.py.
pytestmark = pytest.mark.usefixtures("engine_path")

N_IN, C = 8, 3
IDS = [3, 7, 11, 20]


def blobs(n: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).standard_normal((C, N_IN)) * 1.5
    y = rng.integers(0, C, size=n)
    return centers[y] + noise * rng.standard_normal((n, N_IN)), y


X, Y = blobs(150, 0)
X_VAL, Y_VAL = blobs(60, 1)


def population(arch, cfg, values, ids, backend: Backend, seed=5, **kw) -> Trainer:
    hp = hyperparameters_from(values, cfg, dropout=0.0)
    return Trainer(arch, cfg, hp, member_ids=ids, seed=seed, dtype=np.float64, backend=backend, **kw)


def solo_runs(arch, cfg, values, ids, backend: Backend, epochs=None, val=True):
    out = []
    for v, m in zip(values, ids, strict=True):
        t = population(arch, cfg, [v], [m], backend)
        t.fit(X, Y, X_VAL if val else None, Y_VAL if val else None, epochs=epochs)
        out.append(t)
    return out


def assert_same_member(pop: Trainer, k: int, solo: Trainer, tol: float = 1e-10) -> None:
    hp, hs = pop.histories[k], solo.histories[0]
    assert hp.member_id == hs.member_id
    assert (hp.status, hp.best_epoch, hp.stopped_epoch) == (hs.status, hs.best_epoch, hs.stopped_epoch)
    assert len(hp.rows) == len(hs.rows)
    for rp, rs in zip(hp.rows, hs.rows, strict=True):
        assert rp.keys() == rs.keys()
        for key in rp:
            np.testing.assert_allclose(rp[key], rs[key], rtol=tol, atol=tol, err_msg=key)
    for part in (0, 1):  # params, state
        kp, ks = pop.kept[k][part], solo.kept[0][part]
        assert kp.keys() == ks.keys()
        for name in kp:
            np.testing.assert_allclose(kp[name], ks[name], rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_population_equals_solo_runs(optimizer: str, engine_path: Backend) -> None:
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(16, 12), activation="relu", batchnorm=True)
    cfg = TrainConfig(optimizer=optimizer, batch_size=32, epochs=6, decay="inverse_time")
    values = [
        {
            "learning_rate": 1e-2,
            "beta1": 0.9,
            "beta2": 0.999,
            "momentum": 0.9,
            "l2": 0.0,
            "dropout": 0.0,
            "lr_decay": 0.1,
        },
        {
            "learning_rate": 3e-3,
            "beta1": 0.8,
            "beta2": 0.99,
            "momentum": 0.5,
            "l2": 1e-3,
            "dropout": 0.2,
            "lr_decay": 0.0,
        },
        {
            "learning_rate": 2e-2,
            "beta1": 0.95,
            "beta2": 0.9999,
            "momentum": 0.95,
            "l2": 1e-2,
            "dropout": 0.5,
            "bn_momentum": 0.3,
        },
        {
            "learning_rate": 1e-3,
            "beta1": 0.5,
            "beta2": 0.9,
            "momentum": 0.0,
            "l2": 1e-4,
            "dropout": 0.1,
            "epsilon": 1e-6,
        },
    ]
    pop = population(arch, cfg, values, IDS, engine_path)
    pop.fit(X, Y, X_VAL, Y_VAL)
    solos = solo_runs(arch, cfg, values, IDS, engine_path)
    for k, solo in enumerate(solos):
        assert_same_member(pop, k, solo)
    params, state = pop.stacked_kept()
    assert params["dense0.W"].shape == (4, N_IN, 16)
    for k, solo in enumerate(solos):
        np.testing.assert_allclose(params["out.W"][k], solo.kept[0][0]["out.W"], rtol=1e-10, atol=1e-12)
    # the members really differ (different ids and hyperparameters)
    assert not np.allclose(params["out.W"][0], params["out.W"][1])


def test_member_randomness_comes_from_its_id(engine_path: Backend) -> None:
    """The same id gives the same initial weights whatever its position or its neighbours."""
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(5,))
    cfg = TrainConfig()
    a = population(arch, cfg, [{}] * 3, [1, 2, 3], engine_path)
    b = population(arch, cfg, [{}] * 2, [3, 9], engine_path)
    np.testing.assert_array_equal(a.params["dense0.W"][2], b.params["dense0.W"][0])
    assert not np.array_equal(a.params["dense0.W"][0], a.params["dense0.W"][1])


def test_diverged_member_is_masked_out(engine_path: Backend) -> None:
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(16,), activation="relu", batchnorm=False)
    cfg = TrainConfig(optimizer="sgd", batch_size=25, epochs=5)
    values = [{"learning_rate": 0.05}, {"learning_rate": 1e6}, {"learning_rate": 0.1}]
    ids = [0, 1, 2]
    pop = population(arch, cfg, values, ids, engine_path)
    with np.errstate(all="ignore"):
        pop.fit(X, Y, X_VAL, Y_VAL)
        solos = solo_runs(arch, cfg, values, ids, engine_path)
    bad = pop.histories[1]
    assert bad.status == "diverged"
    assert bad.stopped_epoch is not None and bad.stopped_epoch < cfg.epochs
    assert solos[1].histories[0].status == "diverged"
    for k in (0, 2):
        assert pop.histories[k].status == "done"
        assert len(pop.histories[k].rows) == cfg.epochs
        assert all(np.all(np.isfinite(a)) for a in pop.kept[k][0].values())
        assert_same_member(pop, k, solos[k])
    assert pop.K == 0 and sorted(pop.kept) == [0, 1, 2]


def test_divergence_mid_epoch_compacts_the_population(engine_path: Backend) -> None:
    """The diverging member leaves at the step it goes non-finite; the rest keep training that epoch."""
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(16,), activation="relu", batchnorm=False)
    cfg = TrainConfig(optimizer="sgd", batch_size=10, epochs=1)
    pop = population(arch, cfg, [{"learning_rate": 1e100}, {"learning_rate": 0.05}], [0, 1], engine_path)
    with np.errstate(all="ignore"):
        pop.train_epoch(X, Y)  # 15 steps; lr 1e100 overflows within 3
    assert pop.K == 1 and list(pop.active) == [1]
    assert pop.histories[0].status == "diverged"
    assert pop.params["out.W"].shape[0] == 1 and pop.opt_state.step == pop.step
    rows = pop.end_epoch(X_VAL, Y_VAL)
    assert list(rows) == [1] and np.isfinite(rows[1]["train_loss"])


def test_early_stopping_restores_best_weights(engine_path: Backend) -> None:
    # noisy labels, a big network and a large learning rate: the validation loss turns up quickly
    rng = np.random.default_rng(3)
    Xn, Yn = blobs(60, 4, noise=2.5)
    Yn = np.where(rng.random(60) < 0.3, rng.integers(0, C, 60), Yn)
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(64, 64), activation="relu", batchnorm=True)
    cfg = TrainConfig(optimizer="adam", learning_rate=2e-2, batch_size=20, epochs=60, early_stopping=True, patience=3)
    values = [{"learning_rate": 2e-2}, {"learning_rate": 2e-4}]
    pop = population(arch, cfg, values, [0, 1], engine_path)
    pop.fit(Xn, Yn, X_VAL, Y_VAL)
    h = pop.histories[0]
    assert h.status == "stopped"
    val = h.curve("val_loss")
    assert h.best_epoch == int(np.argmin(val))
    assert len(h.rows) == h.best_epoch + 1 + cfg.patience
    assert h.best_row()["val_loss"] == val.min()
    # kept weights = the best epoch's: replay the member alone for best_epoch + 1 epochs
    replay = population(arch, TrainConfig(**{**cfg.__dict__, "early_stopping": False}), [values[0]], [0], engine_path)
    replay.fit(Xn, Yn, epochs=h.best_epoch + 1)
    kept_params, kept_state = pop.stacked_kept()
    for name, a in replay.kept[0][0].items():
        np.testing.assert_allclose(kept_params[name][0], a, rtol=1e-10, atol=1e-12, err_msg=name)
    for name, a in replay.kept[0][1].items():
        np.testing.assert_allclose(kept_state[name][0], a, rtol=1e-10, atol=1e-12, err_msg=name)
    # the slow member was not disturbed by its neighbour leaving: same as alone
    solo = population(arch, cfg, [values[1]], [1], engine_path)
    solo.fit(Xn, Yn, X_VAL, Y_VAL)
    assert_same_member(pop, 1, solo)


def test_stacked_kept_needs_finish(engine_path: Backend) -> None:
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(4,))
    pop = population(arch, TrainConfig(batch_size=50), [{}, {}], [0, 1], engine_path)
    with pytest.raises(RuntimeError, match="finish"):
        pop.stacked_kept()
    pop.train_epoch(X, Y)
    pop.end_epoch()
    pop.finish()
    params, _ = pop.stacked_kept()
    assert params["out.W"].shape == (2, 4, C)
    assert [h.status for h in pop.histories] == ["done", "done"]


# ---------------------------------------------------------------------------------------------
# A population's outcomes: one function for the study's runner and panda's fork
# ---------------------------------------------------------------------------------------------


def test_population_outcomes_reads_the_fate_of_each_member(engine_path: Backend) -> None:
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(16,), activation="relu", batchnorm=False)
    cfg = TrainConfig(optimizer="sgd", batch_size=25, epochs=4)
    values = [{"learning_rate": 0.05}, {"learning_rate": 1e6}, {"learning_rate": 0.1}]
    pop = population(arch, cfg, values, [0, 1, 2], engine_path)
    with np.errstate(all="ignore"):
        pop.fit(X, Y, X_VAL, Y_VAL)
    X_test, y_test = blobs(40, 2)
    data = SimpleNamespace(X_test=X_test, y_test=y_test, is_regression=False)  # what population_outcomes reads
    outcomes = population_outcomes(pop, [7, 8, 9], data, "val_loss", extra_metrics={"note": 1})  # type: ignore[arg-type]
    params, state = pop.stacked_kept()
    assert [o.number for o in outcomes] == [7, 8, 9]
    assert [o.state for o in outcomes] == ["COMPLETE", "DIVERGED", "COMPLETE"]
    for k, o in enumerate(outcomes):
        h = pop.histories[k]
        assert o.curve == h.rows and o.metrics["status"] == h.status and o.metrics["note"] == 1
        assert o.metrics["epochs_run"] == len(h.rows) and o.metrics["best_epoch"] == h.best_epoch
        for n in params:
            np.testing.assert_array_equal(o.params[n], params[n][k])
        if o.state == "COMPLETE":
            assert o.metrics["val_loss"] == h.best_row()["val_loss"] and o.objective == -o.metrics["val_loss"]
            member = {n: a[k : k + 1] for n, a in params.items()}
            logits, _, _ = forward(arch, member, {}, X_test, train=False, backend=engine_path)
            assert o.metrics["test_loss"] == pytest.approx(float(softmax_cross_entropy(logits, y_test)[0][0]))
            assert o.metrics["test_accuracy"] == float((logits[0].argmax(-1) == y_test).mean())
    assert outcomes[1].objective is None


def test_runner_and_fork_both_end_their_populations_in_population_outcomes(tmp_path, monkeypatch) -> None:
    """A study's worker (train_population) and panda's warm fork store exactly what population_outcomes says."""
    calls: list[tuple[list[int], dict | None, list[TrialOutcome]]] = []
    real = runner.population_outcomes

    def spy(trainer, numbers, data, metric, extra_metrics=None):
        out = real(trainer, numbers, data, metric, extra_metrics)
        calls.append((list(numbers), extra_metrics, out))
        return out

    assert fork_module.population_outcomes is real  # the fork's is the runner's function itself
    monkeypatch.setattr(runner, "population_outcomes", spy)
    monkeypatch.setattr(fork_module, "population_outcomes", spy)
    spec = {
        "study": {"name": "outcomes", "seed": 3},
        "data": {"dataset": "digits"},
        "model": {"hidden": [16]},
        "training": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 128, "epochs": 2},
        "space": {"learning_rate": {"low": 1e-3, "high": 1e-1, "scale": "log"}},
        "search": {"trials": 3, "storage": f"sqlite:///{tmp_path / 'outcomes.db'}"},
    }
    study = run_study(spec)
    assert len(calls) == 1 and calls[0][1] is None
    stored = {t.number: t for t in study.trials}
    for o in calls[0][2]:
        assert (stored[o.number].state, stored[o.number].metrics) == (o.state, o.metrics)

    spec["study"]["name"] = "outcomes-panda"
    session = PandaSession({k: v for k, v in spec.items() if k != "space"}, epochs=2)
    try:
        session.run_epochs(1)
        session.fork(k=2, epochs=1, params=["learning_rate"]).wait()
        fork = session.forks[0]
        fork.join(120)
        assert fork.status == "done", fork.error
    finally:
        session.close(10)
    assert len(calls) == 2
    numbers, extra, outcomes = calls[1]
    assert numbers == [0, 1] and extra == {"warm_start_step": session.checkpoints[max(session.checkpoints)].step}
    forked = {t.number: t for t in Study(session.storage.url, fork.name).trials}
    for o in outcomes:
        assert (forked[o.number].state, forked[o.number].metrics) == (o.state, o.metrics)
        assert o.metrics["warm_start_step"] == extra["warm_start_step"]
