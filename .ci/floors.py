"""Print a pip constraints file pinning every dependency of pyproject.toml (and the named extras) to
its declared floor: ``name>=X`` becomes ``name==X``. pip has no lowest-version resolution, so CI
installs with these constraints to test that the floors are true. Markers are kept."""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,;\s]+)\s*(?:,[^;]*)?(;.*)?$")


def constraints(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    lines = []
    for req in reqs:
        m = FLOOR.match(req)
        if m:
            name = re.sub(r"\[.*\]", "", m.group(1))
            lines.append(f"{name}=={m.group(2)}{' ' + m.group(3).strip() if m.group(3) else ''}")
    return lines


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print("\n".join(constraints(root / "pyproject.toml", sys.argv[1:])))
