"""How well the sim predicts real measurements: per-config errors and ranking quality
(:mod:`tuner.calibration.report` renders a report as markdown and plots).

The predictors scored on the same real points (the held-out fits: :mod:`.holdout`):

* ``shipped``: the built-in profile, never fitted to these points;
* ``calibrated (held-out)``: fitted on the training split, scored on the held-out configs only;
* ``calibrated (leave-one-config-out)``: for each config, fitted on all *other* configs. With a
  single config there is nothing else to fit on, so its prediction is the shipped one (noted);
* ``calibrated (leave-one-shape-out)``: for each workload shape, fitted on the other shapes'
  points; left out (noted) where the points have one shape only;
* ``transfer (fitted on GPU)``: with points from several GPUs, fitted on all of one GPU's points
  and scored on every other GPU's;
* ``calibrated (in-sample, not a validation)``: fitted on the training split and scored on it,
  showing what the constants can absorb at best.

A fitted profile is one engine on one GPU type, so with several GPUs every fitted predictor but
the transfer is fitted per GPU. Two sets of targets are judged: the first ones (:data:`TARGETS`,
flags in ``targets``) and issue 25's (:mod:`.targets`, in ``judged``), which leave out the shapes
whose own run-to-run spread (``spreads``) is wider than the target. The math is pure
(:mod:`.stats`) and tested on hand-made numbers. With fewer than :data:`MEANINGFUL_CONFIGS`
configs the ranking numbers are reported but flagged as meaningless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner.calibration.calibrate import METRICS, Calibration, RealPoint, calibrate, predict
from tuner.calibration.holdout import (
    TRANSFER,
    Predictions,
    leave_one_out,
    leave_one_shape_out,
    load_label,
    profile_groups,
    shape_labels,
    transfer,
)
from tuner.calibration.stats import ape, best_in_top_k, error_stats, spearman
from tuner.calibration.targets import SHIPPED_ALLOWANCE, judge_targets, shape_spreads

__all__ = [
    "HELD_OUT",
    "IN_SAMPLE",
    "LOO",
    "LOSO",
    "METRICS",
    "SHIPPED",
    "TRANSFER",
    "FidelityReport",
    "ape",
    "best_in_top_k",
    "config_ranking",
    "error_stats",
    "fidelity_report",
    "leave_one_out",
    "leave_one_shape_out",
    "ranking",
    "spearman",
    "summarize_rows",
    "transfer",
]

TARGETS = {"output_tokens_per_s": 10.0, "tpot_p50_ms": 10.0, "ttft_p99_ms": 20.0}  # median APE %
TARGET_SPEARMAN = 0.9
MEANINGFUL_CONFIGS = 5  # fewer distinct configs: Spearman and top-3 say nothing
SHIPPED, HELD_OUT = "shipped", "calibrated (held-out)"
LOO, LOSO = "calibrated (leave-one-config-out)", "calibrated (leave-one-shape-out)"
IN_SAMPLE = "calibrated (in-sample, not a validation)"


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


@dataclass(frozen=True)
class FidelityReport:
    """Predicted vs measured for every point and predictor, summarised."""

    rows: list[dict[str, Any]]  # one per point x predictor x metric
    summary: dict[str, dict[str, dict[str, float | int]]]  # predictor -> metric -> stats
    set_aside: dict[str, dict[str, dict[str, float | int]]]  # the same over set-aside rows
    ranking: dict[str, dict[str, Any]]  # predictor -> ranking quality
    targets: dict[str, Any]  # predictor -> the first targets (TARGETS) met or not
    notes: list[str]
    calibrations: dict[str, Calibration] = field(repr=False)  # GPU -> its held-out calibration
    spreads: dict[str, dict[str, float | None]]  # shape -> metric -> run-to-run spread (%)
    judged: dict[str, dict[str, dict[str, Any]]]  # predictor -> issue 25's target -> judgement

    def to_dict(self) -> dict[str, Any]:
        cals = {gpu: _calibration_dict(cal) for gpu, cal in self.calibrations.items()}
        single = {"calibration": next(iter(cals.values()))} if len(cals) == 1 else {}
        return {
            "rows": self.rows,
            "summary": self.summary,
            "set_aside_summary": self.set_aside,
            "ranking": self.ranking,
            "targets": self.targets,
            "spreads": self.spreads,
            "judged_targets": self.judged,
            "notes": self.notes,
            **single,
            "calibrations": cals,
        }


def _calibration_dict(cal: Calibration) -> dict[str, Any]:
    return {
        "name": cal.name,
        "fitted": cal.fitted,
        "shipped": cal.shipped,
        "not_identified": cal.not_identified,
        "train": [p.label for p in cal.train],
        "holdout": [p.label for p in cal.test],
        "fit_errors": cal.fit_errors,
    }


def _rows(points, split_of, shapes, predictor, preds) -> list[dict[str, Any]]:
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
                    "shape": shapes[p.label],
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


def throughput_by_shape(
    points: Sequence[RealPoint], preds: Mapping[str, Mapping[str, float]]
) -> dict[str, list[tuple[str, float, float]]]:
    """Shape -> one (point label, predicted, measured) throughput per predicted config, repeat
    measurements averaged; the label is the config's first point."""
    shapes = shape_labels(points)
    groups: dict[str, dict[str, tuple[str, list[tuple[float, float]]]]] = {}
    for p in points:
        if p.label in preds and "output_tokens_per_s" in p.measured:
            pair = (preds[p.label]["output_tokens_per_s"], p.measured["output_tokens_per_s"])
            by_key = groups.setdefault(shapes[p.label], {})
            by_key.setdefault(p.key, (p.label, []))[1].append(pair)
    return {
        shape: [
            (label, float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v])))
            for label, v in by_key.values()
        ]
        for shape, by_key in groups.items()
    }


