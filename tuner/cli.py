"""The ``servetune`` command: a thin layer over the library, with rich output.

Every servetune error is caught here once and shown as one line (exit code 2); ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path

import optuna
import typer
from rich.console import Console
from rich.markup import escape

from engines.errors import ServetuneError
from tuner.console import (
    attach_progress_lines,
    poll_printer,
    print_calibration,
    print_fidelity,
    print_front,
    print_remeasured,
    print_run_header,
    print_space,
    progress_printer,
)
from tuner.interrupts import interrupt_on_termination
from tuner.redaction import ScrubbingFilter, scrub
from tuner.study.attrs import WORKER_ATTR
from tuner.study.storage import redact

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Find the best way to serve an LLM on given GPUs.",
)
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show tracebacks")) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if debug else optuna.logging.WARNING)
    for name in ("", "optuna"):  # library logs never show a password
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(ScrubbingFilter())


def _resolve(study: str, storage: str | None):
    """A study given as a spec path or a name -> (optuna study, spec)."""
    from tuner.spec import load_spec
    from tuner.study.loop import load_study

    if study.endswith((".yaml", ".yml")):
        spec = load_spec(study, storage=storage)
        return load_study(spec.name, spec.storage_url)
    if storage is None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study):
        raise ServetuneError(  # it would name a file outside studies/ (../x, /tmp/x)
            f"study: {study!r} is neither a study name (letters, digits, _ . -) nor a spec "
            "path (.yaml); give --storage to read a study of another name"
        )
    return load_study(study, storage or f"sqlite:///studies/{study}.db")


@app.command()
def run(
    spec_path: Path = typer.Argument(..., help="study spec (YAML)"),
    trials: int | None = typer.Option(None, help="total trial budget (overrides the spec)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL (overrides the spec)"),
    name: str | None = typer.Option(None, help="study name (overrides the spec)"),
    sampler: str | None = typer.Option(None, help="nsga2 | tpe | random | grid | gp | auto"),
    out: Path | None = typer.Option(None, help="export folder (default studies/exports/NAME)"),
    export: bool = typer.Option(True, help="export the winner when done"),
    workers: int = typer.Option(
        1,
        min=1,
        help="worker processes on this host sharing the study "
        "(see `servetune worker` for several hosts)",
    ),
    gpus: str | None = typer.Option(
        None, help="GPUs to use, e.g. 0,1,2,3 (split between --workers)"
    ),
    preset: str | None = typer.Option(
        None, help="latency | throughput | balanced | cost (spec fields win; docs/trust.md)"
    ),
    remeasure: int | None = typer.Option(
        None, min=0, help="re-measure this many finalists with the baseline (spec finalists.count)"
    ),
    quiet: bool = typer.Option(False, "--quiet", help="no line per trial event"),
) -> None:
    """Run (or resume) a study, then show its Pareto front and export the winner."""
    interrupt_on_termination()  # SIGTERM/SIGHUP end the trial in flight as Ctrl-C does
    from tuner.spec import load_spec
    from tuner.study.loop import run_study, search_exhausted

    spec = load_spec(spec_path, storage=storage, name=name, sampler=sampler, preset=preset)
    if trials is None:
        from tuner.study.replay import replay_budget

        trials = replay_budget(spec)
        if trials is not None:
            console.print(f"measuring the replayed configs ({trials} trials; --trials for more)")
    if trials is not None:
        spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"trials": trials})})
        from tuner.spec import parse_spec

        spec = parse_spec(spec.model_dump(mode="json"), str(spec_path))
    print_run_header(console, spec)
    attach_progress_lines(quiet)
    if workers > 1 or gpus:
        from tuner.study.workers import parse_gpus, run_workers

        study = run_workers(spec, workers, parse_gpus(gpus), on_poll=poll_printer(console))
    else:
        study = run_study(spec, progress=progress_printer(spec, console))
    if search_exhausted(study):
        console.print(f"every config of the grid was tried ({len(study.trials)} trials)")
    print_front(study, console)
    count = spec.finalists.count if remeasure is None else remeasure
    if count:
        _remeasure(study, spec, count)
    if export:
        from tuner.analysis.export import export_trial

        result = export_trial(study, spec, out or Path("studies/exports") / spec.name)
        console.print(f"[bold green]exported trial {result.trial}[/] ({result.engine}):")
        for path in result.paths:
            console.print(f"  {path}")


def _remeasure(study, spec, count: int) -> None:
    """Re-measure the finalists with the baseline and show them as multiples of it (a study
    with no feasible trial but the baseline has none: said, and the run goes on to export)."""
    from tuner.analysis.results import trial_records
    from tuner.study.finalists import remeasure_study, select_finalists

    if not select_finalists(trial_records(study), [o.metric for o in spec.objectives], count):
        console.print("nothing to re-measure: no feasible trial besides the baseline")
        return
    rounds = spec.finalists.rounds
    console.print(f"re-measuring {count} finalists and the baseline, {rounds} rounds interleaved")
    outcome = remeasure_study(study, spec, count)
    print_remeasured(outcome, rounds, console)


def _spec_with_overrides(spec_path: Path, trials: int | None, **overrides):
    from tuner.spec import load_spec, parse_spec

    spec = load_spec(spec_path, **overrides)
    if trials is not None:
        data = spec.model_dump(mode="json")
        data["budget"]["trials"] = trials
        spec = parse_spec(data, str(spec_path))
    return spec


@app.command()
def replay(
    spec_path: Path = typer.Argument(..., help="study spec (YAML) that will measure the configs"),
    source: str = typer.Option(..., "--from", help="study to take configs from: spec or name"),
    trials: str = typer.Option(..., help="its trial numbers in order, e.g. 0,3,7"),
    storage: str | None = typer.Option(None, help="storage of --from when it is a name"),
) -> None:
    """Queue another study's configs (the first marked as baseline), each at every load level of
    the spec's sweep; `servetune run SPEC` then measures them in that order."""
    from tuner.spec import load_spec
    from tuner.study.replay import enqueue_configs, parse_trials, trial_configs

    numbers = parse_trials(trials)
    spec = load_spec(spec_path)
    stored, _ = _resolve(source, storage)
    queued = enqueue_configs(spec, trial_configs(stored, numbers))
    if not queued:
        console.print(f"{spec.name}: configs were queued before; nothing added")
        return
    console.print(
        f"queued {queued} trial(s) of {len(numbers)} config(s) from {stored.study_name!r} "
        f"in {spec.name!r}; run: servetune run {spec_path}"
    )


