"""Dense layers of a padded population (``caviar.nn.padding``), member by member at their own widths.

A member padded to the population's widths multiplies only its own corner of each array: BLAS then
sees exactly the operands (sizes and values) it sees when the member trains alone, so the sums are
the same bit for bit. (Multiplying the padded arrays whole adds exact zeros, but OpenBLAS's float32
kernels choose their blocking by size and round differently; float64 happened to agree.) Members in
a run of equal widths share one stacked call, so a population ordered by shape costs one call per
shape and layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: (first row, end row, width in, width out) of consecutive members sharing one dense layer's widths
Span = tuple[int, int, int, int]


def layer_spans(n_in: int, n_out: int, member_hidden: Sequence[Sequence[int]]) -> list[list[Span]]:
    """Per dense layer (``dense0``.. then ``out``), runs of consecutive members with equal widths."""
    widths = [(n_in, *(int(w) for w in h), n_out) for h in member_hidden]
    spans: list[list[Span]] = []
    for i in range(len(widths[0]) - 1):
        runs: list[Span] = []
        for k, w in enumerate(widths):
            if runs and runs[-1][2:] == (w[i], w[i + 1]):
                runs[-1] = (runs[-1][0], k + 1, w[i], w[i + 1])
            else:
                runs.append((k, k + 1, w[i], w[i + 1]))
        spans.append(runs)
    return spans


def _rows(x: np.ndarray, k0: int, k1: int, width: int) -> np.ndarray:
    """Members k0..k1 of activations (K, B, F) at their own ``width``; a shared (B, F) input as it is."""
    return x if x.ndim == 2 else x[k0:k1, :, :width]


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, spans: list[Span]) -> np.ndarray:
    """z = x W (+ b) member by member at their own widths (one BLAS call per run), zero on the padding."""
    K, _, n_out = W.shape
    z = np.zeros((K, x.shape[-2], n_out), np.result_type(x, W))
    for k0, k1, wi, wo in spans:
        np.matmul(_rows(x, k0, k1, wi), W[k0:k1, :wi, :wo], out=z[k0:k1, :, :wo])
    if b is not None:
        z += b  # zero on the padding
    return z


def dense_backward(
    dz: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    need_dx: bool = True,
    *,
    spans: list[Span],
    need_db: bool = True,
    dW_out: np.ndarray | None = None,
    db_out: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """(dx, dW, db) as ``caviar.nn.layers.dense_backward``, member by member at their own widths; the
    padded entries of dW and dx are exactly zero."""
    dW = np.empty_like(W) if dW_out is None else dW_out
    dx = np.zeros((W.shape[0], dz.shape[1], W.shape[1]), dz.dtype) if need_dx else None
    for k0, k1, wi, wo in spans:
        xs = _rows(x, k0, k1, wi)
        xt = xs.T if xs.ndim == 2 else xs.transpose(0, 2, 1)
        dzs = dz[k0:k1, :, :wo]
        np.matmul(xt, dzs, out=dW[k0:k1, :wi, :wo])
        dW[k0:k1, wi:, :] = 0
        dW[k0:k1, :wi, wo:] = 0
        if dx is not None:
            np.matmul(dzs, W[k0:k1, :wi, :wo].transpose(0, 2, 1), out=dx[k0:k1, :, :wi])
    db = np.add.reduce(dz, axis=1, keepdims=True, out=db_out) if need_db else None
    return dx, dW, db
