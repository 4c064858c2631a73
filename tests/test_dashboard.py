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


# ------------------------------------------------------- a stored study with every scale and state


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Two studies written straight into storage (every scale, pruned and diverged trials), one tiny."""
    from caviar.storage import open_storage
    from stored_study import synthetic_study

    store = open_storage(str(tmp_path_factory.mktemp("synth") / "synth.db"))
    info = synthetic_study(store)
    other = synthetic_study(store, "other", n=20, seed=5)
    synthetic_study(store, "few", n=4, pruned=(), diverged=())
    with TestClient(create_app(store)) as c:
        yield c, info, other


def test_importance_ranks_the_parameter_that_decides(synth) -> None:
    c, info, _ = synth
    body = c.get("/api/studies/synthetic/importance").json()
    ranking = [p["name"] for p in body["importances"]]
    assert ranking[0] == "learning_rate"
    assert body["importances"][0]["importance"] > 0.5
    assert sum(p["importance"] for p in body["importances"]) == pytest.approx(1.0)
    assert body["n_trials"] == sum(s == "COMPLETE" for s in info["states"].values())
    fig = c.get("/api/studies/synthetic/figures/importance").json()
    (bars,) = fig["data"]
    assert bars["y"][-1] == "learning_rate"  # the top bar
    assert fig["layout"]["meta"]["ranking"] == ranking
    again = c.get("/api/studies/synthetic/importance").json()
    assert again == body  # deterministic


@pytest.mark.parametrize("method", ["fanova", "ped_anova"])
def test_optuna_importance_evaluators_agree(synth, method: str) -> None:
    c, _, _ = synth
    body = c.get("/api/studies/synthetic/importance", params={"method": method}).json()
    assert set(body["methods"]) == {"forest", "fanova", "ped_anova"}  # optuna is installed here
    assert body["importances"][0]["name"] == "learning_rate" and body["importances"][0]["importance"] > 0.5
    assert "optuna" in body["method"]
    fig = c.get("/api/studies/synthetic/figures/importance", params={"method": method}).json()
    assert fig["data"][0]["y"][-1] == "learning_rate"


def test_unknown_importance_method_is_422(synth) -> None:
    c, _, _ = synth
    for path in ("/api/studies/synthetic/importance", "/api/studies/synthetic/figures/importance"):
        r = c.get(path, params={"method": "shap"})
        assert r.status_code == 422 and "no importance method 'shap'" in r.json()["detail"]


def test_importance_says_when_too_few_trials(synth) -> None:
    c, _, _ = synth
    body = c.get("/api/studies/few/importance").json()
    assert body["importances"] == [] and "at least 5 complete trials" in body["message"]
    fig = c.get("/api/studies/few/figures/importance").json()
    assert fig["data"] == [] and "at least 5" in fig["layout"]["annotations"][0]["text"]


def test_pair_plot_defaults_to_the_two_most_important_and_takes_axes(synth) -> None:
    c, info, _ = synth
    complete = [k for k, s in info["states"].items() if s == "COMPLETE"]
    ranking = [p["name"] for p in c.get("/api/studies/synthetic/importance").json()["importances"]]
    fig = c.get("/api/studies/synthetic/figures/pair", params={"width": 900}).json()
    assert [fig["layout"]["meta"]["x"], fig["layout"]["meta"]["y"]] == ranking[:2]
    fig = c.get("/api/studies/synthetic/figures/pair", params={"x": "beta2", "y": "depth"}).json()
    points = next(t for t in fig["data"] if t["name"] == "complete trials")
    assert len(points["x"]) == len(points["y"]) == len(complete) == fig["layout"]["meta"]["points"]
    assert points["x"] == pytest.approx([-math.log10(1 - info["params"][k]["beta2"]) for k in complete])
    assert points["y"] == [info["params"][k]["depth"] for k in complete]
    assert points["marker"]["color"] == pytest.approx([info["values"][k] for k in complete])
    assert any(t["type"] == "contour" for t in fig["data"])
    assert fig["layout"]["yaxis"]["ticktext"] == ["1", "2", "3", "4"]  # integer axis: integer ticks only
    assert fig["layout"]["xaxis"]["ticktext"][0] == "0.99"
    choice = c.get("/api/studies/synthetic/figures/pair", params={"x": "activation", "y": "learning_rate"}).json()
    assert choice["layout"]["xaxis"]["type"] == "category" and choice["layout"]["yaxis"]["type"] == "log"


@pytest.mark.parametrize(
    ("params", "words"),
    [({"x": "nope", "y": "depth"}, ["nope", "learning_rate"]), ({"x": "depth", "y": "depth"}, ["two different"])],
)
def test_pair_plot_bad_axes_are_422_with_one_line(synth, params: dict, words: list[str]) -> None:
    c, _, _ = synth
    r = c.get("/api/studies/synthetic/figures/pair", params=params)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert all(w in detail for w in words)


def test_history_marks_pruned_and_diverged_apart_and_out_of_best(synth) -> None:
    from stored_study import PRUNED_VALUE

    c, info, _ = synth
    fig = c.get("/api/studies/synthetic/figures/history").json()
    traces = {t["name"]: t for t in fig["data"]}
    assert list(traces) == ["round 0", "pruned", "diverged", "best so far"]
    pruned = [k for k, s in info["states"].items() if s == "PRUNED"]
    complete = [k for k, s in info["states"].items() if s == "COMPLETE"]
    assert traces["pruned"]["x"] == pruned and traces["pruned"]["marker"]["symbol"] == "x"
    assert traces["diverged"]["x"] == [k for k, s in info["states"].items() if s == "DIVERGED"]
    best = traces["best so far"]
    assert best["x"] == complete and not set(best["x"]) & set(pruned)
    running = [max(info["values"][k] for k in complete[: i + 1]) for i in range(len(complete))]
    assert best["y"] == pytest.approx(running)
    assert max(best["y"]) < PRUNED_VALUE  # the pruned trials' partial metric never counts
    assert fig["layout"]["meta"]["best_so_far"] == complete
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert all(t.isdigit() for t in ticks)  # trial numbers: integer ticks only


def test_edf_of_complete_trials(synth) -> None:
    c, info, _ = synth
    (line,) = c.get("/api/studies/synthetic/figures/edf").json()["data"]
    values = sorted(v for k, v in info["values"].items() if info["states"][k] == "COMPLETE")
    assert line["x"] == pytest.approx(values)
    assert line["y"][-1] == 1.0 and line["y"][0] == pytest.approx(1 / len(values))


def test_trial_detail_and_model_download(synth) -> None:
    from stored_study import MODEL

    c, info, _ = synth
    best = info["best"]
    d = c.get(f"/api/studies/synthetic/trials/{best}").json()
    assert d["trial"]["number"] == best and d["trial"]["state"] == "COMPLETE" and d["trial"]["is_best"]
    assert d["trial"]["params"] == pytest.approx(info["params"][best])
    assert d["trial"]["metrics"]["val_accuracy"] == pytest.approx(info["values"][best])
    assert [r["epoch"] for r in d["curve"]] == [0, 1, 2]
    assert [e["kind"] for e in d["events"]] == ["requeue"]
    assert d["lineage"] is None
    (artifact,) = d["artifacts"]
    r = c.get(artifact["url"])
    assert r.status_code == 200 and r.content == MODEL
    assert "attachment" in r.headers["content-disposition"]
    assert c.get(f"/api/studies/synthetic/trials/{best}/artifacts/other.npz").status_code == 404
    other = c.get("/api/studies/synthetic/trials/3").json()
    assert other["trial"]["state"] == "PRUNED" and other["artifacts"] == [] and other["previous"] == 2


def test_unknown_trial_is_404_and_its_page_still_loads(synth) -> None:
    c, _, _ = synth
    r = c.get("/api/studies/synthetic/trials/999")
    assert r.status_code == 404
    assert r.json()["detail"] == "no trial #999 in study 'synthetic': its trials are #0 to #39"
    assert c.get("/api/studies/synthetic/trials/abc").status_code == 422
    page = c.get("/study/synthetic/trial/999")
    assert page.status_code == 200 and "trial.js" in page.text


def test_compare_two_studies_and_a_missing_one(synth) -> None:
    c, info, other = synth
    body = c.get("/api/compare", params={"studies": "synthetic,other", "width": 700}).json()
    assert [s["name"] for s in body["studies"]] == ["synthetic", "other"]
    best = body["figures"]["best_so_far"]["data"]
    assert [t["name"] for t in best] == ["synthetic", "other"]
    assert best[1]["x"] == [k for k, s in other["states"].items() if s == "COMPLETE"]
    edf = body["figures"]["edf"]["data"]
    assert [len(t["x"]) for t in edf] == [
        sum(s == "COMPLETE" for s in info["states"].values()),
        sum(s == "COMPLETE" for s in other["states"].values()),
    ]
    r = c.get("/api/compare", params={"studies": "synthetic,ghost"})
    assert r.status_code == 404 and "no study 'ghost'" in r.json()["detail"] and "synthetic" in r.json()["detail"]
    assert c.get("/api/compare", params={"studies": "synthetic"}).status_code == 422
    assert c.get("/compare").status_code == 200


def test_study_page_redirects_to_the_index_view(synth) -> None:
    c, _, _ = synth
    r = c.get("/study/synthetic", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/#synthetic"


# ------------------------------------------------------------------------------------------ ticks


@pytest.mark.parametrize("axis_px", [120, 180, 260, 400, 700, 1100])
@pytest.mark.parametrize(
    ("scale", "low", "high"),
    [
        ("log", 1e-5, 1e-1),
        ("log", 1e-4, 3e-2),
        ("log", 0.02, 0.05),
        ("one_minus_log", 0.99, 0.9999),
        ("one_minus_log", 0.8, 0.999),
        ("int", 1, 4),
        ("int", 16, 512),
        ("int_log", 1, 1000),
        ("linear", 0.1, 0.1002),
        ("linear", 0.0, 0.5),
    ],
)
def test_fitted_ticks_never_collide(scale: str, low: float, high: float, axis_px: float) -> None:
    from caviar.web.scales import axis_range, fit_ticks, labels_fit

    ticks = fit_ticks(scale, low, high, axis_px)
    assert ticks.text and len(set(ticks.text)) == len(ticks.text)  # labels, all distinct
    assert labels_fit(ticks.coords, ticks.text, axis_range(scale, low, high), axis_px)
    assert all(low - 1e-12 <= v <= high + 1e-12 for v in ticks.values)
    if scale in ("int", "int_log"):
        assert all(float(v).is_integer() for v in ticks.values) and all(t.isdigit() for t in ticks.text)
    if axis_px >= 180:
        assert len(ticks.text) >= 2  # even a narrow range gets labels


def test_fitted_ticks_read_well() -> None:
    from caviar.web.scales import fit_ticks

    assert fit_ticks("one_minus_log", 0.99, 0.9999, 150).text == ["0.99", "0.999", "0.9999"]
    assert fit_ticks("log", 1e-4, 3e-2, 150).text == ["0.0001", "0.001", "0.01"]
    assert fit_ticks("int", 1, 4, 150).text == ["1", "2", "3", "4"]
    assert fit_ticks("linear", 0.1, 0.1001, 150).text == ["0.1", "0.10005", "0.1001"]
    wide = fit_ticks("one_minus_log", 0.99, 0.9999, 600).text
    assert {"0.995", "0.9995"} <= set(wide)  # more room, more ticks