@app.command()
def worker(
    spec_path: Path = typer.Argument(..., help="study spec (YAML); the study is created or joined"),
    storage: str | None = typer.Option(
        None, help="shared storage URL, e.g. postgresql://user:pw@db/servetune"
    ),
    gpus: str | None = typer.Option(None, help="GPUs this worker owns, e.g. 0,1,2,3"),
    trials: int | None = typer.Option(
        None, help="total trial budget of the study (all workers together)"
    ),
    heartbeat: int = typer.Option(10, min=1, help="seconds between heartbeats"),
    grace: int | None = typer.Option(
        None,
        min=1,
        help="seconds without a heartbeat before "
        "a trial is failed as worker_lost (default 3x heartbeat)",
    ),
    requeue_lost: bool = typer.Option(False, help="run a lost trial's config again"),
    name: str | None = typer.Option(None, help="study name (overrides the spec)"),
    quiet: bool = typer.Option(False, "--quiet", help="no line per trial event"),
) -> None:
    """Work on a shared study until its budget is used up; start one per host (or per GPU set)."""
    interrupt_on_termination()  # SIGTERM/SIGHUP end the trial in flight as Ctrl-C does
    import os

    from tuner.study.workers import parse_gpus, run_worker

    spec = _spec_with_overrides(spec_path, trials, storage=storage, name=name)
    owned = parse_gpus(gpus)
    console.print(
        f"[bold]worker[/] on {spec.name} ({redact(spec.storage_url)}), GPUs "
        f"{','.join(owned) if owned else 'unrestricted'}, budget "
        f"{spec.budget.trials} trials shared by all workers"
    )
    attach_progress_lines(quiet)
    study = run_worker(
        spec,
        owned,
        heartbeat_s=heartbeat,
        grace_s=grace,
        requeue_lost=requeue_lost,
        progress=progress_printer(spec, console),
    )
    pid = os.getpid()
    mine = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if (t.user_attrs.get(WORKER_ATTR) or {}).get("pid") == pid
    )
    console.print(f"done: this worker measured {mine} trials")


