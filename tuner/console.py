"""What the CLI prints: live progress of a study and its Pareto front as a table.

Kept apart from the command definitions so that ``tuner/cli.py`` stays a thin layer; every
function takes the rich console to print on.
"""

from __future__ import annotations

import logging
import math
import sys
import time

from rich.console import Console
from rich.table import Table

from engines import engine_class
from engines.progress import progress_log
from tuner.objectives import label
from tuner.redaction import ScrubbingFilter
from tuner.spec import StudySpec
from tuner.study.attrs import SLOS_ATTR


def poll_printer(console: Console):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("trials (all workers)"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    state: dict = {"task": None}

    def update(done, total):
        if state["task"] is None:
            progress.start()
            state["task"] = progress.add_task("trials", total=total)
        progress.update(state["task"], completed=done)
        if total is not None and done >= total:
            progress.stop()

    return update


def attach_progress_lines(quiet: bool = False, stream=None) -> logging.Handler | None:
    """Print the ``servetune.progress`` events (engines.progress) as timestamped lines on
    ``stream`` (stdout): to a terminal and to a log file alike. ``quiet`` prints none."""
    logger = progress_log
    for old in [h for h in logger.handlers if getattr(h, "servetune_lines", False)]:
        logger.removeHandler(old)
    if quiet:
        return None
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.addFilter(ScrubbingFilter())
    handler.servetune_lines = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def progress_printer(spec, console: Console):
    """The run's progress: a line per finished trial (metrics, ratio to the baseline run in this
    session, trials done, ETA) through the progress log, and a live bar on a terminal only."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[best]}"),
        console=console,
        transient=True,
    )
    live = console.is_terminal
    state: dict = {"task": None, "best": None, "baseline": None, "start": time.monotonic()}
    metrics = [o.metric for o in spec.objectives]
    metric = spec.winner_metric
    sign = 1 if spec.objectives[0].direction == "maximize" else -1

    def update(outcome, done, total):
        if live and state["task"] is None:
            progress.start()
            state["task"] = progress.add_task("trials", total=total, best="")
        if outcome.state == "COMPLETE" and outcome.feasible and metric in metrics:
            value = outcome.values[metrics.index(metric)]
            if state["best"] is None or sign * value > sign * state["best"]:
                state["best"] = value
        if outcome.state == "COMPLETE" and spec.baseline and outcome.number == 0:
            state["baseline"] = outcome.values
        progress_log.info(trial_line(outcome, metrics, state, done, total))
        if live:
            best = f"best {label(metric)}: {state['best']:.4g}" if state["best"] is not None else ""
            progress.update(state["task"], completed=done, best=best)
            if total is not None and done >= total:
                progress.stop()

    return update


def trial_line(outcome, metrics: list[str], state: dict, done: int, total: int | None) -> str:
    """``trial 3 COMPLETE: output tokens/s 8,412 (1.21x baseline), ...; 4/12 done, ETA 9 min``."""
    if outcome.state == "COMPLETE" and outcome.values:
        base = state.get("baseline")
        parts = []
        for i, (name, value) in enumerate(zip(metrics, outcome.values, strict=False)):
            ratio = f" ({value / base[i]:.2f}x baseline)" if base and base[i] else ""
            parts.append(f"{label(name)} {fmt(value)}{ratio}")
        what = ", ".join(parts) + ("" if outcome.feasible else "; misses an SLO")
    else:
        what = outcome.reason or outcome.state.lower()
    elapsed = time.monotonic() - state["start"]
    eta = ""
    if total and done and done < total:
        eta = f", ETA {_duration(elapsed / done * (total - done))}"
    counted = f"{done}/{total}" if total else str(done)
    return f"trial {outcome.number} {outcome.state}: {what}; {counted} done{eta}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_front(study, console: Console) -> None:
    from tuner.analysis.results import study_front
    from tuner.study.loop import OVERLOADED, fail_reason

    front = study_front(study)
    states = {}
    for r in front.records:
        states[r.state] = states.get(r.state, 0) + 1
    all_trials = study.get_trials(deepcopy=False)
    failed = sum(1 for t in all_trials if t.state.name == "FAIL")
    pruned = [t for t in all_trials if t.state.name == "PRUNED"]
    overloaded = sum(1 for t in pruned if fail_reason(t) == OVERLOADED)
    stopped = f", {overloaded} stopped as overloaded" if overloaded else ""
    table = Table(
        title=f"Pareto front of {study.study_name}: {len(front.front)} "
        f"config{'' if len(front.front) == 1 else 's'} among "
        f"{len(front.feasible)} feasible ({len(front.records)} completed, "
        f"{len(pruned) - overloaded} rejected{stopped}, {failed} failed); "
        f"hypervolume {front.hypervolume:.4g}"
    )
    table.add_column("trial", justify="right")
    table.add_column("engine")
    table.add_column("precision")
    for metric in front.metrics:
        table.add_column(label(metric), justify="right")
    errors = "error_rate" not in front.metrics  # failed requests are shown on every front
    if errors:
        table.add_column(label("error_rate"), justify="right")
    table.add_column("key options")
    sign = 1 if front.directions[0] == "maximize" else -1
    repeats: dict[tuple, list[int]] = {}
    for number in sorted(front.front):  # configs with identical results: one row, counted
        r = front.record(number)
        key = (r.engine, r.precision, *(round(r.metrics.get(m, 0.0), 6) for m in front.metrics))
        repeats.setdefault(key, []).append(number)
    shown = sorted(
        (numbers for numbers in repeats.values()),
        key=lambda ns: -sign * front.record(ns[0]).metrics.get(front.metrics[0], 0),
    )
    for numbers in shown:
        number = front.winner if front.winner in numbers else numbers[0]
        r = front.record(number)
        mark = (" *" if number == front.winner else "") + (
            f" (x{len(numbers)})" if len(numbers) > 1 else ""
        )
        shown_options = engine_class(r.engine).key_options
        keys = ", ".join(f"{k}={v}" for k, v in r.config.items() if k in shown_options)
        table.add_row(
            f"{number}{mark}",
            r.engine,
            r.precision or "",
            *[fmt(r.metrics.get(m)) for m in front.metrics],
            *([f"{r.metrics.get('error_rate', math.nan):.1%}"] if errors else []),
            keys,
        )
    console.print(table)
    console.print(f"[dim]feasible: {feasibility_line(study.user_attrs.get(SLOS_ATTR) or {})}[/]")
    if front.records and front.records[0].estimated:
        console.print(
            "[dim]* winner; (xN): N configs with the same results. Numbers are "
            "estimated by the sim engine, not measured.[/]"
        )
    else:
        console.print("[dim]* winner; (xN): N configs with the same results.[/]")


def feasibility_line(slos) -> str:
    """The limits a feasible trial met, one line (``error rate <= 1%, TTFT p99 (ms) <= 2000``)."""
    from tuner.objectives import DIRECTIONS, with_error_limit

    parts = []
    for metric, bound in with_error_limit(slos).items():
        sign = "<=" if DIRECTIONS[metric] == "minimize" else ">="
        shown = f"{bound:.2%}".replace(".00%", "%") if metric == "error_rate" else f"{bound:g}"
        parts.append(f"{label(metric)} {sign} {shown}")
    return ", ".join(parts)


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def print_remeasured(outcome, rounds: int, console: Console) -> None:
    """The re-measured finalists: each metric value, its interval and its multiple of the baseline."""
    ratios = outcome.ratios()
    metric = outcome.metric
    table = Table(title=f"Re-measured ({rounds} rounds): {label(metric)}, CI and x baseline")
    for col in ("trial", "feasible", label(metric), "CI", "x baseline"):
        table.add_column(col, justify="right")
    for r in outcome.results:
        low, high = r.intervals.get(metric, (math.nan, math.nan))
        ratio = ratios.get(r.trial, {}).get(metric)
        mark = " *" if r.trial == outcome.winner else ""
        table.add_row(
            f"{r.trial}{mark}" + (" (baseline)" if r.baseline else ""),
            "yes" if r.feasible else "no",
            fmt(r.metrics.get(metric)),
            f"[{fmt(low)}, {fmt(high)}]",
            "-" if ratio is None else f"{ratio:.2f}x",
        )
    console.print(table)


def print_space(engine: str, params, console: Console) -> None:
    """One engine's search space: each option, its kind, values, default and condition."""
    table = Table(title=f"{engine} search space")
    for col in ("option", "kind", "values", "default", "only when"):
        table.add_column(col)
    for p in params:
        values = (
            ", ".join(map(str, p.choices))
            if p.kind == "categorical"
            else f"[{p.low}, {p.high}]"
            + (" log" if p.log else "")
            + (f" step {p.step}" if p.step else "")
        )
        when = ", ".join(f"{k} in {list(v)}" for k, v in p.when.items())
        table.add_row(p.name, p.kind, values, str(p.default), when)
    console.print(table)


def print_calibration(cal, console: Console) -> None:
    """A fitted profile: its constants (shipped vs fitted), errors per split, what the data
    could not identify."""
    table = Table(
        title=f"{cal.name}: {cal.engine} on {cal.gpu}, {len(cal.train)} train / "
        f"{len(cal.test)} held-out measurements"
    )
    for col in ("constant", "shipped", "fitted"):
        table.add_column(col, justify="right" if col != "constant" else "left")
    for key, value in cal.fitted.items():
        table.add_row(key, f"{cal.shipped[key]:.4g}", f"{value:.4g}")
    console.print(table)
    for split, errors in cal.fit_errors.items():
        if errors:
            shown = ", ".join(f"{label(m)} {_percent(v)}" for m, v in errors.items())
            console.print(f"median abs error ({split}): {shown}")
    if cal.not_identified:
        console.print(f"[dim]not identified by this data: {', '.join(cal.not_identified)}[/]")


def _percent(value: float | None, decimals: int = 1) -> str:
    """A percentage, or 'n/a' where there was nothing to compare (never 'nan%')."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{decimals}f}%"


def print_fidelity(report, metrics, console: Console) -> None:
    """A fidelity report: predicted / measured per point and predictor, then the summary."""
    table = Table(title="Sim fidelity: predicted / measured (abs % error)")
    for col in ("point", "predictor", *metrics):
        table.add_column(label(col) if col in metrics else col)
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in report.rows:
        cells.setdefault((r["point"], r["predictor"]), {})[r["metric"]] = (
            f"{fmt(r['predicted'])} / {fmt(r['measured'])} ({_percent(r['ape_pct'], 0)})"
        )
    for (point, predictor), values in cells.items():
        table.add_row(point, predictor, *[values.get(m, "-") for m in metrics])
    console.print(table)
    summary = Table(title="Median / worst abs % error; throughput ranking over configs")
    for col in ("predictor", *metrics, "Spearman", "best in top-3"):
        summary.add_column(label(col) if col in metrics else col)
    for predictor, stats in report.summary.items():
        rank = report.ranking[predictor]
        summary.add_row(
            predictor,
            *[f"{s['median']:.1f} / {s['worst']:.1f}" if s["n"] else "-" for s in stats.values()],
            "-" if rank["spearman"] is None else f"{rank['spearman']:.2f}",
            str(rank["best_in_top3"]),
        )
    console.print(summary)
    _print_spreads(report, metrics, console)
    _print_judged(report, metrics, console)
    for note in report.notes:
        console.print(f"[dim]{note}[/]")


def _print_spreads(report, metrics, console: Console) -> None:
    """Each shape's run-to-run spread per metric (the configs it measured twice or more)."""
    table = Table(title="Run-to-run spread per shape: max over repeated configs of (max-min)/mean")
    for col in ("shape", *metrics):
        table.add_column(label(col) if col in metrics else col)
    for shape, by_metric in report.spreads.items():
        table.add_row(shape, *[_percent(by_metric[m]) for m in metrics])
    console.print(table)


def _print_judged(report, metrics, console: Console) -> None:
    """Issue 25's targets per predictor, then what the judgements left out and why."""
    from tuner.calibration.report import left_out, predictors_phrase
    from tuner.calibration.targets import SHIPPED_ALLOWANCE, target_names

    table = Table(
        title=f"Targets (issue 25), judged where the spread allows; shipped: within "
        f"{SHIPPED_ALLOWANCE:g}x"
    )
    table.add_column("predictor", no_wrap=True)
    for name, rule in target_names().items():
        metric = name.rpartition(" ")[0]
        table.add_column(f"{label(metric)}\n{rule}" if metric in metrics else rule)
    for predictor, judged in report.judged.items():
        cells = []
        for j in judged.values():
            shown = "n/a" if j["met"] is None else ("met" if j["met"] else "[red]missed[/]")
            cells.append(shown if j["value"] is None else f"{shown} ({j['value']:.2f})")
        table.add_row(predictor, *cells)
    console.print(table)
    for target, shape, why, predictors in left_out(report):
        phrase = predictors_phrase(predictors, shape, report)
        console.print(f"[dim]left out of {target}: {shape} ({why}); {phrase}[/]")


def print_run_header(console: Console, spec: StudySpec) -> None:
    """What a run is about to do, and which of the spec's fields won over its preset's."""
    from tuner.presets import preset_overrides

    console.print(
        f"[bold]{spec.name}[/]: {spec.model.name} on {spec.hardware.count}x "
        f"{spec.hardware.gpu}, engines {', '.join(spec.engines)}, runner {spec.runner}, "
        f"budget {spec.budget.trials} trials"
    )
    won = preset_overrides(spec)
    if won:
        console.print(
            f"preset {spec.preset}: the spec's own {', '.join(won)} "
            f"{'wins' if len(won) == 1 else 'win'} over the preset's"
        )