def config_ranking(
    points: Sequence[RealPoint], preds: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    """Throughput ranking over distinct configs (repeat measurements averaged), within each
    workload shape (GPU and workload): configs measured at different loads (a sweep's levels)
    do not compete, and a ranking across loads would reward predicting the load's effect, not
    the config's. With several shapes, Spearman is their mean and top-3 must hold in each."""
    groups = throughput_by_shape(points, preds)
    per = [ranking([c[1] for c in v], [c[2] for c in v]) for v in groups.values()]
    if len(per) <= 1:
        return per[0] if per else ranking([], [])
    shapes = shape_labels(points)
    loads = {shapes[p.label]: load_label(p.ctx.workload.arrival) for p in points}
    per = [
        {"load": loads[shape], "shape": shape, **r} for shape, r in zip(groups, per, strict=True)
    ]
    rhos = [r["spearman"] for r in per if r["spearman"] is not None]
    tops = [r["best_in_top3"] for r in per]
    return {
        "configs": sum(r["configs"] for r in per),
        "spearman": float(np.mean(rhos)) if rhos else None,
        "best_in_top3": None if None in tops else all(tops),
        "by_workload": per,
        "note": f"ranked within each of {len(per)} workloads; Spearman is their mean",
    }


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


def repeats_by_shape(points: Sequence[RealPoint]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Shape -> config (:attr:`RealPoint.key`) -> the measurements of it, for the spreads."""
    shapes = shape_labels(points)
    out: dict[str, dict[str, list[dict[str, float]]]] = {}
    for p in points:
        out.setdefault(shapes[p.label], {}).setdefault(p.key, []).append(p.measured)
    return out


def _predictions(points, groups, cals, prior_weight, names) -> dict[str, Predictions]:
    """Predictor -> point label -> metrics, each fitted predictor within its GPU's points."""
    held, loo, loso, inside = {}, {}, {}, {}
    for gpu, mine in groups.items():
        cal = cals[gpu]
        held |= {p.label: cal.predictions[p.label] for p in cal.test}
        inside |= {p.label: cal.predictions[p.label] for p in cal.train}
        loo |= leave_one_out(mine, prior_weight, names)
        loso |= leave_one_shape_out(mine, prior_weight, names)
    preds = {SHIPPED: {p.label: predict(p) for p in points}, HELD_OUT: held, LOO: loo, LOSO: loso}
    preds |= transfer(points, prior_weight, names)
    preds[IN_SAMPLE] = inside
    return {predictor: got for predictor, got in preds.items() if got}


def fidelity_report(
    points: Sequence[RealPoint],
    name: str = "fidelity",
    holdout: float = 0.3,
    seed: int = 0,
    prior_weight: float = 1.0,
    names: Sequence[str] | None = None,
) -> FidelityReport:
    """Score the shipped profile and every held-out predictor the points allow on ``points``
    (``names``: the constants fitted, default all)."""
    groups = profile_groups(points)
    cals = {
        gpu: calibrate(
            mine, name if len(groups) == 1 else f"{name}-{gpu}", holdout, seed, names, prior_weight
        )
        for gpu, mine in groups.items()
    }
    preds = _predictions(points, groups, cals, prior_weight, names)
    split_of = {p.label: "train" for c in cals.values() for p in c.train}
    split_of |= {p.label: "holdout" for c in cals.values() for p in c.test}
    shapes = shape_labels(points)
    rows = [r for pr, got in preds.items() for r in _rows(points, split_of, shapes, pr, got)]
    summary = summarize_rows(rows)
    ranks = {predictor: config_ranking(points, got) for predictor, got in preds.items()}
    spreads = shape_spreads(repeats_by_shape(points))
    judged = {
        predictor: judge_targets(
            [r for r in rows if r["predictor"] == predictor],
            throughput_by_shape(points, got),
            spreads,
            SHIPPED_ALLOWANCE if predictor == SHIPPED else 1.0,
        )
        for predictor, got in preds.items()
        if predictor != IN_SAMPLE
    }
    aside = summarize_rows(rows, set_aside=True)
    targets = _targets(summary, ranks)
    notes = _notes(points, groups, cals, spreads)
    return FidelityReport(rows, summary, aside, ranks, targets, notes, cals, spreads, judged)


def _targets(summary, ranks) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for predictor, stats in summary.items():
        met = {m: stats[m]["median"] <= t if stats[m]["n"] else None for m, t in TARGETS.items()}
        rho = ranks[predictor]["spearman"]
        met["spearman>=0.9"] = None if rho is None else rho >= TARGET_SPEARMAN
        met["real_best_in_top3"] = ranks[predictor]["best_in_top3"]
        out[predictor] = met
    return out


def _notes(points, groups, cals, spreads) -> list[str]:
    configs = len({(p.ctx.hardware.gpu, p.key) for p in points})
    on = f" on {len(groups)} GPUs ({', '.join(groups)})" if len(groups) > 1 else ""
    notes = [f"{len(points)} real measurement(s) of {configs} distinct config(s){on}."]
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
    for gpu, mine in groups.items():
        notes += _group_notes(gpu if len(groups) > 1 else "", mine, cals[gpu])
    if len(groups) == 1:
        notes.append("Points from one GPU: no transfer predictor.")
    unknown = sorted(
        s for s, by_metric in spreads.items() if all(v is None for v in by_metric.values())
    )
    if unknown:
        notes.append(
            "No config measured twice in shape(s) "
            + "; ".join(unknown)
            + ": run-to-run spread unknown, so no target excludes them and none ranks there."
        )
    return notes


def _group_notes(gpu: str, points: Sequence[RealPoint], cal: Calibration) -> list[str]:
    """Notes on one GPU's fits (``gpu`` empty when there is one GPU only)."""
    on = f" ({gpu})" if gpu else ""
    notes = []
    if not cal.test:
        notes.append(f"Held-out split{on} is empty (one config must stay in training).")
    if len({p.config_key for p in points}) == 1:
        notes.append(
            f"Leave-one-config-out{on} has nothing to fit on: its prediction is the shipped profile."
        )
    shapes = set(shape_labels(points).values())
    if len(shapes) < 2:
        notes.append(
            f"Leave-one-shape-out{on} skipped: one workload shape only ({next(iter(shapes))})."
        )
    fitted = ", ".join(f"{k} {cal.shipped[k]:.4g}->{v:.4g}" for k, v in cal.fitted.items())
    notes.append(
        f"Fitted constants{on}: {fitted or 'none'}; not identified by this data: "
        + (", ".join(cal.not_identified) or "none")
    )
    return notes
