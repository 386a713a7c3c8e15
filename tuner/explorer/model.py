"""The Pareto Explorer's state without widgets: trials, filters, SLOs, axes, front, selection
and export, testable without a browser (:class:`tuner.explorer.Explorer` puts ipywidgets around
it). Problems loading a study become :class:`~engines.errors.StudyError`, which the widget shows
as a message."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go

from engines.errors import ServetuneError, StudyError
from tuner.analysis.results import FrontResult, TrialRecord, pareto_front, trial_records
from tuner.objectives import DIRECTIONS
from tuner.plots import label, plot_pareto, plot_pareto_3d
from tuner.plots._style import fmt, interval
from tuner.spec import StudySpec, parse_spec
from tuner.study.attrs import OBJECTIVES_ATTR, RESULT_ATTR, SLOS_ATTR, SPEC_ATTR
from tuner.study.storage import open_storage, redact

SLIDER_METRICS = ("ttft_p99_ms", "tpot_p99_ms", "accuracy")
FILTERS = ("engine", "precision", "gpus")
DEFAULT_AXES = ("output_tokens_per_s", "ttft_p99_ms")


def _load(storage: str, name: str | None) -> optuna.Study:
    if not name:
        raise StudyError("give the study's name as well as its storage")
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise StudyError(f"no study storage at {storage} (run a study first, or check the path)")
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise StudyError(f"no study named {name!r} in {redact(storage)}") from None


def _spec_of(study: optuna.Study, storage: str | None) -> StudySpec | None:
    data = study.user_attrs.get(SPEC_ATTR)
    if not data:
        return None
    try:
        return parse_spec(
            {**data, **({"storage": storage} if storage else {})}, f"study {study.study_name}"
        )
    except ServetuneError:
        return None


def _nice(value: float) -> float:
    """Round up to two significant digits, for slider ends."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale) * scale


