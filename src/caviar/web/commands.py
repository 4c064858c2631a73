"""CLI commands of the dashboard and the report; cli.py registers them with ``app.command()``.

This module stays light to import: fastapi, uvicorn, plotly and matplotlib load inside the functions.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from caviar.console import console, fail, storage_url

StorageOpt = Annotated[
    str | None, typer.Option("--storage", help="SQLAlchemy URL or SQLite file (default: the one .db file here)")
]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _storage(storage: str | None) -> str:
    return storage_url(storage)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: the OS picks a free one); uvicorn serves on it, so the
    printed port is the one in use, with no race between choosing and binding."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}; try --port 0")
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _allowed_hosts(host: str) -> list[str] | None:
    """On a loopback address only local names may reach the app (DNS-rebinding guard); else any."""
    if host in LOOPBACK:
        return ["127.0.0.1", "localhost", "::1", "[::1]"]
    return None


def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless you mean to share")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (printed)", min=0, max=65535)] = 8765,
    study: Annotated[str | None, typer.Option("--study", help="Open this study first")] = None,
) -> None:
    """Serve the dashboard of the studies in a storage (read-only; live while a study runs)."""
    import uvicorn

    from caviar.console import say_error
    from caviar.errors import CaviarError
    from caviar.web.app import create_app

    try:
        app = create_app(_storage(storage), allowed_hosts=_allowed_hosts(host))
        if study is not None:
            study = app.state.storage.get_study(study).name
    except CaviarError as exc:
        fail(str(exc))
    sock = bind(host, port)
    port = int(sock.getsockname()[1])
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/" + (f"#{quote(study)}" if study else "")
    console.print(f"caviar dashboard for {app.state.storage.url}", highlight=False)
    console.print(f"open {address}   (Ctrl-C stops it)", highlight=False)
    if host not in LOOPBACK:
        say_error(f"listening on {host}: anyone who can reach it can read your studies", "warning", "yellow")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def report(
    study: Annotated[str, typer.Argument(help="Study name or id")],
    storage: StorageOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write report.html and the PNGs to")] = Path(
        "report"
    ),
) -> None:
    """Write a static report of a study: report.html (opens offline) and PNG figures for a paper."""
    from caviar.errors import CaviarError
    from caviar.web.app import open_existing
    from caviar.web.data import load_study

    if out.exists() and not out.is_dir():
        fail(f"--out: {out} is a file; give a folder to write report.html and the PNGs to")
    try:
        data = load_study(study, open_existing(_storage(storage)))
    except CaviarError as exc:
        fail(str(exc))
    from caviar.web.report import write_report

    for path in write_report(data, out):
        console.print(str(path), highlight=False, soft_wrap=True)
