"""A fidelity report (:mod:`tuner.calibration.fidelity`) for people: markdown tables for the CLI and
``bench/results/``, and the predicted-vs-measured figure for notebooks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engines import engine_class
from tuner.calibration.calibrate import METRICS
from tuner.calibration.fidelity import (
    HELD_OUT,
    IN_SAMPLE,
    LOO,
    LOSO,
    SHIPPED,
    FidelityReport,
)
from tuner.calibration.targets import SHIPPED_ALLOWANCE, target_names


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def summary_markdown(report: FidelityReport) -> str:
    """Median / worst APE per predictor and metric, ranking and targets, as markdown."""
    head = "| predictor | " + " | ".join(METRICS) + " | Spearman | best in top-3 |"
    lines = [head, "|" + "---|" * (len(METRICS) + 3)]
    for predictor, stats in report.summary.items():
        cells = [
            f"{s['median']:.1f} / {s['worst']:.1f}" if s["n"] else "n/a"
            for s in (stats[m] for m in METRICS)
        ]
        rank = report.ranking[predictor]
        rho = "n/a" if rank["spearman"] is None else f"{rank['spearman']:.2f}"
        lines.append(
            f"| {predictor} | "
            + " | ".join(cells)
            + f" | {rho} | {_yes_no(rank['best_in_top3'])} |"
        )
    lines.append("")
    lines.append("Cells: median / worst absolute percentage error (%).")
    if any(s["n"] for stats in report.set_aside.values() for s in stats.values()):
        lines += ["", "Set-aside measurements (known protocol artefacts, for the record):", ""]
        lines += [
            head.removesuffix(" Spearman | best in top-3 |"),
            "|" + "---|" * (len(METRICS) + 1),
        ]
        for predictor, stats in report.set_aside.items():
            cells = [
                f"{s['median']:.1f} / {s['worst']:.1f}" if s["n"] else "-"
                for s in (stats[m] for m in METRICS)
            ]
            lines.append(f"| {predictor} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _measured_on(report: FidelityReport) -> str:
    """'real H200 vLLM runs': the GPUs and engines the report's points were measured with."""
    points = [p for cal in report.calibrations.values() for p in (*cal.train, *cal.test)]
    gpus = "/".join(sorted({p.ctx.hardware.gpu for p in points})) or "real"
    engines = "/".join(sorted({engine_class(p.engine).label for p in points}))
    return f"real {gpus} {engines} runs".replace("  ", " ")


