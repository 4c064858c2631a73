"""CLI commands of panda mode: ``caviar panda SPEC.toml`` serves a session; ``caviar ctl`` steers it.

Light to import: the session, FastAPI and uvicorn load inside the functions. ``caviar panda`` writes
``.caviar-panda.json`` (url, token, pid, study; mode 0600) in the working directory, and ``caviar ctl``
looks for it there and in the folders above, so it needs no flags when run beside the session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from caviar.console import fail

STATE_FILE = ".caviar-panda.json"


def _fail(message: str) -> None:
    fail(message)


def panda(
    spec: Annotated[Path, typer.Argument(help="The study spec (TOML): its fixed values, tuned ones at their midpoint")],
    port: Annotated[int | None, typer.Option(help="Port to listen on (default: a free one)")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    token: Annotated[str | None, typer.Option(envvar="CAVIAR_TOKEN", help="Token for controls (default: random)")] = (
        None
    ),
    storage: Annotated[str | None, typer.Option(help="SQLAlchemy URL or SQLite file (default: the spec's)")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train (default: the spec's training.epochs)")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Automatic checkpoint every N epochs (0: none)")] = 1,
    step_delay: Annotated[float, typer.Option(help="Seconds to wait after each step (to watch a fast model)")] = 0.0,
    paused: Annotated[bool, typer.Option("--paused", help="Start paused (press resume on the page)")] = False,
) -> None:
    """Train one model and steer it from the browser (or caviar ctl): pause, change, roll back, fork."""
    import secrets

    from rich.console import Console

    from caviar.errors import CaviarError
    from caviar.panda.server import bind_socket, create_app, make_server, url_of
    from caviar.panda.session import PandaSession

    console = Console()
    if not spec.is_file():
        _fail(f"spec file not found: {spec}")
    if step_delay < 0:
        _fail(f"--step-delay: {step_delay} must be >= 0")
    try:
        sock = bind_socket(host, port)
    except CaviarError as exc:
        _fail(str(exc))
    try:
        session = PandaSession(
            spec, storage=storage, epochs=epochs, checkpoint_every=checkpoint_every, step_delay_s=step_delay
        )
    except CaviarError as exc:
        sock.close()
        _fail(str(exc))
    token = token or secrets.token_urlsafe(24)
    loopback = {"127.0.0.1", "localhost", "::1"}
    app = create_app(session, token, allowed_hosts=None if host not in loopback else sorted(loopback))
    server = make_server(app)
    url = url_of(sock)
    state_file = Path.cwd() / STATE_FILE
    write_state_file(
        state_file,
        {
            "url": url,
            "token": token,
            "pid": os.getpid(),
            "study": session.study_name,
            "storage": session.storage.url,
            "spec": str(spec.resolve()),
        },
    )
    console.print(
        f"panda session {session.study_name}: {session.train_config.optimizer}, "
        f"hidden {list(session.model_config.hidden)}, {session.total_epochs} epochs on {session.data.name}",
        highlight=False,
    )
    console.print(f"open   {url}/?token={token}", highlight=False, soft_wrap=True)
    console.print(f"token  {token}", highlight=False)
    console.print(
        f"ctl    caviar ctl status | pause | resume | set lr=0.001 | checkpoint | rollback ID | stop | "
        f"fork --k 8   (reads {STATE_FILE})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"stored in {session.storage.url} as session {session.study_name}; Ctrl-C to quit", highlight=False)
    if paused:
        console.print("paused: press start on the page (or: caviar ctl resume) to begin", highlight=False)
    session.start(paused=paused)
    try:
        server.run(sockets=[sock])
    finally:
        session.close()
        remove_state_file(state_file, url)
        sock.close()


def write_state_file(path: Path, info: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)


def remove_state_file(path: Path, url: str) -> None:
    try:
        if json.loads(path.read_text()).get("url") == url:
            path.unlink()
    except (OSError, ValueError):
        pass


def find_state(start: Path | None = None) -> dict[str, Any] | None:
    """The nearest ``.caviar-panda.json`` (``CAVIAR_PANDA_FILE`` first, then cwd and its parents)."""
    env = os.environ.get("CAVIAR_PANDA_FILE")
    candidates = [Path(env)] if env else []
    here = (start or Path.cwd()).resolve()
    candidates += [d / STATE_FILE for d in (here, *here.parents)]
    for path in candidates:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                continue
    return None


ACTIONS = ("status", "pause", "resume", "set", "checkpoint", "rollback", "stop", "fork", "adopt")


def ctl(
    action: Annotated[
        str, typer.Argument(help="status, pause, resume, set, checkpoint, rollback, stop, fork or adopt")
    ],
    args: Annotated[
        list[str] | None,
        typer.Argument(help="set: name=value ...; rollback: a checkpoint id; adopt: a fork trial's number"),
    ] = None,
    url: Annotated[str | None, typer.Option(help="The session's address (default: from .caviar-panda.json)")] = None,
    token: Annotated[str | None, typer.Option(envvar="CAVIAR_TOKEN", help="The session's token")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="fork: how many variants")] = 8,
    factor: Annotated[float, typer.Option(help="fork: range factor around the current values")] = 2.0,
    params: Annotated[str | None, typer.Option(help="fork: names to vary, comma-separated")] = None,
    epochs: Annotated[int | None, typer.Option(help="fork: epochs to train (default: the rest)")] = None,
    scratch: Annotated[bool, typer.Option("--scratch", help="fork: train from scratch, not from the weights")] = False,
    keep_training: Annotated[bool, typer.Option("--keep-training", help="fork: do not pause the session")] = False,
    label: Annotated[str, typer.Option(help="checkpoint: a label")] = "",
    fork_number: Annotated[
        int | None, typer.Option("--fork", help="adopt: which fork (1, 2, ...; default: the latest)")
    ] = None,
) -> None:
    """Send a control to a running panda session (the same ones as its page)."""
    import httpx

    args = list(args or [])
    if action not in ACTIONS:
        _fail(f"unknown action '{action}'; one of {', '.join(ACTIONS)}")
    if url is None or token is None:
        found = find_state()
        if found is None and url is None:
            _fail(f"no panda session found: no {STATE_FILE} here or above; pass --url and --token")
        url = url or (found or {})["url"]
        token = token or (found or {}).get("token")
    body: dict[str, Any] | None = None
    if action == "set":
        body = _parse_assignments(args)
    elif action == "rollback":
        if len(args) != 1 or not args[0].lstrip("#").isdigit():
            _fail("rollback needs one checkpoint id, e.g. caviar ctl rollback 3 (see caviar ctl status)")
        body = {"checkpoint": int(args[0].lstrip("#"))}
    elif action == "fork":
        body = {"k": k, "factor": factor, "warm": not scratch, "pause": not keep_training}
        if params:
            body["params"] = [p.strip() for p in params.split(",") if p.strip()]
        if epochs is not None:
            body["epochs"] = epochs
    elif action == "checkpoint":
        body = {"label": label}
    elif action == "adopt":
        if len(args) != 1 or not args[0].lstrip("#").isdigit():
            _fail("adopt needs one fork trial number, e.g. caviar ctl adopt 3 (see caviar ctl status)")
        body = {"member": int(args[0].lstrip("#")), "fork": fork_number}
    if action not in ("set", "rollback", "adopt") and args:
        _fail(f"{action} takes no arguments, got {' '.join(args)}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url.rstrip("/"), timeout=60.0) as client:
            if action == "status":
                response = client.get("/api/state")
            else:
                response = client.post(f"/api/{action}", json=body or {}, headers=headers)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the panda session at {url}: {exc} (is caviar panda still running?)")
    if response.status_code >= 400:
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text.strip() or f"HTTP {response.status_code}"
        _fail(f"{message} (HTTP {response.status_code})")
    _print_result(action, response.json())


def _parse_assignments(args: list[str]) -> dict[str, float]:
    if not args:
        _fail("set needs name=value pairs, e.g. caviar ctl set lr=0.001 beta1=0.95")
    out: dict[str, float] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name:
            _fail(f"set: '{arg}' is not name=value")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            _fail(f"set: {name}: '{value}' is not a number")
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_result(action: str, answer: dict[str, Any]) -> None:
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True)
    if action == "status":
        s = answer
        out.print(
            f"{s['status']}  step {s['step']}  epoch {s['epoch']}/{s['epochs']}  lr {_fmt(s['lr'])}  study {s['study']}"
        )
        out.print("hp  " + "  ".join(f"{k}={_fmt(v)}" for k, v in s["hp"].items()))
        out.print("checkpoints  " + ", ".join(f"#{c['id']} {c['label']} (step {c['step']})" for c in s["checkpoints"]))
        shown = [e for e in s["events"] if not (e["kind"] == "checkpoint" and e["payload"].get("label") == "auto")]
        for e in shown[-5:]:
            undone = "  (undone)" if e["undone"] else ""
            out.print(f"  step {e['step']}: {e['kind']} {json.dumps(e['payload'])}{undone}")
        for n, f in enumerate(s["forks"], 1):
            out.print(f"fork {n} {f['study']}: {f['k']} trials, {f['status']}")
            for m in f.get("members", []):
                params = " ".join(f"{k}={_fmt(v)}" for k, v in m["params"].items() if k in f["params"])
                hint = f"   caviar ctl adopt {m['number']}" if m.get("adoptable") else ""
                out.print(f"  #{m['number']} {m['state'].lower()}  val acc {_fmt(m['val_accuracy'])}  {params}{hint}")
        return
    r = answer.get("result", {})
    p = r.get("payload", {})
    if action == "set":
        changes = ", ".join(f"{k} {_fmt(p['old'].get(k))} -> {_fmt(v)}" for k, v in p["changes"].items())
        out.print(f"{changes} from step {r['step']}")
    elif action == "checkpoint":
        out.print(f"checkpoint #{r['checkpoint']} at step {r['step']} (epoch {r['epoch']})")
    elif action == "rollback":
        out.print(f"rolled back to checkpoint #{p['checkpoint']}: step {p['from_step']} -> {p['to_step']}")
    elif action == "fork":
        out.print(
            f"fork study {r['study']}: {p['k']} trials around "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in p["center"].items())
            + f" ({'from the current weights' if p['warm'] else 'from scratch'}); "
            f"then: caviar show {r['study']} --storage {p.get('storage')}"
        )
    elif action == "adopt":
        out.print(
            f"adopted trial #{p['member']} of {p['study']}: epoch {p['from_epoch']} -> {p['to_epoch']}, "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in p["hp"].items())
            + "; the session is paused: caviar ctl resume"
        )
    elif action == "pause":
        out.print(f"paused before step {r['step']}")
    else:
        out.print(f"{action} at step {r.get('step')}")
