"""The same spec and seed give the same stored trials and curves as the 0.1 release, bit for bit.

tests/fixtures/golden_study.json was written by tests/fixtures/make_golden.py with the 0.1 code. A change
that alters rounding on purpose regenerates it with that script and says why in its commit message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

from make_golden import golden_spec, snapshot  # noqa: E402

from caviar.tune.study import run_study  # noqa: E402


def test_golden_study_is_reproduced_bit_for_bit(tmp_path: Path) -> None:
    expected = json.loads((FIXTURES / "golden_study.json").read_text())
    db = tmp_path / "golden.db"
    run_study(golden_spec(str(db)))
    got = json.loads(json.dumps(snapshot(str(db), "golden"), sort_keys=True))
    assert [t["number"] for t in got["trials"]] == [t["number"] for t in expected["trials"]]
    for g, e in zip(got["trials"], expected["trials"], strict=True):
        assert g["state"] == e["state"], g["number"]
        assert g["params"] == e["params"], g["number"]
        assert g["metrics"] == e["metrics"], g["number"]
        assert g["curve"] == e["curve"], g["number"]
