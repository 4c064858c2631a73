"""Objectives the external-objective tests tune, importable by worker processes as ``objectives:<name>``.

``torch_digits`` is a real PyTorch training (a small MLP on 600 scikit-learn digits, 1 thread);
the others are instant functions of their params, so a test's time goes to the machinery it checks.
"""

from __future__ import annotations

import math
import os
import signal
import time
from functools import lru_cache
from typing import Any

from caviar.storage import TrialState

DEADLINE_S = 120.0


def quadratic(trial: Any) -> float:
    """Higher is better; reports three epochs of a made-up accuracy curve."""
    x = trial.params["x"]
    for epoch in range(3):
        trial.report(epoch, val_accuracy=1.0 - (x - 0.3) ** 2 - 0.1 / (epoch + 1), train_loss=(x - 0.3) ** 2)
    return 1.0 - (x - 0.3) ** 2


def barrier_quadratic(trial: Any) -> float:
    """``quadratic``, but each process's first trial waits (polling storage) until two workers run trials,
    so the test knows both worker processes took part."""
    if not getattr(barrier_quadratic, "passed", False):
        deadline = time.monotonic() + DEADLINE_S
        while len({t.worker_id for t in trial.storage.trials(trial.study_id, [TrialState.RUNNING])}) < 2:
            if any(t.worker_id != trial.worker_id for t in trial.storage.trials(trial.study_id, [TrialState.COMPLETE])):
                break  # the other worker already ran one
            assert time.monotonic() < deadline, "the second worker process never claimed a trial"
            time.sleep(0.05)  # polling the storage, not a synchronization by time
        barrier_quadratic.passed = True  # type: ignore[attr-defined]
    return quadratic(trial)


def hang_at(trial: Any) -> float:
    """``quadratic``, except trial ``$CAVIAR_TEST_HANG_AT`` reports one epoch and then never returns."""
    if str(trial.number) == os.environ.get("CAVIAR_TEST_HANG_AT"):
        trial.report(0, val_accuracy=0.0)
        while True:  # killed from outside
            time.sleep(1)
    return quadratic(trial)


def misbehaving(trial: Any) -> Any:
    """Each trial number breaks a rule of the objective API in its own way; number 6 and up behave."""
    n = trial.number
    if n == 0:
        return float("nan")
    if n == 1:
        return None
    if n == 2:
        return "0.9"
    if n == 3:
        raise RuntimeError("CUDA out of memory\nsecond line")
    if n == 4:
        trial.report(1, val_accuracy=0.5)
        trial.report(0, val_accuracy=0.6)
    if n == 5:
        return trial.params["lrr"]
    return quadratic(trial)


@lru_cache(maxsize=1)
def _digits() -> tuple[Any, ...]:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:600]
    X = torch.tensor(X[idx] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[idx], dtype=torch.long)
    return X[:450], y[:450], X[450:], y[450:]


def torch_digits(trial: Any) -> dict[str, float]:
    """A PyTorch MLP trained with Adam (lr and beta2 from the trial), reporting each epoch's curves."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(trial.number)
    X, y, Xv, yv = _digits()
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).float()
    opt = torch.optim.Adam(model.parameters(), lr=trial.params["lr"], betas=(0.9, trial.params["beta2"]))
    loss_fn = torch.nn.CrossEntropyLoss()
    acc = 0.0
    for epoch in range(3):
        model.train()
        for i in range(0, len(y), 64):
            opt.zero_grad()
            loss = loss_fn(model(X[i : i + 64]), y[i : i + 64])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(Xv)
            val_loss = float(loss_fn(out, yv))
            acc = float((out.argmax(1) == yv).float().mean())
            train_loss = float(loss_fn(model(X), y))
        trial.report(epoch, train_loss=train_loss, val_loss=val_loss, val_accuracy=acc)
        if trial.should_stop():
            break
    return {"val_accuracy": acc, "val_loss": val_loss}


def live_lr(trial: Any) -> float:
    """A live trial: each epoch reports the learning rate it used, until a live stop."""
    trial.live(token=os.environ.get("CAVIAR_TEST_TOKEN", "test-token"))
    pace = float(os.environ.get("CAVIAR_TEST_EPOCH_S", "0"))  # an epoch's "training time", for a page to watch
    value = 0.0
    for epoch in range(1_000_000):
        if pace:
            time.sleep(pace)
        lr = trial.hyperparameters["lr"]
        value += lr
        trial.report(epoch, lr=lr, val_accuracy=min(1.0, value), train_loss=1.0 / (1.0 + value))
        if trial.should_stop():
            break
    return math.tanh(value)


def ask_tell_worker(storage: str, study: str, n: int, out: Any) -> None:
    """A process that asks and tells ``n`` trials of a shared study; puts the numbers it told on ``out``."""
    from caviar.tune.asktell import load_study

    s = load_study(study, storage)
    told = []
    for _ in range(n):
        trial = s.ask()
        s.tell(trial, 1.0 - (trial.params["x"] - 0.3) ** 2)
        told.append(trial.number)
    s.close()
    out.put(told)


def live_scaled(trial: Any) -> float:
    """A live trial without a learning rate: each epoch reports the ``step_size`` and ``width`` it read, till a stop."""
    trial.live(token=os.environ.get("CAVIAR_TEST_TOKEN", "test-token"), extra={"width": 8, "activation": "relu"})
    pace = float(os.environ.get("CAVIAR_TEST_EPOCH_S", "0"))
    value = 0.0
    for epoch in range(1_000_000):
        if pace:
            time.sleep(pace)
        hp = trial.hyperparameters
        value += hp["step_size"]
        trial.report(epoch, step_size=hp["step_size"], width=hp["width"], val_accuracy=math.tanh(value))
        if trial.should_stop():
            break
    return math.tanh(value)


def dies_once(trial: Any) -> float:
    """``quadratic``, except that trial 2's first attempt SIGKILLs the process running it (a Ray worker,
    never the test's own process: $CAVIAR_TEST_DRIVER_PID names it)."""
    if (
        trial.number == 2
        and trial.record.attempts == 1
        and str(os.getpid()) != os.environ.get("CAVIAR_TEST_DRIVER_PID")
    ):
        trial.report(0, val_accuracy=0.0)
        os.kill(os.getpid(), signal.SIGKILL)
    return quadratic(trial)
