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


# ------------------------------------------------------------------- markers, log axis, fork + adopt
LABEL_BOXES = """
plotId => [...document.querySelectorAll(`#${plotId} g.annotation`)].map(g => {
  const r = g.querySelector('g.annotation-text-g').getBoundingClientRect();
  return {text: g.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
}).filter(b => b.right > b.left)
"""


def _spec(tmp_path, name: str, **training) -> dict:
    return {
        "study": {"name": name, "seed": 1},
        "data": {"dataset": "digits"},
        "model": {"hidden": [32]},
        "training": {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 64, "epochs": 1000, **training},
        "search": {"storage": f"sqlite:///{tmp_path / 'panda.db'}"},
    }


def test_markers_log_axis_fork_summary_and_adopt(tmp_path):
    from browser import overlapping

    s = PandaSession(_spec(tmp_path, "markers"), step_delay_s=0.0)
    try:
        s.run_steps(3)
        for k in range(14):  # many actions close together: their labels compete for the same place
            s.set_hyperparameters(lr=0.01 * (0.9**k)).wait()
            s.run_steps(2 if k % 3 else 9)
            if k % 4 == 0:
                s.checkpoint(f"c{k}").wait()
        s.run_steps(30)
        with serve(create_app(s, TOKEN)) as url, sync_playwright() as p:
            browser = launch_chromium(p)
            for width in (1024, 1440):
                page = browser.new_page(viewport={"width": width, "height": 950})
                page.set_default_timeout(TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.goto(f"{url}/?token={TOKEN}")
                page.wait_for_function("document.querySelectorAll('#loss-plot g.annotation').length > 5")
                for plot in ("loss-plot", "acc-plot"):
                    boxes = page.evaluate(LABEL_BOXES, plot)
                    assert len(boxes) >= 6, boxes
                    assert not overlapping(boxes), (width, plot, overlapping(boxes))
                page.screenshot(path=str(screenshot_path(f"panda-5-markers-{width}.png")), full_page=True)
                assert not errors, errors
                if width == 1024:
                    page.close()
            # the log toggle
            assert page.evaluate("document.getElementById('loss-plot').layout.yaxis.type") == "linear"
            page.check("#log-loss")
            page.wait_for_function("document.getElementById('loss-plot').layout.yaxis.type === 'log'")
            page.wait_for_function("document.querySelector('#loss-plot .ytitle').textContent.includes('log')")
            page.screenshot(path=str(screenshot_path("panda-6-log-loss.png")), full_page=True)

            # a fork from the page; its summary lists each member's validation accuracy, best first
            page.fill("#fork-k", "3")
            page.fill("#fork-epochs", "1")
            page.click("#fork")
            expect(page.locator("#message")).to_contain_text("fork study")
            s.forks[0].join(120)
            assert s.forks[0].status == "done", s.forks[0].error
            s.notify_changed()
            rows = page.locator("#forks table.members tbody tr")
            expect(rows).to_have_count(3)
            members = s.state()["forks"][0]["members"]
            for i, m in enumerate(members):
                row = rows.nth(i)
                expect(row).to_have_attribute("data-member", str(m["number"]))
                acc = page.evaluate("v => fmt(v)", m["val_accuracy"])
                expect(row.locator("td").nth(1)).to_have_text(acc)
            expect(page.locator("#forks thead")).to_contain_text("val acc")
            expect(rows.first).to_have_class("best")
            page.screenshot(path=str(screenshot_path("panda-7-fork-summary.png")), full_page=True)

            # adopt the second best: the session goes on from it
            pick = members[1]["number"]
            rows.nth(1).locator("button.adopt").click()
            expect(page.locator("#message")).to_contain_text(f"adopted #{pick}")
            adopted = s.storage.events(s.study_id, kind="adopt")[-1]
            assert adopted.payload["member"] == pick
            assert s.hp["learning_rate"] == pytest.approx(members[1]["params"]["learning_rate"])
            expect(page.locator("#epoch")).to_have_text(str(adopted.payload["to_epoch"]))
            page.wait_for_function(
                "() => document.getElementById('loss-plot').layout.annotations.some(a => a.text.startsWith('adopt'))"
            )
            expect(page.locator("#events")).to_contain_text("adopt")
            page.screenshot(path=str(screenshot_path("panda-8-adopted.png")), full_page=True)
            assert not errors, errors
            browser.close()
    finally:
        s.close(10)


def test_divergence_banner_offers_the_rollback(tmp_path):
    s = PandaSession(_spec(tmp_path, "diverge", optimizer="sgd", learning_rate=0.05), step_delay_s=0.0)
    try:
        s.run_epochs(2)
        s.set_hyperparameters(lr=1e30).wait()
        s.run_steps(40)
        assert s.status == "diverged"
        target = [c for c in s.state()["checkpoints"] if c["current"]][-1]
        with serve(create_app(s, TOKEN)) as url, sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/?token={TOKEN}")
            banner = page.locator("#diverged-banner")
            expect(banner).to_be_visible()
            expect(banner).to_contain_text("diverged at step")
            expect(page.locator("#diverged-rollback")).to_have_text(f"roll back to #{target['id']}")
            # the plot still shows the curve before the divergence (its range is not blown up)
            top = page.evaluate("document.getElementById('loss-plot').layout.yaxis.range[1]")
            assert 0 < top < 100
            page.screenshot(path=str(screenshot_path("panda-9-diverged.png")), full_page=True)
            page.click("#diverged-rollback")
            expect(page.locator("#message")).to_contain_text(f"rolled back to #{target['id']}")
            expect(banner).to_be_hidden()
            expect(page.locator("#status")).to_have_text("paused")
            assert s.step == target["step"] and s.status == "paused"
            # the checkpoint list: only the current branch, newest first and selected, as it grows
            s.run_epochs(2)
            s.checkpoint("after").wait()
            branch = [c["id"] for c in s.state()["checkpoints"] if c["current"]]
            listed = "() => [...document.querySelectorAll('#rollback-select option')].map(o => Number(o.value))"
            page.wait_for_function(f"() => ({listed})().length === {len(branch)}")
            assert page.evaluate(listed) == branch[::-1]
            assert page.eval_on_selector("#rollback-select", "s => Number(s.value)") == branch[-1]
            browser.close()
    finally:
        s.close(10)


def test_dashboard_lists_sessions_apart_with_their_interventions(tmp_path):
    from caviar.web.app import create_app as dashboard_app

    s = PandaSession(_spec(tmp_path, "listed", epochs=6, batch_size=256), step_delay_s=0.0)
    try:
        s.run_epochs(1)
        s.set_hyperparameters(lr=0.005).wait()
        s.run_epochs(1)
        s.fork(k=2, epochs=1).wait()
        s.forks[0].join(120)
        s.stop().wait()
        with serve(dashboard_app(s.storage, allowed_hosts=["127.0.0.1", "localhost"])) as url, sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            expect(page.locator("#sessions li")).to_have_count(1)
            expect(page.locator("#sessions")).to_contain_text(s.study_name)
            expect(page.locator("#sessions")).to_contain_text("panda session")
            expect(page.locator("#studies li")).to_have_count(1)  # the fork: an ordinary study
            expect(page.locator("#studies")).to_contain_text(s.forks[0].name)
            listed = page.eval_on_selector_all("#studies li", "els => els.map(e => e.dataset.study)")
            assert listed == [s.forks[0].name]
            page.screenshot(path=str(screenshot_path("dashboard-sessions.png")), full_page=True)
            page.click("#sessions a")
            page.wait_for_url(f"**/study/{s.study_name}/trial/0")
            expect(page.locator("#trial-title")).to_have_text(f"panda session {s.study_name}")
            expect(page.locator("#back")).to_have_attribute("href", "/")
            events = page.locator("#events")
            for kind in ("start", "set", "fork", "stop"):
                expect(events).to_contain_text(kind)
            expect(events).to_contain_text("learning_rate 0.01 → 0.005")  # in words, not JSON
            expect(events).to_contain_text(f"2 trials in study {s.forks[0].name}")
            page.screenshot(path=str(screenshot_path("dashboard-session-page.png")), full_page=True)
            browser.close()
    finally:
        s.close(10)
