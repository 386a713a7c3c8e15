"""Issue 25's fidelity targets, judged only where the runs' own spread allows it.

A target on a metric says how close a held-out prediction must be; a measurement cannot be
predicted closer than it repeats. So each workload shape's run-to-run spread is measured from its
repeated configs (:func:`shape_spreads`), and a (shape, metric) whose spread exceeds the metric's
target is left out of that metric's judgement, with the reason. Ranking is judged only among
configs whose measured difference exceeds twice the spread (:func:`~.stats.separated_spearman`).

Everything here takes plain data (rows, per-shape lists), so it is tested on hand-made numbers;
:mod:`tuner.calibration.fidelity` builds that data from real points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuner.calibration.points import METRICS
from tuner.calibration.stats import error_stats, run_spread, separated_spearman

# median abs % error of a held-out prediction, per metric
MEDIAN_TARGETS = {
    "output_tokens_per_s": 3.0,
    "tpot_p50_ms": 6.0,
    "ttft_p99_ms": 10.0,
    "ttft_p50_ms": 15.0,
}
WORST_TARGETS = {"output_tokens_per_s": 15.0}  # worst abs % error, same points as the median
SEPARATED_SPEARMAN = 0.9  # throughput Spearman among configs > 2 x spread apart, mean of shapes
SHIPPED_ALLOWANCE = 2.0  # the shipped profile: errors (and 1 - Spearman) within 2x the targets


def shape_spreads(
    repeats: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]],
) -> dict[str, dict[str, float | None]]:
    """Shape -> metric -> run-to-run spread (%): :func:`~.stats.run_spread` over the shape's
    configs, each given as its measurements (metric -> value); ``None`` where no config of
    the shape has that metric measured twice."""
    return {
        shape: {
            m: run_spread([[run[m] for run in runs if m in run] for runs in by_config.values()])
            for m in METRICS
        }
        for shape, by_config in repeats.items()
    }


def spearman_limit(allowance: float = 1.0) -> float:
    """The Spearman a predictor must reach: ``1 - rho`` within ``allowance`` x the target's."""
    return round(1.0 - allowance * (1.0 - SEPARATED_SPEARMAN), 6)


def judge_error(
    apes_by_shape: Mapping[str, Sequence[float]],
    spreads: Mapping[str, float | None],
    limit: float,
    exclude_above: float,
    stat: str = "median",
) -> dict[str, Any]:
    """One error target: the ``stat`` ("median" or "worst") APE over the shapes whose spread
    is at most ``exclude_above`` (unknown spreads are kept), against ``limit``."""
    excluded = [
        {
            "shape": s,
            "spread_pct": spreads[s],
            "why": f"spread {spreads[s]:.1f}% > {exclude_above:g}%",
        }
        for s in apes_by_shape
        if spreads.get(s) is not None and spreads[s] > exclude_above  # type: ignore[operator]
    ]
    out = {e["shape"] for e in excluded}
    stats = error_stats([e for s, errs in apes_by_shape.items() if s not in out for e in errs])
    value = stats[stat] if stats["n"] else None
    return {
        "limit": limit,
        "value": value,
        "n": stats["n"],
        "met": None if value is None else bool(value <= limit),
        "excluded": excluded,
    }


def judge_spearman(
    by_shape: Mapping[str, Sequence[tuple[str, float, float]]],
    spreads: Mapping[str, float | None],
    limit: float,
) -> dict[str, Any]:
    """The ranking target: throughput Spearman over each shape's separated chain of configs
    (``(name, predicted, measured)`` per config), averaged over the shapes where it is defined."""
    per = []
    for shape, configs in by_shape.items():
        spread = spreads.get(shape)
        entry: dict[str, Any] = {"shape": shape, "spread_pct": spread, "configs": len(configs)}
        if spread is None:
            per.append({**entry, "chain": [], "spearman": None, "why": "no config measured twice"})
            continue
        predicted, measured = [c[1] for c in configs], [c[2] for c in configs]
        rho, chain = separated_spearman(predicted, measured, spread)
        why = "" if rho is not None else f"{len(chain)} config(s) > 2 x spread apart, 3 needed"
        per.append({**entry, "chain": [configs[i][0] for i in chain], "spearman": rho, "why": why})
    rhos = [e["spearman"] for e in per if e["spearman"] is not None]
    value = float(np.mean(rhos)) if rhos else None
    return {
        "limit": limit,
        "value": value,
        "n": len(rhos),
        "met": None if value is None else bool(value >= limit),
        "by_shape": per,
    }


def judge_targets(
    rows: Sequence[Mapping[str, Any]],
    by_shape: Mapping[str, Sequence[tuple[str, float, float]]],
    spreads: Mapping[str, Mapping[str, float | None]],
    allowance: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Every target for one predictor: its rows (``shape``, ``metric``, ``ape_pct``; set-aside
    rows are skipped), its per-config throughput per shape, and the shapes' spreads.

    ``allowance`` scales the error limits (and the spread a shape may have to be judged) and
    the Spearman shortfall ``1 - rho``: 2 for the shipped profile, "within 2x the targets".
    """
    apes: dict[str, dict[str, list[float]]] = {m: {} for m in METRICS}
    for r in rows:
        if not r.get("set_aside") and math.isfinite(r["ape_pct"]):
            apes[r["metric"]].setdefault(r["shape"], []).append(r["ape_pct"])
    out: dict[str, dict[str, Any]] = {}
    for m, target in MEDIAN_TARGETS.items():
        limit = target * allowance
        of_metric = {s: v.get(m) for s, v in spreads.items()}
        out[f"{m} median"] = judge_error(apes[m], of_metric, limit, limit)
        if m in WORST_TARGETS:
            worst = WORST_TARGETS[m] * allowance
            out[f"{m} worst"] = judge_error(apes[m], of_metric, worst, limit, "worst")
    throughput = {s: v.get("output_tokens_per_s") for s, v in spreads.items()}
    out["separated Spearman"] = judge_spearman(by_shape, throughput, spearman_limit(allowance))
    return out


def target_names(allowance: float = 1.0) -> dict[str, str]:
    """Target key -> its rule in words, e.g. 'output_tokens_per_s median' -> 'median APE <= 3%'."""
    out = {}
    for m, target in MEDIAN_TARGETS.items():
        out[f"{m} median"] = f"median APE <= {target * allowance:g}%"
        if m in WORST_TARGETS:
            out[f"{m} worst"] = f"worst APE <= {WORST_TARGETS[m] * allowance:g}%"
    rho = spearman_limit(allowance)
    out["separated Spearman"] = f"Spearman >= {rho:g} among configs > 2 x spread apart"
    return out
