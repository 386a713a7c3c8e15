"""Figures of a study's Pareto fronts: 2-D with error bars and SLO feasibility, 3-D, and several
studies' fronts overlaid.

Plain functions over :class:`~tuner.analysis.results.TrialRecord` lists (or a front / an Optuna study)
returning ``plotly.graph_objects.Figure``; they work outside Jupyter (``fig.write_html``, or
:func:`save_figure`). Simulated results are labelled "estimated" in titles and legends, so a
screenshot of a sim study can never pass for a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from engines.errors import StudyError
from tuner.analysis.results import FrontResult, TrialRecord, pareto_front
from tuner.objectives import DIRECTIONS
from tuner.plots._style import (
    FRONT_COLOR,
    GREY_DOMINATED,
    GREY_INFEASIBLE,
    LEGEND_BELOW,
    MARGIN_WITH_LEGEND,
    PALETTE,
    WINNER_COLOR,
    FrontOrRecords,
    GroupBy,
    Records,
    axis_title,
    grouped,
    hover_text,
    interval,
    is_estimated,
    label,
    metric_value,
    titled,
)


def _as_front(
    data: FrontOrRecords, metrics: Sequence[str], slos: Mapping[str, float] | None
) -> FrontResult:
    """A front over ``metrics``: recomputed on the records (keeping their feasibility) unless
    ``data`` already is a front over exactly these metrics."""
    if isinstance(data, FrontResult):
        if list(metrics) == data.metrics[: len(metrics)] and len(metrics) == len(data.metrics):
            return data
        recomputed = pareto_front(data.records, metrics, slos)
        return FrontResult(
            recomputed.metrics,
            recomputed.directions,
            recomputed.records,
            recomputed.front,
            data.winner,
            recomputed.hypervolume,
            recomputed.reference,
        )
    return pareto_front(data, metrics, slos)


def _axes(data: FrontOrRecords, x: str | None, y: str | None) -> tuple[str, str]:
    base = data.metrics if isinstance(data, FrontResult) else ["output_tokens_per_s", "ttft_p99_ms"]
    return x or base[0], y or (base[1] if len(base) > 1 else "ttft_p99_ms")


def _split(front: FrontResult) -> tuple[list, list, list]:
    on = set(front.front)
    infeasible = [r for r in front.records if not r.feasible]
    dominated = [r for r in front.records if r.feasible and r.number not in on]
    frontier = [r for r in front.records if r.number in on]
    return infeasible, dominated, frontier


def plot_pareto(
    front_or_records: FrontOrRecords,
    x: str | None = None,
    y: str | None = None,
    color: GroupBy | None = None,
    slos: Mapping[str, float] | None = None,
    title: str | None = None,
    error_bars: bool = True,
) -> go.Figure:
    """2-D Pareto plot: infeasible and dominated trials grey, the feasible front as a line, the
    winner as a red star, the baseline as an open diamond, each SLO on a shown axis a dashed line. ``color`` splits front points by
    engine / precision / a config option. With ``error_bars``, trials measured several times
    show their confidence intervals on both axes (a front point whose bars overlap its
    neighbour's is not clearly better than it).

    Given records, the front and winner are computed over ``(x, y)`` (with ``slos`` re-deciding
    feasibility); given a :class:`FrontResult`, its feasibility and winner are kept.
    """
    x, y = _axes(front_or_records, x, y)
    front = _as_front(front_or_records, [x, y], slos)
    infeasible, dominated, frontier = _split(front)
    est = " (estimated)" if is_estimated(front.records) else ""
    fig = go.Figure()

    def scatter(recs: list, name: str, **style: Any) -> go.Scatter:
        bars = {"error_x": error_bar(recs, x), "error_y": error_bar(recs, y)} if error_bars else {}
        return go.Scatter(
            x=[metric_value(r, x) for r in recs],
            y=[metric_value(r, y) for r in recs],
            name=name,
            hovertext=[hover_text(r, [x, y]) for r in recs],
            hovertemplate="%{hovertext}<extra></extra>",
            customdata=[r.number for r in recs],
            **{k: v for k, v in bars.items() if v is not None},
            **style,
        )

    fig.add_trace(
        scatter(
            infeasible,
            "infeasible (misses SLOs)",
            mode="markers",
            marker={"color": GREY_INFEASIBLE, "symbol": "x", "size": 7},
        )
    )
    fig.add_trace(
        scatter(dominated, "dominated", mode="markers", marker={"color": GREY_DOMINATED, "size": 7})
    )
    frontier.sort(key=lambda r: metric_value(r, x))
    line_mode = "lines" if color else "lines+markers"
    fig.add_trace(
        scatter(
            frontier,
            f"Pareto front{est}",
            mode=line_mode,
            line={"color": FRONT_COLOR, "width": 2, "shape": "linear"},
            marker={"color": FRONT_COLOR, "size": 10},
        )
    )
    if color:
        for i, (group, recs) in enumerate(grouped(frontier, color).items()):
            fig.add_trace(
                scatter(
                    recs,
                    f"front: {group}",
                    mode="markers",
                    marker={"color": PALETTE[i % len(PALETTE)], "size": 11},
                )
            )
    base = [r for r in front.records if r.baseline and math.isfinite(metric_value(r, x))]
    if base:
        fig.add_trace(
            scatter(
                base,
                "baseline" + (f": trial {base[0].number}" if len(base) == 1 else "s"),
                mode="markers",
                marker={
                    "color": "black",
                    "symbol": "diamond-open",
                    "size": 15,
                    "line": {"width": 2},
                },
            )
        )
    if front.winner is not None:
        win = front.record(front.winner)
        fig.add_trace(
            scatter(
                [win],
                f"winner: trial {win.number}{est}",
                mode="markers",
                marker={
                    "color": WINNER_COLOR,
                    "symbol": "star",
                    "size": 18,
                    "line": {"color": "black", "width": 1},
                },
            )
        )
    fig.update_layout(
        title=title or titled(f"Pareto front: {label(x)} vs {label(y)}", front.records),
        xaxis_title=axis_title(x),
        yaxis_title=axis_title(y),
        legend=LEGEND_BELOW,
        template="plotly_white",
        margin=MARGIN_WITH_LEGEND,
    )
    if not front.records:
        fig.add_annotation(
            text="no completed trials", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5
        )
    draw_slo_limits(fig, slos or {}, x, y)
    return fig


def draw_slo_limits(fig: go.Figure, slos: Mapping[str, float], x: str, y: str) -> go.Figure:
    """A dashed line at each SLO limit that bounds a shown axis, labelled with the limit, so
    the feasible region can be read off the plot instead of from the spec."""
    style = {"line_dash": "dash", "line_color": WINNER_COLOR, "opacity": 0.6}
    for metric, limit in slos.items():
        if limit is None or not math.isfinite(limit):
            continue
        text = f"SLO {label(metric)} {_bound(metric)} {limit:g}"
        if metric == x:
            fig.add_vline(x=limit, annotation_text=text, **style)
        elif metric == y:
            fig.add_hline(y=limit, annotation_text=text, annotation_position="top left", **style)
    return fig


def _bound(metric: str) -> str:
    return ">=" if DIRECTIONS.get(metric) == "maximize" else "<="


def error_bar(records: Sequence[TrialRecord], metric: str) -> dict[str, Any] | None:
    """Plotly's asymmetric ``error_x``/``error_y`` for ``metric`` over ``records``, from their
    stored intervals (0 where a trial has none); None when no trial has one."""
    found = [interval(r, metric) for r in records]
    if not any(found):
        return None
    values = [metric_value(r, metric) for r in records]
    pairs = list(zip(found, values, strict=True))
    return {
        "type": "data",
        "symmetric": False,
        "array": [max(0.0, ci[1] - v) if ci else 0.0 for ci, v in pairs],
        "arrayminus": [max(0.0, v - ci[0]) if ci else 0.0 for ci, v in pairs],
        "thickness": 1.2,
        "width": 4,
    }


def plot_pareto_3d(
    front_or_records: FrontOrRecords,
    x: str | None = None,
    y: str | None = None,
    z: str = "cost_per_mtok_usd",
    color: GroupBy | None = None,
    slos: Mapping[str, float] | None = None,
    title: str | None = None,
) -> go.Figure:
    """3-D Pareto plot over ``(x, y, z)``: same marking as :func:`plot_pareto`, without a line."""
    x, y = _axes(front_or_records, x, y)
    front = _as_front(front_or_records, [x, y, z], slos)
    infeasible, dominated, frontier = _split(front)
    est = " (estimated)" if is_estimated(front.records) else ""
    fig = go.Figure()

    def scatter(recs: list, name: str, **marker: Any) -> go.Scatter3d:
        return go.Scatter3d(
            x=[metric_value(r, x) for r in recs],
            y=[metric_value(r, y) for r in recs],
            z=[metric_value(r, z) for r in recs],
            name=name,
            mode="markers",
            hovertext=[hover_text(r, [x, y, z]) for r in recs],
            hovertemplate="%{hovertext}<extra></extra>",
            customdata=[r.number for r in recs],
            marker=marker,
        )

    fig.add_trace(scatter(infeasible, "infeasible (misses SLOs)", color=GREY_INFEASIBLE, size=3))
    fig.add_trace(scatter(dominated, "dominated", color=GREY_DOMINATED, size=4))
    groups = grouped(frontier, color) if color else {"": frontier}
    for i, (group, recs) in enumerate(groups.items()):
        name = f"front: {group}" if group else f"Pareto front{est}"
        fig.add_trace(scatter(recs, name, color=PALETTE[i % len(PALETTE)], size=6))
    if front.winner is not None:
        win = front.record(front.winner)
        fig.add_trace(
            scatter(
                [win],
                f"winner: trial {win.number}{est}",
                color=WINNER_COLOR,
                size=10,
                symbol="diamond",
            )
        )
    fig.update_layout(
        title=title or titled(f"Pareto front: {label(x)}, {label(y)}, {label(z)}", front.records),
        scene={"xaxis_title": label(x), "yaxis_title": label(y), "zaxis_title": label(z)},
        template="plotly_white",
        margin={"t": 60, "l": 0, "r": 0, "b": 0},
    )
    return fig


def plot_fronts_overlay(
    records: Records | Mapping[str, Records],
    by: GroupBy = "engine",
    x: str = "output_tokens_per_s",
    y: str = "ttft_p99_ms",
    slos: Mapping[str, float] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Each group's own feasible front on one plot (engines, precisions, or -- given a mapping
    ``{label: records}`` -- whole studies such as hardware options), other trials faint.

    Groups without a completed trial are left out. Records of several studies must stay in
    separate groups: fronts are tracked by trial number, which each study restarts at 0.
    """
    groups = {
        g: recs
        for g, recs in grouped(records, by).items()
        if any(r.state == "COMPLETE" for r in recs)
    }
    everything = [r for recs in groups.values() for r in recs]
    est = " (estimated)" if is_estimated(everything) else ""
    fig = go.Figure()
    for i, (group, recs) in enumerate(groups.items()):
        numbers = [r.number for r in recs]
        if len(set(numbers)) != len(numbers):
            raise StudyError(
                f"group {group!r} repeats trial numbers (records of several studies?); "
                "pass each study as its own group: {label: records}"
            )
        colour = PALETTE[i % len(PALETTE)]
        front = pareto_front(recs, [x, y], slos)
        on = set(front.front)
        rest = [r for r in front.records if r.number not in on]
        best = sorted(
            (r for r in front.records if r.number in on), key=lambda r: metric_value(r, x)
        )
        fig.add_trace(
            go.Scatter(
                x=[metric_value(r, x) for r in rest],
                y=[metric_value(r, y) for r in rest],
                mode="markers",
                name=f"{group}: other trials",
                legendgroup=group,
                showlegend=False,
                marker={"color": colour, "opacity": 0.18, "size": 6},
                hovertext=[hover_text(r, [x, y]) for r in rest],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[metric_value(r, x) for r in best],
                y=[metric_value(r, y) for r in best],
                mode="lines+markers",
                name=f"{group} front{est}",
                legendgroup=group,
                line={"color": colour, "width": 2},
                marker={"color": colour, "size": 9},
                hovertext=[hover_text(r, [x, y]) for r in best],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or titled(f"Fronts by group: {label(x)} vs {label(y)}", everything),
        xaxis_title=axis_title(x),
        yaxis_title=axis_title(y),
        template="plotly_white",
        legend=LEGEND_BELOW,
        margin=MARGIN_WITH_LEGEND,
    )
    return fig


def save_figure(fig: go.Figure, path: str | Path) -> Path:
    """Write ``fig`` as self-contained HTML, or PNG/SVG/PDF when kaleido is installed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".html":
        fig.write_html(path, include_plotlyjs=True)
        return path
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise StudyError(
            f"saving {path.name} needs kaleido (pip install kaleido); or save as .html"
        ) from None
    fig.write_image(path)
    return path
