"""Sim first, real second: the best configs of one study become the first trials of another."""

from __future__ import annotations

from typing import Any

from engines.errors import SpecError
from tuner.spec import StudySpec


def warm_start_configs(spec: StudySpec) -> list[tuple[str, dict[str, Any]]]:
    """(engine, config) of the ``top_k`` best feasible trials of ``spec.warm_start.study``.

    Ranked by the warm-start study's winner policy, best first, duplicates dropped.
    """
    from tuner.results import study_front
    from tuner.study import load_study

    ws = spec.warm_start or {}
    unknown = set(ws) - {"study", "storage", "top_k"}
    if unknown or "study" not in ws:
        raise SpecError(f"warm_start: needs 'study' (and optional storage, top_k); got {sorted(ws)}")
    storage = ws.get("storage") or f"sqlite:///studies/{ws['study']}.db"
    source, _ = load_study(ws["study"], storage)
    front = study_front(source)
    metric = front.metrics[0]
    sign = -1 if front.directions[0] == "maximize" else 1
    ranked = sorted((r for r in front.records if r.feasible),
                    key=lambda r: sign * r.metrics.get(metric, float("nan")))
    if front.winner is not None:
        ranked.sort(key=lambda r: r.number != front.winner)
    seen, out = set(), []
    for record in ranked:
        key = (record.engine, tuple(sorted(record.config.items(), key=str)))
        if key not in seen:
            seen.add(key)
            out.append((record.engine, record.config))
        if len(out) >= int(ws.get("top_k", 5)):
            break
    return out