def slider_step(low: float, high: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about 200 positions over the range,
    so one arrow key moves a latency SLO by a readable amount and the readout never jitters."""
    span = high - low
    if span <= 0 or not math.isfinite(span):
        return 0.01
    raw = span / 200
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def slider_format(step: float) -> str:
    """A fixed readout format for a slider of ``step``: as many decimals as the step has."""
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f",.{decimals}f"


def _nice_down(value: float) -> float:
    """Round down to two significant digits, for the low end of a latency slider."""
    if value <= 0 or not math.isfinite(value):
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.floor(value / scale) * scale


class ExplorerModel:
    """What the Explorer shows, as plain state: trials, filters, SLOs, axes, front, selection.

    Every setter returns the new :class:`FrontResult` (``None`` when there is nothing to show,
    with the reason in :attr:`message`).
    """

    def __init__(self, study: optuna.Study | str | None = None, name: str | None = None) -> None:
        self.study: optuna.Study | None = None
        self.spec: StudySpec | None = None
        self.records: list[TrialRecord] = []
        self.error: str | None = None
        try:
            if isinstance(study, optuna.Study):
                self.study, storage = study, None
            else:
                self.study, storage = _load(str(study or ""), name), str(study)
            self.spec = _spec_of(self.study, storage)
            self.records = trial_records(self.study)
        except ServetuneError as exc:
            self.error = str(exc)
        except Exception as exc:  # a broken storage URL must still give a message, not a trace
            self.error = f"cannot load the study: {type(exc).__name__}: {exc}"
        attrs = self.study.user_attrs if self.study else {}
        self.objectives: list[str] = list(attrs.get(OBJECTIVES_ATTR) or DEFAULT_AXES)
        self.slos: dict[str, float] = dict(attrs.get(SLOS_ATTR) or {})
        winner = (attrs.get(SPEC_ATTR) or {}).get("winner") or {}
        self.winner_metric: str = winner.get("metric") or self.objectives[0]
        self.tie_break: str | None = winner.get("tie_break")
        self.tolerance: float = winner.get("tolerance", 0.01)
        self.completed = [r for r in self.records if r.state == "COMPLETE"]
        metrics = self.available_metrics()
        x = self.objectives[0] if self.objectives[0] in metrics else DEFAULT_AXES[0]
        y = next((m for m in self.objectives[1:] if m in metrics), DEFAULT_AXES[1])
        self.axes: list[str | None] = [x, y, None]
        self.filters: dict[str, set | None] = {f: None for f in FILTERS}
        self.front: FrontResult | None = None
        self.selected: int | None = None
        self.recompute()

    # -- what there is
    def available_metrics(self) -> list[str]:
        """Known metrics with a finite value in some completed trial (axis choices)."""
        return [
            m
            for m in DIRECTIONS
            if any(
                isinstance(r.metrics.get(m), (int, float)) and math.isfinite(r.metrics[m])
                for r in self.completed
            )
        ]

    def filter_choices(self, field: str) -> list:
        """The values ``field`` (engine, precision, gpus) takes among completed trials."""
        return sorted({getattr(r, field) for r in self.completed}, key=str)

    def slider_range(self, metric: str) -> tuple[float, float, float] | None:
        """(low, high, start) for an SLO slider, or None when no trial has ``metric``."""
        values = [
            r.metrics[m]
            for r in self.completed
            for m in [metric]
            if isinstance(r.metrics.get(m), (int, float)) and math.isfinite(r.metrics[m])
        ]
        if not values:
            return None
        lo, hi = min(values), max(values)
        if metric in self.slos:
            lo, hi = min(lo, self.slos[metric]), max(hi, self.slos[metric])
        if DIRECTIONS[metric] == "minimize":  # from just under the best trial, not from 0
            low, high = _nice_down(lo * 0.8), _nice(hi * 1.05)
            return low, high, self.slos.get(metric, high)
        low, high = max(0.0, lo - 0.02 * abs(lo)), hi
        return low, high, self.slos.get(metric, low)

    # -- what the user changes
    def set_slo(self, metric: str, value: float | None) -> FrontResult | None:
        """Move (or, with ``None``, drop) one SLO and recompute feasibility, front and winner."""
        if value is None:
            self.slos.pop(metric, None)
        else:
            self.slos[metric] = float(value)
        return self.recompute()

    def set_axes(self, x: str, y: str, z: str | None = None) -> FrontResult | None:
        """Plot (and compute the front over) ``x``, ``y`` and optionally ``z`` (3-D)."""
        for m in (x, y, z):
            if m is not None and m not in DIRECTIONS:
                raise StudyError(f"unknown metric {m!r}")
        self.axes = [x, y, z]
        return self.recompute()

    def set_filter(self, field: str, values: Iterable | None) -> FrontResult | None:
        """Keep only trials whose ``field`` (engine, precision, gpus) is in ``values`` (None: all)."""
        if field not in FILTERS:
            raise StudyError(f"unknown filter {field!r}; one of {', '.join(FILTERS)}")
        self.filters[field] = None if values is None else set(values)
        return self.recompute()

    def select(self, number: int | None) -> pd.DataFrame | None:
        """Select a trial for the detail table; returns its config and metrics as a frame."""
        self.selected = number
        return self.detail()

    # -- what follows from it
    @property
    def visible(self) -> list[TrialRecord]:
        """Completed trials passing the filters."""
        return [
            r
            for r in self.completed
            if all(vals is None or getattr(r, f) in vals for f, vals in self.filters.items())
        ]

    @property
    def metrics(self) -> list[str]:
        return [m for m in self.axes if m]

    @property
    def winner(self) -> TrialRecord | None:
        return (
            self.front.record(self.front.winner)
            if self.front and self.front.winner is not None
            else None
        )

    @property
    def feasible(self) -> list[int]:
        return self.front.feasible if self.front else []

    def recompute(self) -> FrontResult | None:
        """Front and winner of the visible trials under the current SLOs; sets :attr:`message`."""
        self.front = None
        if self.error is None and self.visible:
            self.front = pareto_front(
                self.visible,
                self.metrics,
                self.slos,
                self.winner_metric,
                self.tie_break,
                self.tolerance,
            )
            if self.selected not in {r.number for r in self.front.records}:
                self.selected = self.front.winner
        return self.front

    @property
    def message(self) -> str | None:
        """Why there is no front or winner to show, or ``None`` when there is one."""
        if self.error:
            return self.error
        name = self.study.study_name if self.study else "?"
        if not self.records:
            return (
                f"study {name!r} has no trials yet: run it first "
                "(servetune run <spec>, or tuner.run_study(spec))"
            )
        if not self.completed:
            states = pd.Series([r.state.lower() for r in self.records]).value_counts()
            counts = ", ".join(f"{n} {s}" for s, n in states.items())
            return f"study {name!r} has no completed trial ({counts}); see the trials' reasons"
        if not self.visible:
            return "no completed trial matches the filters"
        if self.front is not None and self.front.winner is None:
            slos = ", ".join(
                f"{label(m)} {'≤' if DIRECTIONS[m] == 'minimize' else '≥'} {v:g}"
                for m, v in self.slos.items()
            )
            return f"no trial meets the SLOs ({slos}): loosen them to see a front and a winner"
        return None

    def summary(self) -> str:
        """One line: counts, the front, the winner; says when results are estimated."""
        if self.front is None:
            return ""
        f = self.front
        text = (
            f"{len(f.records)} completed trials shown · {len(f.feasible)} feasible · "
            f"{len(f.front)} on the front"
        )
        if self.winner:
            w = self.winner
            text += (
                f" · winner: trial {w.number} ({w.engine}, {w.precision}, {w.gpus} GPU) "
                f"{label(self.winner_metric)} = {w.metrics.get(self.winner_metric, math.nan):.4g}"
            )
        if any(r.estimated for r in f.records):
            text += " · estimated by the sim engine, not measured"
        return text

    def figure(self) -> go.Figure:
        """The Pareto plot for the current state (2-D, or 3-D with a z axis)."""
        x, y, z = self.axes
        data = self.front if self.front is not None else []
        if z:
            return plot_pareto_3d(data, x, y, z, color="engine")
        return plot_pareto(data, x, y, color="engine", slos=self.slos)

    def detail(self) -> pd.DataFrame | None:
        """The selected trial's identity, config and metrics as one two-column frame; a trial
        measured several times adds each metric's interval and one row per run."""
        if self.front is None or self.selected is None:
            return None
        r = self.front.record(self.selected)
        rows = [
            ("trial", r.number),
            ("engine", r.engine),
            ("precision", r.precision),
            ("GPUs", r.gpus),
            ("feasible (current SLOs)", r.feasible),
            ("on the front", r.number in self.front.front),
            ("winner", r.number == self.front.winner),
            ("result", "estimated (sim)" if r.estimated else "measured"),
            ("baseline", r.baseline),
        ]
        rows += [(f"config: {k}", v) for k, v in sorted(r.config.items())]
        rows += [
            (label(m), round(v, 4) if isinstance(v, float) else v)
            for m, v in r.metrics.items()
            if m in DIRECTIONS
        ]
        rows += [
            (f"{label(m)}: 95% interval", f"{fmt(found[0])} to {fmt(found[1])}")
            for m in r.metrics
            if m in DIRECTIONS and (found := interval(r, m))
        ]
        runs = (
            ((r.attrs.get(RESULT_ATTR) or {}).get("measurement") or {}).get("extra", {}).get("runs")
        )
        for k, run in enumerate(runs or [], start=1):
            shown = [m for m in ("output_tokens_per_s", "ttft_p99_ms", "tpot_p99_ms") if m in run]
            rows.append((f"run {k}", ", ".join(f"{label(m)} {fmt(run[m])}" for m in shown)))
        return pd.DataFrame(rows, columns=["field", "value"]).set_index("field")

    def export(self, folder: str | Path, number: int | None = None):
        """Write the selected (or given) trial's serving files via :func:`tuner.analysis.export.export_trial`."""
        from tuner.analysis.export import export_trial

        if self.study is None or self.spec is None:
            raise StudyError("this study has no servetune spec attached, so it cannot be exported")
        number = self.selected if number is None else number
        if number is None:
            raise StudyError("select a trial to export (no feasible winner at these SLOs)")
        return export_trial(self.study, self.spec, folder, number)
