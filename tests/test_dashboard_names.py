"""Names are data: a study name holding '/', '%', '?', '#', spaces, unicode, '..' or markup opens in every
dashboard URL (API, study view, trial page, artifacts, comparison) and is shown as text, never as markup:
through the app (TestClient) and in a real Chromium."""

from __future__ import annotations

import html
import re
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from caviar.storage import open_storage
from caviar.web.app import create_app
from caviar.web.urls import name_segment, routing_path
from stored_study import MODEL, synthetic_study

#: Names a hostile or careless user gives; every one must work everywhere.
NAMES = [
    "a/b",
    "a%2Fb",
    "50% off",
    "what?x=1",
    "tag#1",
    "50% off?#",
    "  spaced  name  ",
    "ünïcødé 学习",
    "..",
    ".",
    "..=",
    "a,b",
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "<a href='https://example.com'>link</a> & $x$",
]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "names.db"
    storage = open_storage(path)
    for name in NAMES:
        synthetic_study(storage, name=name, n=8, pruned=(3,), diverged=(5,))
    storage.close()
    return path


@pytest.fixture(scope="module")
def client(db):
    return TestClient(create_app(db))


def test_a_segment_reads_back_as_the_name() -> None:
    for name in NAMES:
        segment = name_segment(name)
        assert "/" not in segment and segment not in (".", "..")
        path = routing_path(f"/api/studies/{segment}/trials".encode())
        assert path.split("/")[3] != "" and len(path.split("/")) == 5
    assert routing_path(b"/api/studies/..=/trials") == "/api/studies/../trials"
    assert routing_path(b"/api/studies/..%3D/trials") == "/api/studies/..=/trials"
    assert routing_path(b"/api/studies/a%2Fb%25/x") == "/api/studies/a%2Fb%25/x"


