"""A fidelity report (:mod:`tuner.calibration.fidelity`) for people: markdown tables for the CLI and
``bench/results/``, and the predicted-vs-measured figure for notebooks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engines import engine_class
from tuner.calibration.calibrate import METRICS
from tuner.calibration.fidelity import HELD_OUT, IN_SAMPLE, LOO, SHIPPED, FidelityReport


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
    points = [*report.calibration.train, *report.calibration.test]
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
    lines += [
        "",
        "## Targets (median APE: throughput and TPOT p50 <= 10%, TTFT p99 <= 20%; "
        "Spearman >= 0.9; real best in sim top-3)",
        "",
    ]
    for predictor, met in report.targets.items():
        shown = ", ".join(
            f"{k}: {'n/a' if v is None else ('met' if v else 'missed')}" for k, v in met.items()
        )
        lines.append(f"- {predictor}: {shown}")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def plot_predicted_vs_measured(report: FidelityReport | Sequence[Mapping[str, Any]]) -> go.Figure:
    """One panel per metric: predicted against measured, one colour per predictor, y = x line.

    Takes a report or its ``rows`` (as saved in ``fidelity.json``); set-aside rows are left out.
    """
    all_rows = report.rows if isinstance(report, FidelityReport) else report
    compared = [r for r in all_rows if not r.get("set_aside")]
    fig = make_subplots(rows=1, cols=len(METRICS), subplot_titles=METRICS)
    colours = dict(
        zip(
            [SHIPPED, HELD_OUT, LOO, IN_SAMPLE],
            ["#7f7f7f", "#d62728", "#1f77b4", "#2ca02c"],
            strict=True,
        )
    )
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
