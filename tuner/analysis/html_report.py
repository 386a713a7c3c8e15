"""A study as one self-contained HTML page to share: no server, plotly embedded.

What goes in is computed first (:func:`report_data`, plain data that tests check) and drawn
second (:func:`render_html`), so a change of layout never changes a number. The page says in its
first line whether its numbers were measured or estimated by the simulator, as the exports do.
"""

from __future__ import annotations

import html
import json
import math
import shlex
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import plotly.io as pio
import yaml

from engines import engine_class, split_settings
from engines.errors import StudyError
from tuner.analysis.results import FrontResult, TrialRecord, study_front, trial_records
from tuner.objectives import with_error_limit
from tuner.plots import label, plot_pareto
from tuner.redaction import redact_spec, scrub
from tuner.spec import StudySpec
from tuner.study.attrs import REMEASURED_WINNER_ATTR, SLOS_ATTR, SPEC_ATTR, VERSIONS_ATTR
from tuner.study.loop import make_context


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, as plain values."""

    study: str
    estimated: bool
    spec_yaml: str
    objectives: list[str]
    slos: dict[str, float]
    front: FrontResult
    rows: list[dict[str, Any]]
    baseline: int | None
    ratios: dict[int, dict[str, float]]
    winner: int | None
    winner_config: dict[str, Any] = field(default_factory=dict)
    winner_command: str = ""
    winner_files: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)


def report_data(study: optuna.Study, spec: StudySpec) -> ReportData:
    """Read ``study`` into what its report shows: front, trials, baseline ratios, winner, failures."""
    records = trial_records(study)
    if not records:
        raise StudyError(f"study {study.study_name!r} has no trials yet")
    front = study_front(study)
    objectives = list(front.metrics)
    winner = study.user_attrs.get(REMEASURED_WINNER_ATTR, front.winner)
    baseline = next((r for r in records if r.baseline and r.state == "COMPLETE"), None)
    ratios = _ratios(records, baseline, objectives)
    data = ReportData(
        study=study.study_name,
        estimated=any(r.estimated for r in records if r.state == "COMPLETE"),
        spec_yaml=_spec_yaml(study),
        objectives=objectives,
        slos=with_error_limit(study.user_attrs.get(SLOS_ATTR) or {}),
        front=front,
        rows=[_row(r, front, winner, objectives) for r in records],
        baseline=baseline.number if baseline else None,
        ratios=ratios,
        winner=winner,
        failures=dict(
            Counter(r.reason or r.state.lower() for r in records if r.state != "COMPLETE")
        ),
        counts=dict(Counter(r.state for r in records)),
        versions=dict(study.user_attrs.get(VERSIONS_ATTR) or {}),
    )
    if winner is None:
        return data
    record = next(r for r in records if r.number == winner)
    settings = split_settings(record.engine, spec.engines.get(record.engine))[0]
    bundle = engine_class(record.engine)(**settings).export(
        record.config, make_context(spec, winner)
    )
    return _with_winner(data, record.config, shlex.join(bundle.command), dict(bundle.files))


def _with_winner(data: ReportData, config: dict, command: str, files: dict) -> ReportData:
    from dataclasses import replace

    return replace(data, winner_config=config, winner_command=command, winner_files=files)


def _spec_yaml(study: optuna.Study) -> str:
    """The stored spec (the study keeps it without its storage URL), passwords redacted."""
    spec = redact_spec(study.user_attrs.get(SPEC_ATTR) or {})  # studies stored before redaction
    return scrub(yaml.safe_dump(spec, sort_keys=False))


def _ratios(
    records: list[TrialRecord], baseline: TrialRecord | None, metrics: list[str]
) -> dict[int, dict[str, float]]:
    if baseline is None:
        return {}
    out: dict[int, dict[str, float]] = {}
    for r in records:
        if r.state != "COMPLETE":
            continue
        out[r.number] = {
            m: r.metrics[m] / baseline.metrics[m]
            for m in metrics
            if m in r.metrics and baseline.metrics.get(m) and math.isfinite(baseline.metrics[m])
        }
    return out


def _row(r: TrialRecord, front: FrontResult, winner: int | None, metrics: list[str]) -> dict:
    return {
        "trial": r.number,
        "state": r.state,
        "engine": r.engine,
        "precision": r.precision or "",
        "feasible": r.feasible,
        "on_front": r.number in front.front,
        "winner": r.number == winner,
        "baseline": r.baseline,
        "metrics": {m: r.metrics.get(m) for m in metrics},
        "reason": r.reason or "",
        "config": r.config,
    }


def front_figure(data: ReportData) -> go.Figure:
    """The front over the first two objectives, error bars on, each bounding SLO a dashed line."""
    x = data.objectives[0]
    other = "ttft_p99_ms" if x != "ttft_p99_ms" else "output_tokens_per_s"
    y = data.objectives[1] if len(data.objectives) > 1 else other
    return plot_pareto(data.front, x=x, y=y, slos=data.slos)


def render_html(data: ReportData) -> str:
    """The page: plain HTML and one embedded plotly bundle, readable offline."""
    kind = (
        "Numbers are ESTIMATED by the sim engine (no GPU), not measured."
        if data.estimated
        else "Numbers were measured on real servers."
    )
    figure = pio.to_html(front_figure(data), include_plotlyjs=True, full_html=False)
    parts = [
        f"<h1>servetune study {_e(data.study)}</h1>",
        f'<p class="kind" id="kind">{_e(kind)}</p>',
        _summary(data),
        "<h2>Pareto front</h2>",
        figure,
        "<h2>Winner</h2>",
        _winner(data),
        "<h2>Trials</h2>",
        _trials_table(data),
        "<h2>Failures by reason</h2>",
        _failures(data),
        "<h2>Spec</h2>",
        f"<pre>{_e(data.spec_yaml)}</pre>",
        "<h2>Versions</h2>",
        f"<pre>{_e(json.dumps(data.versions, indent=2, default=str))}</pre>",
        f"<p class=foot>made {datetime.now(timezone.utc).isoformat(timespec='seconds')}</p>",
    ]
    return _PAGE.format(title=_e(f"servetune: {data.study}"), body="\n".join(parts))


def write_report(study: optuna.Study, spec: StudySpec, path: str | Path) -> Path:
    """Write the study's report to ``path`` (an .html file); returns the path."""
    out = Path(path)
    page = render_html(report_data(study, spec))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise StudyError(f"report: cannot write {out}: {exc.strerror}") from None
    return out


