"""What the CLI prints: live progress of a study and its Pareto front as a table.

Kept apart from the command definitions so that ``tuner/cli.py`` stays a thin layer; every
function takes the rich console to print on.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from engines import engine_class
from tuner.objectives import label


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


def progress_printer(spec, console: Console):
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
    state: dict = {"task": None, "best": None}
    metric = spec.winner_metric
    sign = 1 if spec.objectives[0].direction == "maximize" else -1

    def update(outcome, done, total):
        if state["task"] is None:
            progress.start()
            state["task"] = progress.add_task("trials", total=total, best="")
        if outcome.state == "COMPLETE" and outcome.feasible:
            idx = (
                [o.metric for o in spec.objectives].index(metric)
                if metric in [o.metric for o in spec.objectives]
                else 0
            )
            value = outcome.values[idx]
            if state["best"] is None or sign * value > sign * state["best"]:
                state["best"] = value
        best = f"best {label(metric)}: {state['best']:.4g}" if state["best"] is not None else ""
        progress.update(state["task"], completed=done, best=best)
        if total is not None and done >= total:
            progress.stop()

    return update


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
        title=f"Pareto front of {study.study_name}: {len(front.front)} of "
        f"{len(front.feasible)} feasible ({len(front.records)} completed, "
        f"{len(pruned) - overloaded} rejected{stopped}, {failed} failed); "
        f"hypervolume {front.hypervolume:.4g}"
    )
    table.add_column("trial", justify="right")
    table.add_column("engine")
    table.add_column("precision")
    for metric in front.metrics:
        table.add_column(label(metric), justify="right")
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
            keys,
        )
    console.print(table)
    if front.records and front.records[0].estimated:
        console.print(
            "[dim]* winner; (xN): N configs with the same results. Numbers are "
            "estimated by the sim engine, not measured.[/]"
        )
    else:
        console.print("[dim]* winner; (xN): N configs with the same results.[/]")


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
