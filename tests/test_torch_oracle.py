"""PyTorch as the oracle (float64): forward, loss, gradients, batch-norm statistics and optimizers.

A torch network is built from the SAME weights as a K = 1 caviar population: our W is (n_in, n_out)
so torch's Linear weight is W.T; with batch norm the Linear has no bias (BN's beta replaces it) and
BatchNorm1d(F, eps=1e-5, momentum=0.1) follows. Both sides then see the same batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caviar.backend import Backend
from caviar.config import TrainConfig
from caviar.nn.losses import softmax_cross_entropy
from caviar.nn.network import Architecture, backward, forward, init_params, weight_names
from caviar.optim.optimizers import Optimizer
from caviar.train.trainer import Trainer, hyperparameters_from

#: Every test here runs on both engine paths (numba kernels, numpy passes): see conftest.py.
pytestmark = pytest.mark.usefixtures("engine_path")

torch.set_num_threads(1)  # tiny tensors: threads only add contention


@pytest.fixture(autouse=True, scope="module")
def _torch_float64():
    """float64 torch tensors for this module only: the default dtype is process-wide, and other
    modules' torch code (a user's objective in test_objective.py) expects float32."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


N_IN, C, B = 6, 4, 16
ACTS = {
    "relu": torch.nn.ReLU,
    "leaky_relu": lambda: torch.nn.LeakyReLU(0.01),
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}


def build_torch(arch: Architecture, params: dict, state: dict) -> tuple[torch.nn.Sequential, dict]:
    """A torch Sequential holding copies of member 0's arrays; returns it and a name -> torch param map."""
    mods: list[torch.nn.Module] = []
    names: dict[str, torch.nn.Parameter] = {}
    widths = arch.widths
    for i, (n_in, n_out) in enumerate(zip(widths[:-2], widths[1:-1], strict=True)):
        lin = torch.nn.Linear(n_in, n_out, bias=not arch.batchnorm)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(params[f"dense{i}.W"][0].T.copy()))
            names[f"dense{i}.W"] = lin.weight
            if not arch.batchnorm:
                lin.bias.copy_(torch.from_numpy(params[f"dense{i}.b"][0, 0]))
                names[f"dense{i}.b"] = lin.bias
        mods.append(lin)
        if arch.batchnorm:
            bn = torch.nn.BatchNorm1d(n_out, eps=1e-5, momentum=0.1)
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(params[f"bn{i}.gamma"][0, 0]))
                bn.bias.copy_(torch.from_numpy(params[f"bn{i}.beta"][0, 0]))
                bn.running_mean.copy_(torch.from_numpy(state[f"bn{i}.running_mean"][0, 0]))
                bn.running_var.copy_(torch.from_numpy(state[f"bn{i}.running_var"][0, 0]))
            names[f"bn{i}.gamma"], names[f"bn{i}.beta"] = bn.weight, bn.bias
            mods.append(bn)
        mods.append(ACTS[arch.activation]())
    out = torch.nn.Linear(widths[-2], widths[-1])
    with torch.no_grad():
        out.weight.copy_(torch.from_numpy(params["out.W"][0].T.copy()))
        out.bias.copy_(torch.from_numpy(params["out.b"][0, 0]))
    names["out.W"], names["out.b"] = out.weight, out.bias
    mods.append(out)
    return torch.nn.Sequential(*mods), names


def as_ours(name: str, t: torch.Tensor) -> np.ndarray:
    """A torch parameter (or its grad) in caviar's member-0 layout."""
    a = t.detach().numpy()
    return a.T if name.endswith(".W") else a.reshape(1, -1)


def torch_bn_state(model: torch.nn.Sequential) -> dict[str, np.ndarray]:
    bns = [m for m in model if isinstance(m, torch.nn.BatchNorm1d)]
    out = {}
    for i, bn in enumerate(bns):
        out[f"bn{i}.running_mean"] = bn.running_mean.numpy().reshape(1, -1)
        out[f"bn{i}.running_var"] = bn.running_var.numpy().reshape(1, -1)
    return out


