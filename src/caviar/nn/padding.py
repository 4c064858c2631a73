"""Members of different hidden widths in one population: padded to the widest width per layer, inert.

A population whose members share the depth but not the widths trains as one stacked network of the
widest width per layer. Each member's own weights sit in the top-left corner of every padded array;
the rest (its padded units) is exactly inert:

- initial values: each member is initialized as it would be alone (``init_params`` of its own
  shape, from its own generator), then embedded; weights into and out of padded units, their bias,
  gamma and beta are zero (running statistics start as alone: mean 0, variance 1);
- forward: each dense layer multiplies only the member's own corner (``caviar.nn.ragged``) and
  writes exact zeros on the padding; batch norm of an all-zero column with gamma = beta = 0 gives 0,
  and whatever the activation then gives (0, or 0.5 for the sigmoid) is never read by the next
  layer's corner; dropout draws each member's masks with its own width (the same random stream as
  alone) and zero on its padding;
- backward and update: the matmuls run on each member's own corner (``caviar.nn.ragged``), so the
  padded entries of dW and dx are written as exact zeros, never computed from real values; the
  elementwise kernels work per feature, so a padded column (all zeros in) gives zero gradients for
  gamma, beta and the bias. Every optimizer's moments therefore stay zero there and the weights
  never move off zero (no NaN of a diverging member can reach the padding either); ``pad_masks``
  says where the padding is (tests/test_mixed_packing.py checks it is exactly zero after training).

``cut`` gives a member's arrays back at its own widths (model files, kept weights). With the ragged
matmuls BLAS sees exactly the operands it sees alone, so a member's results are bit for bit its
results alone (tests/test_mixed_packing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from caviar.nn.network import Architecture, Arrays, init_params

Hidden = tuple[int, ...]


def padded_hidden(hiddens: Sequence[Sequence[int]]) -> Hidden:
    """The widest width per layer of members of one depth (a one-line error if depths differ)."""
    depths = {len(h) for h in hiddens}
    if len(depths) != 1:
        raise ValueError(f"padding: members of one population need one depth, got depths {sorted(depths)}")
    return tuple(int(max(ws)) for ws in zip(*hiddens, strict=True))


def _own(arch: Architecture, hidden: Sequence[int]) -> Architecture:
    return Architecture(arch.n_in, arch.n_out, tuple(int(w) for w in hidden), arch.activation, arch.batchnorm)


def _corner(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The index of an own-shaped block in the top-left corner of a padded array."""
    return tuple(slice(0, s) for s in shape)


def _row_corner(k: int, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """The same, in row ``k`` of a stacked array."""
    return (k, *_corner(shape))


def init_padded(
    arch: Architecture, member_hidden: Sequence[Sequence[int]], rngs: list[np.random.Generator], dtype: np.dtype | type
) -> tuple[Arrays, Arrays]:
    """Initial (params, state) at ``arch``'s (padded) widths: member k initialized at its own widths
    from ``rngs[k]`` exactly as alone, embedded in zeros (running variances: ones, as alone)."""
    full_params, full_state = _blank(arch, len(rngs), dtype)
    for k, (hidden, rng) in enumerate(zip(member_hidden, rngs, strict=True)):
        params, state = init_params(_own(arch, hidden), [rng], dtype)
        for name, a in params.items():
            full_params[name][_row_corner(k, a.shape[1:])] = a[0]
        for name, a in state.items():
            full_state[name][_row_corner(k, a.shape[1:])] = a[0]
    return full_params, full_state


def _blank(arch: Architecture, K: int, dtype: np.dtype | type) -> tuple[Arrays, Arrays]:
    """Zero parameters and fresh running statistics (mean 0, variance 1) at ``arch``'s widths."""
    w = arch.widths
    params: Arrays = {}
    state: Arrays = {}
    for i, (n_in, n_out) in enumerate(zip(w[:-2], w[1:-1], strict=True)):
        params[f"dense{i}.W"] = np.zeros((K, n_in, n_out), dtype)
        if arch.batchnorm:
            params[f"bn{i}.gamma"] = np.zeros((K, 1, n_out), dtype)
            params[f"bn{i}.beta"] = np.zeros((K, 1, n_out), dtype)
            state[f"bn{i}.running_mean"] = np.zeros((K, 1, n_out), dtype)
            state[f"bn{i}.running_var"] = np.ones((K, 1, n_out), dtype)
        else:
            params[f"dense{i}.b"] = np.zeros((K, 1, n_out), dtype)
    params["out.W"] = np.zeros((K, w[-2], w[-1]), dtype)
    params["out.b"] = np.zeros((K, 1, w[-1]), dtype)
    return params, state


def own_shapes(arch: Architecture, hidden: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Per-member shapes (no population axis) of every parameter and running statistic at ``hidden``."""
    params, state = _blank(_own(arch, hidden), 1, np.float32)
    return {name: a.shape[1:] for name, a in {**params, **state}.items()}


def pad_masks(arch: Architecture, member_hidden: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Boolean (K, ...) arrays, True on each member's padded entries, for every parameter with any."""
    params, _ = _blank(arch, len(member_hidden), np.float32)
    masks = {name: np.ones(a.shape, bool) for name, a in params.items()}
    for k, hidden in enumerate(member_hidden):
        for name, shape in own_shapes(arch, hidden).items():
            if name in masks:
                masks[name][_row_corner(k, shape)] = False
    return {name: m for name, m in masks.items() if m.any()}


def cut(arch: Architecture, hidden: Sequence[int], arrays: Arrays) -> Arrays:
    """One member's arrays (no population axis) at the padded widths, cut back to its own ``hidden``."""
    shapes = own_shapes(arch, hidden)
    return {name: np.ascontiguousarray(a[_corner(shapes[name])]) for name, a in arrays.items()}
