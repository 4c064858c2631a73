"""Panda mode: controls applied at an exact step, exact rollbacks, the smoothed loss, forks, the API and ctl.

Synchronization never sleeps: the synchronous ``run_steps`` mode, ``Control.wait`` (an Event set when
the loop applied it) and ``session.wait_for`` (a Condition notified after every step).
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from caviar.cli import app as cli_app
from caviar.errors import ControlError
from caviar.panda.server import bind_socket, create_app, make_server, url_of
from caviar.panda.session import EWA, PAUSED, RUNNING, PandaSession
from caviar.storage import TrialState, open_storage
from caviar.tune.study import Study

TOKEN = "test-token"


def spec_dict(
    tmp_path,
    optimizer: str = "adam",
    lr: float = 0.01,
    dropout: float = 0.0,
    batch_size: int = 128,
    epochs: int = 3,
    hidden: tuple[int, ...] = (16,),
) -> dict:
    return {
        "study": {"name": "pandatest", "seed": 3},
        "data": {"dataset": "digits"},
        "model": {"hidden": list(hidden), "dropout": dropout},
        "training": {"optimizer": optimizer, "learning_rate": lr, "batch_size": batch_size, "epochs": epochs},
        "search": {"storage": f"sqlite:///{tmp_path / 'panda.db'}"},
    }


@pytest.fixture
def make(tmp_path):
    sessions: list[PandaSession] = []

    def _make(step_delay_s: float = 0.0, epochs: int | None = None, dtype: str = "float32", **kw) -> PandaSession:
        s = PandaSession(spec_dict(tmp_path, **kw), epochs=epochs, step_delay_s=step_delay_s, dtype=dtype)
        sessions.append(s)
        return s

    yield _make
    for s in sessions:
        s.close(10)


def weights(s: PandaSession) -> dict[str, np.ndarray]:
    return {n: a.copy() for n, a in s.trainer.params.items()}


# ------------------------------------------------------------------------------------------ session
def test_ewa_matches_the_bias_corrected_formula():
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 3, 50)
    ewa, v = EWA(0.9), 0.0
    for t, x in enumerate(xs, start=1):
        v = 0.9 * v + 0.1 * x
        assert ewa.update(float(x)) == pytest.approx(v / (1 - 0.9**t), rel=1e-12)
    assert EWA(0.98).update(2.5) == pytest.approx(2.5)  # bias-corrected: the first value is itself
    assert math.isnan(EWA().value)


def test_session_smoothed_loss_is_the_ewa_of_step_losses(make):
    s = make()
    assert s.run_steps(20) == 20
    v = 0.0
    for t, p in enumerate(s.steps, start=1):
        assert p["step"] == t
        v = 0.98 * v + 0.02 * p["loss"]
        assert p["smooth"] == pytest.approx(v / (1 - 0.98**t), rel=1e-12)
    assert s.curves(since=15)["steps"][0]["step"] == 16


def test_set_lr_takes_effect_at_exactly_the_next_step(make):
    a = make(optimizer="sgd", dtype="float64")
    b = make(optimizer="sgd", dtype="float64")
    a.run_steps(5)
    b.run_steps(5)
    assert all(np.array_equal(x, y) for x, y in zip(weights(a).values(), weights(b).values(), strict=True))
    before = weights(a)
    ra = a.set_hyperparameters(lr=0.05).wait()
    rb = b.set_hyperparameters(learning_rate=0.2).wait()
    assert ra["step"] == rb["step"] == 6
    assert a.trainer.lr[0] == 0.05 and a.hp["learning_rate"] == 0.05
    a.run_steps(1)
    b.run_steps(1)
    # plain SGD: the step-6 update is -lr * g with the same g in both, so the updates scale with the rates
    for n in before:
        da, db = weights(a)[n] - before[n], weights(b)[n] - before[n]
        np.testing.assert_allclose(da * 0.2, db * 0.05, rtol=1e-9, atol=1e-15)
        assert np.abs(da).max() > 0
    assert [p["lr"] for p in a.steps] == [0.01] * 5 + [0.05]
    stored = a.storage.events(a.study_id, kind="set")
    assert len(stored) == 1 and stored[0].step == 6 and stored[0].trial_id == a.trial_id
    assert stored[0].payload["changes"] == {"learning_rate": 0.05}
    assert stored[0].payload["old"] == {"learning_rate": 0.01}


def test_set_in_the_training_thread_is_recorded_at_the_step_it_took_effect(make):
    s = make(step_delay_s=0.001, epochs=200).start()
    assert s.wait_for(lambda x: x.step >= 5)
    result = s.set_hyperparameters(lr=0.003, beta1=0.95).wait()
    at = result["step"]
    assert s.wait_for(lambda x: x.step >= at + 1)
    points = {p["step"]: p for p in s.curves()["steps"]}
    assert points[at - 1]["lr"] == 0.01 and points[at]["lr"] == 0.003
    assert s.storage.events(s.study_id, kind="set")[-1].step == at
    s.pause().wait()
    assert s.status == PAUSED
    frozen = s.step
    s.checkpoint().wait()  # applied while paused: the loop wakes for controls, not for steps
    assert s.step == frozen


def test_invalid_controls_are_refused_and_change_nothing(make):
    s = make()
    s.run_steps(3)
    for bad in (
        {"lr": -1},
        {"learning_rate": float("nan")},
        {"learning_rate": "0.1"},
        {"hidden": 3},
        {"beta1": 1.0},
        {"dropout": True},
        {},
    ):
        with pytest.raises(ControlError):
            s.set_hyperparameters(bad)
    with pytest.raises(ControlError, match="unknown hyperparameter 'lrr' .*did you mean 'lr'"):
        s.set_hyperparameters(lrr=0.1)
    with pytest.raises(ControlError, match="no checkpoint 42"):
        s.rollback(42)
    assert s.hp["learning_rate"] == 0.01 and s.run_steps(2) == 2


@pytest.mark.parametrize("at_boundary", [False, True])
def test_rollback_restores_the_checkpoint_and_replays_bit_identically(make, at_boundary):
    s = make(dropout=0.2)  # dropout: the member's own RNG stream must come back too
    s.run_steps(9 if at_boundary else 5)  # 1079 digits / 128 = 9 batches an epoch
    ck = s.checkpoint("here").wait()
    w_ck = weights(s)
    s.run_steps(12)  # crosses an epoch end (and its automatic checkpoint)
    original = [p["loss"] for p in s.steps[ck["step"] :]]
    w_orig, rows_orig = weights(s), [dict(r) for r in s.epochs]
    s.set_hyperparameters(lr=0.5)  # a change to regret
    s.run_steps(2)
    r = s.rollback(ck["checkpoint"]).wait()
    assert r["payload"]["to_step"] == ck["step"] and s.step == ck["step"] and len(s.steps) == ck["step"]
    assert all(np.array_equal(w_ck[n], a) for n, a in s.trainer.params.items())
    assert s.hp["learning_rate"] == 0.01
    assert [e for e in s.events if e["kind"] == "set"][-1]["undone"]
    s.run_steps(12)
    assert [p["loss"] for p in s.steps[ck["step"] :]] == original
    assert all(np.array_equal(w_orig[n], a) for n, a in s.trainer.params.items())
    assert s.epochs == rows_orig
    # twice over, the same
    s.rollback(ck["checkpoint"]).wait()
    s.run_steps(12)
    assert all(np.array_equal(w_orig[n], a) for n, a in s.trainer.params.items())
    kinds = [e.kind for e in s.storage.events(s.study_id)]
    assert kinds.count("rollback") == 2 and "set" in kinds  # the log keeps everything


def test_rollback_after_divergence_brings_the_model_back(make):
    s = make(optimizer="sgd", lr=1.0)
    s.run_steps(2)
    s.set_hyperparameters(lr=1e30)
    s.run_steps(50)
    assert s.status == "diverged"
    with pytest.raises(ControlError, match="diverged"):
        s.set_hyperparameters(lr=0.1).wait()
    s.rollback(0).wait()
    assert s.status == PAUSED and s.step == 0 and s.hp["learning_rate"] == 1.0
    assert s.run_steps(3) == 3 and math.isfinite(s.steps[-1]["loss"])


def test_finishing_epochs_and_stop_close_the_trial_in_storage(make):
    s = make(epochs=2)
    s.run_steps(100)
    assert s.status == "finished" and s.epoch == 2 and len(s.epochs) == 2
    s.stop().wait()
    store = open_storage(s.storage.url)
    trial = store.trial(s.trial_id)
    assert trial.state == TrialState.COMPLETE and trial.metrics["epochs_run"] == 2
    assert [r["epoch"] for r in store.curves(s.study_id)[s.trial_id]] == [0, 1]
    with pytest.raises(ControlError, match="stopped"):
        s.pause()


@pytest.mark.parametrize("warm", [True, False])
def test_fork_makes_a_study_centred_on_the_current_values(make, warm):
    s = make(optimizer="adam", epochs=4)
    s.run_steps(11)  # epoch 1, mid-epoch
    s.set_hyperparameters(lr=0.02, beta1=0.8)
    r = s.fork(k=4, epochs=1, params=["learning_rate", "beta1"], warm=warm).wait()
    fork = s.forks[0]
    fork.join(120)
    assert fork.status == "done", fork.error
    study = Study(s.storage.url, r["study"])
    space = study.spec.space
    lr, b1 = space["learning_rate"], space["beta1"]
    assert math.sqrt(lr.low * lr.high) == pytest.approx(0.02) and lr.high / lr.low == pytest.approx(4)
    assert (1 - b1.low) == pytest.approx(0.4) and (1 - b1.high) == pytest.approx(0.1)  # 1 - beta within x2
    trials = study.trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert 0.01 <= t.params["learning_rate"] <= 0.04 and 0.6 <= t.params["beta1"] <= 0.9
    curves = study.curves()
    first_epochs = {rows[0]["epoch"] for rows in curves.values()}
    assert first_epochs == ({1} if warm else {0})  # warm: goes on from the fork's epoch
    assert study.spec.training.epochs == 2
    assert s.status == PAUSED  # the panda handed over
    assert s.storage.events(s.study_id, kind="fork")[0].payload["study"] == r["study"]


def test_fork_requests_are_checked(make):
    s = make()
    for kw in ({"k": 1}, {"k": 100}, {"factor": 1.0}, {"params": ["hidden"]}, {"epochs": 0}):
        with pytest.raises(ControlError, match="fork"):
            s.fork(**kw)


# ------------------------------------------------------------------------------------------ the API
@pytest.fixture
def live(make):
    s = make(step_delay_s=0.002, epochs=10_000).start()
    client = TestClient(create_app(s, TOKEN))
    yield s, client
    client.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
POSTS = [
    ("/api/pause", None),
    ("/api/resume", None),
    ("/api/set", {"lr": 0.001}),
    ("/api/checkpoint", {}),
    ("/api/rollback", {"checkpoint": 0}),
    ("/api/stop", None),
    ("/api/fork", {"k": 2}),
]


def advancing(s: PandaSession) -> bool:
    start = s.step
    return s.status == RUNNING and s.wait_for(lambda x: x.step > start, 10)


def test_pages_and_reads_are_served(live):
    s, c = live
    page = c.get("/")
    assert page.status_code == 200 and "caviar panda" in page.text and "/static/plotly.min.js" in page.text
    srcs = re.findall(r'<script[^>]*src="([^"]+)"', page.text)
    assert srcs == ["/static/plotly.min.js", "/static/panda.js"]  # no CDN
    js = c.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.text) > 1_000_000 and "javascript" in js.headers["content-type"]
    assert c.get("/static/panda.js").status_code == 200
    for path in ("/static/../../pyproject.toml", "/static/session.py", "/../pyproject.toml", "/etc/passwd"):
        assert c.get(path).status_code == 404
    assert s.wait_for(lambda x: x.step >= 3)
    st = c.get("/api/state").json()
    assert st["status"] == "running" and st["hp"]["learning_rate"] == 0.01 and st["checkpoints"][0]["id"] == 0
    assert st["events"][0]["kind"] == "start"
    curves = c.get("/api/curves", params={"since": 1}).json()
    assert curves["steps"][0]["step"] == 2 and {"loss", "smooth", "lr"} <= set(curves["steps"][0])
    with c.stream("GET", "/api/stream", params={"max_events": 2}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    first, second = (json.loads(line[6:]) for line in lines)
    assert first["steps"] and first["state"]["study"] == s.study_name
    assert all(p["step"] > first["steps"][-1]["step"] for p in second["steps"])


@pytest.mark.parametrize("path,body", POSTS)
def test_controls_need_the_token(live, path, body):
    s, c = live
    missing = c.post(path, json=body)
    assert missing.status_code == 401 and "token" in missing.json()["error"]
    wrong = c.post(path, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json() == {"error": "wrong token"}
    assert c.post(path, json=body, headers={"X-Caviar-Token": "nope"}).status_code == 403
    assert advancing(s)


@pytest.mark.parametrize(
    "path,body,status,words",
    [
        ("/api/set", {"lr": -1}, 422, "greater than 0"),
        ("/api/set", {"learning_rate": "nan"}, 422, "valid number"),
        ("/api/set", {"learning_rate": "fast"}, 422, "valid number"),
        ("/api/set", b'{"learning_rate": 1e400}', 422, "finite"),
        ("/api/set", b'{"learning_rate": NaN}', 422, "finite"),
        ("/api/set", {"beta2": 1.5}, 422, "less than 1"),
        ("/api/set", {"hidden": [3]}, 422, "unknown hyperparameter 'hidden'"),
        ("/api/set", {"learnin_rate": 0.1}, 422, "did you mean 'learning_rate'"),
        ("/api/set", {}, 422, "nothing to set"),
        ("/api/set", [0.1], 422, ""),
        ("/api/rollback", {"checkpoint": 999}, 404, "no checkpoint 999"),
        ("/api/rollback", {"checkpoint": "first"}, 422, "checkpoint"),
        ("/api/rollback", {}, 422, "missing"),
        ("/api/fork", {"k": 1}, 422, "k"),
        ("/api/fork", {"params": ["hidden"]}, 422, "cannot vary 'hidden'"),
        ("/api/checkpoint", {"label": 3}, 422, "label"),
    ],
)
def test_malformed_payloads_are_4xx_and_training_goes_on(live, path, body, status, words):
    s, c = live
    if isinstance(body, bytes):
        r = c.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        r = c.post(path, json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and "\n" not in r.json()["error"]
    assert s.hp["learning_rate"] == 0.01
    assert advancing(s)
    assert c.get("/api/state").json()["status"] == "running"


def test_not_json_is_refused(live):
    s, c = live
    r = c.post("/api/set", content=b"lr=0.1", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    assert advancing(s)


def test_every_control_through_the_api(live):
    s, c = live
    assert s.wait_for(lambda x: x.step >= 3)
    r = c.post("/api/set", json={"lr": 0.002, "beta1": 0.95}, headers=AUTH).json()["result"]
    assert r["payload"]["changes"] == {"learning_rate": 0.002, "beta1": 0.95}
    assert s.wait_for(lambda x: x.step >= r["step"])
    assert {p["step"]: p["lr"] for p in s.curves()["steps"]}[r["step"]] == 0.002
    assert c.post("/api/pause", headers={"X-Caviar-Token": TOKEN}).json()["state"]["status"] == "paused"
    ck = c.post("/api/checkpoint", json={"label": "before"}, headers=AUTH).json()["result"]
    assert ck["step"] == s.step
    assert c.post("/api/resume", headers=AUTH).json()["state"]["status"] == "running"
    assert s.wait_for(lambda x: x.step >= ck["step"] + 3)
    c.post("/api/pause", headers=AUTH)
    back = c.post("/api/rollback", json={"checkpoint": ck["checkpoint"]}, headers=AUTH).json()
    assert back["state"]["step"] == ck["step"] and c.get("/api/curves").json()["steps"][-1]["step"] == ck["step"]
    assert c.get("/api/state").json()["generation"] == 1
    fork = c.post("/api/fork", json={"k": 2, "epochs": 1, "params": ["learning_rate"]}, headers=AUTH).json()
    s.forks[-1].join(120)
    assert c.get("/api/state").json()["forks"][0]["status"] == "done"
    assert len(Study(s.storage.url, fork["result"]["study"]).trials) == 2
    assert c.post("/api/stop", headers=AUTH).json()["state"]["status"] == "stopped"
    after = c.post("/api/resume", headers=AUTH)
    assert after.status_code == 409 and "stopped" in after.json()["error"]
    kinds = [e.kind for e in s.storage.events(s.study_id)]
    for kind in ("set", "pause", "checkpoint", "resume", "rollback", "fork", "stop"):
        assert kind in kinds


# ------------------------------------------------------------------------------------------ ctl
@pytest.fixture
def served(make):
    s = make(step_delay_s=0.002, epochs=10_000).start()
    sock = bind_socket("127.0.0.1", None)
    server = make_server(create_app(s, TOKEN))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:  # readiness: poll the flag (the join only bounds each look)
        thread.join(0.01)
        assert thread.is_alive(), "uvicorn died while starting"
    yield s, url_of(sock)
    server.should_exit = True
    thread.join(10)
    sock.close()


def ctl(*args: str):
    return CliRunner().invoke(cli_app, ["ctl", *args])


def test_ctl_drives_a_live_server(served, tmp_path, monkeypatch):
    s, url = served
    flags = ["--url", url, "--token", TOKEN]
    out = ctl("status", *flags)
    assert out.exit_code == 0 and "running" in out.output and "learning_rate=0.01" in out.output
    out = ctl("set", "lr=0.004", "beta2=0.99", *flags)
    assert out.exit_code == 0 and "learning_rate 0.01 -> 0.004" in out.output and "from step" in out.output
    assert s.hp["learning_rate"] == 0.004 and s.hp["beta2"] == 0.99
    for args, words in (
        (["set", "lr=-1"], "greater than 0"),
        (["set", "lr=abc"], "not a number"),
        (["set", "depth=3"], "unknown hyperparameter"),
        (["rollback", "77"], "no checkpoint 77"),
        (["jump"], "unknown action"),
    ):
        out = ctl(*args, *flags)
        assert out.exit_code != 0 and words in out.output and len(out.output.strip().splitlines()) == 1, out.output
    out = ctl("pause", "--url", url, "--token", "wrong")
    assert out.exit_code != 0 and "wrong token" in out.output
    # without flags: the session file in this folder (or above)
    (tmp_path / ".caviar-panda.json").write_text(json.dumps({"url": url, "token": TOKEN}))
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    out = ctl("pause")
    assert out.exit_code == 0 and "paused before step" in out.output and s.status == PAUSED
    out = ctl("checkpoint", "--label", "ctl")
    ident = int(out.output.split("#")[1].split()[0])
    assert out.exit_code == 0 and s.checkpoints[ident].label == "ctl"
    assert ctl("resume").exit_code == 0 and advancing(s)
    ctl("pause")
    out = ctl("rollback", str(ident))
    assert out.exit_code == 0 and s.step == s.checkpoints[ident].step
    out = ctl("fork", "--k", "2", "--epochs", "1", "--params", "learning_rate")
    assert out.exit_code == 0 and "fork study" in out.output
    s.forks[-1].join(120)
    out = ctl("status")
    assert out.exit_code == 0 and "val acc" in out.output and "caviar ctl adopt" in out.output, out.output
    best = s.state()["forks"][-1]["members"][0]["number"]
    out = ctl("adopt", str(best))
    assert out.exit_code == 0 and f"adopted trial #{best}" in out.output, out.output
    assert s.storage.events(s.study_id, kind="adopt")[-1].payload["member"] == best
    out = ctl("adopt", "99")
    assert out.exit_code != 0 and "no member #99" in out.output and len(out.output.strip().splitlines()) == 1
    assert ctl("stop").exit_code == 0 and s.status == "stopped"


def test_ctl_without_a_session_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAVIAR_PANDA_FILE", raising=False)
    out = ctl("status")
    assert out.exit_code != 0 and "no panda session found" in out.output
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    out = ctl("status", "--url", f"http://127.0.0.1:{port}", "--token", "x")
    assert out.exit_code != 0 and "cannot reach the panda session" in out.output


def test_panda_on_a_port_in_use_is_a_one_line_error(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[data]\ndataset = "digits"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = CliRunner().invoke(cli_app, ["panda", str(spec), "--port", str(port)])
    assert out.exit_code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "spec.db").exists()  # refused before anything was trained or stored


def test_each_alias_works_through_the_api_as_in_python(make):
    """The Python API took ``bn`` while POST /api/set answered 422 for it: the same names now work in both."""
    s = make()
    client = TestClient(create_app(s, TOKEN))
    for alias, name in {"lr": "learning_rate", "eps": "epsilon", "weight_decay": "l2", "bn": "bn_momentum"}.items():
        s.set_hyperparameters({alias: 0.25}).wait()
        assert s.hp[name] == 0.25
        r = client.post("/api/set", json={alias: 0.5}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert s.hp[name] == 0.5
    client.close()


# ------------------------------------------------------------------------- branches, sessions, adopt
def test_rollback_then_stop_stores_only_the_kept_branch(make):
    s = make(epochs=30, batch_size=256)  # 5 steps an epoch
    s.run_epochs(17)
    at_17 = [c for c in s.checkpoints.values() if c.epoch == 17][-1]
    s.run_epochs(5)
    assert len(s.storage.curves(s.study_id)[s.trial_id]) == 22
    s.rollback(at_17.id).wait()
    s.stop().wait()
    store = open_storage(s.storage.url)
    assert [r["epoch"] for r in store.curves(s.study_id)[s.trial_id]] == list(range(17))
    assert store.trial(s.trial_id).metrics["epochs_run"] == 17
    # the checkpoint list marks the kept branch: the abandoned branch's automatic ones are not current
    current = {c["id"]: c["current"] for c in s.state()["checkpoints"]}
    assert current[at_17.id] and not any(v for k, v in current.items() if k > at_17.id)


def test_a_rollback_to_an_abandoned_branch_brings_its_ancestors_back(make):
    s = make(epochs=10, batch_size=256)
    s.run_epochs(2)
    a = s.checkpoint("a").wait()["checkpoint"]
    s.run_epochs(2)
    b = s.checkpoint("b").wait()["checkpoint"]
    s.rollback(a).wait()
    assert not {c["id"]: c["current"] for c in s.state()["checkpoints"]}[b]
    s.rollback(b).wait()  # still known: back onto the branch it was taken on
    current = {c["id"]: c["current"] for c in s.state()["checkpoints"]}
    assert current[a] and current[b] and current[0]


def test_a_session_is_stored_as_a_session_not_a_study(make):
    s = make()
    record = open_storage(s.storage.url).get_study(s.study_id)
    assert record.kind == "session"


def test_fork_summary_lists_val_accuracy_and_adopt_continues_from_the_member(make):
    s = make(epochs=6, batch_size=256)
    s.run_epochs(2)
    s.fork(k=3, epochs=2).wait()
    fork = s.forks[0]
    fork.join(120)
    summary = s.state()["forks"][0]
    assert summary["status"] == "done" and summary["adoptable"]
    members = summary["members"]
    study = Study(s.storage.url, fork.name)
    stored = {t.number: t.metrics["val_accuracy"] for t in study.trials}
    assert [m["number"] for m in members] == sorted(stored, key=lambda n: (-stored[n], n))  # best first
    assert all(m["val_accuracy"] == pytest.approx(stored[m["number"]]) and m["adoptable"] for m in members)
    pick = members[-1]["number"]  # not the best: adopt is the user's choice
    row = fork.final.row(pick)
    event = s.adopt(pick).wait()
    assert event["kind"] == "adopt" and event["payload"]["member"] == pick and event["payload"]["to_epoch"] == 4
    assert s.epoch == 4 and s.status == PAUSED
    assert all(np.array_equal(a[row], s.trainer.params[n][0]) for n, a in fork.final.params.items())
    for name in summary["params"]:
        assert s.hp[name] == pytest.approx(fork.final.hp[name][row])
    fork_curve = study.curves()[next(t.id for t in study.trials if t.number == pick)]
    assert [r["epoch"] for r in s.epochs] == [0, 1, 2, 3]
    assert s.epochs[-1]["val_accuracy"] == pytest.approx(fork_curve[-1]["val_accuracy"])
    assert s.run_epochs(1) and s.epoch == 5  # and it goes on training from there
    assert [r["epoch"] for r in s.storage.curves(s.study_id)[s.trial_id]] == [0, 1, 2, 3, 4]
    # rolling back before the adoption is possible: the checkpoint "before adopt" is on the branch
    before = event["payload"]["checkpoint_before"]
    assert {c["id"]: c["current"] for c in s.state()["checkpoints"]}[before]


def test_adopt_is_refused_with_one_line(make):
    s = make(epochs=4, batch_size=256)
    with pytest.raises(ControlError, match="no fork yet"):
        s.adopt(0).wait()
    s.run_epochs(1)
    s.fork(k=2, epochs=1, warm=False).wait()
    s.forks[0].join(120)
    with pytest.raises(ControlError, match="from scratch"):
        s.adopt(0).wait()
    s.fork(k=2, epochs=1).wait()
    s.forks[1].join(120)
    with pytest.raises(ControlError, match="no member #7"):
        s.adopt(7).wait()
    with pytest.raises(ControlError, match="fork 5"):
        s.adopt(0, fork=5).wait()
