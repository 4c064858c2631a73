"""The dashboard in a real Chromium: the page loads a study, draws its plots and table, sorts, selects,
filters; the importance, pair, EDF, trial and comparison views; readable ticks at 1024 and 1440 px; new
studies appearing live."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from browser import launch_chromium, screenshot_path, serve, tick_counts, tick_problems
from caviar.tune.study import Study, run_study
from caviar.web.app import create_app
from tiny import tiny_spec

pytestmark = pytest.mark.browser

N_PLOTS = 8
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)  # a loaded CI machine draws WebGL plots slowly


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    return run_study(tiny_spec(str(tmp_path_factory.mktemp("browser") / "browser.db"), "browser", seed=3))


@pytest.fixture(scope="module")
def base_url(study: Study):
    with serve(create_app(study.storage, allowed_hosts=["127.0.0.1", "localhost"])) as url:
        yield url


@pytest.fixture()
def page(base_url: str):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        outside: list[str] = []
        page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(base_url) else None)
        yield page
        context.close()
        browser.close()
        assert errors == [], errors  # no JavaScript error on the page
        assert outside == [], outside  # nothing fetched from anywhere else (no CDN)


def column_values(page, key: str) -> list[str]:
    """Texts of one column, in table order."""
    index = page.locator("#trials thead th").evaluate_all(
        "(ths, key) => ths.findIndex(th => th.dataset.key === key)", key
    )
    return page.locator(f"#trials tbody tr td:nth-child({index + 1})").all_inner_texts()


def test_dashboard_shows_study_plots_and_sortable_table(page, base_url: str, study: Study) -> None:
    page.goto(base_url + "/")
    button = page.locator(".study-btn", has_text="browser")
    expect(button).to_be_visible()
    button.click()
    expect(button).to_have_class("study-btn active")
    expect(page.locator(".js-plotly-plot")).to_have_count(N_PLOTS)
    expect(page.locator("#trials tbody tr")).to_have_count(len(study.trials))
    for kind in ("history", "slice", "parallel", "boxes", "curves", "importance", "pair", "edf"):
        expect(page.locator(f"#plot-{kind} .main-svg").first).to_be_attached()
    expect(page.locator("#plot-slice .xtick text", has_text="0.99").first).to_be_attached()  # beta ticks
    page.screenshot(path=str(screenshot_path("dashboard-study.png")), full_page=True)

    numbers = [int(x) for x in column_values(page, "number")]
    assert numbers == sorted(t.number for t in study.trials)

    page.locator("#trials thead th[data-key='value']").click()
    expect(page.locator("#trials thead th[data-key='value']")).to_have_attribute("aria-sort", "ascending")
    values = [float(x) for x in column_values(page, "value")]
    assert values == sorted(values)
    page.locator("#trials thead th[data-key='value']").click()
    expect(page.locator("#trials thead th[data-key='value']")).to_have_attribute("aria-sort", "descending")
    values = [float(x) for x in column_values(page, "value")]
    assert values == sorted(values, reverse=True)

    lr_header = page.locator("#trials thead th[data-key='params.learning_rate']")
    lr_header.click()
    shown = [float(x) for x in column_values(page, "params.learning_rate")]
    assert shown == sorted(shown)
    page.screenshot(path=str(screenshot_path("dashboard-sorted.png")), full_page=True)


def test_clicking_rows_draws_their_curves(page, base_url: str, study: Study) -> None:
    page.goto(f"{base_url}/#browser")
    expect(page.locator("#trials tbody tr")).to_have_count(len(study.trials))
    expect(page.locator(".js-plotly-plot")).to_have_count(N_PLOTS)
    page.locator("#trials tbody tr[data-number='1']").click()
    page.locator("#trials tbody tr[data-number='4']").click()
    expect(page.locator("#trials tbody tr.selected")).to_have_count(2)
    legend = page.locator("#plot-curves .legendtext")
    expect(legend).to_have_text(["#1", "#4"])
    expect(page.locator("#plot-curves .scatterlayer .trace")).to_have_count(8)  # 2 trials x 4 curves
    page.locator("#plot-curves").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_path("dashboard-curves.png")), full_page=True)
    page.locator("#trials tbody tr[data-number='1']").click()
    expect(page.locator("#trials tbody tr.selected")).to_have_count(1)
    expect(page.locator("#plot-curves .scatterlayer .trace")).to_have_count(4)


# --------------------------------------------- a stored study: every scale, pruned and diverged trials


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A storage with two synthetic studies (see tests/stored_study.py) served on a free port."""
    from caviar.storage import open_storage
    from stored_study import synthetic_study

    store = open_storage(str(tmp_path_factory.mktemp("synth") / "synth.db"))
    info = synthetic_study(store)
    synthetic_study(store, "other", n=20, seed=5)
    with serve(create_app(store, poll_s=0.1, allowed_hosts=["127.0.0.1", "localhost"])) as url:
        yield url, store, info


