"""The dashboard in a real Chromium: the page loads a study, draws its plots and table, sorts, selects."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from browser import launch_chromium, screenshot_path, serve
from caviar.tune.study import Study, run_study
from caviar.web.app import create_app
from tiny import tiny_spec

pytestmark = pytest.mark.browser

N_PLOTS = 5
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
    for kind in ("history", "slice", "parallel", "boxes", "curves"):
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
