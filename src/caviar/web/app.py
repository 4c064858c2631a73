"""The dashboard: a read-only FastAPI app over a study storage, with one HTML page and a JSON API.

``create_app(storage_url)`` builds it (tests drive it with ``fastapi.testclient.TestClient``);
``caviar dashboard`` serves it with uvicorn on 127.0.0.1. Routes:

- ``/``: the page (vanilla JS + plotly.js); ``/static/NAME``: a fixed whitelist of files, plotly.js
  coming from the installed plotly package; no other file can be read;
- a study name is one path segment whatever it holds (``/``, ``%``, ``..``...): written by
  :func:`caviar.web.urls.name_segment`, read back by the ``segment`` convertor;
- ``/study/{name}/trial/{number}``: a trial's page; ``/study/{name}/lineage``: a PBT study's lineage
  tree and schedules; ``/compare?study=a&study=b``: studies side by side;
- ``/api/studies``, ``/api/studies/{name}``, ``.../trials``, ``.../trials/{number}`` (one trial, with
  ``.../artifacts/{artifact}`` to download its model), ``.../lineage``, ``.../curves``, ``.../boxes``,
  ``.../importance``,
  ``.../figures/{kind}`` (plotly figure JSON built by :mod:`caviar.web.figures`); ``/api/compare``;
- ``.../events``: server-sent events, one when the study's counts, best or running epochs change
  (storage is polled server-side every ``poll_s`` seconds), so the page re-fetches only then.

Nothing here writes to storage.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from caviar.errors import StorageError
from caviar.storage import Storage, TrialState, open_storage
from caviar.web import data as views
from caviar.web.figures import KINDS, best_so_far_figure, edf_figure, figure
from caviar.web.importance import param_importance
from caviar.web.lineage import study_lineage
from caviar.web.urls import name_segment, routing_path

STATIC_DIR = Path(__file__).with_name("static")
#: The only files /static serves: name -> media type. plotly.min.js comes from the plotly package.
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "trial.js": "text/javascript; charset=utf-8",
    "lineage.js": "text/javascript; charset=utf-8",
    "compare.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "plotly.min.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # plotly's WebGL traces (parcoords) compile shaders through regl, which needs 'unsafe-eval'
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
TRIALS_PATTERN = r"^\d{1,9}(,\d{1,9}){0,199}$"
#: A figure's width in pixels, as the page measures its plot (ticks are fitted to it).
Width = Annotated[int | None, Query(ge=200, le=5000, description="the plot's width in pixels")]
ParamName = Annotated[str | None, Query(max_length=200)]

FigureKind = Enum("FigureKind", {k: k for k in KINDS}, type=str)  # type: ignore[misc]


class EncodedSegments:
    """ASGI middleware: route on the raw path (``scope['raw_path']``), so a name's encoded ``/`` stays
    inside its segment (caviar.web.urls.routing_path)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = scope.get("raw_path") if scope.get("type") in ("http", "websocket") else None
        if raw:
            scope = {**scope, "path": routing_path(raw)}
        await self.app(scope, receive, send)


class SegmentConvertor(Convertor[str]):
    """``{name:segment}``: one path segment of the routing path, decoded back to the name it encodes."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return name_segment(value)


register_url_convertor("segment", SegmentConvertor())


def open_existing(storage_url: str | os.PathLike[str] | Storage) -> Storage:
    """Open a storage read-only: a SQLite file that does not exist is an error (never created), nothing
    is written, a database without caviar's tables is refused (caviar.storage's read-only open)."""
    if isinstance(storage_url, Storage):
        return storage_url
    return open_storage(storage_url, read_only=True)


def plotly_js_path() -> Path | None:
    """plotly.min.js inside the installed plotly package, if it is there as a file."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    return path if path.is_file() else None


def plotly_js() -> bytes:
    """The plotly.js bundle shipped with the plotly package (never fetched from a CDN)."""
    path = plotly_js_path()
    if path is not None:
        return path.read_bytes()
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def parse_numbers(text: str | None) -> list[int] | None:
    """'1,2,3' -> [1, 2, 3] (the query pattern has already vetted the text)."""
    return None if not text else [int(x) for x in text.split(",")]


