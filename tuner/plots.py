"""Figures of a study: Pareto fronts, parameter views, latency percentiles and convergence.

Plain functions over :class:`~tuner.results.TrialRecord` lists (or a front / an Optuna study)
returning ``plotly.graph_objects.Figure``; they work outside Jupyter (``fig.write_html``, or
:func:`save_figure`). Simulated results are labelled "estimated" in titles and legends, so a
screenshot of a sim study can never pass for a measurement.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engines.errors import StudyError
from tuner.objectives import DIRECTIONS
from tuner.objectives import label as _objective_label
from tuner.results import FrontResult, TrialRecord, pareto_front, trial_records

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


# ---------------------------------------------------------------------------- helpers


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


def _title(text: str, records: Records) -> str:
    return f"{text} — estimated (sim)" if is_estimated(records) else text


def _fmt(value: Any) -> str:
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
    lines = [head] + [
        f"{label(m)}: {_fmt(record.metrics[m])}" for m in shown if m in record.metrics
    ]
    lines.append("<i>config</i>")
    lines += [f"{k} = {_fmt(v)}" for k, v in sorted(record.config.items())]
    return "<br>".join(lines)


def group_of(record: TrialRecord, by: GroupBy) -> str:
    """The group a record falls in: an attribute (engine, precision, gpus), a config option or a
    callable's answer."""
    if callable(by):
        return str(by(record))
    if by in ("engine", "precision", "gpus", "state", "feasible"):
        return str(getattr(record, by))
    return str(record.config.get(by.removeprefix("cfg."), "n/a"))


def _groups(records: Records | Mapping[str, Records], by: GroupBy | None) -> dict[str, list]:
    if isinstance(records, Mapping):
        return {str(k): list(v) for k, v in records.items()}
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(group_of(r, by) if by else "all", []).append(r)
    return out


def _value(record: TrialRecord, metric: str) -> float:
    value = record.metrics.get(metric)
    return float(value) if value is not None else math.nan


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


def _empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# ---------------------------------------------------------------------------- Pareto fronts


