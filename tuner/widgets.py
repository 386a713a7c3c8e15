"""The Pareto Explorer: pick axes, filter trials, move SLOs and watch the front and winner change,
inspect a trial and export it -- for any stored study, sim or real.

:class:`ExplorerModel` holds the logic (no widgets, testable without a browser); :class:`Explorer`
puts ipywidgets around it. Plots use ``plotly.graph_objects.FigureWidget`` when it can be built
(plotly>=6 needs ``anywidget``) and otherwise re-render a plain figure into an ``ipywidgets.Output``,
which works in JupyterLab and VS Code alike. Problems loading a study become a message in the
widget, never a traceback.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from engines.errors import ServetuneError, StudyError
from tuner.objectives import DIRECTIONS
from tuner.plots import label, plot_pareto, plot_pareto_3d
from tuner.results import FrontResult, TrialRecord, pareto_front, trial_records
from tuner.spec import StudySpec, parse_spec
from tuner.storage import open_storage, redact

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
    data = study.user_attrs.get("spec")
    if not data:
        return None
    try:
        return parse_spec(
            {**data, **({"storage": storage} if storage else {})}, f"study {study.study_name}"
        )
    except ServetuneError:
        return None


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
        self.objectives: list[str] = list(attrs.get("objectives") or DEFAULT_AXES)
        self.slos: dict[str, float] = dict(attrs.get("slos") or {})
        winner = (attrs.get("spec") or {}).get("winner") or {}
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
        if DIRECTIONS[metric] == "minimize":
            low, high = 0.0, _nice(hi * 1.05)
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
        return plot_pareto(data, x, y, color="engine")

    def detail(self) -> pd.DataFrame | None:
        """The selected trial's identity, config and metrics as one two-column frame."""
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
        ]
        rows += [(f"config: {k}", v) for k, v in sorted(r.config.items())]
        rows += [
            (label(m), round(v, 4) if isinstance(v, float) else v)
            for m, v in r.metrics.items()
            if m in DIRECTIONS
        ]
        return pd.DataFrame(rows, columns=["field", "value"]).set_index("field")

    def export(self, folder: str | Path, number: int | None = None):
        """Write the selected (or given) trial's serving files via :func:`tuner.export.export_trial`."""
        from tuner.export import export_trial

        if self.study is None or self.spec is None:
            raise StudyError("this study has no servetune spec attached, so it cannot be exported")
        number = self.selected if number is None else number
        if number is None:
            raise StudyError("select a trial to export (no feasible winner at these SLOs)")
        return export_trial(self.study, self.spec, folder, number)


