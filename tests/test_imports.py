"""caviar's modules import on their own, and no two of them import each other, even lazily.

The rule: the modules of ``caviar`` form a directed acyclic graph, where module A -> module B when
A's source imports B anywhere: at module level, inside a function or method, or under
``if TYPE_CHECKING:``. A function-level import is fine for start-up time (``import caviar`` stays
light) but it still points somewhere: one that closes a loop only defers the cycle, so it counts.
``from caviar.x import y`` points at ``caviar.x.y`` when that is a module, else at ``caviar.x``.
Importing ``caviar.x.y`` also runs ``caviar/x/__init__.py``; that implied edge to a parent package
is not counted (a package's ``__init__`` re-exporting its submodules is the usual layout, not a loop).

Each module is also imported alone in a fresh interpreter, so a module that only imports when some
other module happened to be imported first fails here (Alembic's migration scripts excepted: Alembic
runs them, nothing imports them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import caviar

SRC = Path(caviar.__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((SRC / "caviar").rglob("*.py"))}
#: Cycles that other work brought in and that are still to be broken, each with where it is. The test
#: fails on any cycle not listed here, and on a listed one that is gone (then drop it from the list).
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}
#: Alembic's scripts (env.py, versions/0001_...): run by Alembic inside a migration, never imported.
SCRIPTS = "caviar.storage.migrations."


def imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The caviar modules an import statement of ``module`` names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = node.module or ""
    if node.level:  # relative: from the module's package, up level - 1
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    out = []
    for alias in node.names:
        full = f"{base}.{alias.name}"
        out.append(full if full in MODULES else base)
    return [m for m in out if m in MODULES]


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}, every import in the source."""
    graph: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(module, node):
                    if target != module:
                        graph[module].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_of_every_kind() -> None:
    """The walker itself: module level, function level and relative imports all make edges."""
    graph = import_graph()
    assert "caviar.train.trainer" in graph["caviar.tune.runner"]  # module level
    assert "caviar.sklearn" in graph["caviar"]  # inside __getattr__
    assert "caviar.backend" in graph["caviar.nn.network"]
    assert len(MODULES) > 40


def test_no_import_cycles_among_caviar_modules() -> None:
    graph = import_graph()
    found = {tuple(component): component for component in cycles(graph)}
    problems = []
    for key, component in found.items():
        if key not in KNOWN_CYCLES:
            links = [f"{a}:{graph[a][b]} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
            problems.append(" | ".join(links))
    assert not problems, "import cycles:\n" + "\n".join(problems)
    gone = [" <-> ".join(key) for key in KNOWN_CYCLES if key not in found]
    assert not gone, f"broken since: drop from KNOWN_CYCLES: {gone}"


def test_a_cycle_is_found_when_there_is_one() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    def run(module: str) -> tuple[str, int, str]:
        out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        last = out.stderr.strip().splitlines()[-1:]
        return module, out.returncode, last[0] if last else ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, [m for m in MODULES if not m.startswith(SCRIPTS)]))
    failed = [f"{m}: {err}" for m, code, err in results if code != 0]
    assert not failed, "\n".join(failed)