def plot_pareto(
    front_or_records: FrontOrRecords,
    x: str | None = None,
    y: str | None = None,
    color: GroupBy | None = None,
    slos: Mapping[str, float] | None = None,
    title: str | None = None,
) -> go.Figure:
    """2-D Pareto plot: infeasible and dominated trials grey, the feasible front as a line, the
    winner as a red star. ``color`` splits front points by engine / precision / a config option.

    Given records, the front and winner are computed over ``(x, y)`` (with ``slos`` re-deciding
    feasibility); given a :class:`FrontResult`, its feasibility and winner are kept.
    """
    x, y = _axes(front_or_records, x, y)
    front = _as_front(front_or_records, [x, y], slos)
    infeasible, dominated, frontier = _split(front)
    est = " (estimated)" if is_estimated(front.records) else ""
    fig = go.Figure()

    def scatter(recs: list, name: str, **style: Any) -> go.Scatter:
        return go.Scatter(
            x=[_value(r, x) for r in recs],
            y=[_value(r, y) for r in recs],
            name=name,
            hovertext=[hover_text(r, [x, y]) for r in recs],
            hovertemplate="%{hovertext}<extra></extra>",
            customdata=[r.number for r in recs],
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
    frontier.sort(key=lambda r: _value(r, x))
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
        for i, (group, recs) in enumerate(_groups(frontier, color).items()):
            fig.add_trace(
                scatter(
                    recs,
                    f"front: {group}",
                    mode="markers",
                    marker={"color": PALETTE[i % len(PALETTE)], "size": 11},
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
        title=title or _title(f"Pareto front: {label(x)} vs {label(y)}", front.records),
        xaxis_title=_axis_title(x),
        yaxis_title=_axis_title(y),
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
        margin={"t": 60, "l": 60, "r": 20, "b": 40},
    )
    if not front.records:
        fig.add_annotation(
            text="no completed trials", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5
        )
    return fig


def _axis_title(metric: str) -> str:
    arrow = "↑ better" if DIRECTIONS.get(metric) == "maximize" else "↓ better"
    return f"{label(metric)} ({arrow})"


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
            x=[_value(r, x) for r in recs],
            y=[_value(r, y) for r in recs],
            z=[_value(r, z) for r in recs],
            name=name,
            mode="markers",
            hovertext=[hover_text(r, [x, y, z]) for r in recs],
            hovertemplate="%{hovertext}<extra></extra>",
            customdata=[r.number for r in recs],
            marker=marker,
        )

    fig.add_trace(scatter(infeasible, "infeasible (misses SLOs)", color=GREY_INFEASIBLE, size=3))
    fig.add_trace(scatter(dominated, "dominated", color=GREY_DOMINATED, size=4))
    groups = _groups(frontier, color) if color else {"": frontier}
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
        title=title or _title(f"Pareto front: {label(x)}, {label(y)}, {label(z)}", front.records),
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
        for g, recs in _groups(records, by).items()
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
        best = sorted((r for r in front.records if r.number in on), key=lambda r: _value(r, x))
        fig.add_trace(
            go.Scatter(
                x=[_value(r, x) for r in rest],
                y=[_value(r, y) for r in rest],
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
                x=[_value(r, x) for r in best],
                y=[_value(r, y) for r in best],
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
        title=title or _title(f"Fronts by group: {label(x)} vs {label(y)}", everything),
        xaxis_title=_axis_title(x),
        yaxis_title=_axis_title(y),
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


# ---------------------------------------------------------------------------- parameters


def _column(records: Records, param: str) -> dict[str, Any]:
    values = [
        getattr(r, param) if param in ("engine", "precision", "gpus") else r.config.get(param)
        for r in records
    ]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        return {"label": param, "values": [float(v) for v in values]}
    cats = sorted({str(v) for v in values})
    index = {c: i for i, c in enumerate(cats)}
    return {
        "label": param,
        "values": [index[str(v)] for v in values],
        "tickvals": list(range(len(cats))),
        "ticktext": cats,
    }


def varying_params(records: Records, limit: int = 10) -> list[str]:
    """Config options (and engine/precision) that take more than one value among ``records``."""
    names: list[str] = []
    for name in ("engine", "precision", "gpus"):
        if len({getattr(r, name) for r in records}) > 1:
            names.append(name)
    keys = dict.fromkeys(k for r in records for k in r.config)
    names += [k for k in keys if len({str(r.config.get(k)) for r in records}) > 1]
    return names[:limit]


def plot_parallel_coordinates(
    records: Records, params: Sequence[str] | None = None, metric: str = "output_tokens_per_s"
) -> go.Figure:
    """One line per completed trial through its options, coloured by ``metric``.

    Categorical options (and options some engines lack, shown as ``None``) become labelled
    axes; ``params`` defaults to the options that vary.
    """
    done = [r for r in records if r.state == "COMPLETE" and math.isfinite(_value(r, metric))]
    if not done:
        return _empty_figure(f"no completed trial has {label(metric)}")
    params = list(params) if params else varying_params(done)
    dims = [_column(done, p) for p in params]
    dims.append({"label": label(metric), "values": [_value(r, metric) for r in done]})
    reverse = DIRECTIONS.get(metric) == "minimize"
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": [_value(r, metric) for r in done],
                "colorscale": "Viridis",
                "reversescale": reverse,
                "showscale": True,
                "colorbar": {"title": label(metric)},
            },
            dimensions=dims,
        )
    )
    fig.update_layout(
        title=_title(f"Options vs {label(metric)}", done),
        template="plotly_white",
        margin={"l": 80, "r": 80, "t": 80, "b": 40},
    )
    return fig


def param_importances(
    study: optuna.Study, metric: str, engine: str | None = None, seed: int = 0
) -> dict[str, float]:
    """Importance (fANOVA, or PED-ANOVA without scikit-learn) of each option for ``metric`` over completed trials (of ``engine``).

    Trials are copied into an in-memory single-objective study so multi-objective studies, and
    engines with different options, work; raises :class:`StudyError` with too few trials.
    """
    source = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if math.isfinite(float(t.user_attrs.get("metrics", {}).get(metric, math.nan)))
        and (engine is None or t.user_attrs.get("engine") == engine)
    ]
    if len(source) < 3:
        raise StudyError(
            f"need at least 3 completed trials with {metric} for importances "
            f"(have {len(source)}); run more trials"
        )
    copy = optuna.create_study(direction=DIRECTIONS.get(metric, "minimize"))
    copy.add_trials(
        [
            optuna.trial.create_trial(
                params=t.params,
                distributions=t.distributions,
                value=float(t.user_attrs["metrics"][metric]),
            )
            for t in source
        ]
    )
    try:
        with warnings.catch_warnings():  # "few trials in a regime": expected on small budgets
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(copy, evaluator=_evaluator(seed))
    except (RuntimeError, ValueError) as exc:
        raise StudyError(f"cannot compute importances for {metric}: {exc}") from None


