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
from collections.abc import Iterable
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from engines.errors import ServetuneError
from tuner.analysis.results import FrontResult, TrialRecord
from tuner.explorer.model import FILTERS, SLIDER_METRICS, ExplorerModel, slider_format, slider_step
from tuner.objectives import DIRECTIONS
from tuner.plots import label


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
            step = slider_step(low, high)
            slider = w.FloatSlider(
                min=low,
                max=high,
                value=start,
                step=step,
                description=f"{label(metric)} {sign}",
                readout_format=slider_format(step),
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