@pytest.fixture()
def browser():
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def open_page(browser, width: int = 1400):
    """A page that records JavaScript errors (the test asserts there are none)."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))  # type: ignore[attr-defined]
    return page


def plot_data(page, plot_id: str):
    """The data of a drawn plotly figure, as the page holds it."""
    return page.evaluate(f"() => document.getElementById('{plot_id}').data")


def wait_drawn(page, plot_id: str, times: int = 1) -> None:
    page.wait_for_function(f"() => Number(document.getElementById('{plot_id}').dataset.drawn || 0) >= {times}")


def open_study(page, url: str, name: str = "synthetic") -> None:
    page.goto(f"{url}/#{name}")
    expect(page.locator(".js-plotly-plot")).to_have_count(N_PLOTS)
    for plot in ("history", "importance", "edf", "pair", "slice", "parallel", "boxes", "curves"):
        wait_drawn(page, f"plot-{plot}")


@pytest.mark.parametrize("width", [1024, 1440])
def test_no_tick_labels_overlap_at_1024_and_1440(browser, synth, width: int) -> None:
    url, _, _ = synth
    page = open_page(browser, width)
    open_study(page, url)
    counts = tick_counts(page)
    assert all(n >= 4 for n in counts.values()), counts  # every plot labels its axes
    assert tick_problems(page) == {}
    page.screenshot(path=str(screenshot_path(f"dashboard-synthetic-{width}.png")), full_page=True)
    texts = page.locator("#plot-slice text").evaluate_all("ts => ts.map(t => t.textContent)")
    assert {"0.99", "0.999", "0.9999", "0.1", "0.0001"} <= set(texts)  # beta2 and learning-rate ticks
    depth = page.evaluate(
        "() => { const l = document.getElementById('plot-slice').layout; const a = l.meta.axes.depth;"
        " return l[a].ticktext; }"
    )
    assert depth == ["1", "2", "3", "4"]  # an integer axis never reads 1.5
    assert page.errors == []


def test_importance_and_pair_plot_with_chosen_axes(browser, synth) -> None:
    url, _, info = synth
    page = open_page(browser)
    open_study(page, url)
    bars = plot_data(page, "plot-importance")[0]
    assert bars["y"][-1] == "learning_rate"  # the top bar: the parameter that decides the metric
    assert bars["x"][-1] > 0.5
    page.select_option("#importance-method", "fanova")  # Optuna's evaluator (installed here)
    wait_drawn(page, "plot-importance", 2)
    bars = plot_data(page, "plot-importance")[0]
    assert bars["y"][-1] == "learning_rate"
    assert "fANOVA" in page.evaluate("() => document.getElementById('plot-importance').layout.meta.method")
    complete = [k for k, s in info["states"].items() if s == "COMPLETE"]
    expect(page.locator("#pair-x")).to_have_value("learning_rate")  # default: the two most important
    page.select_option("#pair-x", "beta2")
    wait_drawn(page, "plot-pair", 2)
    page.select_option("#pair-y", "dropout")
    wait_drawn(page, "plot-pair", 3)
    traces = {t["name"]: t for t in plot_data(page, "plot-pair")}
    points = traces["complete trials"]
    assert len(points["x"]) == len(points["y"]) == len(complete)
    assert points["y"] == pytest.approx([info["params"][k]["dropout"] for k in complete])
    assert any(t["type"] == "contour" for t in traces.values())
    meta = page.evaluate("() => document.getElementById('plot-pair').layout.meta")
    assert (meta["x"], meta["y"]) == ("beta2", "dropout")
    page.locator("#plot-pair").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_path("dashboard-pair.png")), full_page=True)
    page.select_option("#pair-y", "beta2")  # the same parameter twice: a message, the plot stays
    expect(page.locator("#pair-error")).to_contain_text("two different hyperparameters")
    page.select_option("#pair-y", "depth")
    expect(page.locator("#pair-error")).to_be_hidden()
    wait_drawn(page, "plot-pair", 4)
    assert len(plot_data(page, "plot-pair")[-1]["x"]) == len(complete)
    assert page.errors == []


def test_pruned_trials_are_marked_and_kept_out_of_best_so_far(browser, synth) -> None:
    url, _, info = synth
    page = open_page(browser)
    open_study(page, url)
    traces = {t["name"]: t for t in plot_data(page, "plot-history")}
    pruned = [k for k, s in info["states"].items() if s == "PRUNED"]
    assert traces["pruned"]["x"] == pruned
    assert not set(traces["best so far"]["x"]) & set(pruned)
    assert max(traces["best so far"]["y"]) < max(traces["pruned"]["y"])
    expect(page.locator("#plot-history .legendtext")).to_have_text(["round 0", "pruned", "diverged", "best so far"])
    edf = plot_data(page, "plot-edf")
    assert len(edf[0]["x"]) == sum(s == "COMPLETE" for s in info["states"].values())
    assert page.errors == []


def test_table_filters_by_state_and_by_column(browser, synth) -> None:
    url, _, info = synth
    page = open_page(browser)
    open_study(page, url)
    rows = page.locator("#trials tbody tr")
    expect(rows).to_have_count(len(info["states"]))
    page.select_option("#state-filter", "PRUNED")
    expect(rows).to_have_count(sum(s == "PRUNED" for s in info["states"].values()))
    page.select_option("#state-filter", "")
    page.fill("#text-filter", "learning_rate<0.001 depth>=2")
    wanted = [k for k, p in info["params"].items() if p["learning_rate"] < 0.001 and p["depth"] >= 2]
    expect(rows).to_have_count(len(wanted))
    assert sorted(int(n) for n in rows.evaluate_all("rs => rs.map(r => r.dataset.number)")) == wanted
    expect(page.locator("#trial-count")).to_have_text(f"({len(wanted)} of {len(info['states'])})")
    page.fill("#text-filter", "tanh")
    expect(rows).to_have_count(sum(p["activation"] == "tanh" for p in info["params"].values()))
    page.fill("#text-filter", "colour>3")
    expect(page.locator("#filter-error")).to_contain_text("no column 'colour'")
    page.fill("#text-filter", "")
    expect(rows).to_have_count(len(info["states"]))
    assert page.errors == []


def test_trial_page_and_an_unknown_trial(browser, synth) -> None:
    url, _, info = synth
    page = open_page(browser)
    open_study(page, url)
    best = info["best"]
    page.locator(f"#trials tbody tr[data-number='{best}'] td a").click()
    page.wait_for_url(f"{url}/study/synthetic/trial/{best}")
    expect(page.locator("#trial-state")).to_have_text("complete")
    expect(page.locator("#trial-best")).to_be_visible()
    expect(page.locator("#params tbody tr")).to_have_count(len(info["params"][best]))
    expect(page.locator("#params")).to_contain_text("learning_rate (log)")
    expect(page.locator("#events li")).to_have_count(1)
    expect(page.locator("#artifacts a")).to_have_text(["download model.npz"])
    expect(page.locator("#lineage")).to_be_visible()
    wait_drawn(page, "plot-curves")
    assert {t["meta"] for t in plot_data(page, "plot-curves")} >= {f"#{best} val_loss", f"#{best} val_accuracy"}
    with page.expect_download() as download:
        page.locator("#artifacts a").click()
    assert download.value.suggested_filename == f"synthetic-trial{best}-model.npz"
    page.screenshot(path=str(screenshot_path("dashboard-trial.png")), full_page=True)
    page.goto(f"{url}/study/synthetic/trial/999")
    expect(page.locator("#error")).to_have_text("no trial #999 in study 'synthetic': its trials are #0 to #39")
    page.fill("#goto-number", "3")  # the page stays usable: go to another trial from it
    page.locator("#goto button").click()
    page.wait_for_url(f"{url}/study/synthetic/trial/3")
    expect(page.locator("#trial-state")).to_have_text("pruned")
    expect(page.locator("#no-artifacts")).to_be_visible()
    assert page.errors == []


def test_compare_studies_and_a_missing_name(browser, synth) -> None:
    url, _, _ = synth
    page = open_page(browser)
    page.goto(f"{url}/")
    page.locator("#studies li[data-study='synthetic'] .tick").check()
    page.locator("#studies li[data-study='other'] .tick").check()
    page.locator("#compare-link").click()
    page.wait_for_url(f"{url}/compare?studies=synthetic,other")
    wait_drawn(page, "plot-best_so_far")
    wait_drawn(page, "plot-edf")
    assert [t["name"] for t in plot_data(page, "plot-best_so_far")] == ["synthetic", "other"]
    assert [t["name"] for t in plot_data(page, "plot-edf")] == ["synthetic", "other"]
    assert tick_problems(page) == {}
    page.screenshot(path=str(screenshot_path("dashboard-compare.png")), full_page=True)
    page.goto(f"{url}/compare?studies=synthetic,ghost")
    expect(page.locator("#error")).to_contain_text("no study 'ghost'")
    page.locator("#choices input[value='other']").check()  # the form still works
    page.locator("#choices input[value='synthetic']").check()
    page.locator("#choose button").click()
    page.wait_for_url(f"{url}/compare?studies=synthetic,other")
    wait_drawn(page, "plot-edf")
    expect(page.locator("#error")).to_be_hidden()
    assert page.errors == []


def test_new_studies_appear_without_a_reload(browser, synth) -> None:
    from stored_study import synthetic_study

    url, store, _ = synth
    page = open_page(browser)
    page.goto(f"{url}/")
    expect(page.locator(".study-btn")).to_have_count(2)
    page.evaluate("() => { window.notReloaded = true; }")
    synthetic_study(store, "late", n=6, pruned=(), diverged=())
    expect(page.locator(".study-btn", has_text="late")).to_be_visible()
    assert page.evaluate("() => window.notReloaded") is True
    assert page.errors == []