def _evaluator(seed: int) -> optuna.importance.BaseImportanceEvaluator | None:
    """fANOVA when scikit-learn is installed (it needs it), else Optuna's default (PED-ANOVA)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return None
    return optuna.importance.FanovaImportanceEvaluator(seed=seed)


def plot_importance(
    study: optuna.Study, metric: str = "output_tokens_per_s", engine: str | None = None
) -> go.Figure:
    """Horizontal bars of option importance for ``metric``; a message figure when there are too
    few trials rather than an exception, so notebooks keep running on tiny budgets."""
    try:
        importances = param_importances(study, metric, engine)
    except StudyError as exc:
        return _empty_figure(str(exc))
    names = list(importances)[::-1]
    shown = [n.removeprefix(f"{engine}.") if engine else n for n in names]
    fig = go.Figure(
        go.Bar(
            x=[importances[n] for n in names],
            y=shown,
            orientation="h",
            marker_color=FRONT_COLOR,
            name="importance",
        )
    )
    which = f" ({engine})" if engine else ""
    records = trial_records(study)
    fig.update_layout(
        title=_title(f"What matters for {label(metric)}{which}", records),
        xaxis_title="importance (share of the variation explained)",
        template="plotly_white",
        margin={"l": 200},
    )
    return fig


# ---------------------------------------------------------------------------- latency & progress


def plot_latency_percentiles(
    records: Records,
    trials: Sequence[int] | None = None,
    latencies: Sequence[str] = ("ttft", "tpot", "itl", "e2e"),
) -> go.Figure:
    """p50/p90/p99 of each latency per trial, one panel per latency (default: the six trials with
    the highest output throughput)."""
    done = [r for r in records if r.state == "COMPLETE"]
    if trials is None:
        chosen = sorted(done, key=lambda r: -_value(r, "output_tokens_per_s"))[:6]
    else:
        by_number = {r.number: r for r in done}
        missing = [n for n in trials if n not in by_number]
        if missing:
            raise StudyError(f"trials {missing} are not completed trials")
        chosen = [by_number[n] for n in trials]
    if not chosen:
        return _empty_figure("no completed trials")
    fig = make_subplots(
        rows=1, cols=len(latencies), subplot_titles=[f"{lat.upper()} (ms)" for lat in latencies]
    )
    names = [f"#{r.number} {r.engine}" for r in chosen]
    for col, lat in enumerate(latencies, start=1):
        for i, pct in enumerate(PERCENTILES):
            fig.add_trace(
                go.Bar(
                    x=names,
                    y=[_value(r, f"{lat}_{pct}_ms") for r in chosen],
                    name=pct,
                    legendgroup=pct,
                    showlegend=col == 1,
                    marker_color=PALETTE[i],
                    hovertext=[hover_text(r, [f"{lat}_{pct}_ms"]) for r in chosen],
                    hovertemplate="%{hovertext}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_layout(
        barmode="group",
        title=_title("Latency percentiles per config", chosen),
        template="plotly_white",
    )
    return fig


def plot_convergence(
    records: Records | Mapping[str, Records],
    metric: str = "output_tokens_per_s",
    by: GroupBy | None = None,
) -> go.Figure:
    """Best feasible ``metric`` so far against trial number, one line per group (engine, or a
    mapping ``{strategy: records}`` to compare samplers); feasible trials as faint dots."""
    groups = _groups(records, by)
    everything = [r for recs in groups.values() for r in recs]
    maximize = DIRECTIONS.get(metric) == "maximize"
    fig = go.Figure()
    for i, (group, recs) in enumerate(groups.items()):
        colour = PALETTE[i % len(PALETTE)]
        ok = sorted(
            (
                r
                for r in recs
                if r.state == "COMPLETE" and r.feasible and math.isfinite(_value(r, metric))
            ),
            key=lambda r: r.number,
        )
        best: list[float] = []
        for r in ok:
            v = _value(r, metric)
            best.append(v if not best else (max if maximize else min)(best[-1], v))
        fig.add_trace(
            go.Scatter(
                x=[r.number for r in ok],
                y=[_value(r, metric) for r in ok],
                mode="markers",
                name=f"{group}: feasible trials",
                legendgroup=group,
                showlegend=False,
                marker={"color": colour, "opacity": 0.3, "size": 6},
                hovertext=[hover_text(r, [metric]) for r in ok],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[r.number for r in ok],
                y=best,
                mode="lines",
                line={"shape": "hv", "color": colour, "width": 2},
                name=f"best so far: {group}" if group != "all" else "best so far",
                legendgroup=group,
            )
        )
    fig.update_layout(
        title=_title(f"Convergence of {label(metric)}", everything),
        xaxis_title="trial number",
        yaxis_title=_axis_title(metric),
        template="plotly_white",
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