def batches(n_steps: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((C, N_IN)) * 2
    out = []
    for _ in range(n_steps):
        y = rng.integers(0, C, size=B)
        out.append((centers[y] + rng.standard_normal((B, N_IN)) * 1.5 + 0.5, y))
    return out


def make(arch: Architecture, seed: int = 3):
    params, state = init_params(arch, [np.random.default_rng(seed)], np.float64)
    rng = np.random.default_rng(seed + 1)
    for name in params:  # nontrivial BN vectors and biases
        if not name.endswith(".W"):
            params[name] += 0.2 * rng.standard_normal(params[name].shape)
    return params, state


def assert_close(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9, err_msg=what)


# ---------------------------------------------------------------------------------------------
# One forward/backward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_forward_loss_gradients_and_running_stats(batchnorm: bool, activation: str, engine_path: Backend) -> None:
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(8, 7), activation=activation, batchnorm=batchnorm)
    params, state = make(arch)
    model, tparams = build_torch(arch, params, state)
    ((x, y),) = batches(1)

    logits, caches, new_state = forward(
        arch, params, state, x, train=True, bn_momentum=np.array([0.1]), backend=engine_path
    )
    loss, dlogits = softmax_cross_entropy(logits, y)
    grads = backward(arch, params, caches, dlogits, backend=engine_path)

    model.train()
    tlogits = model(torch.from_numpy(x))
    tloss = F.cross_entropy(tlogits, torch.from_numpy(y))
    tloss.backward()

    assert_close(logits[0], tlogits.detach().numpy(), "logits")
    assert_close(loss[0], tloss.item(), "loss")
    assert set(grads) == set(tparams)
    for name, p in tparams.items():
        assert_close(grads[name][0], as_ours(name, p.grad), f"grad {name}")
    for name, value in torch_bn_state(model).items():
        assert_close(new_state[name][0], value, name)

    # evaluation mode with the (updated) running statistics
    model.eval()
    with torch.no_grad():
        teval = model(torch.from_numpy(x)).numpy()
    eval_logits, _, same_state = forward(arch, params, new_state, x, train=False, backend=engine_path)
    assert same_state == new_state
    assert_close(eval_logits[0], teval, "eval logits")


@pytest.mark.parametrize("scale", [1.0, 1e2, 1e3, 1e4])
def test_loss_matches_torch_for_huge_logits(scale: float) -> None:
    rng = np.random.default_rng(7)
    logits = rng.uniform(-1, 1, size=(1, 32, 10)) * scale
    logits[0, :4, 3] = scale  # some exact extremes, +-1e4 included
    logits[0, 4:8, 5] = -scale
    y = rng.integers(0, 10, size=32)
    loss, dlogits = softmax_cross_entropy(logits, y)
    t = torch.from_numpy(logits[0].copy()).requires_grad_(True)
    tloss = F.cross_entropy(t, torch.from_numpy(y))
    tloss.backward()
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(loss[0], tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(dlogits[0], t.grad.numpy(), rtol=1e-9, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Twenty optimizer steps
# ---------------------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": (0.1, lambda ps, lr: torch.optim.SGD(ps, lr=lr)),
    "momentum": (0.05, lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9)),
    "nesterov": (0.05, lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True)),
    "rmsprop": (3e-3, lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.99, eps=1e-8)),
    "adam": (3e-3, lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.9, 0.999), eps=1e-8)),
}
STEPS = 20


def torch_run(arch, params, state, kind, l2, data):
    """Train the torch twin for len(data) steps; L2 only on Linear weights (param groups)."""
    model, tparams = build_torch(arch, params, state)
    lr, make_opt = OPTIMIZERS[kind]
    decayed = [p for n, p in tparams.items() if n.endswith(".W")]
    rest = [p for n, p in tparams.items() if not n.endswith(".W")]
    opt = make_opt([{"params": decayed, "weight_decay": l2}, {"params": rest, "weight_decay": 0.0}], lr)
    model.train()
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, tparams, np.array(losses)


