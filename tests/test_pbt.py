"""Population-based training: exploit copies exactly, explore follows each scale's law, PBT beats the best
fixed learning rate where the best rate changes mid-training, its studies resume after SIGKILL with the
same trials, and ``retrain`` replays a member's lineage and schedule to the same weights; panda's fork
draws its members by the same explore law.

Statistical tests use fixed seeds and bounds far outside the sampling noise (as tests/test_samplers.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from caviar.config import TrainConfig
from caviar.errors import SpecError
from caviar.nn.network import Architecture
from caviar.train.trainer import Trainer, hyperparameters_from
from caviar.tune.explore import explore, factor_between, perturb, reach, scaled
from caviar.tune.pbt import ancestry, apply_exploit, pbt_callback, quantile_size
from caviar.tune.planning import load_data, plan_from_record
from caviar.tune.runner import train_population
from caviar.tune.space import Space
from caviar.tune.spec import load_spec
from caviar.tune.study import Study, run_study

CAVIAR = Path(sys.executable).parent / "caviar"
POLL_S = 0.05
DEADLINE_S = 120.0
SPACE = {
    "learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"},
    "beta1": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"},
}


def pbt_spec(db: Path | str, name: str = "pbt", trials: int = 8, epochs: int = 6, **pbt: Any) -> dict[str, Any]:
    return {
        "study": {"name": name, "seed": 3},
        "data": {"dataset": "digits"},
        "model": {"hidden": [16]},
        "training": {"epochs": epochs, "batch_size": 64},
        "search": {"strategy": "pbt", "trials": trials, "storage": str(db), "pbt": {"perturbation_interval": 2, **pbt}},
        "space": SPACE,
    }


# --------------------------------------------------------------------------------------------- exploit
@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_exploit_copies_weights_optimizer_state_and_batch_norm_statistics_exactly(optimizer: str) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(96, 5)).astype(np.float32), rng.integers(0, 3, 96)
    train = TrainConfig(optimizer=optimizer, batch_size=32, epochs=4)
    hp = hyperparameters_from([{"learning_rate": lr} for lr in (1e-3, 3e-3, 1e-2, 3e-2)], train)
    t = Trainer(Architecture(5, 3, (8,), "relu", True), train, hp, [0, 1, 2, 3], seed=0, threads=1)
    t.train_epoch(X, y)
    t.end_epoch()
    new_hp = {"learning_rate": 5e-3, "momentum": 0.8, "beta1": 0.85}
    apply_exploit(t, [2], [0], [new_hp])
    for arrays in (t.params, t.state, *t.opt_state.slots.values()):
        for name, a in arrays.items():
            assert np.array_equal(a[0], a[2]), name
    assert t.hyperparameters(0)["learning_rate"] == 5e-3 and t.hyperparameters(2)["learning_rate"] == 1e-2
    t.set_hyperparameter("learning_rate", 1e-2, [0])
    for name in ("momentum", "beta1"):
        t.set_hyperparameter(name, t.hyperparameters(2)[name], [0])
    t.begin_epoch(len(y))
    t.train_next_batch(X, y)  # the copy and its source step identically: the same weights afterwards
    for name, a in t.params.items():
        assert np.array_equal(a[0], a[2]), name


def test_quantiles_follow_ray_tune() -> None:
    assert [quantile_size(k, 0.25) for k in (1, 2, 3, 4, 8, 9)] == [0, 1, 1, 1, 2, 3]
    assert quantile_size(5, 0.5) == 2 and quantile_size(4, 0.5) == 2


def test_ancestry_follows_copies_back_in_time() -> None:
    lineages = {4: [{"epoch": 4, "parent": 1}], 1: [{"epoch": 2, "parent": 3}], 3: [], 2: [{"epoch": 2, "parent": 0}]}
    assert ancestry(4, lineages) == [1, 3, 4]
    assert ancestry(3, lineages) == [3]


# --------------------------------------------------------------------------------------------- explore
N = 4000


def _space() -> Space:
    return Space.from_dict(
        {
            "learning_rate": {"low": 1e-5, "high": 1.0, "scale": "log"},
            "beta2": {"low": 0.9, "high": 0.9999, "scale": "one_minus_log"},
            "dropout": {"low": 0.0, "high": 0.5},
            "epochs": {"low": 1, "high": 9},
            "activation": ["relu", "tanh", "sigmoid"],
        }
    )


def test_each_scale_moves_by_its_law_and_stays_in_bounds() -> None:
    space = _space()
    assert perturb(space["learning_rate"], 1e-3, 1.2) == pytest.approx(1.2e-3)
    assert perturb(space["learning_rate"], 1e-3, 0.8) == pytest.approx(0.8e-3)
    assert perturb(space["beta2"], 0.99, 1.2) == pytest.approx(1 - 0.012)  # the factor on 1 - beta
    assert scaled(0.99, "one_minus_log", 0.8) == pytest.approx(1 - 0.008)
    assert perturb(space["dropout"], 0.2, 1.2) == pytest.approx(0.3)  # a fifth of the range
    assert perturb(space["dropout"], 0.2, 0.8) == pytest.approx(0.1)
    assert perturb(space["epochs"], 5, 1.2) == 6 and perturb(space["epochs"], 5, 0.8) == 4
    assert (
        perturb(space["activation"], "tanh", 1.2) == "sigmoid" and perturb(space["activation"], "tanh", 0.8) == "relu"
    )
    # clipped to the space at both ends
    assert perturb(space["learning_rate"], 0.95, 1.2) == 1.0 and perturb(space["learning_rate"], 1e-5, 0.8) == 1e-5
    assert perturb(space["beta2"], 0.9, 1.2) == 0.9 and perturb(space["beta2"], 0.9999, 0.8) == 0.9999
    assert perturb(space["dropout"], 0.45, 1.2) == 0.5 and perturb(space["epochs"], 1, 0.8) == 1
    assert perturb(space["activation"], "sigmoid", 1.2) == "sigmoid"


def test_explore_picks_each_factor_evenly_and_resamples_with_its_probability() -> None:
    space = _space()
    start = {"learning_rate": 1e-3, "beta2": 0.99, "dropout": 0.2, "epochs": 5, "activation": "tanh"}
    rng = np.random.default_rng(11)
    draws = [explore(space, start, list(start), rng, (1.2, 0.8), 0.25) for _ in range(N)]
    for name, param in space.params.items():
        values = [d[name] for d in draws]
        ups = sum(v == perturb(param, start[name], 1.2) for v in values)
        downs = sum(v == perturb(param, start[name], 0.8) for v in values)
        resampled = N - ups - downs  # a resample may land on a neighbour too (discrete scales): at most this
        if name in ("learning_rate", "beta2", "dropout"):  # continuous: a resample never lands on a neighbour
            assert stats.binomtest(resampled, N, 0.25).pvalue > 1e-4, name
            assert stats.binomtest(ups, ups + downs, 0.5).pvalue > 1e-4, name
        assert all(
            space[name].to_unit(v) == space[name].to_unit(space[name].from_unit(space[name].to_unit(v)))
            for v in values[:50]
        )
    # a resample is uniform on the scale: its unit coordinates pass a Kolmogorov-Smirnov test
    units = [
        space["learning_rate"].to_unit(explore(space, start, ["learning_rate"], rng, (1.2, 0.8), 1.0)["learning_rate"])
        for _ in range(N)
    ]
    assert stats.kstest(units, "uniform").pvalue > 1e-4
    lows = [d["learning_rate"] for d in draws]
    assert min(lows) >= 1e-5 and max(lows) <= 1.0
    assert all(0.9 <= d["beta2"] <= 0.9999 and 0 <= d["dropout"] <= 0.5 and 1 <= d["epochs"] <= 9 for d in draws)


def test_only_the_named_hyperparameters_move() -> None:
    space = _space()
    start = {"learning_rate": 1e-3, "beta2": 0.99, "dropout": 0.2, "epochs": 5, "activation": "tanh"}
    out = explore(space, start, ["learning_rate"], np.random.default_rng(0))
    assert {k: v for k, v in out.items() if k != "learning_rate"} == {
        k: v for k, v in start.items() if k != "learning_rate"
    }


def test_panda_forks_by_the_explore_law(tmp_path: Path) -> None:
    """A fork's range is explore's moves by the factor and its inverse (tune.explore.reach); its members
    are the centre moved by one factor g each, log g uniform on [-log f, log f] (Kolmogorov-Smirnov)."""
    from caviar.panda.fork import centered_space
    from caviar.panda.session import PandaSession

    wide = Space.from_dict(
        {
            "learning_rate": {"low": 1e-9, "high": 10.0, "scale": "log"},
            "beta1": {"low": 0.0, "high": 0.999999, "scale": "one_minus_log"},
        }
    )
    scales = {"learning_rate": "log", "beta1": "one_minus_log"}
    centre = {"learning_rate": 0.02, "beta1": 0.8}
    for name, entry in centered_space(centre, list(centre), 2.0).items():
        assert entry["scale"] == scales[name]
        ends = {perturb(wide[name], centre[name], 2.0), perturb(wide[name], centre[name], 0.5)}
        assert {entry["low"], entry["high"]} == ends == set(reach(centre[name], scales[name], 2.0))
    assert reach(0.2, "one_minus_log", 2.0)[0] == 0.0  # 1 - beta = 1.6 would be a negative beta: clipped
    spec = {
        "study": {"name": "forked", "seed": 3},
        "data": {"dataset": "digits"},
        "model": {"hidden": [16]},
        "training": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 128, "epochs": 2},
        "search": {"storage": f"sqlite:///{tmp_path / 'panda.db'}"},
    }
    session = PandaSession(spec)
    try:
        session.run_steps(3)
        session.set_hyperparameters(learning_rate=0.02, beta1=0.8)
        session.run_steps(1)
        result = session.fork(k=48, factor=2.0, epochs=1, params=["learning_rate", "beta1"]).wait()
        fork = session.forks[0]
        fork.join(120)
        assert fork.status == "done", fork.error
        trials = Study(session.storage.url, result["study"]).trials
    finally:
        session.close(30)
    assert len(trials) == 48
    for name, scale in scales.items():
        x = np.log([factor_between(centre[name], t.params[name], scale) for t in trials]) / np.log(2.0)
        assert np.all(np.abs(x) <= 1 + 1e-9), name
        assert stats.kstest(x, "uniform", args=(-1, 2)).pvalue > 1e-4, name


# ------------------------------------------------------------------------------- PBT finds a schedule
def test_pbt_finds_a_schedule_that_beats_the_best_fixed_learning_rate(tmp_path: Path) -> None:
    """Plain SGD on a noisy, ill-conditioned softmax regression: a large rate moves fast but stalls at a
    noise floor, a small one is slow, so the best rate must fall during training. PBT (8 members) beats
    the best of a grid of 8 fixed rates in the same budget (8 members x 16 epochs)."""
    rng = np.random.default_rng(0)
    X, w = rng.normal(size=(2000, 40)), rng.normal(size=(40, 4))
    y = np.argmax(X @ w + 1.5 * rng.gumbel(size=(2000, 4)), axis=1)  # label noise
    X *= np.logspace(-1.3, 0.5, 40)  # features on scales 50x apart, not standardized
    np.savez(tmp_path / "noisy.npz", X=X.astype(np.float32), y=y)

    def spec(name: str, strategy: str, **search: Any) -> dict[str, Any]:
        return {
            "study": {"name": name, "seed": 0},
            "data": {"path": str(tmp_path / "noisy.npz"), "standardize": False},
            "model": {"hidden": [], "batchnorm": False},
            "training": {"epochs": 16, "batch_size": 4, "optimizer": "sgd"},
            "search": {
                "strategy": strategy,
                "trials": 8,
                "storage": "sqlite:///:memory:",
                "metric": "val_loss",
                **search,
            },
            "space": {"learning_rate": {"low": 1e-3, "high": 1.0, "scale": "log"}},
        }

    fixed = run_study(spec("fixed", "grid", points_per_axis=8))
    pbt = run_study(
        spec(
            "pbt", "pbt", pbt={"perturbation_interval": 2, "resample_probability": 0, "perturbation_factors": [0.5, 2]}
        )
    )
    best_fixed = max(t.objective for t in fixed.trials if t.objective is not None)
    best = pbt.best_trial
    assert best is not None and best.objective > best_fixed + 0.03  # val loss 0.71 against 0.80
    rates = [e["learning_rate"] for e in best.metrics["schedule"]]
    assert len(rates) >= 2 and rates[-1] < rates[0]  # the schedule it found anneals


# ------------------------------------------------------------------- storage, replay, kill and resume
def test_a_pbt_study_stores_lineage_and_schedule_and_retrain_replays_them(tmp_path: Path) -> None:
    study = run_study(pbt_spec(tmp_path / "s.db"))
    trials = study.trials
    copied = [t for t in trials if t.metrics["lineage"]]
    assert len(copied) >= 2
    curves = study.curves()
    for t in trials:
        schedule, lineage = t.metrics["schedule"], t.metrics["lineage"]
        assert schedule[0]["epoch"] == 0 and [e["epoch"] for e in schedule[1:]] == [e["epoch"] for e in lineage]
        assert all(e["epoch"] % 2 == 0 and 0 < e["epoch"] < 6 for e in lineage)
        rows = curves[t.id]
        for entry in schedule:  # every curve row carries the values it trained with
            later = [e for e in schedule if e["epoch"] <= entry["epoch"]][-1]
            assert rows[entry["epoch"]]["learning_rate"] == later["learning_rate"]
    # the same population trained directly (what the worker does) and each copied member retrained
    spec = study.spec
    plans = [plan_from_record(spec, t) for t in trials]
    pbt = pbt_callback(spec, plans)
    outcomes = train_population(
        plans, load_data(spec), seed=spec.search.seed or 0, metric=spec.search.metric, callbacks=[pbt]
    )
    for t in copied[:2]:
        model = study.retrain(t.number)
        for name, a in model.params_.items():
            assert np.array_equal(a, outcomes[t.number].params[name]), (t.number, name)
        for name, a in model.state_.items():
            assert np.array_equal(a, outcomes[t.number].bn_state[name]), (t.number, name)


def test_pbt_is_deterministic_and_populations_respect_population_size(tmp_path: Path) -> None:
    a = run_study(pbt_spec(tmp_path / "a.db", trials=8, epochs=4, population_size=4))
    b = run_study(pbt_spec(tmp_path / "b.db", trials=8, epochs=4, population_size=4))
    assert Counter(t.group_key for t in a.trials) == {"r0-p0": 4, "r0-p1": 4}
    assert _summary(a) == _summary(b)


def _summary(study: Study) -> list[tuple]:
    curves = study.curves()
    return [(t.number, t.params, t.state, t.objective, t.metrics, curves[t.id]) for t in study.trials]


def _write_toml(path: Path, db: Path) -> Path:
    path.write_text(f"""
