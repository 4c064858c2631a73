"""A regression study in the views: the dashboard in a real Chromium (axis labels by the study's metric,
best-so-far by its direction, the curves' second panel its metric, test_r2 in the table and no accuracy
anywhere), the static report, and the figures' payloads."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from browser import launch_chromium, screenshot_path, serve
from caviar.tune.study import Study, run_study
from caviar.web.app import create_app
from caviar.web.data import load_study
from caviar.web.figures import curves_figure, history_figure

TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


def _spec(db: str, name: str, metric: str) -> dict:
    return {
        "study": {"name": name, "seed": 4},
        "data": {"dataset": "diabetes"},
        "model": {"hidden": [8]},
        "training": {"epochs": 4, "batch_size": 32},
        "search": {"strategy": "random", "trials": 6, "storage": db, "metric": metric},
        "space": {"learning_rate": {"low": 1e-3, "high": 3e-1, "scale": "log"}},
    }


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Study]:
    db = str(tmp_path_factory.mktemp("regviews") / "r.db")
    return {m: run_study(_spec(db, f"reg_{m}", m)) for m in ("val_rmse", "val_r2")}


def test_figures_follow_the_metric_and_its_direction(studies) -> None:
    rmse, r2 = studies["val_rmse"], studies["val_r2"]
    data = load_study(rmse)
    assert (data.task, data.test_metric, data.score_metric, data.maximize) == (
        "regression",
        "test_r2",
        "val_rmse",
        False,
    )
    assert load_study(r2).score_metric == "val_r2" and load_study(r2).maximize
    fig = history_figure(rmse)
    best = next(t for t in fig.data if t.name == "best so far")
    assert list(best.y) == sorted(best.y, reverse=True)  # lower is better: it only goes down
    assert fig.layout.yaxis.title.text == "val_rmse"
    fig = history_figure(r2)
    best = next(t for t in fig.data if t.name == "best so far")
    assert list(best.y) == sorted(best.y)  # higher is better: it only goes up
    curves = curves_figure(rmse)
    names = {t.meta.split(" ", 1)[1] for t in curves.data}
    assert names == {"train_loss", "val_loss", "val_rmse"}  # no accuracy curve
    assert curves.layout.yaxis2.title.text == "val_rmse"


def test_report_of_a_regression_study(studies, tmp_path) -> None:
    from caviar.web.report import write_report

    written = write_report(studies["val_rmse"], tmp_path / "rep")
    page = written[0].read_text()
    assert "test_r2" in page and "test_accuracy" not in page
    assert (tmp_path / "rep" / "curves.png").stat().st_size > 0


@pytest.mark.browser
def test_dashboard_draws_a_regression_study(studies) -> None:
    study = studies["val_rmse"]
    with serve(create_app(study.storage, allowed_hosts=["127.0.0.1", "localhost"])) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        page.locator(".study-btn", has_text="reg_val_rmse").click()
        expect(page.locator("#trials tbody tr")).to_have_count(len(study.trials))
        expect(page.locator("#plot-curves .main-svg").first).to_be_attached()
        heads = page.locator("#trials thead th").all_inner_texts()
        assert any("val_rmse" in h for h in heads) and any("test_r2" in h for h in heads)
        assert not any("accuracy" in h for h in heads)
        expect(page.locator("#plot-curves .g-y2title text")).to_have_text("val_rmse")
        expect(page.locator("#plot-history .g-ytitle text")).to_have_text("val_rmse")
        best = page.evaluate("() => document.getElementById('plot-history').data.find(t => t.name === 'best so far').y")
        assert best == sorted(best, reverse=True) and len(best) == len(study.trials)
        assert min(best) == pytest.approx(study.best_trial.metrics["val_rmse"])
        traces = page.evaluate("() => document.getElementById('plot-curves').data.map(t => t.meta)")
        assert traces and not any("accuracy" in t for t in traces)
        page.screenshot(path=str(screenshot_path("dashboard-regression.png")), full_page=True)
        browser.close()
        assert errors == [], errors


# ------------------------------------------------------------------------------------------ panda
def _panda(tmp_path, **training):
    from caviar.panda.session import PandaSession

    spec = {
        "study": {"name": "regpanda", "seed": 1},
        "data": {"dataset": "diabetes"},
        "model": {"hidden": [16]},
        "training": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 64, **training},
        "search": {"storage": f"sqlite:///{tmp_path / 'panda.db'}", "metric": "val_rmse"},
    }
    return PandaSession(spec)


def test_panda_session_and_fork_on_a_regression(tmp_path) -> None:
    from caviar.tune.study import Study

    s = _panda(tmp_path, epochs=6)
    try:
        assert s.run_epochs(2)
        assert s.state()["task"] == "regression" and s.state()["metric"] == "val_rmse"
        row = s.epochs[-1]
        assert {"val_r2", "val_rmse", "val_mae", "val_loss"} <= set(row) and "val_accuracy" not in row
        s.fork(k=3, epochs=2).wait()
        fork = s.forks[0]
        fork.join(120)
        members = s.state()["forks"][0]["members"]
        stored = {t.number: t.metrics["val_rmse"] for t in Study(s.storage.url, fork.name).trials}
        assert [m["number"] for m in members] == sorted(stored, key=lambda n: (stored[n], n))  # lowest first
        assert all(m["score"] == pytest.approx(stored[m["number"]]) for m in members)
    finally:
        s.close(10)


@pytest.mark.browser
def test_panda_page_draws_a_regressions_metric(tmp_path) -> None:
    from caviar.panda.server import create_app as panda_app

    s = _panda(tmp_path, epochs=3)
    try:
        assert s.run_epochs(2)
        with serve(panda_app(s, "tok")) as url, sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/?token=tok")
            page.wait_for_function(
                "() => { const d = document.getElementById('acc-plot').data;"
                " return d && d.length === 1 && d[0].name === 'val_rmse' && d[0].y.length === 2; }"
            )
            expect(page.locator("#acc-plot .g-ytitle text")).to_have_text("val_rmse")
            ys = page.evaluate("() => document.getElementById('acc-plot').data[0].y")
            assert ys == pytest.approx([r["val_rmse"] for r in s.epochs])
            page.screenshot(path=str(screenshot_path("panda-regression.png")), full_page=True)
            browser.close()
            assert errors == [], errors
    finally:
        s.close(10)
