"""Runs one strategy on one scenario against the cached grid, the way the study loop would.

The loop mirrors :func:`tuner.study.loop.run_one_trial`: ask, suggest a config, reject invalid configs
for free (as the study loop does), let the failure model veto (when learning), then "measure" by
looking the config up in the grid and tell Optuna. Only measured trials (completed or failed)
use up the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from searchbench.grid import Grid, config_key

from tuner.analysis.pareto import hypervolume
from tuner.spec import StudySpec
from tuner.study.search import suggest_config

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAX_REJECTIONS_IN_A_ROW = 50  # like the study loop's MAX_CONSECUTIVE_REJECTIONS


@dataclass(frozen=True)
class Objective:
    """Single (best feasible throughput) or multi (throughput vs p99 TTFT), both within SLOs."""

    kind: str  # "single" | "multi"
    slos: dict[str, float]

    @property
    def metrics(self) -> list[str]:
        return ["output_tokens_per_s"] + (["ttft_p99_ms"] if self.kind == "multi" else [])

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"][: len(self.metrics)]

    @property
    def reference(self) -> list[float]:
        """Fixed HV reference: zero throughput, the TTFT SLO (every feasible point beats it)."""
        return [0.0, self.slos["ttft_p99_ms"]]

    def constraints(self, metrics: dict[str, float | None]) -> list[float]:
        return [
            math.inf if metrics.get(m) is None else float(metrics[m]) - bound  # type: ignore[operator]
            for m, bound in self.slos.items()
        ]

    def feasible(self, point: dict[str, Any]) -> bool:
        return point["status"] == "ok" and all(c <= 0 for c in self.constraints(point["metrics"]))

    def score(self, points: list[dict[str, Any]]) -> float:
        """Best feasible throughput (single) or the feasible hypervolume (multi) of ``points``."""
        ok = [p for p in points if self.feasible(p)]
        if not ok:
            return 0.0
        if self.kind == "single":
            return max(p["metrics"]["output_tokens_per_s"] for p in ok)
        values = np.array([[p["metrics"][m] for m in self.metrics] for p in ok], dtype=float)
        return hypervolume(values, self.directions, self.reference)


@dataclass
class Run:
    """What one strategy measured, in order: the grid points of its counted trials."""

    points: list[dict[str, Any]] = field(default_factory=list)
    free: dict[str, int] = field(default_factory=dict)  # rejections that used no budget, by reason

    def curve(self, objective: Objective) -> list[float]:
        """Score after each counted trial (one entry per trial)."""
        return [objective.score(self.points[: i + 1]) for i in range(len(self.points))]


Measure = Callable[[str, dict[str, Any]], dict[str, Any]]
Veto = Callable[[optuna.Study, str, dict[str, Any]], str | None]


def run_optuna(
    sampler: optuna.samplers.BaseSampler,
    spaces: dict[str, list],
    objective: Objective,
    measure: Measure,
    budget: int,
    veto: Veto | None = None,
    enqueue: list[tuple[str, dict[str, Any]]] = (),
) -> Run:
    """Drive ``sampler`` for ``budget`` counted trials in an in-memory study."""
    study = optuna.create_study(directions=objective.directions, sampler=sampler)
    many = len(spaces) > 1
    for engine, config in enqueue:
        from tuner.study.search import config_params

        study.enqueue_trial(config_params(engine, config, many))
    run, in_a_row = Run(), 0
    while len(run.points) < budget and in_a_row < MAX_REJECTIONS_IN_A_ROW:
        trial = study.ask()
        engine, config = suggest_config(trial, spaces)
        trial.set_user_attr("engine", engine)
        trial.set_user_attr("config", config)
        point = measure(engine, config)
        reason = (
            "invalid"
            if point["status"] == "invalid"
            else (veto(study, engine, config) if veto else None)
        )
        if reason:
            trial.set_user_attr("fail", {"reason": reason, "detail": ""})
            for metric in objective.slos:
                trial.set_constraint(metric, 1.0)
            study.tell(trial, state=TrialState.PRUNED)
            run.free[reason] = run.free.get(reason, 0) + 1
            in_a_row += 1
            continue
        in_a_row = 0
        run.points.append(point)
        if point["status"] == "failed":
            trial.set_user_attr("fail", {"reason": point["reason"], "detail": "injected"})
            study.tell(trial, state=TrialState.FAIL)
            continue
        for metric, value in zip(
            objective.slos, objective.constraints(point["metrics"]), strict=True
        ):
            trial.set_constraint(metric, value)
        study.tell(trial, [point["metrics"][m] for m in objective.metrics])
    return run


def run_shuffled_grid(grid: Grid, budget: int, seed: int, measure: Measure) -> Run:
    """The grid in a random order, invalid points skipped for free (they are known up front)."""
    keys = sorted(grid.points)
    order = np.random.default_rng(seed).permutation(len(keys))
    run = Run()
    for i in order:
        p = grid.points[keys[i]]
        point = measure(p["engine"], p["config"])
        if point["status"] == "invalid":
            run.free["invalid"] = run.free.get("invalid", 0) + 1
            continue
        run.points.append(point)
        if len(run.points) >= budget:
            break
    return run


def grid_measure(grid: Grid, fails: Callable[[dict[str, Any]], bool] | None = None) -> Measure:
    """Measurement by lookup; ``fails`` injects run-time failures validate does not know."""

    def measure(engine: str, config: dict[str, Any]) -> dict[str, Any]:
        point = grid.points[config_key(engine, config)]
        if fails and point["status"] == "ok" and fails(config):
            return {**point, "status": "failed", "reason": "oom"}
        return point

    return measure


def study_spaces(spec: StudySpec) -> dict[str, list]:
    from tuner.study.loop import build_engines, search_spaces

    return search_spaces(spec, build_engines(spec))
