"""The panda page on a live external trial, in a real Chromium: its boxes are the objective's own names,
a learning rate applied from the page lands at the objective's next epoch and is drawn as a marker."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from browser import launch_chromium, screenshot_path
from caviar.storage import open_storage
from caviar.tune import optimize
from objectives import live_lr

pytestmark = pytest.mark.browser

TOKEN = "browser-live-token"
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


def test_the_panda_page_steers_a_live_external_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAVIAR_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("CAVIAR_TEST_EPOCH_S", "0.02")
    db = str(tmp_path / "live.db")
    space = {"lr": {"low": 0.01, "high": 0.1, "scale": "log"}}
    runner = threading.Thread(target=optimize, args=(live_lr, space), kwargs={"trials": 1, "storage": db}, daemon=True)
    runner.start()
    state_file = tmp_path / ".caviar-panda.json"
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
            assert not errors, errors
            browser.close()
    finally:
        httpx.post(f"{url}/api/stop", headers={"X-Caviar-Token": TOKEN}, timeout=60)
        runner.join(timeout=60)
    assert not runner.is_alive()
