"""A study's trials as plain records and tables, and its feasible Pareto front and winner.

Everything downstream (CLI tables, plots, widgets, export) reads these records, so it works the
same for sim and real studies and never touches Optuna internals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from engines.errors import StudyError
from engines.space import tidy_config
from tuner.analysis.pareto import hypervolume, pareto_mask, pick_winner, reference_point
from tuner.objectives import DIRECTIONS, constraint_values, with_error_limit
from tuner.study.attrs import LOAD_ATTR, OBJECTIVES_ATTR, SLOS_ATTR, SPEC_ATTR


@dataclass(frozen=True)
class TrialRecord:
    """One trial, as servetune stored it."""

    number: int
    state: str
    engine: str
    config: dict[str, Any]
    metrics: dict[str, float]
    feasible: bool
    estimated: bool
    precision: str | None
    gpus: int | None
    reason: str | None
    detail: str | None
    baseline: bool
    attrs: Mapping[str, Any] = field(default_factory=dict, repr=False)


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of ``study`` that has started (waiting ones are left out)."""
    records = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        a = t.user_attrs
        result, plan, fail = a.get("result") or {}, a.get("plan") or {}, a.get("fail") or {}
        records.append(
            TrialRecord(
                number=t.number,
                state=t.state.name,
                engine=a.get("engine", "?"),
                config=tidy_config(a.get("config", {})),
                metrics=dict(a.get("metrics", {})),
                feasible=bool(result.get("feasible", False)),
                estimated=bool(result.get("estimated", False)),
                precision=plan.get("precision"),
                gpus=plan.get("gpus"),
                reason=fail.get("reason"),
                detail=fail.get("detail"),
                baseline=bool(a.get("baseline", False)),
                attrs=a,
            )
        )
    return records


def trials_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """One row per trial: identity, state, config (``cfg.<option>``) and metrics."""
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "trial": r.number,
            "state": r.state,
            "engine": r.engine,
            "load": r.attrs.get(LOAD_ATTR),
            "precision": r.precision,
            "gpus": r.gpus,
            "feasible": r.feasible,
            "estimated": r.estimated,
            "baseline": r.baseline,
            "reason": r.reason,
            "detail": r.detail,
        }
        row.update({f"cfg.{k}": v for k, v in r.config.items()})
        row.update(r.metrics)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class FrontResult:
    """The feasible Pareto front of a study over some metrics, and the winner."""

    metrics: list[str]
    directions: list[str]
    records: list[TrialRecord]  # completed trials
    front: list[int]  # trial numbers on the feasible front
    winner: int | None
    hypervolume: float
    reference: list[float]

    @property
    def feasible(self) -> list[int]:
        return [r.number for r in self.records if r.feasible]

    def record(self, number: int) -> TrialRecord:
        return next(r for r in self.records if r.number == number)


def pareto_front(
    records: Sequence[TrialRecord],
    metrics: Sequence[str],
    slos: Mapping[str, float] | None = None,
    winner_metric: str | None = None,
    tie_break: str | None = None,
    tolerance: float = 0.01,
) -> FrontResult:
    """Feasible front over ``metrics``; ``slos`` (if given) re-decide feasibility, so sliders can
    move the SLOs after the fact."""
    done = [r for r in records if r.state == "COMPLETE"]
    if slos is not None:
        done = [_refeasible(r, slos) for r in done]
    directions = [DIRECTIONS[m] for m in metrics]
    feasible = [r for r in done if r.feasible]
    values = np.array(
        [[r.metrics.get(m, math.nan) for m in metrics] for r in feasible], dtype=float
    ).reshape(len(feasible), len(metrics))
    mask = pareto_mask(values, directions) if len(feasible) else np.zeros(0, dtype=bool)
    all_values = np.array(
        [[r.metrics.get(m, math.nan) for m in metrics] for r in done], dtype=float
    ).reshape(len(done), len(metrics))
    ref = reference_point(all_values, directions) if len(done) else [0.0] * len(metrics)
    hv = hypervolume(values, directions, ref) if len(feasible) else 0.0
    winner = None
    primary = winner_metric or metrics[0]
    if feasible:
        idx = pick_winner(
            np.array([r.metrics.get(primary, math.nan) for r in feasible]),
            DIRECTIONS[primary],
            np.array([r.metrics.get(tie_break, math.nan) for r in feasible]) if tie_break else None,
            DIRECTIONS.get(tie_break or "", "minimize"),
            tolerance,
        )
        winner = feasible[idx].number if idx is not None else None
    front = [r.number for r, on in zip(feasible, mask, strict=True) if on]
    return FrontResult(list(metrics), directions, done, front, winner, hv, ref)


def _refeasible(record: TrialRecord, slos: Mapping[str, float]) -> TrialRecord:
    from dataclasses import replace

    ok = all(c <= 0 for c in constraint_values(record.metrics, slos))
    return replace(record, feasible=ok)


def study_front(
    study: optuna.Study,
    metrics: Sequence[str] | None = None,
    slos: Mapping[str, float] | None = None,
) -> FrontResult:
    """The front of a stored study by its own objectives, SLOs and winner policy."""
    spec = study.user_attrs.get(SPEC_ATTR, {})
    objectives = metrics or study.user_attrs.get(OBJECTIVES_ATTR) or ["output_tokens_per_s"]
    winner = spec.get("winner", {}) if isinstance(spec, dict) else {}
    records = trial_records(study)
    if not records:
        raise StudyError(f"study {study.study_name!r} has no trials yet")
    return pareto_front(
        records,
        objectives,
        slos if slos is not None else with_error_limit(study.user_attrs.get(SLOS_ATTR) or {}),
        winner.get("metric") or objectives[0],
        winner.get("tie_break"),
        winner.get("tolerance", 0.01),
    )
