"""Sim first, real second: the best configs of one study become the first trials of another."""

from __future__ import annotations

from typing import Any

from engines.errors import SpecError
from tuner.spec import StudySpec


def warm_start_configs(spec: StudySpec) -> list[tuple[str, dict[str, Any]]]:
    """(engine, config) of the ``top_k`` best feasible trials of ``spec.warm_start.study``.

    Ranked by the warm-start study's winner policy, best first, duplicates dropped.
    """
    from tuner.analysis.results import study_front
    from tuner.study.loop import load_study

    ws = spec.warm_start or {}
    unknown = set(ws) - {"study", "storage", "top_k"}
    if unknown or "study" not in ws:
        raise SpecError(
            f"warm_start: needs 'study' (and optional storage, top_k); got {sorted(ws)}"
        )
    storage = ws.get("storage") or f"sqlite:///studies/{ws['study']}.db"
    source, _ = load_study(ws["study"], storage)
    front = study_front(source)
    metric = front.metrics[0]
    sign = -1 if front.directions[0] == "maximize" else 1
    # Front points first (winner first), then the other feasible trials, best first; configs
    # whose results are identical (options that did not matter) count once, so the K starts
    # cover K different operating points.
    ranked = sorted(
        (r for r in front.records if r.feasible),
        key=lambda r: (
            r.number != front.winner,
            r.number not in front.front,
            sign * r.metrics.get(metric, float("nan")),
        ),
    )
    seen, out = set(), []
    for record in ranked:
        key = (record.engine, *(round(record.metrics.get(m, 0.0), 6) for m in front.metrics))
        if key not in seen:
            seen.add(key)
            out.append((record.engine, record.config))
        if len(out) >= int(ws.get("top_k", 5)):
            break
    return out
