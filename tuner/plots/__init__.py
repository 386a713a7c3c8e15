"""Figures of a study, as plain functions returning ``plotly.graph_objects.Figure``.

:mod:`.pareto` draws the fronts, :mod:`.search` the search itself (which options vary and
matter, latency percentiles, convergence), :mod:`.requests` one real run's per-request timeline;
:mod:`._style` holds what they share (colours, metric labels, hover text). They work outside
Jupyter (``fig.write_html`` or :func:`save_figure`). Simulated results are labelled "estimated"
in titles and legends, so a screenshot of a sim study can never pass for a measurement.
"""

from tuner.plots._style import (
    FRONT_COLOR,
    GREY_DOMINATED,
    GREY_INFEASIBLE,
    KEY_METRICS,
    PALETTE,
    WINNER_COLOR,
    axis_title,
    hover_text,
    interval,
    is_estimated,
    label,
    metric_value,
)
from tuner.plots.pareto import (
    draw_slo_limits,
    error_bar,
    plot_fronts_overlay,
    plot_pareto,
    plot_pareto_3d,
    save_figure,
)
from tuner.plots.requests import plot_request_timeline
from tuner.plots.search import (
    param_importances,
    plot_convergence,
    plot_importance,
    plot_latency_percentiles,
    plot_parallel_coordinates,
    varying_params,
)

__all__ = [
    "FRONT_COLOR",
    "GREY_DOMINATED",
    "GREY_INFEASIBLE",
    "KEY_METRICS",
    "PALETTE",
    "WINNER_COLOR",
    "axis_title",
    "draw_slo_limits",
    "error_bar",
    "hover_text",
    "interval",
    "is_estimated",
    "label",
    "metric_value",
    "param_importances",
    "plot_convergence",
    "plot_fronts_overlay",
    "plot_importance",
    "plot_latency_percentiles",
    "plot_parallel_coordinates",
    "plot_pareto",
    "plot_pareto_3d",
    "plot_request_timeline",
    "save_figure",
    "varying_params",
]
