"""The optimizers' fused loop (numba): one pass per parameter array instead of up to 13 numpy passes.

``optimizer_step_`` applies the same operations, in the same order and the same precision per
element, as ``Optimizer._step`` (PyTorch's order): it matches numpy bit for bit. It releases the GIL
and touches only the rows of the members it is given. ``Optimizer`` calls it only when its backend
is ``Backend.NUMBA`` (``caviar.backend``).
"""

from __future__ import annotations

import numpy as np

from caviar.backend import kernel

OPT_CODES = {"sgd": 0, "momentum": 1, "nesterov": 2, "rmsprop": 3, "adam": 4}


@kernel
def optimizer_step_(code, first, decay, p, g, s1, s2, coef):
    """One optimizer step on (K, n) views, in PyTorch's order of operations per element.

    ``code``: OPT_CODES; ``first``: step 1 (momentum's buffer starts as the gradient);
    ``decay``: add coef[:, 1] * p (L2) to the gradient (g itself is left as it is).
    s1, s2: the slots (momentum / nesterov buf; rmsprop sq; adam m, v); unused ones: any array.
    ``coef`` (K, 8) in p's dtype, one row per member: lr (Adam: lr / (1 - beta1^t)), l2, then
    the columns ``COEF_COLUMNS`` names for the kind.
    """
    K, n = p.shape
    for k in range(K):
        lr = coef[k, 0]
        l2 = coef[k, 1]
        a, b, c, d, e, f = coef[k, 2], coef[k, 3], coef[k, 4], coef[k, 5], coef[k, 6], coef[k, 7]
        if code == 0:
            for i in range(n):
                gi = g[k, i] + l2 * p[k, i] if decay else g[k, i]
                p[k, i] = p[k, i] - lr * gi
        elif code == 1 or code == 2:
            for i in range(n):
                gi = g[k, i] + l2 * p[k, i] if decay else g[k, i]
                buf = gi if first else s1[k, i] * a + gi
                s1[k, i] = buf
                p[k, i] = p[k, i] - ((a * buf + gi) if code == 2 else buf) * lr
        elif code == 3:
            for i in range(n):
                gi = g[k, i] + l2 * p[k, i] if decay else g[k, i]
                sq = s1[k, i] * a + (b * gi) * gi
                s1[k, i] = sq
                p[k, i] = p[k, i] - (lr * gi) / (np.sqrt(sq) + c)
        else:
            for i in range(n):
                gi = g[k, i] + l2 * p[k, i] if decay else g[k, i]
                m = s1[k, i] * a + c * gi
                v = s2[k, i] * b + (d * gi) * gi
                s1[k, i] = m
                s2[k, i] = v
                p[k, i] = p[k, i] - (lr * m) / (np.sqrt(v) / e + f)


#: The columns of ``optimizer_step_``'s coefficients after lr (Adam: lr / (1 - beta1^t)) and l2.
COEF_COLUMNS = {
    "sgd": (),
    "momentum": ("momentum",),
    "nesterov": ("momentum",),
    "rmsprop": ("rho", "1-rho", "epsilon"),
    "adam": ("beta1", "beta2", "1-beta1", "1-beta2", "sqrt_bc2", "epsilon"),
}
