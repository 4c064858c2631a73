"""Live control of an external objective: the panda's HTTP API and `caviar ctl` steer a running trial."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from caviar.cli import app
from caviar.storage import TrialState, open_storage
from caviar.tune import optimize
from objectives import live_lr

DEADLINE_S = 120.0
POLL_S = 0.05
TOKEN = "test-token"


def _wait(predicate, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)  # polling interval of the storage or the server, not a synchronization
    return found


def test_a_live_objective_is_steered_through_the_panda_api_and_ctl(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # where the live trial writes .caviar-panda.json for `caviar ctl`
    monkeypatch.setenv("CAVIAR_TEST_TOKEN", TOKEN)
    db = str(tmp_path / "live.db")
    space = {"lr": {"low": 0.01, "high": 0.1, "scale": "log"}}
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(study=optimize(live_lr, space, trials=1, storage=db, name="live")), daemon=True
    )
    runner.start()
    store = open_storage(db)
    study = _wait(lambda: next(iter(store.list_studies()), None), "the study")
    live = _wait(lambda: [e for e in store.events(study.id) if e.kind == "live"], "the live server")[0]
    info = json.loads((tmp_path / ".caviar-panda.json").read_text())
    assert info["url"] == live.payload["url"] and info["token"] == TOKEN
    try:
        with httpx.Client(base_url=info["url"], timeout=60) as client:
            state = client.get("/api/state").json()
            assert state["status"] == "running" and state["study"] == "live" and list(state["hp"]) == ["lr"]
            start_lr = state["hp"]["lr"]
            (control,) = client.get("/api/hparams").json()["live"]  # the page's boxes: the trial's own names
            assert control["name"] == "lr" and control["allowed"] == "searched on a log scale in [0.01, 0.1]"
            assert "panda.js" in client.get("/").text
            assert client.post("/api/set", json={"lr": 0.5}).status_code == 401
            assert client.post("/api/set", json={"lr": 0.5}, headers={"X-Caviar-Token": "nope"}).status_code == 403
            auth = {"Authorization": f"Bearer {TOKEN}"}
            bad = client.post("/api/set", json={"lrr": 0.5}, headers=auth)
            assert bad.status_code == 422 and bad.json() == {
                "error": "unknown hyperparameter 'lrr' (did you mean 'lr'?); this trial has lr"
            }
            assert client.post("/api/set", json={"lr": "fast"}, headers=auth).json() == {
                "error": "lr: 'fast' is not a finite number"
            }
            answer = client.post("/api/set", json={"lr": 0.5}, headers=auth)
            assert answer.status_code == 200, answer.text
            step = answer.json()["result"]["step"]  # the first epoch (counted from 1) that runs under it

            def rows():
                (trial,) = store.trials(study.id)
                curve = store.curves(study.id, [trial.id])[trial.id]
                return curve if len(curve) > step + 1 else None

            curve = _wait(rows, "epochs after the change")
            assert {r["lr"] for r in curve[:step]} == {start_lr}  # epochs 0 .. step - 1 ran before it
            assert {r["lr"] for r in curve[step:]} == {0.5}  # the objective read it at its next epoch
            (event,) = [e for e in store.events(study.id) if e.kind == "set"]
            assert event.step == step and event.trial_id is not None
            assert event.payload == {"changes": {"lr": 0.5}, "old": {"lr": start_lr}}
            drawn = [e for e in client.get("/api/state").json()["events"] if e["kind"] == "set"]
            assert drawn == [{"id": event.id, "kind": "set", "payload": event.payload, "step": step, "undone": False}]
            epochs = client.get("/api/curves").json()["epochs"]
            assert epochs[0]["step"] == 1 and "lr" in epochs[0]

            cli = CliRunner()
            status = cli.invoke(app, ["ctl", "status"])
            assert status.exit_code == 0, status.output
            assert status.output.startswith("running") and "lr=0.5" in status.output
            changed = cli.invoke(app, ["ctl", "set", "lr=0.25"])
            assert changed.exit_code == 0, changed.output
            assert "lr 0.5 -> 0.25 from step" in changed.output
            paused = cli.invoke(app, ["ctl", "pause"])
            assert paused.exit_code == 0, paused.output
            assert client.get("/api/state").json()["status"] == "paused"
            assert cli.invoke(app, ["ctl", "resume"]).exit_code == 0
            assert client.get("/api/state").json()["status"] == "running"
            assert "has none" in cli.invoke(app, ["ctl", "rollback", "1"]).output
            assert cli.invoke(app, ["ctl", "stop"]).exit_code == 0
    finally:
        with contextlib.suppress(httpx.HTTPError):  # a failed assertion above leaves the objective running
            httpx.post(f"{info['url']}/api/stop", headers={"X-Caviar-Token": TOKEN}, timeout=60)
        runner.join(timeout=DEADLINE_S)
    (trial,) = result["study"].trials
    assert trial.state == TrialState.COMPLETE and trial.objective is not None
    kinds = [e.kind for e in store.events(study.id)]
    assert kinds == ["live", "set", "set", "pause", "resume", "stop"]
    assert not (tmp_path / ".caviar-panda.json").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{info['url']}/api/state", timeout=2)
