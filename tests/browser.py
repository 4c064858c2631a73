"""Shared helpers for the browser tests: the system Chromium (never `playwright install`), a uvicorn
server in a thread, and a place for screenshots a person can look at."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium browser from the system package, via Playwright's sync API."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def screenshot_path(name: str) -> Path:
    """artifacts/screenshots/NAME under the repo root (gitignored), folder created."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", start_timeout_s: float = 30.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a daemon thread on a free port; yields its base URL.

    Readiness is the server's own ``started`` flag (polled), not a guessed sleep; on exit the server is
    asked to stop and the thread joined.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server stopped before it started")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"the test server did not start in {start_timeout_s} s")
        time.sleep(0.01)  # polling the readiness flag
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


#: Tick and title texts of every plot on a page, with their boxes: plotly axes (subplots, colour bars)
#: and parcoords axes alike.
TICK_BOXES_JS = r"""
(root) => {
  const out = [];
  for (const div of root.querySelectorAll('.js-plotly-plot')) {
    const svg = div.querySelector('.main-svg');
    if (!svg) continue;
    const frame = div.getBoundingClientRect();
    const boxes = (nodes) => {
      const found = [];
      for (const t of nodes) {
        const r = t.getBoundingClientRect();
        const text = (t.textContent || '').trim();
        if (!text || r.width === 0 || r.height === 0) continue;
        found.push({text, left: r.left, right: r.right, top: r.top, bottom: r.bottom});
      }
      return found;
    };
    const texts = [...div.querySelectorAll('text')];
    const parentClass = (t) => (t.parentNode.getAttribute('class') || '');
    // tick labels: xtick, x2tick, ytick... (axes), y<id>tick (colour bars), tick (parcoords)
    const ticks = boxes(texts.filter((t) => /(^|\s)[a-z0-9]*tick$/.test(parentClass(t))));
    // titles: the figure's, each axis', each colour bar's, each parcoords axis' heading
    const title = /(^|\s)(g-gtitle|g-[xy]\d*title|cbtitle|axis-heading)$/;
    const titles = boxes(texts.filter((t) => title.test(parentClass(t))));
    out.push({id: div.id, ticks, titles,
              frame: {left: frame.left, right: frame.right, top: frame.top, bottom: frame.bottom}});
  }
  return out;
}
"""


def overlapping(boxes: list[dict[str, Any]], tolerance: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of labels whose boxes intersect (by more than ``tolerance`` px each way)."""
    pairs = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            dx = min(a["right"], b["right"]) - max(a["left"], b["left"])
            dy = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
            if dx > tolerance and dy > tolerance:
                pairs.append((a["text"], b["text"]))
    return pairs


def cut(boxes: list[dict[str, Any]], frame: dict[str, float], tolerance: float = 1.0) -> list[str]:
    """Texts that stick out of their plot's frame."""
    return [
        b["text"]
        for b in boxes
        if b["left"] < frame["left"] - tolerance
        or b["right"] > frame["right"] + tolerance
        or b["top"] < frame["top"] - tolerance
        or b["bottom"] > frame["bottom"] + tolerance
    ]


def tick_problems(page: Any) -> dict[str, Any]:
    """For each plot on the page: overlapping tick labels and titles or ticks cut by the frame (empty if none)."""
    problems: dict[str, Any] = {}
    for plot in page.evaluate(TICK_BOXES_JS, page.locator("body").element_handle()):
        bad = {
            "overlap": overlapping(plot["ticks"]),
            "titles overlap": overlapping(plot["titles"]),
            "cut": cut(plot["ticks"] + plot["titles"], plot["frame"]),
        }
        bad = {k: v for k, v in bad.items() if v}
        if bad:
            problems[plot["id"]] = bad
    return problems


def tick_counts(page: Any) -> dict[str, int]:
    """How many tick labels each plot shows (a plot with none would pass any overlap check)."""
    return {p["id"]: len(p["ticks"]) for p in page.evaluate(TICK_BOXES_JS, page.locator("body").element_handle())}