[study]
name = "killed"
seed = 1

[data]
dataset = "digits"

[model]
hidden = [64, 32]

[training]
epochs = 8
batch_size = 64

[search]
strategy = "pbt"
trials = 12
storage = "{db}"

[search.pbt]
population_size = 3
perturbation_interval = 2
quantile_fraction = 0.34

[space]
learning_rate = {{ low = 1e-4, high = 3e-2, scale = "log" }}
l2 = {{ low = 1e-6, high = 1e-2, scale = "log" }}
""")
    return path


def _counts(db: Path) -> Counter:
    import sqlite3

    if not db.exists():
        return Counter()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return Counter(dict(conn.execute("SELECT state, COUNT(*) FROM caviar_trials GROUP BY state").fetchall()))
    except sqlite3.OperationalError:
        return Counter()


def test_a_killed_pbt_study_resumes_to_the_same_trials_schedules_and_metrics(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    killed_db = tmp_path / "killed.db"
    spec = _write_toml(tmp_path / "killed.toml", killed_db)
    proc = subprocess.Popen(
        [str(CAVIAR), "tune", str(spec)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:  # freeze it, look, and kill it only with some populations done and one running
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no population completed in time"
            proc.send_signal(signal.SIGSTOP)
            counts = _counts(killed_db)
            if counts["COMPLETE"] >= 1 and counts["RUNNING"] >= 1:
                proc.kill()
                break
            proc.send_signal(signal.SIGCONT)
            time.sleep(POLL_S)  # polling interval, not a synchronization
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert _counts(killed_db)["COMPLETE"] < 12
    done = subprocess.run(
        [str(CAVIAR), "tune", str(spec)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert done.returncode == 0, done.stderr
    clean_db = tmp_path / "clean.db"
    clean = subprocess.run(
        [str(CAVIAR), "tune", str(_write_toml(tmp_path / "killed2.toml", clean_db))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert clean.returncode == 0, clean.stderr
    killed, unkilled = Study(f"sqlite:///{killed_db}", "killed"), Study(f"sqlite:///{clean_db}", "killed")
    assert len(killed.trials) == 12
    assert _summary(killed) == _summary(unkilled)
    assert any(t.metrics["lineage"] for t in killed.trials)


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"space": {"epochs": {"low": 2, "high": 5}}},
            "search.strategy: 'pbt' needs a per-member hyperparameter in [space]",
        ),
        ({"pbt": {"quantile_fraction": 0.6}}, "search.pbt.quantile_fraction: 0.6 should be less than or equal to 0.5"),
        ({"pbt": {"quantile_fraction": 0}}, "search.pbt.quantile_fraction: 0 should be greater than 0"),
        (
            {"pbt": {"perturbation_interval": 6}},
            "search.pbt.perturbation_interval: 6 epochs is not shorter than the training (6 epochs)",
        ),
        (
            {"pbt": {"hyperparam_mutations": ["l2"]}},
            "search.pbt.hyperparam_mutations: 'l2' is not a per-member hyperparameter of [space]",
        ),
        ({"pbt": {"perturbation_factors": [1.0]}}, "search.pbt.perturbation_factors: perturbation factors must be"),
        ({"strategy": "random"}, 'search.pbt: needs search.strategy = "pbt"'),
    ],
)
def test_bad_pbt_input_is_one_clear_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    raw = pbt_spec(tmp_path / "s.db")
    if "space" in change:
        raw["space"] = change["space"]
    if "pbt" in change:
        raw["search"]["pbt"].update(change["pbt"])
    if "strategy" in change:
        raw["search"]["strategy"] = change["strategy"]
    with pytest.raises(SpecError) as info:
        load_spec(raw)
    text = str(info.value)
    assert message in text and "\n" not in text, text
