"""What every servetune figure shares: colours, metric labels, hover text, grouping, and the
"estimated" label that keeps a sim study's figure from passing for a measurement."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from tuner.analysis.results import FrontResult, TrialRecord
from tuner.objectives import DIRECTIONS
from tuner.objectives import label as _objective_label

Records = Sequence[TrialRecord]
GroupBy = str | Callable[[TrialRecord], Any]
FrontOrRecords = FrontResult | Records

GREY_INFEASIBLE = "rgba(170,170,170,0.45)"
GREY_DOMINATED = "rgba(110,110,110,0.55)"
FRONT_COLOR = "#1f77b4"
WINNER_COLOR = "#d62728"
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#d62728",
]
KEY_METRICS = (
    "output_tokens_per_s",
    "ttft_p99_ms",
    "tpot_p99_ms",
    "e2e_p99_ms",
    "cost_per_mtok_usd",
    "accuracy",
)
PERCENTILES = ("p50", "p90", "p99")


def label(metric: str) -> str:
    """Human label of a metric, falling back to its name for ones objectives.label cannot split
    (``input_tokens_per_s``)."""
    try:
        return _objective_label(metric)
    except ValueError:
        return metric.replace("_", " ")


def is_estimated(records: Records) -> bool:
    """True when any record was predicted by the sim engine rather than measured."""
    return any(r.estimated for r in records)


def titled(text: str, records: Records) -> str:
    return f"{text} — estimated (sim)" if is_estimated(records) else text


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def hover_text(record: TrialRecord, metrics: Sequence[str] = ()) -> str:
    """Hover label of one trial: identity, the plotted and key metrics, then its full config."""
    head = f"<b>trial {record.number}</b> · {record.engine}"
    if record.precision:
        head += f" · {record.precision}"
    if record.gpus:
        head += f" · {record.gpus} GPU{'s' if record.gpus != 1 else ''}"
    if record.estimated:
        head += " · estimated"
    shown = list(dict.fromkeys([*metrics, *KEY_METRICS]))
    if record.baseline:
        head += " · baseline"
    lines = [head] + [
        f"{label(m)}: {fmt(record.metrics[m])}{_interval_text(record, m)}"
        for m in shown
        if m in record.metrics
    ]
    lines.append("<i>config</i>")
    lines += [f"{k} = {fmt(v)}" for k, v in sorted(record.config.items())]
    return "<br>".join(lines)


def interval(record: TrialRecord, metric: str) -> tuple[float, float] | None:
    """The confidence interval stored with ``metric`` (``<metric>_ci_low/high``: repeated real
    runs, engines.uncertainty), or None: sim trials and single runs carry none."""
    low, high = record.metrics.get(f"{metric}_ci_low"), record.metrics.get(f"{metric}_ci_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    return float(low), float(high)


def _interval_text(record: TrialRecord, metric: str) -> str:
    found = interval(record, metric)
    return f" [{fmt(found[0])}, {fmt(found[1])}]" if found else ""


def group_of(record: TrialRecord, by: GroupBy) -> str:
    """The group a record falls in: an attribute (engine, precision, gpus), a config option or a
    callable's answer."""
    if callable(by):
        return str(by(record))
    if by in ("engine", "precision", "gpus", "state", "feasible"):
        return str(getattr(record, by))
    return str(record.config.get(by.removeprefix("cfg."), "n/a"))


def grouped(records: Records | Mapping[str, Records], by: GroupBy | None) -> dict[str, list]:
    if isinstance(records, Mapping):
        return {str(k): list(v) for k, v in records.items()}
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(group_of(r, by) if by else "all", []).append(r)
    return out


def metric_value(record: TrialRecord, metric: str) -> float:
    value = record.metrics.get(metric)
    return float(value) if value is not None else math.nan


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def axis_title(metric: str) -> str:
    arrow = "↑ better" if DIRECTIONS.get(metric) == "maximize" else "↓ better"
    return f"{label(metric)} ({arrow})"


# Legends sit in their own band under the plot: anchored by their top edge below the x-axis
# title (a legend at a fixed paper y overlapped the title as soon as it wrapped to two rows).
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0, "xanchor": "left"}
MARGIN_WITH_LEGEND = {"t": 70, "l": 70, "r": 20, "b": 120}