# ------------------------------------------------------------------------------------------ the app


def create_app(
    storage_url: str | os.PathLike[str] | Storage, *, poll_s: float = 1.0, allowed_hosts: list[str] | None = None
) -> FastAPI:
    """The dashboard app over one storage. ``allowed_hosts`` (None = any) guards against DNS rebinding
    when served on localhost; ``poll_s`` is how often the events stream looks at storage."""
    storage = open_existing(storage_url)
    # plotly imports pandas lazily, inside the request threads: importing it here, once, keeps two first
    # figure requests from racing on a half-imported module ("partially initialized module 'pandas'").
    import pandas  # noqa: F401

    app = FastAPI(title="caviar dashboard", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.storage = storage
    _add_middleware(app, allowed_hosts)
    _add_page_routes(app)
    _add_api_routes(app, storage)
    _add_events_route(app, storage, poll_s)
    return app


def _add_middleware(app: FastAPI, allowed_hosts: list[str] | None) -> None:
    app.add_middleware(EncodedSegments)  # a study name's encoded '/' stays in its segment (caviar.web.urls)
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(StorageError)
    async def _storage_error(_request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse({"detail": f"storage error: {exc}"}, status_code=500)


def _add_page_routes(app: FastAPI) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"))

    @app.get("/study/{name:segment}", include_in_schema=False)
    def study_page(name: str) -> RedirectResponse:
        """The study's view lives on the index page, under #NAME."""
        return RedirectResponse("/#" + quote(name, safe=""), status_code=307)  # a fragment: dots stay

    @app.get("/study/{name:segment}/trial/{number}", response_class=HTMLResponse, include_in_schema=False)
    def trial_page(name: str, number: str) -> HTMLResponse:
        """The trial page; its script fetches the trial and says so when there is no such trial."""
        return HTMLResponse((STATIC_DIR / "trial.html").read_text(encoding="utf-8"))

    @app.get("/study/{name:segment}/lineage", response_class=HTMLResponse, include_in_schema=False)
    def lineage_page(name: str) -> HTMLResponse:
        """A PBT study's lineage tree and every trial's hyperparameter schedule (caviar.web.lineage)."""
        return HTMLResponse((STATIC_DIR / "lineage.html").read_text(encoding="utf-8"))

    @app.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare_page() -> HTMLResponse:
        """Two or more studies side by side (``?studies=a,b``)."""
        return HTMLResponse((STATIC_DIR / "compare.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        """Only the whitelisted names; everything else (../, encoded slashes, other files) is a 404."""
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file '{name}'")
        body = plotly_js() if name == "plotly.min.js" else (STATIC_DIR / name).read_bytes()
        headers = {"Cache-Control": "public, max-age=86400"} if name == "plotly.min.js" else {}
        return Response(body, media_type=STATIC_FILES[name], headers=headers)


def _study(storage: Storage, name: str) -> views.StudyData:
    """The study's snapshot; unknown -> 404 with the known names."""
    try:
        return views.load_study(name, storage)
    except StorageError as exc:
        raise HTTPException(404, str(exc)) from None


def _add_api_routes(app: FastAPI, storage: Storage) -> None:
    @app.get("/api/studies")
    def list_studies() -> dict[str, Any]:
        """Every study: name, status, counts per state, best metric."""
        return {"storage": storage.url, "studies": [views.study_summary(r) for r in storage.list_studies()]}

    @app.get("/api/studies/{name:segment}")
    def study(name: str) -> dict[str, Any]:
        """The study's spec summary and space (each parameter with its scale)."""
        return views.study_detail(_study(storage, name))

    @app.get("/api/studies/{name:segment}/trials")
    def trials(
        name: str,
        sort: Annotated[str, Query(max_length=200)] = "number",
        desc: bool = False,
        state: Annotated[list[TrialState] | None, Query()] = None,
    ) -> dict[str, Any]:
        """Rows of the trials table, sorted on a column (``params.NAME``/``metrics.NAME`` too)."""
        data = _study(storage, name)
        rows = [views.trial_row(data, t) for t in data.trials if state is None or t.state in state]
        try:
            rows = views.sort_rows(rows, sort, desc)
        except KeyError as exc:
            raise HTTPException(400, exc.args[0]) from None
        params = [p.as_dict() for p in data.params]
        return {"metric": data.metric, "test_metric": data.test_metric, "params": params, "trials": rows}

    @app.get("/api/studies/{name:segment}/curves")
    def curves(
        name: str,
        trials: Annotated[str | None, Query(pattern=TRIALS_PATTERN, description="trial numbers, 1,2,3")] = None,
        top: Annotated[int, Query(ge=1, le=100)] = views.DEFAULT_TOP_K,
    ) -> dict[str, Any]:
        """Per-epoch curves of the trials named, or of the ``top`` best."""
        data = _study(storage, name)
        chosen = _chosen(data, parse_numbers(trials), top)
        return views.curves_payload(data, chosen)

    @app.get("/api/studies/{name:segment}/boxes")
    def boxes(name: str) -> dict[str, Any]:
        """The coarse-to-fine box of each round, in the user's variables."""
        return views.boxes_payload(_study(storage, name))

    @app.get("/api/studies/{name:segment}/figures/{kind}")
    def figure_json(
        name: str,
        kind: FigureKind,
        trials: Annotated[str | None, Query(pattern=TRIALS_PATTERN)] = None,
        top: Annotated[int, Query(ge=1, le=100)] = views.DEFAULT_TOP_K,
        x: ParamName = None,
        y: ParamName = None,
        width: Width = None,
        method: Annotated[str, Query(max_length=40, description="importance: forest, fanova, ped_anova")] = "forest",
    ) -> Response:
        """A plotly figure as JSON (``Plotly.react(div, fig.data, fig.layout)`` draws it); ``width`` is the
        plot's width in pixels, which the ticks are fitted to."""
        data = _study(storage, name)
        options: dict[str, Any] = {"width": width}
        if kind.value == "curves":
            options |= {"trials": parse_numbers(trials), "k": top}
            if trials:
                _chosen(data, options["trials"], top)  # unknown numbers -> 404
        elif kind.value in ("boxes", "pair"):
            options |= {"x": x, "y": y}
        elif kind.value == "importance":
            options["method"] = method
        try:
            fig = figure(data, kind.value, **options)
        except KeyError as exc:
            raise HTTPException(422 if kind.value == "pair" else 400, exc.args[0]) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return Response(fig.to_json(), media_type="application/json")

    @app.get("/api/studies/{name:segment}/importance")
    def importance(name: str, method: Annotated[str, Query(max_length=40)] = "forest") -> dict[str, Any]:
        """Each hyperparameter's importance for the metric (random forest over the complete trials, or
        Optuna's fanova / ped_anova when installed)."""
        data = _study(storage, name)
        try:
            return param_importance(data, method=method).as_dict()
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/api/studies/{name:segment}/trials/{number}")
    def trial(name: str, number: int) -> dict[str, Any]:
        """One trial: params, metrics, curve, events, artifacts (404 for a number the study lacks)."""
        data = _study(storage, name)
        try:
            return views.trial_detail(data, number)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None

    @app.get("/api/studies/{name:segment}/lineage")
    def lineage(name: str) -> dict[str, Any]:
        """A PBT study's trials (population, value, schedule) and copies (parent -> child after epoch e)."""
        return study_lineage(_study(storage, name))

    @app.get("/api/studies/{name:segment}/trials/{number}/artifacts/{artifact:segment}")
    def artifact(name: str, number: int, artifact: str) -> Response:
        """Download an artifact stored for a trial (its model file); only names storage lists."""
        data = _study(storage, name)
        try:
            t = views.trial_by_number(data, number)
        except KeyError as exc:
            raise HTTPException(404, exc.args[0]) from None
        if artifact not in storage.artifact_names(t.id):
            raise HTTPException(404, f"no artifact '{artifact}' for trial #{number} of study '{name}'")
        wanted = f"{name}-trial{number}-{artifact}"
        plain = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in wanted)
        # an ASCII name for every client, the exact one (RFC 6266's filename*) for those that read it
        headers = {
            "Content-Disposition": f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(wanted, safe='')}"
        }
        return Response(storage.load_artifact(t.id, artifact), media_type="application/octet-stream", headers=headers)

    @app.get("/api/compare")
    def compare(
        study: Annotated[list[str] | None, Query(description="a study name (repeat it)")] = None,
        studies: Annotated[str | None, Query(max_length=2000, description="study names, a,b")] = None,
        width: Width = None,
    ) -> Response:
        """Two or more studies side by side: their summaries, best-so-far curves and EDFs. Names come as
        ``study=a&study=b`` (any name, commas included) or ``studies=a,b`` (names without commas)."""
        names = list(study or []) + [n.strip() for n in (studies or "").split(",") if n.strip()]
        if len(set(names)) < 2:
            raise HTTPException(422, f"compare needs at least two different study names, got {', '.join(names)}")
        known = [r.name for r in storage.list_studies()]
        missing = [n for n in names if n not in known]
        if missing:
            raise HTTPException(
                404,
                f"no study {', '.join(repr(n) for n in missing)} in this storage; known: {', '.join(known) or 'none'}",
            )
        datas = [_study(storage, n) for n in dict.fromkeys(names)]
        body = {
            "studies": [views.study_summary(d.record) for d in datas],
            "figures": {
                "best_so_far": json.loads(best_so_far_figure(datas, width=width).to_json()),
                "edf": json.loads(edf_figure(datas, width=width).to_json()),
            },
        }
        return JSONResponse(body)


def _chosen(data: views.StudyData, numbers: list[int] | None, top: int) -> list[Any]:
    if numbers is None:
        return data.top(top)
    try:
        return data.by_number(numbers)
    except KeyError as exc:
        raise HTTPException(404, exc.args[0]) from None


# ---------------------------------------------------------------------------------------- live events


def live_state(storage: Storage, name: str) -> dict[str, Any]:
    """What the events stream compares between polls: status, counts, best, and epochs of running trials."""
    record = storage.get_study(name)
    running = storage.trials(record.id, [TrialState.RUNNING])
    epochs = sum(len(rows) for rows in storage.curves(record.id, [t.id for t in running]).values()) if running else 0
    return {**views.fingerprint(record), "running_epochs": epochs}


def sse(payload: dict[str, Any], event_id: int) -> bytes:
    """One server-sent event (``data:`` JSON line, blank line after)."""
    return f"id: {event_id}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def event_stream(
    request: Request, storage: Storage, name: str, poll_s: float, keepalive_s: float = 15.0
) -> AsyncIterator[bytes]:
    """Yield an event now, then one each time the study's live state changes; a comment line keeps
    idle connections open. Ends when the client goes away."""
    yield b"retry: 3000\n\n"
    last: dict[str, Any] | None = None
    idle = 0.0
    event_id = 0
    while True:
        state = await run_in_threadpool(live_state, storage, name)
        if state != last:
            event_id += 1
            last, idle = state, 0.0
            yield sse(state, event_id)
        elif idle >= keepalive_s:
            idle = 0.0
            yield b": keepalive\n\n"
        await asyncio.sleep(poll_s)
        idle += poll_s
        if await request.is_disconnected():
            return


def _add_events_route(app: FastAPI, storage: Storage, poll_s: float) -> None:
    @app.get("/api/studies/{name:segment}/events")
    async def events(request: Request, name: str) -> StreamingResponse:
        """Server-sent events: the study's counts/best/status, whenever they change."""
        try:
            await run_in_threadpool(storage.get_study, name)
        except StorageError as exc:
            raise HTTPException(404, str(exc)) from None
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            event_stream(request, storage, name, poll_s), media_type="text/event-stream", headers=headers
        )