def _nice(value: float) -> float:
    """Round up to two significant digits, for slider ends."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale) * scale


class Explorer(ExplorerModel):
    """ipywidgets around :class:`ExplorerModel`: ``Explorer(storage_url, name).show()`` or
    ``Explorer(study).show()``."""

    def __init__(
        self,
        study: optuna.Study | str | None = None,
        name: str | None = None,
        export_dir: str | None = None,
    ) -> None:
        super().__init__(study, name)
        self._syncing = False
        default_dir = (
            f"studies/exports/{self.study.study_name}" if self.study else "studies/exports"
        )
        self.export_dir = export_dir or default_dir
        self.widget = self._build()

    # -- setters keep the controls in step when called from code
    def set_slo(self, metric: str, value: float | None) -> FrontResult | None:
        front = super().set_slo(metric, value)
        self._sync(self.sliders.get(metric) if hasattr(self, "sliders") else None, value)
        return front

    def set_axes(self, x: str, y: str, z: str | None = None) -> FrontResult | None:
        front = super().set_axes(x, y, z)
        for w, v in zip(getattr(self, "axis_pickers", []), (x, y, z or ""), strict=False):
            self._sync(w, v)
        return front

    def set_filter(self, field: str, values: Iterable | None) -> FrontResult | None:
        values = None if values is None else list(values)
        front = super().set_filter(field, values)
        picker = getattr(self, "filter_pickers", {}).get(field)
        if picker is not None:
            self._sync(picker, tuple(picker.options if values is None else values))
        return front

    def select(self, number: int | None) -> pd.DataFrame | None:
        frame = super().select(number)
        self._sync(getattr(self, "trial_picker", None), number)
        self._render_detail()
        return frame

    def recompute(self) -> FrontResult | None:
        front = super().recompute()
        if hasattr(self, "widget"):
            self._render()
        return front

    def _sync(self, widget: Any, value: Any) -> None:
        if widget is None or value is None:
            return
        self._syncing = True
        try:
            widget.value = value
        finally:
            self._syncing = False

    def show(self) -> None:
        """Display the Explorer in the notebook."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self) -> None:
        self.show()

    # -- widgets
    def _build(self):
        import ipywidgets as w

        self.banner = w.HTML()
        if self.error or not self.completed:
            self._set_banner()
            return w.VBox([self.banner])
        metrics = self.available_metrics()
        options = [(label(m), m) for m in metrics]
        self.axis_pickers = [
            w.Dropdown(options=options, value=self.axes[0], description="x"),
            w.Dropdown(options=options, value=self.axes[1], description="y"),
            w.Dropdown(options=[("(none: 2-D)", "")] + options, value="", description="z"),
        ]
        for picker in self.axis_pickers:
            picker.observe(self._on_axes, names="value")
        self.filter_pickers = {}
        for field in FILTERS:
            choices = self.filter_choices(field)
            picker = w.SelectMultiple(
                options=choices,
                value=tuple(choices),
                rows=min(4, len(choices)),
                description=field,
                layout=w.Layout(width="220px"),
            )
            picker.observe(lambda change, f=field: self._on_filter(f, change), names="value")
            self.filter_pickers[field] = picker
        self.sliders = {}
        for metric in SLIDER_METRICS:
            bounds = self.slider_range(metric)
            if bounds is None:
                continue
            low, high, start = bounds
            sign = "≤" if DIRECTIONS[metric] == "minimize" else "≥"
            slider = w.FloatSlider(
                min=low,
                max=high,
                value=start,
                step=(high - low) / 200 or 0.01,
                description=f"{label(metric)} {sign}",
                readout_format=".4g",
                continuous_update=False,
                style={"description_width": "140px"},
                layout=w.Layout(width="460px"),
            )
            slider.observe(lambda change, m=metric: self._on_slider(m, change), names="value")
            self.sliders[metric] = slider
        self.plot_area = self._make_plot_area()
        self.trial_picker = w.Dropdown(description="trial", options=[])
        self.trial_picker.observe(self._on_trial, names="value")
        self.detail_html = w.HTML()
        self.folder = w.Text(
            value=self.export_dir, description="export to", layout=w.Layout(width="420px")
        )
        self.export_button = w.Button(
            description="Export this config",
            button_style="primary",
            icon="download",
            disabled=self.spec is None,
            layout=w.Layout(width="180px"),
        )
        self.export_button.on_click(lambda _: self._on_export())
        self.export_result = w.HTML()
        self._render()
        return w.VBox(
            [
                self.banner,
                w.HBox(self.axis_pickers),
                w.HBox(list(self.filter_pickers.values())),
                w.VBox(list(self.sliders.values())),
                self.plot_area,
                w.HBox([self.trial_picker, self.folder, self.export_button]),
                self.export_result,
                self.detail_html,
            ]
        )

    def _make_plot_area(self):
        import ipywidgets as w

        try:
            self.figure_widget: go.FigureWidget | None = go.FigureWidget()
            return self.figure_widget
        except ImportError:  # plotly>=6 without anywidget
            self.figure_widget = None
            return w.Output(layout=w.Layout(min_height="450px"))

    def _set_banner(self) -> None:
        text, colour = (self.message, "#b00020") if self.message else (self.summary(), "#1b5e20")
        self.banner.value = (
            f"<div style='padding:6px;border-left:4px solid {colour};'>{html.escape(text)}</div>"
        )

    def _render(self) -> None:
        self._set_banner()
        if not hasattr(self, "plot_area"):
            return
        fig = self.figure()
        fig.update_layout(height=520)
        if self.figure_widget is not None:
            with self.figure_widget.batch_update():
                self.figure_widget.data = ()
                self.figure_widget.add_traces(list(fig.data))
                self.figure_widget.layout = fig.layout
            for trace in self.figure_widget.data:
                trace.on_click(self._on_click)
        else:
            import plotly.io as pio

            bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
            bundle["text/plain"] = fig.layout.title.text or "Pareto front"
            self.plot_area.outputs = (
                {"output_type": "display_data", "data": bundle, "metadata": {}},
            )
        records = self.front.records if self.front else []
        order = sorted(
            records,
            key=lambda r: (
                r.number != (self.front.winner if self.front else None),
                r.number not in (self.front.front if self.front else []),
                r.number,
            ),
        )
        self._syncing = True
        try:
            self.trial_picker.options = [(self._trial_label(r), r.number) for r in order]
            self.trial_picker.value = self.selected
        finally:
            self._syncing = False
        self._render_detail()

    def _trial_label(self, r: TrialRecord) -> str:
        tag = (
            " ★ winner"
            if self.front and r.number == self.front.winner
            else (" · front" if self.front and r.number in self.front.front else "")
        )
        return f"#{r.number} {r.engine} {r.precision or ''}{tag}"

    def _render_detail(self) -> None:
        if not hasattr(self, "detail_html"):
            return
        frame = self.detail()
        if frame is None:
            self.detail_html.value = ""
            return
        is_config = frame.index.str.startswith("config: ")
        parts = [
            ("trial", frame.iloc[:8]),
            ("config", frame[is_config].rename(index=lambda k: k.removeprefix("config: "))),
            ("metrics", frame[~is_config].iloc[8:]),
        ]
        tables = "".join(
            f"<div style='margin-right:24px'><b>{title}</b>"
            f"{part.to_html(escape=True, border=0, header=False, index_names=False)}</div>"
            for title, part in parts
        )
        self.detail_html.value = (
            f"<div style='display:flex;align-items:flex-start;font-size:12px'>{tables}</div>"
        )

    # -- events
    def _on_axes(self, _change) -> None:
        if not self._syncing:
            x, y, z = (p.value for p in self.axis_pickers)
            super().set_axes(x, y, z or None)

    def _on_filter(self, field: str, change) -> None:
        if not self._syncing:
            super().set_filter(field, change["new"])

    def _on_slider(self, metric: str, change) -> None:
        if not self._syncing:
            super().set_slo(metric, change["new"])

    def _on_trial(self, change) -> None:
        if not self._syncing and change["new"] is not None:
            super().select(change["new"])
            self._render_detail()

    def _on_click(self, trace, points, _selector) -> None:
        if points.point_inds:
            self.select(int(trace.customdata[points.point_inds[0]]))

    def _on_export(self) -> None:
        try:
            result = self.export(self.folder.value)
        except ServetuneError as exc:
            self.export_result.value = f"<span style='color:#b00020'>{html.escape(str(exc))}</span>"
            return
        items = "".join(f"<li><code>{html.escape(str(p))}</code></li>" for p in result.paths)
        self.export_result.value = (
            f"exported trial {result.trial} ({result.engine}) to "
            f"<code>{html.escape(str(result.directory))}</code>:<ul>{items}</ul>"
        )


def explore(study: optuna.Study | str, name: str | None = None, **slos: float) -> Explorer:
    """Open an :class:`Explorer`, optionally with some SLOs moved (``ttft_p99_ms=1500``)."""
    explorer = Explorer(study, name)
    for metric, value in slos.items():
        explorer.set_slo(metric, value)
    return explorer


__all__ = ["Explorer", "ExplorerModel", "explore"]
