"""The panda page on a live external trial, in a real Chromium: its boxes are the objective's own names,
a learning rate applied from the page lands at the objective's next epoch and is drawn as a marker; an
objective without a learning rate gets a "scale this parameter" pair for each of its own numbers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from browser import launch_chromium, screenshot_path
from caviar.storage import open_storage
from caviar.tune import optimize
from objectives import live_lr, live_scaled

pytestmark = pytest.mark.browser

TOKEN = "browser-live-token"
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


@contextmanager
def live_page(objective: Callable[[Any], Any], space: dict, db: str, state_file: Path) -> Iterator[Page]:
    """``objective`` tuned for one live trial in a thread, its panda page open in Chromium (no page errors);
    on the way out the trial is stopped through the API and the study ends."""
    runner = threading.Thread(
        target=optimize, args=(objective, space), kwargs={"trials": 1, "storage": db}, daemon=True
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not state_file.exists():
        assert time.monotonic() < deadline and runner.is_alive(), "the live trial never started"
        time.sleep(0.05)  # polling for the server's state file
    url = json.loads(state_file.read_text())["url"]
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/?token={TOKEN}")
            expect(page.locator("#status")).to_have_text("running")
            yield page
            assert not errors, errors
            browser.close()
    finally:
        httpx.post(f"{url}/api/stop", headers={"X-Caviar-Token": TOKEN}, timeout=60)
        runner.join(timeout=60)
    assert not runner.is_alive()


@pytest.fixture
def live_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory (where the live trial writes .caviar-panda.json), the token, a watchable pace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAVIAR_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("CAVIAR_TEST_EPOCH_S", "0.02")
    return tmp_path / ".caviar-panda.json"


def test_the_panda_page_steers_a_live_external_trial(tmp_path: Path, live_env: Path) -> None:
    db = str(tmp_path / "live.db")
    space = {"lr": {"low": 0.01, "high": 0.1, "scale": "log"}}
    with live_page(live_lr, space, db, live_env) as page:
        expect(page.locator("#hp-lr")).to_be_visible()  # the objective's own name, from /api/hparams
        page.fill("#hp-lr", "0.5")
        page.click("#apply")
        expect(page.locator("#message")).to_contain_text("from step")
        store = open_storage(db)
        (study,) = store.list_studies()
        (event,) = store.events(study.id, kind="set")
        assert event.payload == {"changes": {"lr": 0.5}, "old": {"lr": event.payload["old"]["lr"]}}
        page.wait_for_function(
            "at => { const l = document.getElementById('loss-plot').layout;"
            " return l.shapes.some(s => s.x0 === at) && l.annotations.some(a => a.x === at); }",
            arg=event.step,
        )
        expect(page.locator("#hp-lr")).to_have_attribute("placeholder", "0.5")
        page.screenshot(path=str(screenshot_path("live-objective-lr-changed.png")), full_page=True)


def test_an_objective_without_a_learning_rate_gets_scale_controls_for_its_own_numbers(
    tmp_path: Path, live_env: Path
) -> None:
    """The page's "scale this parameter" buttons come from the objective's live hyperparameters: one pair
    for each number (a space parameter and an extra one), none for a text value, no learning-rate button.
    Halving ``step_size`` from the page changes what the objective reads at its next epoch; the change is
    stored as an event and drawn on the curves, the objective's own reported numbers among them."""
    db = str(tmp_path / "scaled.db")
    space = {"step_size": {"low": 0.01, "high": 0.1, "scale": "log"}}
    with live_page(live_scaled, space, db, live_env) as page:
        scale_ids = page.eval_on_selector_all("button.scale", "els => els.map(e => e.id)")
        assert scale_ids == ["scale-step_size-down", "scale-step_size-up", "scale-width-down", "scale-width-up"]
        assert page.locator("#halve-lr").count() == 0
        expect(page.locator("#lr-now")).to_be_hidden()  # no learning rate to show
        page.click("#scale-step_size-down")
        expect(page.locator("#message")).to_contain_text("from step")
        store = open_storage(db)
        (study,) = store.list_studies()
        (event,) = store.events(study.id, kind="set")
        old = event.payload["old"]["step_size"]
        assert event.payload == {"changes": {"step_size": old * 0.5}, "old": {"step_size": old}}
        (trial,) = store.trials(study.id)
        deadline = time.monotonic() + 60
        while len(rows := store.curves(study.id)[trial.id]) <= event.step:
            assert time.monotonic() < deadline, "the objective reported no epoch after the change"
            time.sleep(0.05)  # polling the stored curve
        by_epoch = {r["epoch"]: r for r in rows}
        assert by_epoch[event.step - 1]["step_size"] == old  # the epoch the change arrived in
        assert by_epoch[event.step]["step_size"] == old * 0.5  # read at the next epoch
        page.wait_for_function(
            "at => { const l = document.getElementById('acc-plot').layout;"
            " return l.shapes.some(s => s.x0 === at) && l.annotations.some(a => a.x === at); }",
            arg=event.step,
        )
        page.wait_for_function(  # the objective's own numbers, drawn beside the accuracy
            "() => { const d = document.getElementById('more-plot').data;"
            " return d && d.map(t => t.name).join() === 'step_size,width'; }"
        )
        page.click("#scale-width-up")  # an integer extra: 8 -> 16
        expect(page.locator("#message")).to_contain_text("width 8→16")
        assert [e.payload["changes"] for e in store.events(study.id, kind="set")][-1] == {"width": 16}
        page.screenshot(path=str(screenshot_path("live-objective-scaled.png")), full_page=True)
