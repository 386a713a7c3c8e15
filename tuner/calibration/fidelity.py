"""How well the sim predicts real measurements: per-config errors and ranking quality
(:mod:`tuner.calibration.report` renders a report as markdown and plots).

Three predictors are scored on the same real points:

* ``shipped``: the built-in profile, never fitted to these points;
* ``calibrated (held-out)``: fitted on the training split, scored on the held-out configs only;
* ``calibrated (leave-one-out)``: for each config, fitted on all *other* configs. With a single
  config there is nothing else to fit on, so its leave-one-out prediction is the shipped one;
* ``calibrated (in-sample, not a validation)``: fitted on the training split and scored on it,
  showing what the constants can absorb at best.

The math (APE, Spearman, top-k) is pure and tested on hand-made numbers. With fewer than
:data:`MEANINGFUL_CONFIGS` configs the ranking numbers are reported but flagged as meaningless.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.sim.profiles import load_profile
from engines.workload import Arrival
from tuner.calibration.calibrate import (
    METRICS,
    Calibration,
    RealPoint,
    _ProfileFiles,
    calibrate,
    fit_constants,
    predict,
    with_constants,
)

TARGETS = {"output_tokens_per_s": 10.0, "tpot_p50_ms": 10.0, "ttft_p99_ms": 20.0}  # median APE %
TARGET_SPEARMAN = 0.9
MEANINGFUL_CONFIGS = 5  # fewer distinct configs: Spearman and top-3 say nothing
SHIPPED, HELD_OUT, LOO = "shipped", "calibrated (held-out)", "calibrated (leave-one-out)"
IN_SAMPLE = "calibrated (in-sample, not a validation)"

# ------------------------------------------------------------------------------ pure math


def ape(predicted: float, measured: float) -> float:
    """Absolute percentage error of ``predicted`` against ``measured`` (NaN if undefined)."""
    if not (math.isfinite(predicted) and math.isfinite(measured)) or measured == 0:
        return math.nan
    return abs(predicted - measured) / abs(measured) * 100.0


def error_stats(errors: Sequence[float]) -> dict[str, float | int]:
    """Median and worst of some APEs (NaNs ignored), and how many there were."""
    finite = [e for e in errors if math.isfinite(e)]
    if not finite:
        return {"n": 0, "median": math.nan, "worst": math.nan}
    return {"n": len(finite), "median": float(np.median(finite)), "worst": float(max(finite))}


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    arr = np.asarray(values, float)
    order = np.argsort(arr, kind="mergesort")
    ranks = np.empty(arr.size)
    ranks[order] = np.arange(1, arr.size + 1)
    for value in np.unique(arr):
        tied = arr == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(predicted: Sequence[float], measured: Sequence[float]) -> float | None:
    """Spearman rank correlation; ``None`` below 3 points or when either side is constant."""
    if len(predicted) != len(measured):
        raise ValueError("spearman: predicted and measured differ in length")
    if len(predicted) < 3:
        return None
    a, b = _ranks(predicted), _ranks(measured)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def best_in_top_k(predicted: Sequence[float], measured: Sequence[float], k: int = 3) -> bool | None:
    """Whether the measured best (highest) is among the ``k`` highest predictions."""
    if not measured:
        return None
    best = int(np.nanargmax(measured))
    top = np.argsort(-np.asarray(predicted, float), kind="mergesort")[:k]
    return best in top.tolist()


def ranking(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """Spearman and top-3 of throughput over configs, with a plain note when they mean nothing."""
    n = len(measured)
    out = {
        "configs": n,
        "spearman": spearman(predicted, measured),
        # with 3 configs or fewer the top-3 holds the best by construction: report no answer
        "best_in_top3": best_in_top_k(predicted, measured, 3) if n > 3 else None,
    }
    if n < MEANINGFUL_CONFIGS:
        out["note"] = (
            f"{n} config(s): too few for ranking quality to mean anything "
            f"(top-3 of {n} always holds the best when n <= 3; Spearman needs >= 3, "
            f"and >= {MEANINGFUL_CONFIGS} to say much)"
        )
    return out


# ------------------------------------------------------------------------------ predictions


def leave_one_out(
    points: Sequence[RealPoint], prior_weight: float = 1.0
) -> dict[str, dict[str, float]]:
    """Each point predicted by a profile fitted on the other configs (shipped when none); a
    config measured at several loads is left out at all of them."""
    out: dict[str, dict[str, float]] = {}
    base = load_profile(points[0].engine)
    for key in sorted({p.config_key for p in points}):
        rest = [p for p in points if p.config_key != key]
        fitted, _ = fit_constants(rest, base, prior_weight=prior_weight)
        files = _ProfileFiles(points[0].engine)
        path = files.write(with_constants(base, fitted))
        for p in points:
            if p.config_key == key:
                out[p.label] = predict(p, path)
    return out


@dataclass(frozen=True)
class FidelityReport:
    """Predicted vs measured for every point and predictor, summarised."""

    rows: list[dict[str, Any]]  # one per point x predictor x metric
    summary: dict[str, dict[str, dict[str, float | int]]]  # predictor -> metric -> stats
    set_aside: dict[str, dict[str, dict[str, float | int]]]  # the same over set-aside rows
    ranking: dict[str, dict[str, Any]]  # predictor -> ranking quality
    targets: dict[str, Any]
    notes: list[str]
    calibration: Calibration = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "summary": self.summary,
            "set_aside_summary": self.set_aside,
            "ranking": self.ranking,
            "targets": self.targets,
            "notes": self.notes,
            "calibration": {
                "name": self.calibration.name,
                "fitted": self.calibration.fitted,
                "shipped": self.calibration.shipped,
                "not_identified": self.calibration.not_identified,
                "train": [p.label for p in self.calibration.train],
                "holdout": [p.label for p in self.calibration.test],
                "fit_errors": self.calibration.fit_errors,
            },
        }


def _rows(points, split_of, predictor, preds) -> list[dict[str, Any]]:
    """One row per point and metric; set-aside measurements too, marked with their reason."""
    rows = []
    for p in points:
        if p.label not in preds:
            continue
        for m in METRICS:
            if m in p.measured:
                measured, why = p.measured[m], ""
            elif m in p.set_aside:
                measured, why = p.set_aside[m]
            else:
                continue
            pred = preds[p.label][m]
            rows.append(
                {
                    "point": p.label,
                    "study": p.study,
                    "trial": p.trial,
                    "measured_by": p.measured_by,
                    "split": split_of[p.label],
                    "predictor": predictor,
                    "metric": m,
                    "predicted": pred,
                    "measured": measured,
                    "ape_pct": ape(pred, measured),
                    "set_aside": why,
                }
            )
    return rows


def config_ranking(
    points: Sequence[RealPoint], preds: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    """Throughput ranking over distinct configs (repeat measurements averaged), within each
    workload: configs measured at different loads (a sweep's levels) do not compete, and a
    ranking across loads would reward predicting the load's effect, not the config's. With
    several workloads, Spearman is their mean and top-3 must hold in each."""
    groups: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for p in points:
        if p.label in preds and "output_tokens_per_s" in p.measured:
            pair = (preds[p.label]["output_tokens_per_s"], p.measured["output_tokens_per_s"])
            groups.setdefault(_workload_key(p), {}).setdefault(p.key, []).append(pair)
    per = []
    for by_key in groups.values():
        pred = [float(np.mean([a for a, _ in v])) for v in by_key.values()]
        meas = [float(np.mean([b for _, b in v])) for v in by_key.values()]
        per.append(ranking(pred, meas))
    if len(per) == 1:
        return per[0]
    loads = {_workload_key(p): _load_label(p.ctx.workload.arrival) for p in points}
    per = [{"load": loads[key], **r} for key, r in zip(groups, per, strict=True)]
    rhos = [r["spearman"] for r in per if r["spearman"] is not None]
    tops = [r["best_in_top3"] for r in per]
    return {
        "configs": sum(r["configs"] for r in per),
        "spearman": float(np.mean(rhos)) if rhos else None,
        "best_in_top3": None if None in tops else all(tops),
        "by_workload": per,
        "note": f"ranked within each of {len(per)} workloads; Spearman is their mean",
    }


def _load_label(arrival: Arrival) -> str:
    if arrival.kind == "concurrency":
        return f"concurrency {arrival.concurrency}"
    return f"{arrival.kind} {arrival.rate:g}/s"


def _workload_key(point: RealPoint) -> str:
    w = point.ctx.workload
    return json.dumps([w.input_tokens, w.output_tokens, w.arrival], sort_keys=True, default=str)


def summarize_rows(
    rows: Sequence[Mapping[str, Any]], set_aside: bool = False
) -> dict[str, dict[str, dict]]:
    """Predictor -> metric -> median/worst APE, over the compared rows (or the set-aside ones)."""
    rows = [r for r in rows if bool(r.get("set_aside")) == set_aside]
    out: dict[str, dict[str, dict]] = {}
    for predictor in dict.fromkeys(r["predictor"] for r in rows):
        out[predictor] = {
            m: error_stats(
                [r["ape_pct"] for r in rows if r["predictor"] == predictor and r["metric"] == m]
            )
            for m in METRICS
        }
    return out


def fidelity_report(
    points: Sequence[RealPoint],
    name: str = "fidelity",
    holdout: float = 0.3,
    seed: int = 0,
    prior_weight: float = 1.0,
) -> FidelityReport:
    """Score the shipped profile, a held-out calibration and leave-one-out on ``points``."""
    cal = calibrate(points, name, holdout, seed, prior_weight=prior_weight)
    split_of = {p.label: "train" for p in cal.train} | {p.label: "holdout" for p in cal.test}
    shipped = {p.label: predict(p) for p in points}
    held = {p.label: cal.predictions[p.label] for p in cal.test}
    loo = leave_one_out(points, prior_weight)
    rows = (
        _rows(points, split_of, SHIPPED, shipped)
        + _rows(points, split_of, HELD_OUT, held)
        + _rows(points, split_of, LOO, loo)
        + _rows(cal.train, split_of, IN_SAMPLE, cal.predictions)
    )
    summary = summarize_rows(rows)
    ranks = {
        SHIPPED: config_ranking(points, shipped),
        HELD_OUT: config_ranking(cal.test, held),
        LOO: config_ranking(points, loo),
        IN_SAMPLE: config_ranking(cal.train, cal.predictions),
    }
    aside = summarize_rows(rows, set_aside=True)
    targets = _targets(summary, ranks)
    return FidelityReport(rows, summary, aside, ranks, targets, _notes(points, cal), cal)


def _targets(summary, ranks) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for predictor, stats in summary.items():
        met = {m: stats[m]["median"] <= t if stats[m]["n"] else None for m, t in TARGETS.items()}
        rho = ranks[predictor]["spearman"]
        met["spearman>=0.9"] = None if rho is None else rho >= TARGET_SPEARMAN
        met["real_best_in_top3"] = ranks[predictor]["best_in_top3"]
        out[predictor] = met
    return out


def _notes(points, cal) -> list[str]:
    configs = len({p.key for p in points})
    notes = [f"{len(points)} real measurement(s) of {configs} distinct config(s)."]
    reasons = sorted({f"{m}: {why}" for p in points for m, (_, why) in p.set_aside.items()})
    if reasons:
        aside = sum(1 for p in points if p.set_aside)
        notes.append(
            f"Set aside on {aside} point(s) (shown per point, not in the headline errors): "
            + "; ".join(reasons)
        )
    if configs < MEANINGFUL_CONFIGS:
        notes.append(
            "Too few configs to validate the targets: errors are anecdotes, ranking is undefined."
        )
    if not cal.test:
        notes.append("Held-out split is empty (one config must stay in training).")
    if configs == 1:
        notes.append("Leave-one-out has nothing to fit on: its prediction is the shipped profile.")
    notes.append(
        "Fitted constants: "
        + (", ".join(f"{k} {cal.shipped[k]:.4g}->{v:.4g}" for k, v in cal.fitted.items()) or "none")
        + "; not identified by this data: "
        + (", ".join(cal.not_identified) or "none")
    )
    return notes
