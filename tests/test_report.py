"""`caviar report`: an HTML page that opens offline and PNG figures, from a tiny real study."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caviar.cli import app
from caviar.tune.study import Study, run_study
from caviar.web.report import PNG_NAMES, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_spec(storage: str) -> dict:
    """Six trials, two coarse-to-fine rounds, log and one-minus-log parameters."""
    return {
        "study": {"name": "rep", "seed": 2},
        "data": {"dataset": "digits"},
        "model": {"hidden": [32]},
        "training": {"epochs": 2, "batch_size": 128},
        "search": {"strategy": "coarse_to_fine", "trials": 6, "rounds": 2, "storage": storage},
        "space": {
            "learning_rate": {"low": 1e-4, "high": 3e-2, "scale": "log"},
            "beta1": {"low": 0.8, "high": 0.999, "scale": "one_minus_log"},
        },
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    db = tmp_path_factory.mktemp("report") / "rep.db"
    return run_study(tiny_spec(str(db)))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, path
    return struct.unpack(">II", head[16:24])


def test_cli_report_writes_offline_html_and_pngs(study: Study, tmp_path: Path) -> None:
    db = study.storage.url.removeprefix("sqlite:///")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", "rep", "--storage", db, "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out / "report.html"
    for name in ("report.html", *PNG_NAMES):
        assert str(out / name) in result.output  # every written path is printed
    text = page.read_text(encoding="utf-8")
    assert 'class="plotly-graph-div"' in text
    for kind in ("history", "slice", "parallel", "boxes", "curves"):
        assert f'id="fig-{kind}"' in text
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", text, re.I)  # nothing from a CDN
    tags = re.findall(r"<script\b[^>]*>", text, re.I)
    assert tags and not any("src" in tag for tag in tags)  # every script is inline
    assert len(text) > 1_000_000  # plotly.js is inlined
    for name in PNG_NAMES:
        path = out / name
        assert path.stat().st_size > 10_000, name
        width, height = png_size(path)
        assert width >= 600 and height >= 400, (name, width, height)


def test_unknown_study_is_one_line_and_nonzero(study: Study, tmp_path: Path) -> None:
    db = study.storage.url.removeprefix("sqlite:///")
    result = CliRunner().invoke(app, ["report", "nope", "--storage", db, "-o", str(tmp_path / "x")])
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no study 'nope'" in lines[0]
    assert not (tmp_path / "x").exists()


def test_missing_storage_is_an_error_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(app, ["report", "rep", "--storage", str(missing), "-o", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "no study storage" in result.output
    assert not missing.exists()


def test_write_report_python_api(study: Study, tmp_path: Path) -> None:
    paths = write_report(study, tmp_path / "api")
    assert [p.name for p in paths] == ["report.html", *PNG_NAMES]
    assert all(p.is_file() for p in paths)


def test_slice_png_uses_one_minus_log_scale(study: Study) -> None:
    """The matplotlib axis of a one-minus-log beta is a function scale with ticks labelled in beta."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from caviar.web.data import load_study
    from caviar.web.report import set_scale

    data = load_study(study)
    fig, ax = plt.subplots()
    set_scale(ax, data.param("beta1"))
    set_scale(ax, data.param("learning_rate"), "y")
    assert ax.get_xscale() == "function"
    assert ax.get_yscale() == "log"
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert {"0.9", "0.99", "0.999"} <= set(labels)
    # equal room per decade of 1 - beta: 0.9 -> 0.99 spans as much as 0.99 -> 0.999
    x = ax.transData.transform([(0.9, 1e-3), (0.99, 1e-3), (0.999, 1e-3)])[:, 0]
    assert x[1] - x[0] == pytest.approx(x[2] - x[1], rel=1e-6)
    plt.close(fig)


@pytest.mark.parametrize("inches", [2.2, 3.5, 8.0])
def test_png_axes_get_fitted_ticks_that_do_not_collide(inches: float) -> None:
    """The report's matplotlib axes take the dashboard's fitted ticks: integer axes integer ticks only,
    beta2 on [0.99, 0.9999] and a narrow linear range labelled, no two labels overlapping at any size."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from caviar.web.data import ParamInfo
    from caviar.web.report import set_scale

    params = [
        ParamInfo("beta2", "one_minus_log", 0.99, 0.9999),
        ParamInfo("learning_rate", "log", 1e-5, 1e-1),
        ParamInfo("depth", "int", 1, 4),
        ParamInfo("dropout", "linear", 0.1, 0.1002),
    ]
    for param in params:
        fig, ax = plt.subplots(figsize=(inches, 2.0))
        set_scale(ax, param)
        ax.set_xlim(*param.bounds)
        fig.canvas.draw()
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) >= 2, (param.name, inches)
        if param.scale == "int":
            assert all(t.get_text().isdigit() for t in labels)
        boxes = [t.get_window_extent() for t in labels]
        for a, b in zip(boxes, boxes[1:], strict=False):
            assert a.x1 <= b.x0, (param.name, inches, [t.get_text() for t in labels])
        plt.close(fig)