def compare_trained(arch, params, state, model, tparams, x_eval, backend: Backend) -> None:
    for name, p in tparams.items():
        assert_close(params[name][0], as_ours(name, p), f"{name} after {STEPS} steps")
    for name, value in torch_bn_state(model).items():
        assert_close(state[name][0], value, f"{name} after {STEPS} steps")
    model.eval()
    with torch.no_grad():
        teval = model(torch.from_numpy(x_eval)).numpy()
    assert_close(forward(arch, params, state, x_eval, train=False, backend=backend)[0][0], teval, "eval logits")


@pytest.mark.parametrize("l2", [0.0, 1e-2])
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize("batchnorm", [True, False])
def test_trainer_steps_match_torch(kind: str, l2: float, batchnorm: bool, engine_path: Backend) -> None:
    """Our side driven by Trainer.train_step (K = 1, float64): the loop itself is pinned."""
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(8, 7), activation="relu", batchnorm=batchnorm)
    lr = OPTIMIZERS[kind][0]
    cfg = TrainConfig(optimizer=kind, learning_rate=lr, l2=l2, batch_size=B)
    hp = hyperparameters_from([{}], cfg)
    trainer = Trainer(arch, cfg, hp, member_ids=[0], seed=0, dtype=np.float64, backend=engine_path)
    assert trainer.backend is engine_path and trainer.optimizer.backend is engine_path
    data = batches(STEPS, seed=1)
    model, tparams, tlosses = torch_run(arch, trainer.params, trainer.state, kind, l2, data)
    losses = np.array([trainer.train_step(x, y)[0][0] for x, y in data])
    np.testing.assert_allclose(losses, tlosses, rtol=1e-6, atol=1e-9)
    compare_trained(arch, trainer.params, trainer.state, model, tparams, data[0][0], engine_path)
    assert trainer.step == STEPS and trainer.opt_state.step == STEPS


@pytest.mark.parametrize("l2", [0.0, 1e-2])
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_optimizer_update_matches_torch(kind: str, l2: float, engine_path: Backend) -> None:
    """Our side driven directly by forward/backward + Optimizer.update."""
    arch = Architecture(n_in=N_IN, n_out=C, hidden=(8,), activation="tanh", batchnorm=True)
    params, state = make(arch, seed=11)
    lr = OPTIMIZERS[kind][0]
    data = batches(STEPS, seed=2)
    model, tparams, _ = torch_run(arch, params, state, kind, l2, data)
    opt = Optimizer(kind, engine_path)
    opt_state = opt.init(params)
    hp = {
        "momentum": np.array([0.9]),
        "rho": np.array([0.99]),
        "epsilon": np.array([1e-8]),
        "beta1": np.array([0.9]),
        "beta2": np.array([0.999]),
    }
    for x, y in data:
        logits, caches, state = forward(
            arch, params, state, x, train=True, bn_momentum=np.array([0.1]), backend=engine_path
        )
        grads = backward(arch, params, caches, softmax_cross_entropy(logits, y)[1], backend=engine_path)
        opt.update(
            params, grads, opt_state, np.array([lr]), hp, l2=np.array([l2]), decayed=frozenset(weight_names(params))
        )
    compare_trained(arch, params, state, model, tparams, data[-1][0], engine_path)


def test_l2_applies_to_weights_only() -> None:
    """One SGD step with l2 and zero gradients shrinks every .W by (1 - lr l2) and nothing else."""
    arch = Architecture(n_in=3, n_out=2, hidden=(4,), batchnorm=False)
    params, _ = make(arch)
    before = {n: a.copy() for n, a in params.items()}
    grads = {n: np.zeros_like(a) for n, a in params.items()}
    Optimizer("sgd").update(
        params,
        grads,
        Optimizer("sgd").init(params),
        np.array([0.5]),
        {},
        l2=np.array([0.1]),
        decayed=frozenset(weight_names(params)),
    )
    assert sorted(weight_names(params)) == ["dense0.W", "out.W"]
    for name, a in params.items():
        factor = 0.95 if name.endswith(".W") else 1.0
        np.testing.assert_allclose(a, before[name] * factor, rtol=1e-15)
