"""Re-measure the finalists of a finished search and choose the winner on the new numbers.

A search measures each config once, under whatever the machine was doing at that moment, and the
front's best is partly the luckiest. So after the search:

1. :func:`select_finalists` takes the configs on the feasible Pareto front, then the next
   non-dominated layers, up to ``count``;
2. :func:`remeasure` runs the baseline and every finalist in rounds, baseline first in each round
   (``B F1 F2 .. B F1 F2 ..``), so slow drift of the machine hits all of them alike; each metric
   becomes a mean over the rounds with a Student-t interval (engines.uncertainty);
3. :func:`choose_winner` picks among the re-measured feasible configs by the spec's winner policy;
   with ``winner.outside_noise`` a candidate must beat the incumbent (first the baseline) beyond
   the noise: its CI has to clear the incumbent's.

:func:`baseline_ratios` reads any result as "x baseline". Results are stored on the study as the
user attr ``finalists`` and the chosen trial as ``remeasured_winner`` (export picks it up).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from engines import Engine
from engines.errors import EngineError, StudyError
from engines.uncertainty import Interval, beats_outside_noise, mean_interval
from tuner.analysis.pareto import pareto_mask
from tuner.analysis.results import TrialRecord, trial_records
from tuner.objectives import DIRECTIONS, constraint_values
from tuner.spec import StudySpec
from tuner.study.attrs import FINALISTS_ATTR, REMEASURED_WINNER_ATTR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remeasured:
    """One config measured again in ``rounds``: mean metrics and their intervals."""

    trial: int
    engine: str
    config: dict[str, Any]
    baseline: bool
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    rounds: int
    feasible: bool
    failures: list[str] = field(default_factory=list)

    def interval(self, metric: str) -> Interval:
        low, high = self.intervals.get(metric, (math.nan, math.nan))
        return Interval(self.metrics.get(metric, math.nan), low, high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "engine": self.engine,
            "baseline": self.baseline,
            "metrics": self.metrics,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "rounds": self.rounds,
            "feasible": self.feasible,
            "failures": self.failures,
        }


def select_finalists(
    records: Sequence[TrialRecord], metrics: Sequence[str], count: int
) -> list[TrialRecord]:
    """Up to ``count`` feasible non-baseline trials: the Pareto front, then the next layers
    (each layer best-first by the first metric); identical configs are taken once."""
    pool = [r for r in records if r.state == "COMPLETE" and r.feasible and not r.baseline]
    chosen: list[TrialRecord] = []
    seen: set[tuple] = set()
    directions = [DIRECTIONS[m] for m in metrics]
    while pool and len(chosen) < count:
        values = np.array([[r.metrics.get(m, math.nan) for m in metrics] for r in pool], float)
        mask = pareto_mask(values, directions)
        layer = [r for r, on in zip(pool, mask, strict=True) if on] or pool
        sign = -1 if directions[0] == "maximize" else 1
        for r in sorted(layer, key=lambda r: sign * r.metrics.get(metrics[0], math.nan)):
            key = (r.engine, tuple(sorted(r.config.items())))
            if key not in seen and len(chosen) < count:
                seen.add(key)
                chosen.append(r)
        pool = [r for r in pool if r not in layer]
    return chosen


def remeasure(
    entries: Sequence[TrialRecord],
    engines: Mapping[str, Engine],
    make_ctx: Callable[[int], Any],
    slos: Mapping[str, float],
    rounds: int,
    level: float = 0.95,
    on_run: Callable[[int, int], None] | None = None,
) -> list[Remeasured]:
    """Measure every entry ``rounds`` times, interleaved (entry order within each round)."""
    runs: dict[int, list[dict[str, float]]] = {r.number: [] for r in entries}
    failures: dict[int, list[str]] = {r.number: [] for r in entries}
    for round_index in range(rounds):
        for entry in entries:
            try:
                measured = engines[entry.engine].run(entry.config, make_ctx(entry.number))
                runs[entry.number].append(measured.metrics())
            except EngineError as exc:
                failures[entry.number].append(f"round {round_index}: {exc.reason}: {exc.detail}")
            if on_run:
                on_run(entry.number, round_index)
    return [_combine(e, runs[e.number], failures[e.number], slos, level) for e in entries]


def _combine(
    entry: TrialRecord,
    runs: list[dict[str, float]],
    failures: list[str],
    slos: Mapping[str, float],
    level: float,
) -> Remeasured:
    metrics: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    names = sorted({k for run in runs for k in run if not k.endswith(("_ci_low", "_ci_high"))})
    for name in names:
        found = mean_interval([run.get(name, math.nan) for run in runs], level)
        metrics[name] = found.point
        if found.known:
            intervals[name] = (found.low, found.high)
    feasible = bool(runs) and not failures and all(c <= 0 for c in constraint_values(metrics, slos))
    return Remeasured(
        entry.number,
        entry.engine,
        entry.config,
        entry.baseline,
        metrics,
        intervals,
        len(runs),
        feasible,
        failures,
    )


def choose_winner(
    results: Sequence[Remeasured],
    metric: str,
    outside_noise: bool = False,
    tolerance: float = 0.01,
    tie_break: str | None = None,
) -> Remeasured | None:
    """The best feasible re-measured config by ``metric``; with ``outside_noise`` candidates
    (best first) replace the incumbent, starting with the baseline, only beyond the noise."""
    feasible = [r for r in results if r.feasible and math.isfinite(r.metrics.get(metric, math.nan))]
    if not feasible:
        return None
    sign = 1 if DIRECTIONS[metric] == "maximize" else -1
    ordered = sorted(feasible, key=lambda r: -sign * r.metrics[metric])
    if not outside_noise:
        best = ordered[0]
        ties = [
            r
            for r in ordered
            if sign * r.metrics[metric]
            >= sign * best.metrics[metric] - tolerance * abs(best.metrics[metric])
        ]
        if tie_break and len(ties) > 1:
            tsign = 1 if DIRECTIONS[tie_break] == "maximize" else -1
            ties.sort(key=lambda r: -tsign * r.metrics.get(tie_break, -tsign * math.inf))
        return ties[0]
    baseline = next((r for r in feasible if r.baseline), None)
    incumbent = baseline
    for candidate in ordered:
        if incumbent is None or (
            candidate is not incumbent
            and beats_outside_noise(
                DIRECTIONS[metric], candidate.interval(metric), incumbent.interval(metric)
            )
        ):
            incumbent = candidate
    return incumbent


def baseline_ratios(
    metrics: Mapping[str, float], baseline: Mapping[str, float]
) -> dict[str, float]:
    """Each metric as a multiple of the baseline's (``2.0``: twice the baseline's value);
    metrics the baseline lacks, or has as zero, are left out."""
    out = {}
    for name, value in metrics.items():
        base = baseline.get(name)
        if base is None or not math.isfinite(base) or base == 0 or value is None:
            continue
        out[name] = float(value) / float(base)
    return out


def study_baseline_ratios(study: optuna.Study) -> dict[int, dict[str, float]]:
    """Every completed trial's metrics as ratios to the (first completed) baseline trial's."""
    records = [r for r in trial_records(study) if r.state == "COMPLETE"]
    baseline = next((r for r in records if r.baseline), None)
    if baseline is None:
        return {}
    return {r.number: baseline_ratios(r.metrics, baseline.metrics) for r in records}


@dataclass(frozen=True)
class FinalistsResult:
    """What re-measurement found: every re-measured config and the chosen one."""

    results: list[Remeasured]
    winner: int | None
    metric: str

    def ratios(self) -> dict[int, dict[str, float]]:
        base = next((r for r in self.results if r.baseline), None)
        if base is None:
            return {}
        return {r.trial: baseline_ratios(r.metrics, base.metrics) for r in self.results}


def remeasure_study(
    study: optuna.Study,
    spec: StudySpec,
    count: int | None = None,
    rounds: int | None = None,
    engines: Mapping[str, Engine] | None = None,
    on_run: Callable[[int, int], None] | None = None,
) -> FinalistsResult:
    """Re-measure ``count`` finalists of ``study`` with its baseline, store and return the
    outcome (``count``/``rounds`` default to ``spec.finalists``)."""
    from tuner.study.loop import build_engines, make_context

    count = spec.finalists.count if count is None else count
    rounds = spec.finalists.rounds if rounds is None else rounds
    records = trial_records(study)
    metrics = [o.metric for o in spec.objectives]
    finalists = select_finalists(records, metrics, count)
    if not finalists:
        raise StudyError(
            f"study {study.study_name!r} has nothing to re-measure: no feasible trial "
            "besides the baseline"
        )
    baseline = [r for r in records if r.baseline and r.state == "COMPLETE"][:1]
    own = engines is None
    engines = engines or build_engines(spec)
    try:
        results = remeasure(
            baseline + finalists,
            engines,
            lambda number: make_context(spec, number),
            spec.feasibility_slos,
            rounds,
            spec.measurement.confidence,
            on_run,
        )
    finally:
        if own:
            for engine in engines.values():
                engine.close()
    chosen = choose_winner(
        results,
        spec.winner_metric,
        spec.winner.outside_noise,
        spec.winner.tolerance,
        spec.winner.tie_break,
    )
    outcome = FinalistsResult(results, chosen.trial if chosen else None, spec.winner_metric)
    study.set_user_attr(FINALISTS_ATTR, [r.to_dict() for r in results])
    if outcome.winner is not None:
        study.set_user_attr(REMEASURED_WINNER_ATTR, outcome.winner)
    return outcome