@pytest.mark.parametrize("name", NAMES)
def test_every_route_opens_a_study_whatever_its_name(client, name) -> None:
    seg = name_segment(name)
    detail = client.get(f"/api/studies/{seg}")
    assert detail.status_code == 200, detail.text
    assert detail.json()["name"] == name
    for tail in ("trials", "curves", "boxes", "importance", "lineage", "trials/0", "figures/history", "figures/edf"):
        r = client.get(f"/api/studies/{seg}/{tail}")
        assert r.status_code == 200, (tail, r.text)
    trial = client.get(f"/api/studies/{seg}/trials/0").json()
    best = client.get(f"/api/studies/{seg}").json()["best_trial"]["number"]
    artifacts = client.get(f"/api/studies/{seg}/trials/{best}").json()["artifacts"]
    assert artifacts, trial
    download = client.get(artifacts[0]["url"])
    assert download.status_code == 200 and download.content == MODEL
    for page_path in (f"/study/{seg}/trial/0", f"/study/{seg}/lineage"):
        page = client.get(page_path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], page_path
    redirect = client.get(f"/study/{seg}", follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"] == "/#" + quote(name, safe="")


@pytest.mark.parametrize("name", NAMES)
def test_figure_titles_and_legends_show_the_name_as_text(client, name) -> None:
    fig = client.get(f"/api/studies/{name_segment(name)}/figures/history").json()
    title = fig["layout"]["title"]["text"]
    assert "<a " not in title and "<script" not in title and "<img" not in title
    assert fig["layout"]["meta"]["title"].startswith(name)
    shown = html.unescape(re.sub(r"<br>|<span[^>]*>|</span>", "", title))  # what plotly draws, as text
    assert squeeze(name) in squeeze(shown), title
    other = NAMES[0] if name != NAMES[0] else NAMES[1]
    body = client.get("/api/compare", params={"study": [name, other]})
    assert body.status_code == 200, body.text
    assert [s["name"] for s in body.json()["studies"]] == [name, other]
    for kind in ("best_so_far", "edf"):
        legends = [t["name"] for t in body.json()["figures"][kind]["data"]]
        assert all("<" not in text for text in legends), legends


def test_a_comparison_with_one_missing_name_says_which(client) -> None:
    r = client.get("/api/compare", params={"study": ["a/b", "nope/nope"]})
    assert r.status_code == 404
    assert "no study 'nope/nope' in this storage" in r.json()["detail"]


def test_unknown_names_are_a_404_naming_them(client) -> None:
    r = client.get(f"/api/studies/{name_segment('no/such study')}")
    assert r.status_code == 404 and "no/such study" in r.json()["detail"]
    assert client.get("/api/studies/a%2Fb/trials/999").status_code == 404


# ------------------------------------------------------------------------------------------ Chromium
BROWSER_NAMES = ["a/b", "50% off?#", "..", "ünïcødé 学习", NAMES[-3], NAMES[-2], NAMES[-1]]
LI_INDEX_JS = "(name) => [...document.querySelectorAll('#studies > li')].findIndex(li => li.dataset.study === name)"


def squeeze(text: str) -> str:
    """Text without its whitespace (plotly wraps long titles over lines and writes spaces as nbsp)."""
    return "".join(text.split())


@pytest.mark.browser
def test_chromium_opens_hostile_names_and_shows_them_as_text(db) -> None:
    from playwright.sync_api import expect, sync_playwright

    from browser import launch_chromium, screenshot_path, serve

    with serve(create_app(db, allowed_hosts=["127.0.0.1", "localhost"])) as base, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))

        def study_item(name: str):
            expect(page.locator("#studies > li")).to_have_count(len(NAMES))
            index = page.evaluate(LI_INDEX_JS, name)
            assert index >= 0, name
            return page.locator("#studies > li").nth(index)

        for i, name in enumerate(BROWSER_NAMES):
            page.goto(base + "/")
            study_item(name).locator(".study-btn").click()  # the study view, chosen as a user does
            expect(page.locator("#study-name")).to_have_text(name)
            title = page.locator("#plot-history .gtitle")
            expect(title).to_have_count(1)
            assert squeeze(name) in squeeze(title.text_content() or ""), title.text_content()
            assert page.locator("#plot-history .gtitle a").count() == 0  # a link in a name stays text
            expect(page.locator("#error")).to_be_hidden()
            page.reload()  # the hash holds the name: a reload shows the same study
            expect(page.locator("#study-name")).to_have_text(name)
            expect(page.locator("#plot-history .gtitle")).to_have_count(1)
            page.locator("#trials tbody tr a").first.click()  # its trial page, from the table
            expect(page.locator("#trial-title")).to_have_text(f"{name}: trial #0")
            assert page.title() == f"caviar: {name} trial #0"
            expect(page.locator("#trial")).to_be_visible()
            expect(page.locator("#error")).to_be_hidden()
            page.screenshot(path=str(screenshot_path(f"names-{i}.png")))
            page.goto(base + "/study/" + name_segment(name))  # the study's own URL redirects to its view
            expect(page.locator("#study-name")).to_have_text(name)
        page.goto(base + "/")  # a comparison of two hostile names, ticked on the index
        for name in (BROWSER_NAMES[0], BROWSER_NAMES[5]):
            study_item(name).locator(".tick").check()
        page.locator("#compare-link").click()
        expect(page.locator("#summaries .fact")).to_have_count(2)
        expect(page.locator("#summaries")).to_contain_text(BROWSER_NAMES[5])
        expect(page.locator("#plot-edf .legendtext")).to_have_count(2)
        legends = page.locator("#plot-edf .legendtext").all_text_contents()
        assert [squeeze(t) for t in legends] == [squeeze(BROWSER_NAMES[0]), squeeze(BROWSER_NAMES[5])]
        assert page.locator("#compared img").count() == 0
        assert page.evaluate("() => window.__pwned") is None  # no name ran as a script
        page.screenshot(path=str(screenshot_path("names-compare.png")))
        browser.close()
    assert errors == [], errors


def test_many_threads_read_a_read_only_sqlite_storage_at_once(client) -> None:
    """The dashboard opens SQLite read-only and answers from a thread pool: 32 requests at once all answer
    (a pool that closed other threads' connections crashed the process here)."""
    from concurrent.futures import ThreadPoolExecutor

    urls = [
        f"/api/studies/{name_segment(n)}/figures/{k}" for n in NAMES[:8] for k in ("history", "edf", "slice", "boxes")
    ]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda u: client.get(u).status_code, urls))
    assert codes == [200] * len(urls)


@pytest.mark.parametrize("name", [NAMES[-3], NAMES[-1]])
def test_the_report_shows_any_name_as_text(db, tmp_path, name) -> None:
    """The HTML report escapes the name everywhere (title, heading, embedded figures: a '</script>' in it
    cannot close the page's script), and its matplotlib titles take '$' as a dollar sign."""
    from caviar.web.report import write_report

    paths = write_report(name, tmp_path / "out", storage=str(db))
    page = paths[0].read_text(encoding="utf-8")
    assert name not in page or html.escape(name) == name
    assert f"<h1>Study {html.escape(name)}</h1>" in page
    plain = write_report("a,b", tmp_path / "plain", storage=str(db))[0].read_text(encoding="utf-8")
    assert page.lower().count("<script") == plain.lower().count("<script")
    assert page.lower().count("</script") == plain.lower().count("</script")
    assert all(p.stat().st_size > 0 for p in paths)
