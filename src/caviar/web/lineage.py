"""A PBT study's lineage tree for the dashboard: every trial's life and every copy (who copied whom, when).

Population-based training stores, with each trial, whom it copied after how many epochs (``lineage``) and
the per-member values it trained with from then on (``schedule``; :mod:`caviar.tune.pbt`). This module
gathers them over the whole study, for the lineage page (``/study/NAME/lineage``).
"""

from __future__ import annotations

from typing import Any

from caviar.web.data import StudyData, jsonable


def study_lineage(data: StudyData) -> dict[str, Any]:
    """The study's trials that carry a lineage (``trials``: number, population, state, the metric's value,
    epochs trained, schedule) and its copies (``copies``: parent -> child after ``epoch`` epochs, in
    epoch then child order), and the space (each parameter's scale); trials and copies are empty for a
    study trained without PBT."""
    pbt = [t for t in data.trials if "lineage" in t.metrics]
    trials = [
        {
            "number": t.number,
            "population": t.group_key,
            "state": t.state,
            "value": data.value(t),
            "epochs": t.metrics.get("epochs_run"),
            "schedule": list(t.metrics.get("schedule") or ()),
        }
        for t in pbt
    ]
    copies = sorted(
        (
            {"epoch": int(e["epoch"]), "parent": int(e["parent"]), "child": t.number}
            for t in pbt
            for e in t.metrics.get("lineage") or ()
        ),
        key=lambda c: (c["epoch"], c["child"]),
    )
    space = [p.as_dict() for p in data.params]
    return jsonable({"study": data.name, "metric": data.metric, "space": space, "trials": trials, "copies": copies})