@app.command()
def show(
    study: str = typer.Argument(..., help="study name or spec path"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
) -> None:
    """Show a study's feasible Pareto front."""
    optuna_study, _ = _resolve(study, storage)
    print_front(optuna_study, console)


@app.command("export")
def export_cmd(
    study: str = typer.Argument(..., help="study name or spec path"),
    out: Path = typer.Option(..., help="folder to write the files into"),
    trial: int | None = typer.Option(None, help="trial number (default: winner)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
) -> None:
    """Export the winner (or a given trial) as engine config files plus a manifest."""
    from tuner.analysis.export import export_trial

    optuna_study, spec = _resolve(study, storage)
    result = export_trial(optuna_study, spec, out, trial)
    console.print(f"exported trial {result.trial} ({result.engine}):")
    for path in result.paths:
        console.print(f"  {path}")


@app.command()
def report(
    study: str = typer.Argument(..., help="study name or spec path"),
    html: Path = typer.Option(..., "--html", help="the .html file to write"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
) -> None:
    """Write a study as one self-contained HTML page (front, trials, baseline, winner)."""
    from tuner.analysis.html_report import write_report

    optuna_study, spec = _resolve(study, storage)
    console.print(f"wrote {write_report(optuna_study, spec, html)}")


@app.command()
def space(spec_path: Path = typer.Argument(..., help="study spec (YAML)")) -> None:
    """Print the search space the spec defines, engine by engine."""
    from tuner.spec import load_spec
    from tuner.study.loop import build_engines, search_spaces

    spec = load_spec(spec_path)
    for engine, params in search_spaces(spec, build_engines(spec)).items():
        print_space(engine, params, console)


@app.command()
def dashboard(
    study: str = typer.Argument(..., help="study name or spec path"),
    storage: str | None = typer.Option(None, help="Optuna storage URL"),
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    port: int = typer.Option(8080, help="port"),
) -> None:
    """Open the study in optuna-dashboard (the dashboard extra: pip install optuna-dashboard)."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise ServetuneError(
            "dashboard: optuna-dashboard is not installed (pip install 'servetune[dashboard]')"
        ) from None
    optuna_study, spec = _resolve(study, storage)
    console.print(f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)")
    from tuner.study.storage import open_storage

    run_server(open_storage(spec.storage_url), host=host, port=port)


@app.command()
def calibrate(
    studies: list[str] = typer.Argument(..., help="real studies: spec paths, names or .db files"),
    name: str = typer.Option(..., help="profile name (engines/data/profiles/NAME.yaml)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL for study names"),
    holdout: float = typer.Option(0.3, min=0.0, max=0.9, help="share of configs held out"),
    seed: int = typer.Option(0, help="seed of the held-out split"),
    out: Path | None = typer.Option(None, help="write the profile here instead"),
    reference: bool = typer.Option(
        True, help="use vllm bench serve numbers from a crosscheck.json next to the study"
    ),
) -> None:
    """Fit the sim's efficiency constants to real trials and write a fitted profile."""
    from tuner.calibration.calibrate import calibrate as fit
    from tuner.calibration.calibrate import load_points, write_profile

    points = load_points(studies, storage, reference)
    cal = fit(points, name, holdout, seed)
    path = write_profile(cal, out)
    print_calibration(cal, console)
    console.print(f"[bold green]wrote[/] {path}")


@app.command()
def fidelity(
    studies: list[str] = typer.Argument(..., help="real studies: spec paths, names or .db files"),
    storage: str | None = typer.Option(None, help="Optuna storage URL for study names"),
    holdout: float = typer.Option(0.3, min=0.0, max=0.9, help="share of configs held out"),
    seed: int = typer.Option(0, help="seed of the held-out split"),
    json_out: Path | None = typer.Option(None, "--json", help="write the full report as JSON"),
    md_out: Path | None = typer.Option(None, "--md", help="write the summary as markdown"),
    reference: bool = typer.Option(True, help="use vllm bench serve numbers where present"),
) -> None:
    """Sim predicted vs measured per config, shipped and calibrated, with ranking quality.

    Held out: a split, leave-one-config-out, leave-one-shape-out (with several workload shapes)
    and transfer between GPUs (with several GPUs); issue 25's targets judged where the runs'
    own spread allows it."""
    import json

    from tuner.calibration.calibrate import load_points
    from tuner.calibration.fidelity import METRICS, fidelity_report
    from tuner.calibration.report import report_markdown

    report = fidelity_report(load_points(studies, storage, reference), "fidelity", holdout, seed)
    print_fidelity(report, METRICS, console)
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=1, default=str))
        console.print(f"wrote {json_out}")
    if md_out:
        md_out.write_text(report_markdown(report))
        console.print(f"wrote {md_out}")


def main() -> None:
    """Entry point: run the app, turning servetune errors into one line and exit code 2.

    Typer (non-standalone) returns 130 for Ctrl-C instead of raising, and raises its own
    vendored click exceptions for usage errors, so both are read by shape, not by class.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    args = sys.argv[1:]
    if "--debug" in args[1:] and args[0] != "--debug":  # `servetune run spec.yaml --debug` too
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        code = app(args=args, standalone_mode=False)
    except ServetuneError as exc:
        if _state["debug"]:
            import traceback

            sys.stderr.write(scrub(traceback.format_exc()))
            sys.exit(2)
        err_console.print(
            f"[red]error:[/] {escape(scrub(str(exc)))}", highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except KeyboardInterrupt:
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    except Exception as exc:  # usage errors (unknown flag, missing argument) and aborts
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(2)
        if type(exc).__name__ == "Abort":
            code = 130
        else:  # a bug: its traceback, with any password it quotes scrubbed
            import traceback

            sys.stderr.write(scrub(traceback.format_exc()))
            sys.exit(1)
    if code == 130:
        err_console.print("interrupted: completed trials are saved; run again to resume")
    sys.exit(code if isinstance(code, int) else 0)
