"""The dry-run preview: the first points, in the user's variables, and their plot on each scale."""

from __future__ import annotations

import numpy as np

from caviar.tune.planning import preview
from caviar.tune.spec import load_spec
from caviar.web.preview import _bin_edges, param_infos, preview_png

SPEC = {
    "data": {"dataset": "iris"},
    "search": {"strategy": "random", "trials": 200, "seed": 1},
    "space": {
        "learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"},
        "beta2": {"low": 0.9, "high": 0.999, "scale": "one_minus_log"},
        "activation": {"choices": ["relu", "tanh"]},
    },
}


def test_preview_rows_are_the_sampler_points_in_user_variables():
    spec = load_spec(SPEC)
    rows = preview(spec, 200)
    assert [r["number"] for r in rows] == list(range(200))
    beta2 = np.array([r["beta2"] for r in rows])
    assert ((beta2 >= 0.9) & (beta2 <= 0.999)).all()
    assert 0.35 < np.mean(beta2 > 0.99) < 0.65  # one-minus-log: half the draws above 0.99
    assert {r["activation"] for r in rows} == {"relu", "tanh"}
    assert preview(spec, 5) == rows[:5]  # the same points, whatever n


def test_bins_are_even_on_each_scale():
    infos = {i.name: i for i in param_infos(load_spec(SPEC).space)}
    lr = _bin_edges(infos["learning_rate"])
    np.testing.assert_allclose(np.diff(np.log10(lr)), np.diff(np.log10(lr))[0])
    b2 = _bin_edges(infos["beta2"])
    np.testing.assert_allclose(np.diff(np.log10(1 - b2)), np.diff(np.log10(1 - b2))[0])
    assert b2[0] == 0.9 and abs(b2[-1] - 0.999) < 1e-12


def test_preview_png_is_written(tmp_path):
    spec = load_spec(SPEC)
    out = preview_png(spec.space, preview(spec, 50), tmp_path / "points.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
