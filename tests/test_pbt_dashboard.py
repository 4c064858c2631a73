"""The trial page of a PBT trial: the lineage (whom it copied, who copied it, its ancestry) from the API,
and in Chromium a lineage table with links and a schedule plot with one panel per hyperparameter; the
study's lineage page: every copy from the API, and in Chromium the tree, every trial's schedule and the
list of copies (a study without PBT says it has none)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect, sync_playwright

from browser import launch_chromium, screenshot_path, serve
from caviar.tune.study import Study, run_study
from caviar.web.app import create_app


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    db: Path = tmp_path_factory.mktemp("pbtweb") / "s.db"
    run_study(  # a study without PBT beside it, in the same storage
        {
            "study": {"name": "plain", "seed": 0},
            "data": {"dataset": "digits"},
            "model": {"hidden": [8]},
            "training": {"epochs": 1, "batch_size": 128},
            "search": {"trials": 2, "storage": str(db)},
            "space": {"learning_rate": {"low": 1e-3, "high": 1e-1, "scale": "log"}},
        }
    )
    return run_study(
        {
            "study": {"name": "pbt", "seed": 3},
            "data": {"dataset": "digits"},
            "model": {"hidden": [16]},
            "training": {"epochs": 6, "batch_size": 64},
            "search": {"strategy": "pbt", "trials": 8, "storage": str(db), "pbt": {"perturbation_interval": 2}},
            "space": {
                "learning_rate": {"low": 1e-4, "high": 1e-1, "scale": "log"},
                "beta1": {"low": 0.8, "high": 0.99, "scale": "one_minus_log"},
            },
        }
    )


def _copied(study: Study):
    return next(t for t in study.trials if t.metrics["lineage"])


def test_the_trial_api_gives_the_lineage(study: Study) -> None:
    child = _copied(study)
    parent = child.metrics["lineage"][-1]["parent"]
    with TestClient(create_app(study.storage, poll_s=0.05)) as c:
        d = c.get(f"/api/studies/pbt/trials/{child.number}").json()
        assert d["lineage"]["copied"] == child.metrics["lineage"]
        assert d["lineage"]["schedule"] == child.metrics["schedule"]
        assert d["lineage"]["ancestors"][0] == {**child.metrics["lineage"][-1], "child": child.number}
        p = c.get(f"/api/studies/pbt/trials/{parent}").json()
        assert {"epoch": child.metrics["lineage"][-1]["epoch"], "child": child.number} in p["lineage"]["copied_by"]


def test_the_trial_page_draws_the_lineage_and_the_schedule(study: Study) -> None:
    child = _copied(study)
    with serve(create_app(study.storage, allowed_hosts=["127.0.0.1", "localhost"])) as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/study/pbt/trial/{child.number}")
            expect(page.locator("#lineage")).to_contain_text("ancestry: #")
            rows = page.locator("#lineage-table tbody tr")
            expect(rows.first).to_contain_text("copied the weights of")
            expect(page.locator("#schedule-card")).to_be_visible()
            expect(page.locator("#plot-schedule .main-svg").first).to_be_visible()
            assert page.locator("#plot-schedule .scatterlayer .trace").count() == 2  # learning_rate, beta1
            assert page.locator("#metrics").inner_text().count("lineage") == 0  # shown here, not as a metric
            expect(page.locator("#plot-curves .main-svg").first).to_be_visible()
            page.screenshot(path=str(screenshot_path("pbt-trial.png")), full_page=True)
            assert errors == [], errors  # no JavaScript error on the page
        finally:
            browser.close()


def test_the_lineage_api_gives_every_copy_of_the_study(study: Study) -> None:
    expected = sorted(
        (
            {"epoch": e["epoch"], "parent": e["parent"], "child": t.number}
            for t in study.trials
            for e in t.metrics["lineage"]
        ),
        key=lambda c: (c["epoch"], c["child"]),
    )
    with TestClient(create_app(study.storage, poll_s=0.05)) as c:
        d = c.get("/api/studies/pbt/lineage").json()
        assert d["copies"] == expected and len(expected) >= 2
        assert [t["number"] for t in d["trials"]] == [t.number for t in study.trials]
        assert all(t["schedule"] == s.metrics["schedule"] for t, s in zip(d["trials"], study.trials, strict=True))
        assert {p["name"]: p["scale"] for p in d["space"]} == {"learning_rate": "log", "beta1": "one_minus_log"}
        plain = c.get("/api/studies/plain/lineage").json()
        assert plain["trials"] == [] and plain["copies"] == []
        assert c.get("/api/studies/nope/lineage").status_code == 404


def test_the_lineage_page_draws_the_tree_the_schedules_and_the_copies(study: Study) -> None:
    copies = [(e["epoch"], t.number, e["parent"]) for t in study.trials for e in t.metrics["lineage"]]
    child = _copied(study)
    with serve(create_app(study.storage, allowed_hosts=["127.0.0.1", "localhost"])) as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/#pbt")  # the study view links to its tree, and so does the trial page
            expect(page.locator("#lineage-tree")).to_have_attribute("href", "/study/pbt/lineage")
            page.goto(f"{url}/study/pbt/trial/{child.number}")
            page.locator("#lineage-link").click()
            page.wait_for_url(f"{url}/study/pbt/lineage")
            expect(page.locator("#lineage-summary")).to_contain_text(
                f"{len(study.trials)} trials in 1 population: {len(copies)} copies"
            )
            expect(page.locator("#plot-tree .main-svg").first).to_be_visible()
            assert page.locator("#plot-tree .scatterlayer .trace").count() == 3  # lives, copies, trials
            ticks = page.locator("#plot-tree .ytick text").evaluate_all("els => els.map((e) => e.textContent)")
            assert sorted(ticks) == sorted(f"#{t.number}" for t in study.trials)
            expect(page.locator("#plot-schedules .main-svg").first).to_be_visible()
            assert page.locator("#plot-schedules .scatterlayer .trace").count() == 2  # learning_rate, beta1
            rows = page.locator("#copies tbody tr")
            expect(rows).to_have_count(len(copies))
            shown = [tuple(r.split("\t")) for r in rows.all_inner_texts()]
            assert sorted(shown) == sorted((str(e), f"#{c}", f"#{p}") for e, c, p in copies)
            page.screenshot(path=str(screenshot_path("pbt-lineage.png")), full_page=True)
            rows.first.locator("a").first.click()  # a copy's trial opens its page
            page.wait_for_url(f"{url}/study/pbt/trial/*")
            expect(page.locator("#lineage")).to_contain_text("ancestry: #")
            page.goto(f"{url}/study/plain/lineage")
            expect(page.locator("#no-lineage")).to_be_visible()
            assert page.locator("#lineage-view").is_hidden()
            assert errors == [], errors  # no JavaScript error on either page
        finally:
            browser.close()
