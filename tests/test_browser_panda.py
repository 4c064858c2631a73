"""The panda page in a real Chromium: the curve grows, a new learning rate applied from the page lands at
the next step and is drawn as a marker, a rollback from the page brings the step counter back.

The session is throttled (``step_delay_s``) so that a person-speed page sees the curve grow; every
wait is on a condition (page functions, the session's condition variable), never a sleep.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from browser import launch_chromium, screenshot_path, serve
from caviar.panda.server import create_app
from caviar.panda.session import PandaSession

pytestmark = pytest.mark.browser

TOKEN = "browser-token"
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)

N_POINTS = "document.getElementById('loss-plot').data ? document.getElementById('loss-plot').data[1].x.length : 0"
LAST_X = (
    "(() => { const x = document.getElementById('loss-plot').data[1].x; return x.length ? x[x.length - 1] : 0; })()"
)


@pytest.fixture()
def session(tmp_path):
    spec = {
        "study": {"name": "browserpanda", "seed": 1},
        "data": {"dataset": "digits"},
        "model": {"hidden": [32]},
        "training": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 64, "epochs": 1000},
        "search": {"storage": f"sqlite:///{tmp_path / 'panda.db'}"},
    }
    s = PandaSession(spec, step_delay_s=0.03).start()
    yield s
    s.close(10)


def test_panda_page_steers_the_training(session: PandaSession):
    s = session
    with serve(create_app(s, TOKEN)) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        outside: list[str] = []
        page.on("request", lambda req: outside.append(req.url) if not req.url.startswith(url) else None)
        page.goto(f"{url}/?token={TOKEN}")
        assert "token" not in page.url  # taken out of the address bar once read

        # the loss curve grows
        page.wait_for_function(f"{N_POINTS} > 5")
        n = page.evaluate(N_POINTS)
        page.wait_for_function(f"{N_POINTS} > {n + 10}")
        expect(page.locator("#status")).to_have_text("running")
        page.screenshot(path=str(screenshot_path("panda-1-training.png")), full_page=True)

        # a new learning rate through the input + apply
        page.fill("#hp-learning_rate", "0.002")
        page.click("#apply")
        expect(page.locator("#message")).to_contain_text("from step")
        event = s.storage.events(s.study_id, kind="set")[-1]
        at = event.step
        assert event.payload["changes"] == {"learning_rate": 0.002}
        assert s.wait_for(lambda x: x.step >= at + 1)
        lrs = {q["step"]: q["lr"] for q in s.curves()["steps"]}
        assert lrs[at - 1] == 0.01 and lrs[at] == 0.002 and lrs[at + 1] == 0.002  # from the next step on
        page.wait_for_function(
            "at => { const l = document.getElementById('loss-plot').layout;"
            " return l.shapes.some(s => s.x0 === at)"
            " && l.annotations.some(a => a.x === at && a.text.includes('lr')); }",
            arg=at,
        )
        expect(page.locator("#hp-learning_rate")).to_have_attribute("placeholder", "0.002")
        page.screenshot(path=str(screenshot_path("panda-2-lr-changed.png")), full_page=True)

        # a checkpoint, more training, then back to it through the page
        page.click("#checkpoint")
        expect(page.locator("#message")).to_contain_text("checkpoint #")
        ckpt = [c for c in s.state()["checkpoints"] if c["label"] == "manual"][-1]
        page.wait_for_function(f"{LAST_X} > {ckpt['step'] + 15}")
        page.click("#pause")
        expect(page.locator("#status")).to_have_text("paused")
        page.select_option("#rollback-select", str(ckpt["id"]))
        page.click("#rollback")
        expect(page.locator("#message")).to_contain_text(f"→ {ckpt['step']}")
        expect(page.locator("#step")).to_have_text(str(ckpt["step"]))
        page.wait_for_function(f"{LAST_X} === {ckpt['step']}")  # the curve is cut back to the checkpoint
        assert s.step == ckpt["step"]
        assert s.storage.events(s.study_id, kind="rollback")[-1].payload["to_step"] == ckpt["step"]
        page.screenshot(path=str(screenshot_path("panda-3-rolled-back.png")), full_page=True)
        page.click("#resume")
        page.wait_for_function(f"{LAST_X} > {ckpt['step'] + 5}")  # and it goes on from there
        assert int(page.locator("#step").inner_text()) > ckpt["step"]
        page.wait_for_function(
            "() => document.getElementById('loss-plot').layout.annotations.some(a => a.text.startsWith('rollback'))"
        )
        page.screenshot(path=str(screenshot_path("panda-4-continued.png")), full_page=True)

        # a refused value shows its one-line reason, and training goes on
        page.fill("#hp-learning_rate", "-1")
        page.click("#apply")
        expect(page.locator("#message")).to_contain_text("greater than 0")
        before = s.step
        assert s.wait_for(lambda x: x.step > before)
        browser.close()
    assert not errors, errors
    assert not outside, outside


def test_panda_page_reads_its_controls_from_the_server(session: PandaSession):
    """The inputs are the registry's live hyperparameters (GET /api/hparams); a server without that
    endpoint (a live trial of the user's own objective) gets inputs for the numbers of its state."""
    from caviar.hparams import LIVE

    with serve(create_app(session, TOKEN)) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        for without in (False, True):
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            if without:
                page.route("**/api/hparams", lambda route: route.fulfill(status=404, body='{"detail": "Not Found"}'))
            page.goto(f"{url}/?token={TOKEN}")
            page.wait_for_function(f"{N_POINTS} > 2")  # connected either way
            names = page.eval_on_selector_all("#hp-inputs input", "els => els.map(e => e.name)")
            expected = list(LIVE) if not without else list(session.state()["hp"])
            assert names == expected
            assert not errors, errors
            page.close()
        browser.close()
