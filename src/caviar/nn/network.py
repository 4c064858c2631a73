"""A multilayer perceptron for a population of K members: parameters, forward and backward.

Layer i (from 0) is ``dense{i}`` then, with batch norm, ``bn{i}`` (and no dense bias: BN's beta
replaces it), then the activation and inverted dropout; the output layer ``out`` feeds the softmax.
Parameters and running statistics are flat dicts named ``layer.array`` (the model file's names)
whose arrays carry the population axis first.

Speed: the forward and backward passes work in place on the arrays they create themselves (never
on their inputs), and ``backward`` can write the gradients into preallocated arrays (``out=``), so a
training step allocates little and runs few passes over memory. With numba, batch norm (or the
dense bias) and the activation run as one fused kernel each way (``caviar.nn.kernels``) when the
caller's backend says so (``backend=Backend.NUMBA``; the default is the numpy passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from caviar.backend import Backend
from caviar.nn import kernels, layers, ragged, weighted
from caviar.nn.init import init_weight

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Architecture:
    """The static shape shared by every member of a population."""

    n_in: int
    n_out: int
    hidden: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    batchnorm: bool = True

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.n_in, *self.hidden, self.n_out)


def init_params(
    arch: Architecture, rngs: list[np.random.Generator], dtype: np.dtype | type = np.float32
) -> tuple[Arrays, Arrays]:
    """Initial (params, state) for one member per generator, stacked on axis 0."""
    K = len(rngs)
    params: Arrays = {}
    state: Arrays = {}
    w = arch.widths
    for i, (n_in, n_out) in enumerate(zip(w[:-2], w[1:-1], strict=True)):
        params[f"dense{i}.W"] = np.stack([init_weight(n_in, n_out, arch.activation, r) for r in rngs]).astype(dtype)
        if arch.batchnorm:
            params[f"bn{i}.gamma"] = np.ones((K, 1, n_out), dtype)
            params[f"bn{i}.beta"] = np.zeros((K, 1, n_out), dtype)
            state[f"bn{i}.running_mean"] = np.zeros((K, 1, n_out), dtype)
            state[f"bn{i}.running_var"] = np.ones((K, 1, n_out), dtype)
        else:
            params[f"dense{i}.b"] = np.zeros((K, 1, n_out), dtype)
    # The softmax layer is linear: Xavier suits it whatever the hidden activation.
    params["out.W"] = np.stack([init_weight(w[-2], w[-1], "tanh", r) for r in rngs]).astype(dtype)
    params["out.b"] = np.zeros((K, 1, w[-1]), dtype)
    return params, state


def weight_names(params: Arrays) -> list[str]:
    """The arrays L2 weight decay applies to: the dense weights, not biases or BN vectors."""
    return [name for name in params if name.endswith(".W")]


def forward(
    arch: Architecture,
    params: Arrays,
    state: Arrays,
    x: np.ndarray,
    *,
    train: bool,
    bn_momentum: np.ndarray | None = None,
    dropout: np.ndarray | None = None,
    rngs: list[np.random.Generator] | None = None,
    backend: Backend = Backend.NUMPY,
    member_hidden: list[tuple[int, ...]] | None = None,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, list, Arrays]:
    """Logits (K, B, C), the cache backward needs, and the new running statistics.

    In training, batch norm uses the batch's statistics and the running averages move by
    ``bn_momentum`` (K,); dropout draws masks for members whose rate (K,) is positive.
    In evaluation, running statistics are used, dropout is off, and state is returned unchanged.
    ``backend``: the fused kernels or the numpy passes (same caches; values agree to rounding).
    ``member_hidden``: each member's own widths when the population is padded (``caviar.nn.padding``):
    the matmuls run at those widths (``caviar.nn.ragged``) and dropout draws its masks at them.
    ``sample_weight`` (B,): in training, batch norm's statistics are weighted (``caviar.nn.weighted``).
    """
    K = params["out.W"].shape[0]
    if train and arch.batchnorm and bn_momentum is None:
        raise ValueError("forward: training with batch norm needs bn_momentum (K,)")
    if train and dropout is not None and rngs is None:
        raise ValueError("forward: dropout needs rngs, one generator per member")
    fused = backend.fused  # bias or batch norm, and the activation, in one kernel
    new_state = dict(state)
    caches: list[Any] = []
    spans = None if member_hidden is None else ragged.layer_spans(arch.n_in, arch.n_out, member_hidden)
    a = x
    for i in range(len(arch.hidden)):
        W = params[f"dense{i}.W"]
        bias = None if arch.batchnorm else params[f"dense{i}.b"]
        if spans is None:
            z = layers.dense_forward(a, W, None if fused else bias)
        else:
            z = ragged.dense_forward(a, W, None if fused else bias, spans[i])
        bn_cache: Any = None
        if fused and bias is not None:
            z = kernels.bias_activation_forward_(z, bias, arch.activation)
        elif arch.batchnorm:
            gamma, beta = params[f"bn{i}.gamma"], params[f"bn{i}.beta"]
            rm, rv = f"bn{i}.running_mean", f"bn{i}.running_var"
            if train and sample_weight is not None:
                z, bn_cache, mu_w, var_w = weighted.batchnorm_forward_weighted(
                    z, gamma, beta, sample_weight, layers.BN_EPS
                )
                if mu_w is not None and var_w is not None:
                    m = np.asarray(bn_momentum, dtype=z.dtype).reshape(K, 1, 1)
                    new_state[rm] = layers.update_running(state[rm], mu_w, m)
                    new_state[rv] = layers.update_running(state[rv], var_w, m)
                if fused:  # the kernels would have applied the activation: the numpy pass does here
                    z = layers.activation_forward_(z, arch.activation)
            elif train and fused:
                # z is ours (fresh from the matmul): it becomes z - mu, kept for backward
                z, bn_cache, new_state[rm], new_state[rv] = kernels.batchnorm_activation_forward_(
                    z, gamma, beta, layers.BN_EPS, arch.activation, state[rm], state[rv], cast(np.ndarray, bn_momentum)
                )
            elif train:
                z, bn_cache, mu, var_unbiased = layers.batchnorm_forward_(z, gamma, beta)
                m = np.asarray(bn_momentum, dtype=z.dtype).reshape(K, 1, 1)
                new_state[rm] = layers.update_running(state[rm], mu, m)
                new_state[rv] = layers.update_running(state[rv], var_unbiased, m)
            elif fused:
                z = kernels.batchnorm_activation_eval_(
                    z, gamma, beta, state[rm], state[rv], layers.BN_EPS, arch.activation
                )
            else:
                z = layers.batchnorm_eval(z, gamma, beta, state[rm], state[rv])
        # the activation overwrites its input: backward needs only the output (see activation_backward_)
        h = z if fused else layers.activation_forward_(z, arch.activation)
        mask = None
        if train and dropout is not None:
            widths = None if member_hidden is None else np.array([hid[i] for hid in member_hidden])
            mask = layers.dropout_mask(h.shape[1:], dropout, cast(list, rngs), h.dtype, widths)
        out = h * mask if mask is not None else h
        caches.append((a, h, h, bn_cache, mask))
        a = out
    if spans is None:
        logits = layers.dense_forward(a, params["out.W"], params["out.b"])
    else:
        logits = ragged.dense_forward(a, params["out.W"], params["out.b"], spans[-1])
    caches.append(a)
    return logits, caches, new_state


def backward(
    arch: Architecture,
    params: Arrays,
    caches: list,
    dlogits: np.ndarray,
    out: Arrays | None = None,
    backend: Backend = Backend.NUMPY,
    member_hidden: list[tuple[int, ...]] | None = None,
) -> Arrays:
    """Gradients of the loss with respect to every parameter, from dlogits (K, B, C).

    With ``out`` (arrays shaped like ``params``, e.g. the views of a flat gradient buffer) the
    gradients are written into it and it is returned. ``backend`` as in ``forward`` (either
    backend's caches will do); ``member_hidden`` as in ``forward``.
    """
    fused = backend.fused
    grads: dict[str, Any] = {} if out is None else out
    spans = None if member_hidden is None else ragged.layer_spans(arch.n_in, arch.n_out, member_hidden)

    def dense_backward(i: int, *args: Any, **kw: Any) -> tuple:
        if spans is None:
            return layers.dense_backward(*args, **kw)
        return ragged.dense_backward(*args, spans=spans[i], **kw)

    def into(name: str) -> np.ndarray | None:
        return None if out is None else out[name]

    a_last = caches[-1]
    da: Any
    da, grads["out.W"], grads["out.b"] = dense_backward(
        -1, dlogits, a_last, params["out.W"], dW_out=into("out.W"), db_out=into("out.b")
    )
    for i in reversed(range(len(arch.hidden))):
        a_in, _, h, bn_cache, mask = caches[i]
        if mask is not None:
            da *= mask  # da is fresh from the matmul: ours to overwrite
        if isinstance(bn_cache, weighted.WeightedBNCache):  # trained with sample weights, either backend
            dz = layers.activation_backward_(da, h, arch.activation)
            dz, grads[f"bn{i}.gamma"], grads[f"bn{i}.beta"] = weighted.batchnorm_backward_weighted(
                dz, bn_cache, into(f"bn{i}.gamma"), into(f"bn{i}.beta")
            )
        elif arch.batchnorm and fused:
            dz, grads[f"bn{i}.gamma"], grads[f"bn{i}.beta"] = kernels.batchnorm_activation_backward_(
                da, h, bn_cache, arch.activation, into(f"bn{i}.gamma"), into(f"bn{i}.beta")
            )
        elif arch.batchnorm:
            dz = layers.activation_backward_(da, h, arch.activation)
            dz, grads[f"bn{i}.gamma"], grads[f"bn{i}.beta"] = layers.batchnorm_backward_(
                dz, bn_cache, into(f"bn{i}.gamma"), into(f"bn{i}.beta")
            )
        elif fused:
            dz, grads[f"dense{i}.b"] = kernels.activation_bias_backward_(da, h, arch.activation, into(f"dense{i}.b"))
        else:
            dz = layers.activation_backward_(da, h, arch.activation)
        bias_here = not arch.batchnorm and not fused  # the bias's sum, unless a kernel took it
        da, grads[f"dense{i}.W"], db = dense_backward(
            i,
            dz,
            a_in,
            params[f"dense{i}.W"],
            need_dx=i > 0,
            need_db=bias_here,
            dW_out=into(f"dense{i}.W"),
            db_out=into(f"dense{i}.b") if bias_here else None,
        )
        if bias_here:
            grads[f"dense{i}.b"] = db
    return grads