def _summary(data: ReportData) -> str:
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(data.counts.items()))
    slos = ", ".join(f"{label(m)} <= {v:g}" for m, v in data.slos.items()) or "none"
    return (
        f"<p>Trials: {counts}. Front of {len(data.front.front)} among "
        f"{len(data.front.feasible)} feasible. Objectives: "
        f"{_e(', '.join(label(m) for m in data.objectives))}. SLOs: {_e(slos)}.</p>"
    )


def _winner(data: ReportData) -> str:
    if data.winner is None:
        return "<p>No feasible trial: loosen the SLOs or run more trials.</p>"
    ratio = data.ratios.get(data.winner, {})
    ratio_text = (
        ", ".join(f"{label(m)} {v:.2f}x" for m, v in ratio.items())
        if data.baseline is not None
        else "no baseline measured"
    )
    files = "".join(
        f"<h3>{_e(name)}</h3><pre>{_e(text)}</pre>" for name, text in data.winner_files.items()
    )
    return (
        f'<p id="winner">Trial {data.winner}; against the baseline (trial {data.baseline}): '
        f"{_e(ratio_text)}.</p>"
        f"<pre>{_e(yaml.safe_dump(data.winner_config, sort_keys=False))}</pre>"
        f"<p>Serve it with:</p><pre>{_e(data.winner_command)}</pre>{files}"
    )


def _trials_table(data: ReportData) -> str:
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in ["trial", "state", "engine", "precision", *map(label, data.objectives)]
        + ["vs baseline", "feasible", "note"]
    )
    body = []
    for row in data.rows:
        ratio = data.ratios.get(row["trial"], {}).get(data.objectives[0])
        marks = [m for m in ("winner", "baseline") if row[m]] + (
            ["front"] if row["on_front"] else []
        )
        cells = [
            row["trial"],
            row["state"],
            row["engine"],
            row["precision"],
            *[_number(row["metrics"][m]) for m in data.objectives],
            f"{ratio:.2f}x" if ratio else "",
            "yes" if row["feasible"] else "no",
            ", ".join(marks) or row["reason"],
        ]
        body.append("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in cells) + "</tr>")
    return f'<table id="trials"><tr>{head}</tr>{"".join(body)}</table>'


def _failures(data: ReportData) -> str:
    if not data.failures:
        return "<p>None.</p>"
    items = "".join(f"<li>{_e(k)}: {n}</li>" for k, n in sorted(data.failures.items()))
    return f'<ul id="failures">{items}</ul>'


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
.kind {{ font-weight: bold; padding: .5em; background: #fff3cd; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
pre {{ background: #f6f8fa; padding: .5em; overflow-x: auto; }}
.foot {{ color: #888; font-size: 0.8em; }}
</style></head>
<body>
{body}
</body></html>
"""
