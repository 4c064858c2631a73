"""The dashboard's HTTP API on a tiny real study: shapes, figures on each parameter's scale, errors,
static files (no path traversal) and the live events stream."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient

from caviar.tune.study import Study, run_study
from caviar.web.app import create_app
from caviar.web.figures import KINDS, figures
from caviar.web.scales import one_minus_log_ticks
from tiny import N_TRIALS, tiny_spec


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    db = tmp_path_factory.mktemp("dash") / "tiny.db"
    return run_study(tiny_spec(str(db)))


@pytest.fixture(scope="module")
def client(study: Study):
    with TestClient(create_app(study.storage, poll_s=0.05)) as c:
        yield c


def fig_json(client: TestClient, kind: str, **params) -> dict:
    r = client.get(f"/api/studies/tiny/figures/{kind}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


# ------------------------------------------------------------------------------------------- JSON


def test_studies_list(client: TestClient) -> None:
    body = client.get("/api/studies").json()
    (s,) = body["studies"]
    assert s["name"] == "tiny"
    assert s["status"] == "COMPLETE"
    assert s["n_trials"] == N_TRIALS
    assert s["counts"]["COMPLETE"] == N_TRIALS
    assert 0 < s["best"] <= 1
    assert s["metric"] == "val_accuracy"


def test_study_detail_has_space_with_scales(client: TestClient) -> None:
    d = client.get("/api/studies/tiny").json()
    scales = {p["name"]: p["scale"] for p in d["space"]}
    assert scales == {"learning_rate": "log", "beta1": "one_minus_log", "l2": "log"}
    beta = next(p for p in d["space"] if p["name"] == "beta1")
    assert (beta["low"], beta["high"]) == (0.8, 0.999)
    assert d["spec"]["search"]["strategy"] == "coarse_to_fine"
    assert d["spec"]["data"]["dataset"] == "digits"
    assert d["rounds"] == [0, 1]
    assert d["best_trial"]["value"] == d["best"]


def test_trials_table_rows_and_sorting(client: TestClient, study: Study) -> None:
    body = client.get("/api/studies/tiny/trials").json()
    rows = body["trials"]
    assert [r["number"] for r in rows] == list(range(N_TRIALS))
    assert {"number", "round", "state", "value", "params", "metrics"} <= set(rows[0])
    assert set(rows[0]["params"]) == {"learning_rate", "beta1", "l2"}
    assert rows[0]["metrics"]["val_accuracy"] == rows[0]["value"]
    by_lr = client.get("/api/studies/tiny/trials", params={"sort": "params.learning_rate", "desc": True}).json()
    lrs = [r["params"]["learning_rate"] for r in by_lr["trials"]]
    assert lrs == sorted(lrs, reverse=True)
    by_value = client.get("/api/studies/tiny/trials", params={"sort": "value"}).json()["trials"]
    assert [r["value"] for r in by_value] == sorted(r["value"] for r in rows)
    done = client.get("/api/studies/tiny/trials", params={"state": "COMPLETE"}).json()["trials"]
    assert len(done) == N_TRIALS
    assert client.get("/api/studies/tiny/trials", params={"state": "FAILED"}).json()["trials"] == []


def test_curves_of_chosen_and_top_trials(client: TestClient) -> None:
    body = client.get("/api/studies/tiny/curves", params={"trials": "1,2"}).json()
    assert set(body["trials"]) == {"1", "2"}
    rows = body["trials"]["1"]["rows"]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= set(rows[0])
    top = client.get("/api/studies/tiny/curves", params={"top": 3}).json()
    assert len(top["trials"]) == 3


def test_boxes_per_round(client: TestClient) -> None:
    body = client.get("/api/studies/tiny/boxes").json()
    assert [b["round"] for b in body["boxes"]] == [0, 1]
    first = body["boxes"][0]
    assert first["low"]["learning_rate"] == pytest.approx(1e-4)
    assert first["high"]["beta1"] == pytest.approx(0.999)
    second = body["boxes"][1]
    assert 1e-4 <= second["low"]["learning_rate"] <= second["high"]["learning_rate"] <= 3e-2


# ---------------------------------------------------------------------------------------- figures


def test_every_figure_kind_is_served(client: TestClient) -> None:
    for kind in KINDS:
        fig = fig_json(client, kind)
        assert fig["data"], kind
        assert fig["layout"]["meta"]["kind"] == kind


def test_history_has_rounds_and_best_so_far(client: TestClient) -> None:
    fig = fig_json(client, "history")
    names = [t["name"] for t in fig["data"]]
    assert names == ["round 0", "round 1", "best so far"]
    best = fig["data"][-1]["y"]
    assert all(b2 >= b1 for b1, b2 in zip(best, best[1:], strict=False))
    points = sum(len(t["x"]) for t in fig["data"][:-1])
    assert points == N_TRIALS


def test_slice_axes_follow_scales(client: TestClient, study: Study) -> None:
    fig = fig_json(client, "slice")
    axes = fig["layout"]["meta"]["axes"]
    assert fig["layout"][axes["learning_rate"]]["type"] == "log"
    assert fig["layout"][axes["l2"]]["type"] == "log"
    beta_axis = fig["layout"][axes["beta1"]]
    assert beta_axis["type"] == "linear"
    assert {"0.9", "0.99", "0.999"} <= set(beta_axis["ticktext"])
    for value, label in zip(beta_axis["tickvals"], beta_axis["ticktext"], strict=True):
        assert value == pytest.approx(-math.log10(1 - float(label)))  # tick at -log10(1 - beta)
    trace = next(t for t in fig["data"] if t["name"] == "beta1")
    betas = [t.params["beta1"] for t in study.trials]
    assert trace["x"] == pytest.approx([-math.log10(1 - b) for b in betas])
    lr_trace = next(t for t in fig["data"] if t["name"] == "learning_rate")
    assert lr_trace["x"] == pytest.approx([t.params["learning_rate"] for t in study.trials])  # raw on a log axis


def test_parallel_axes_on_log10_and_one_minus_log(client: TestClient, study: Study) -> None:
    (trace,) = fig_json(client, "parallel")["data"]
    assert trace["type"] == "parcoords"
    dims = {d["label"].split(" ")[0]: d for d in trace["dimensions"]}
    assert set(dims) == {"learning_rate", "beta1", "l2", "val_accuracy"}
    lrs = [t.params["learning_rate"] for t in study.trials]
    assert dims["learning_rate"]["values"] == pytest.approx([math.log10(v) for v in lrs])
    assert dims["learning_rate"]["range"] == pytest.approx([-4, math.log10(3e-2)])
    betas = [t.params["beta1"] for t in study.trials]
    assert dims["beta1"]["values"] == pytest.approx([-math.log10(1 - b) for b in betas])
    assert dims["beta1"]["range"] == pytest.approx([-math.log10(0.2), 3.0])
    assert "0.99" in dims["beta1"]["ticktext"]
    assert "0.001" in dims["learning_rate"]["ticktext"]


def test_boxes_figure_draws_rectangles_over_trials(client: TestClient) -> None:
    fig = fig_json(client, "boxes", x="learning_rate", y="beta1")
    names = [t["name"] for t in fig["data"]]
    assert {"round 0 box", "round 1 box", "round 0 trials", "round 1 trials"} <= set(names)
    box0 = next(t for t in fig["data"] if t["name"] == "round 0 box")
    assert box0["x"][0] == pytest.approx(1e-4) and max(box0["x"]) == pytest.approx(3e-2)
    assert max(box0["y"]) == pytest.approx(3.0)  # beta1 = 0.999 on the one-minus-log axis
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert "0.99" in fig["layout"]["yaxis"]["ticktext"]
    default = fig_json(client, "boxes")
    assert default["layout"]["meta"]["x"] != default["layout"]["meta"]["y"]


def test_curves_figure_for_selected_trials(client: TestClient) -> None:
    fig = fig_json(client, "curves", trials="0,3")
    curves = {t["meta"] for t in fig["data"]}
    assert {"#0 val_loss", "#0 train_loss", "#3 val_accuracy", "#3 train_accuracy"} <= curves
    assert sorted(t["name"] for t in fig["data"] if t.get("showlegend")) == ["#0", "#3"]  # one entry per trial
    assert fig["layout"]["meta"]["trials"] == [0, 3]


def test_figures_python_api_matches_kinds(study: Study) -> None:
    figs = figures(study)
    assert list(figs) == list(KINDS)
    assert json.loads(figs["history"].to_json())["layout"]["meta"]["kind"] == "history"


def test_one_minus_log_ticks_are_betas() -> None:
    vals, text = one_minus_log_ticks(0.9, 0.999)
    assert text[0] == "0.9" and text[-1] == "0.999" and "0.99" in text
    assert vals[0] == pytest.approx(1.0) and vals[-1] == pytest.approx(3.0)


# ----------------------------------------------------------------------------------------- errors


def test_unknown_study_is_404_with_message(client: TestClient) -> None:
    for path in (
        "/api/studies/nope",
        "/api/studies/nope/trials",
        "/api/studies/nope/figures/history",
        "/api/studies/nope/curves",
        "/api/studies/nope/boxes",
        "/api/studies/nope/events",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "no study 'nope'" in r.json()["detail"]
        assert "tiny" in r.json()["detail"]  # names the known ones


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/studies/tiny/figures/pie", {}),
        ("/api/studies/tiny/curves", {"trials": "1;2"}),
        ("/api/studies/tiny/curves", {"trials": "../etc"}),
        ("/api/studies/tiny/curves", {"top": 0}),
        ("/api/studies/tiny/figures/curves", {"trials": "a,b"}),
        ("/api/studies/tiny/trials", {"state": "SLEEPING"}),
        ("/api/studies/tiny/trials", {"desc": "maybe"}),
    ],
)
def test_bad_params_are_422(client: TestClient, path: str, params: dict) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, (path, params, r.text)


def test_bad_values_are_400_or_404(client: TestClient) -> None:
    assert client.get("/api/studies/tiny/trials", params={"sort": "params.nope"}).status_code == 400
    assert client.get("/api/studies/tiny/figures/boxes", params={"x": "nope"}).status_code == 400
    r = client.get("/api/studies/tiny/curves", params={"trials": "99"})
    assert r.status_code == 404 and "99" in r.json()["detail"]


# --------------------------------------------------------------------------------- page and static


def test_page_and_plotly_js_are_local(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/plotly.min.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert len(js.content) > 1_000_000 and b"plotly" in js.content[:2000].lower()
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../etc/passwd",
        "/static/..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/static/..%5c..%5cetc%5cpasswd",
        "/static/index.html",
        "/static/../app.py",
        "/static/%2e%2e%2fapp.py",
        "/static/",
        "/static/%00",
        "/etc/passwd",
    ],
)
def test_no_path_traversal(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert b"root:" not in r.content
    assert b"def create_app" not in r.content


def test_events_stream_sends_a_first_event(client: TestClient) -> None:
    with client.stream("GET", "/api/studies/tiny/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        data = None
        for line in r.iter_lines():
            if line.startswith("data:"):
                data = json.loads(line[len("data:") :])
                break
    assert data["name"] == "tiny"
    assert data["counts"]["COMPLETE"] == N_TRIALS
    assert data["status"] == "COMPLETE"


def test_dashboard_does_not_create_a_missing_database(tmp_path) -> None:
    from caviar.errors import StorageError

    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="no study storage"):
        create_app(str(missing))
    assert not missing.exists()


def _next_data(lines) -> dict:
    """The JSON of the next ``data:`` line of an event stream."""
    for line in lines:
        if line.startswith("data:"):
            return json.loads(line[len("data:") :])
    raise AssertionError("the event stream ended")


def test_events_follow_a_running_study(tmp_path) -> None:
    """A trial claimed and then finished by a worker shows up as two new events, no page reload needed."""
    from caviar.storage import StudyStatus, open_storage

    store = open_storage(str(tmp_path / "live.db"))
    sid = store.create_study("live", tiny_spec(str(tmp_path / "live.db"), "live"))
    store.set_study_status(sid, StudyStatus.RUNNING)
    store.enqueue_trials(
        sid, [{"number": n, "params": {"learning_rate": 1e-3, "beta1": 0.9, "l2": 1e-5}, "round": 0} for n in range(2)]
    )
    with TestClient(create_app(store, poll_s=0.02)) as c, c.stream("GET", "/api/studies/live/events") as r:
        lines = r.iter_lines()
        first = _next_data(lines)
        assert first["counts"]["WAITING"] == 2 and first["status"] == "RUNNING"
        (claimed,) = store.claim_trials(sid, "w1", limit=1)
        running = _next_data(lines)
        assert running["counts"]["RUNNING"] == 1 and running["counts"]["WAITING"] == 1
        store.add_curve_rows(claimed.id, [{"epoch": 0, "val_accuracy": 0.5}], "w1")
        assert _next_data(lines)["running_epochs"] == 1  # live curves: a new epoch is news too
        store.finish_trial(claimed.id, "w1", "COMPLETE", {"val_accuracy": 0.9}, objective=0.9)
        done = _next_data(lines)
        assert done["counts"]["COMPLETE"] == 1 and done["best"] == pytest.approx(0.9)
