"""Chaos benchmark of issue 23: does an unattended study survive kills, crowds and bad input?

Run from the repository root: ``python bench/chaos.py [--quick] [--seed N]``. Everything runs
through the real CLI (``python -m tuner run|worker|show|export``) as subprocesses, against the
stand-in server (a real HTTP server on 127.0.0.1), real SQLite files and a throwaway PostgreSQL
server (tests/postgres.py; its scenarios are skipped, with the reason, when it cannot start):

1. ``run`` SIGKILLed at seeded random moments of a 6-trial study, then resumed until it exits 0;
   after each kill, stand-in servers and load-generator workers still alive after 5 s.
2. 4 ``worker`` processes started together on a new SQLite file / PostgreSQL database.
3. one of 3 PostgreSQL workers SIGKILLed while it measures a trial.
4. bad specs and options (issue 23 item 10), each ``run`` in a fresh folder.
5. passwords in storage URLs and a token in ``options.env``, searched for in everything written.

Prints one table and writes JSON (bench/results/local/chaos.json; BENCH_RECORD=1 writes
bench/results/chaos.json). Every failure column should read 0; the JSON holds each run's detail.
Whatever the bench starts carries a marker and is killed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaosbench import badinput, lifecycle, procs  # noqa: E402
from chaosbench.report import COLUMNS, FAILURE_COLUMNS, print_table, row, skipped  # noqa: E402
from chaosbench.secrets import secrets_scenario  # noqa: E402
from outputs import results_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FULL = {"kills": 10, "worker_rounds": 5, "worker_kills": 2}
QUICK = {"kills": 3, "worker_rounds": 2, "worker_kills": 1}
KILL_TRIALS = 6  # budget of a killed study
WORKER_TRIALS = 6  # budget shared by the workers of one study


def _postgres_helper() -> Any:
    """tests/postgres.py by path: tests/ on sys.path would shadow the engines package."""
    loader = importlib.util.spec_from_file_location("pg_helper", REPO / "tests" / "postgres.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def run_chaos(
    kills: int = 10,
    worker_rounds: int = 5,
    worker_kills: int = 2,
    bad_inputs: int | None = None,
    seed: int = 0,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Run every scenario; returns ``{"rows": [...], "detail": {...}, ...}`` (the JSON).

    ``bad_inputs`` runs only that many of the bad-input cases; ``keep`` leaves the run's
    folders there instead of a temporary folder removed at the end.
    """
    marker = f"chaos{uuid.uuid4().hex[:8]}-"
    root = keep or Path(tempfile.mkdtemp(prefix="servetune-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    helper, pg = _postgres_helper(), None
    began = time.monotonic()
    try:
        pg_missing = helper.missing_reason()
        if pg_missing is None:
            pg = helper.PostgresServer().start()
        rows, detail = _scenarios(
            root, marker, pg, pg_missing, kills, worker_rounds, worker_kills, bad_inputs, seed
        )
    finally:
        procs.stop_started()
        procs.kill_marked(marker)
        if pg is not None:
            pg.stop()
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "columns": COLUMNS,
        "marker": marker,
        "rows": rows,
        "detail": detail,
        "asked": {
            "kills": kills,
            "worker_rounds": worker_rounds,
            "worker_kills": worker_kills,
            "bad_inputs": len(badinput.CASES[:bad_inputs]),
            "seed": seed,
        },
        "seconds": round(time.monotonic() - began, 1),
        "postgres": pg_missing or "started",
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def _scenarios(
    root: Path,
    marker: str,
    pg: Any,
    pg_missing: str | None,
    kills: int,
    worker_rounds: int,
    worker_kills: int,
    bad_inputs: int | None,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, detail = [], {}
    _CLOCK[0] = time.monotonic()
    clean = lifecycle.clean_run(root / "clean", f"{marker}clean", KILL_TRIALS)
    detail["clean"] = clean
    rows.append(row("clean run (no kill)", 1, [clean["census"]], [clean["tally"]]))
    _say(rows[-1])

    runs = lifecycle.kill_runs(root / "kill", marker, kills, KILL_TRIALS, seed, clean["seconds"])
    detail["kill"] = runs
    censuses = [r["after_kill"] for r in runs] + [r["after_resume"] for r in runs]
    rows.append(row("kill -9 run, resume", kills, censuses, [r["tally"] for r in runs]))
    _say(rows[-1])

    sqlite_dir = root / "together-sqlite"
    together = {"SQLite": lambda r: f"sqlite:///{sqlite_dir / f'round-{r}' / 'study.db'}"}
    if pg is not None:
        together["PostgreSQL"] = lambda r: pg.create_database(f"together{r}")
    for backend, new_storage in together.items():
        result = lifecycle.workers_together(
            root / f"together-{backend.lower()}",
            f"{marker}{backend}",
            new_storage,
            worker_rounds,
            WORKER_TRIALS,
        )
        detail[f"together_{backend.lower()}"] = result
        rows.append(_worker_row(f"4 workers at once, {backend}", worker_rounds, result))
        _say(rows[-1])
    if pg is None:
        rows.append(skipped("4 workers at once, PostgreSQL", pg_missing or ""))
        rows.append(skipped("kill -9 1 of 3 workers, PostgreSQL", pg_missing or ""))
    else:
        result = lifecycle.worker_kill(
            root / "worker-kill",
            marker,
            lambda r: pg.create_database(f"wkill{r}"),
            worker_kills,
            WORKER_TRIALS,
        )
        detail["worker_kill"] = result
        rows.append(_worker_row("kill -9 1 of 3 workers, PostgreSQL", worker_kills, result))
        _say(rows[-1])

    cases = badinput.sweep(root / "bad", marker, bad_inputs)
    detail["bad_inputs"] = cases
    rows.append(
        row(
            "bad inputs, one run each",
            len(cases),
            [c["census"] for c in cases],
            bad_inputs_mishandled=sum(1 for c in cases if not c["handled"]),
        )
    )
    _say(rows[-1])

    secrets = secrets_scenario(root / "secrets", f"{marker}secrets", pg)
    detail["secrets"] = secrets
    rows.append(
        row(
            "secrets in URLs and env",
            secrets["commands"],
            [secrets["census"]],
            secrets_found=len(secrets["hits"]),
        )
    )
    _say(rows[-1])
    return rows, detail


def _worker_row(scenario: str, runs: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    return row(
        scenario,
        runs,
        [r["census"] for r in results],
        [r["tally"] for r in results],
        workers_died_at_start=sum(r["died"] for r in results),
    )


_CLOCK = [time.monotonic()]


def _say(done: dict[str, Any]) -> None:
    """A progress line per scenario (the whole run takes minutes); notes its seconds."""
    now = time.monotonic()
    done["seconds"], _CLOCK[0] = round(now - _CLOCK[0], 1), now
    failures = {c: done[c] for c in FAILURE_COLUMNS if done[c] is not None}
    print(
        f"{done['scenario']}: {done['runs']} runs in {done['seconds']:.0f} s, {failures}",
        file=sys.stderr,
        flush=True,
    )


def write_json(result: dict[str, Any], path: Path) -> Path:
    """``result`` (from :func:`run_chaos`) as JSON at ``path``."""
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # runs every finally: the bench's processes are killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 kills, 2 worker rounds, 1 worker kill"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--keep", type=Path, help="keep the runs' folders here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    sizes = QUICK if args.quick else FULL
    try:
        result = run_chaos(**sizes, seed=args.seed, keep=args.keep)
    except KeyboardInterrupt:
        print("interrupted: every process the bench started was stopped", file=sys.stderr)
        raise SystemExit(130) from None
    path = write_json(result, results_path("chaos.json"))
    print_table(result["rows"])
    print(
        f"{result['seconds']:.0f} s, load average {result['load_average'][0]:.2f} on {result['cpus']} CPUs; wrote {path.relative_to(REPO)}"
    )


if __name__ == "__main__":
    main()
