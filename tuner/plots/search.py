"""Figures of the search itself: which options vary and matter, latency percentiles per
config, and convergence (best value so far vs trials)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from engines.errors import StudyError
from tuner.analysis.results import trial_records
from tuner.objectives import DIRECTIONS
from tuner.plots._style import (
    FRONT_COLOR,
    PALETTE,
    PERCENTILES,
    GroupBy,
    Records,
    axis_title,
    empty_figure,
    grouped,
    hover_text,
    label,
    metric_value,
    titled,
)
from tuner.study.attrs import ENGINE_ATTR, METRICS_ATTR


def _column(records: Records, param: str) -> dict[str, Any]:
    values = [
        getattr(r, param) if param in ("engine", "precision", "gpus") else r.config.get(param)
        for r in records
    ]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        return {"label": param, "values": [float(v) for v in values]}
    cats = sorted({_tick(v) for v in values}, key=_tick_order)
    index = {c: i for i, c in enumerate(cats)}
    return {
        "label": param,
        "values": [index[_tick(v)] for v in values],
        "tickvals": list(range(len(cats))),
        "ticktext": cats,
    }


def _tick(value: Any) -> str:
    """A category's label: numbers at 4 significant digits (no float noise), the rest as text."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _tick_order(text: str) -> tuple[int, float, str]:
    """Numbers in numeric order (an option some engines lack, ``None``, below them), then text."""
    try:
        return (1, float(text), "")
    except ValueError:
        return (0 if text == "None" else 2, 0.0, text)


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
    done = [r for r in records if r.state == "COMPLETE" and math.isfinite(metric_value(r, metric))]
    if not done:
        return empty_figure(f"no completed trial has {label(metric)}")
    params = list(params) if params else varying_params(done)
    dims = [_column(done, p) for p in params]
    dims.append({"label": label(metric), "values": [metric_value(r, metric) for r in done]})
    reverse = DIRECTIONS.get(metric) == "minimize"
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": [metric_value(r, metric) for r in done],
                "colorscale": "Viridis",
                "reversescale": reverse,
                "showscale": True,
                "colorbar": {"title": label(metric)},
            },
            dimensions=dims,
            # long option names side by side overlapped into one line: tilt them
            labelangle=-25,
            labelside="top",
        )
    )
    fig.update_layout(
        title=titled(f"Options vs {label(metric)}", done),
        template="plotly_white",
        margin={"l": 80, "r": 80, "t": 150, "b": 40},
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
        if math.isfinite(float(t.user_attrs.get(METRICS_ATTR, {}).get(metric, math.nan)))
        and (engine is None or t.user_attrs.get(ENGINE_ATTR) == engine)
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
                value=float(t.user_attrs[METRICS_ATTR][metric]),
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
        return empty_figure(str(exc))
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
        title=titled(f"What matters for {label(metric)}{which}", records),
        xaxis_title="importance (share of the variation explained)",
        template="plotly_white",
        margin={"l": 200},
    )
    return fig


def plot_latency_percentiles(
    records: Records,
    trials: Sequence[int] | None = None,
    latencies: Sequence[str] = ("ttft", "tpot", "itl", "e2e"),
) -> go.Figure:
    """p50/p90/p99 of each latency per trial, one panel per latency (default: the six trials with
    the highest output throughput)."""
    done = [r for r in records if r.state == "COMPLETE"]
    if trials is None:
        chosen = sorted(done, key=lambda r: -metric_value(r, "output_tokens_per_s"))[:6]
    else:
        by_number = {r.number: r for r in done}
        missing = [n for n in trials if n not in by_number]
        if missing:
            raise StudyError(f"trials {missing} are not completed trials")
        chosen = [by_number[n] for n in trials]
    if not chosen:
        return empty_figure("no completed trials")
    fig = make_subplots(
        rows=1, cols=len(latencies), subplot_titles=[f"{lat.upper()} (ms)" for lat in latencies]
    )
    names = [f"#{r.number} {r.engine}" for r in chosen]
    for col, lat in enumerate(latencies, start=1):
        for i, pct in enumerate(PERCENTILES):
            fig.add_trace(
                go.Bar(
                    x=names,
                    y=[metric_value(r, f"{lat}_{pct}_ms") for r in chosen],
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
        title=titled("Latency percentiles per config", chosen),
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
    groups = grouped(records, by)
    everything = [r for recs in groups.values() for r in recs]
    maximize = DIRECTIONS.get(metric) == "maximize"
    fig = go.Figure()
    for i, (group, recs) in enumerate(groups.items()):
        colour = PALETTE[i % len(PALETTE)]
        ok = sorted(
            (
                r
                for r in recs
                if r.state == "COMPLETE" and r.feasible and math.isfinite(metric_value(r, metric))
            ),
            key=lambda r: r.number,
        )
        best: list[float] = []
        for r in ok:
            v = metric_value(r, metric)
            best.append(v if not best else (max if maximize else min)(best[-1], v))
        fig.add_trace(
            go.Scatter(
                x=[r.number for r in ok],
                y=[metric_value(r, metric) for r in ok],
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
        title=titled(f"Convergence of {label(metric)}", everything),
        xaxis_title="trial number",
        yaxis_title=axis_title(metric),
        template="plotly_white",
    )
    return fig