def report_markdown(report: FidelityReport) -> str:
    """The whole report as a markdown page: summary, per-point rows, targets and notes."""
    lines = [f"# Sim fidelity on {_measured_on(report)}", "", summary_markdown(report), ""]
    lines += [
        "## Per point",
        "",
        "| point | measured by | predictor | metric | predicted | measured | APE % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        mark = " (set aside)" if r.get("set_aside") else ""
        lines.append(
            f"| {r['point']} | {r['measured_by']} | {r['predictor']} | {r['metric']}{mark} | "
            f"{r['predicted']:.1f} | {r['measured']:.1f} | {r['ape_pct']:.1f} |"
        )
    lines += ["", *spreads_markdown(report), "", *judged_markdown(report), ""]
    lines += [
        "## First targets (median APE: throughput and TPOT p50 <= 10%, TTFT p99 <= 20%; "
        "Spearman >= 0.9; real best in sim top-3)",
        "",
    ]
    for predictor, met in report.targets.items():
        shown = ", ".join(f"{k}: {_met(v)}" for k, v in met.items())
        lines.append(f"- {predictor}: {shown}")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def _met(value: bool | None) -> str:
    return "n/a" if value is None else ("met" if value else "missed")


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"


def spreads_markdown(report: FidelityReport) -> list[str]:
    """Each shape's run-to-run spread per metric, as markdown lines."""
    lines = [
        "## Run-to-run spread per shape",
        "",
        "Max over the configs measured at least twice of (max - min) / mean, in %; "
        "'-': no config measured twice.",
        "",
        "| shape | " + " | ".join(METRICS) + " |",
        "|" + "---|" * (len(METRICS) + 1),
    ]
    for shape, by_metric in report.spreads.items():
        lines.append(f"| {shape} | " + " | ".join(_pct(by_metric[m]) for m in METRICS) + " |")
    return lines


def judged_markdown(report: FidelityReport) -> list[str]:
    """Issue 25's targets per predictor (value, and met or not), then what was left out why."""
    names = target_names()
    lines = [
        "## Targets (issue 25), judged where the runs' spread allows it",
        "",
        "Held-out predictors: " + "; ".join(_rule(k, v) for k, v in names.items()) + ". "
        f"The shipped profile: within {SHIPPED_ALLOWANCE:g}x of those. A (shape, metric) whose "
        "spread exceeds the metric's median limit is left out of its median and worst.",
        "",
        "| predictor | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for predictor, judged in report.judged.items():
        cells = [_judged_cell(j) for j in judged.values()]
        lines.append(f"| {predictor} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: met / missed / n/a (the value: median or worst APE %, or Spearman).", ""]
    return lines + _exclusions(report)


def _rule(name: str, rule: str) -> str:
    metric = name.rpartition(" ")[0]
    return f"{metric}: {rule}" if metric in METRICS else rule


def _judged_cell(judged: Mapping[str, Any]) -> str:
    value = judged["value"]
    return _met(judged["met"]) + ("" if value is None else f" ({value:.2f})")


def left_out(report: FidelityReport) -> list[tuple[str, str, str, list[str]]]:
    """What the target judgements left out, once per (target, shape, reason), with the
    predictors it applies to: shapes too noisy for a metric's limit, shapes with no separated
    Spearman."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for predictor, judged in report.judged.items():
        for target, j in judged.items():
            gone = j.get("excluded", []) + [
                e for e in j.get("by_shape", []) if e["spearman"] is None
            ]
            for e in gone:
                found.setdefault((target, e["shape"], e["why"]), []).append(predictor)
    return [(*key, predictors) for key, predictors in found.items()]


def predictors_phrase(predictors: Sequence[str], shape: str, report: FidelityReport) -> str:
    """'every predictor', 'every held-out predictor' (of those scored on ``shape``), or the names."""
    scored = [
        p
        for p in report.judged
        if any(r["predictor"] == p and r["shape"] == shape for r in report.rows)
    ]
    if list(predictors) == scored:
        return "every predictor"
    if list(predictors) == [p for p in scored if p != SHIPPED]:
        return "every held-out predictor"
    return ", ".join(predictors)


def _exclusions(report: FidelityReport) -> list[str]:
    lines = [
        f"- {target}: {shape} ({why}); {predictors_phrase(predictors, shape, report)}"
        for target, shape, why, predictors in left_out(report)
    ]
    return ["Left out of the judgement:", "", *lines] if lines else []


COLOURS = {
    SHIPPED: "#7f7f7f",
    HELD_OUT: "#d62728",
    LOO: "#1f77b4",
    LOSO: "#9467bd",
    IN_SAMPLE: "#2ca02c",
}
MORE_COLOURS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")  # transfer predictors


def _colours(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Predictor -> colour, for the predictors in ``rows`` in their order (the fixed ones keep
    theirs, others take the next free colour)."""
    more = itertools.cycle(MORE_COLOURS)
    return {p: COLOURS.get(p) or next(more) for p in dict.fromkeys(r["predictor"] for r in rows)}


def plot_predicted_vs_measured(report: FidelityReport | Sequence[Mapping[str, Any]]) -> go.Figure:
    """One panel per metric: predicted against measured, one colour per predictor, y = x line.

    Takes a report or its ``rows`` (as saved in ``fidelity.json``); set-aside rows are left out.
    """
    all_rows = report.rows if isinstance(report, FidelityReport) else report
    compared = [r for r in all_rows if not r.get("set_aside")]
    fig = make_subplots(rows=1, cols=len(METRICS), subplot_titles=METRICS)
    colours = _colours(compared)
    for col, metric in enumerate(METRICS, start=1):
        rows = [r for r in compared if r["metric"] == metric]
        values = [v for r in rows for v in (r["predicted"], r["measured"]) if math.isfinite(v)]
        for predictor, colour in colours.items():
            mine = [r for r in rows if r["predictor"] == predictor]
            fig.add_trace(
                go.Scatter(
                    x=[r["measured"] for r in mine],
                    y=[r["predicted"] for r in mine],
                    mode="markers",
                    marker={"color": colour, "size": 10},
                    name=predictor,
                    legendgroup=predictor,
                    showlegend=col == 1,
                    text=[f"{r['point']}: {r['ape_pct']:.1f}% off" for r in mine],
                ),
                row=1,
                col=col,
            )
        if values:
            lo, hi = min(values) * 0.8, max(values) * 1.2
            fig.add_trace(
                go.Scatter(
                    x=[lo, hi],
                    y=[lo, hi],
                    mode="lines",
                    showlegend=False,
                    line={"dash": "dot", "color": "black"},
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="measured", row=1, col=col)
    fig.update_yaxes(title_text="predicted (sim)", row=1, col=1)
    fig.update_layout(title="Sim predicted vs measured (real runs)", height=380)
    return fig
