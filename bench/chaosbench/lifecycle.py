"""Scenarios of a killed tuner and of workers sharing a study, with the real CLI.

* :func:`kill_runs`: ``servetune run`` SIGKILLed at seeded random moments, then resumed with the
  same command until it exits 0.
* :func:`workers_together`: 4 ``servetune worker`` started at once on a new database.
* :func:`worker_kill`: one of 3 PostgreSQL workers SIGKILLed while it measures a trial.

Every run has its own folder, study and marker, and its leftovers are counted and then killed,
so one run's orphans never change the next run's numbers.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaosbench.procs import census_after, run_cli, spawn, tuner_argv, wait_exit
from chaosbench.studies import running_owner, standin_spec, tally, write_spec

RUN_TIMEOUT_S = 150.0
RESUME_ATTEMPTS = 3


def _study_run(root: Path, name: str, marker: str, trials: int) -> tuple[Path, str]:
    """A fresh folder with the stand-in spec of study ``name`` (on a SQLite file in it); the
    load generator runs in 2 worker processes so that a kill can orphan them too."""
    root.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{root / 'study.db'}"
    spec = standin_spec(name, marker, trials, storage=storage, loadgen_processes=2)
    return write_spec(root / "spec.yaml", spec), storage


def clean_run(root: Path, marker: str, trials: int) -> dict[str, Any]:
    """One run nobody kills: the reference for kill moments, and a check that the failure
    columns read 0 when nothing goes wrong."""
    spec, storage = _study_run(root, "chaos-clean", marker, trials)
    began = time.monotonic()
    done = run_cli(["run", str(spec)], root, marker, RUN_TIMEOUT_S)
    seconds = time.monotonic() - began
    left = census_after(marker, wait_s=2.0)
    return {
        "seconds": seconds,
        "returncode": done.returncode,
        "census": left,
        "tally": tally("chaos-clean", storage, trials).as_dict(),
    }


def kill_runs(
    root: Path, marker: str, kills: int, trials: int, seed: int, window_s: float
) -> list[dict[str, Any]]:
    """``kills`` runs, each SIGKILLed once at a moment drawn in [0.15, 0.9] of ``window_s``
    (a clean run's duration), then resumed until it exits 0."""
    rng = random.Random(seed)
    moments = [rng.uniform(0.15, 0.9) * window_s for _ in range(kills)]
    return [
        _kill_and_resume(root / f"kill-{i}", f"{marker}kill{i}", f"chaos-kill-{i}", trials, at)
        for i, at in enumerate(moments)
    ]


def _kill_and_resume(root: Path, marker: str, name: str, trials: int, at_s: float) -> dict:
    spec, storage = _study_run(root, name, marker, trials)
    proc = spawn(tuner_argv("run", str(spec)), root, marker, log=root / "killed.log")
    deadline = time.monotonic() + at_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    landed = proc.poll() is None
    if landed:
        os.kill(proc.pid, signal.SIGKILL)  # the tuner alone, as the OOM killer would
    wait_exit(proc, 10)
    after_kill = census_after(marker, wait_s=5.0)
    codes = []
    for _ in range(RESUME_ATTEMPTS):
        codes.append(run_cli(["run", str(spec)], root, marker, RUN_TIMEOUT_S).returncode)
        if codes[-1] == 0:
            break
    after_resume = census_after(marker, wait_s=2.0)
    return {
        "kill_at_s": round(at_s, 2),
        "kill_landed": landed,
        "after_kill": after_kill,
        "resume_exit_codes": codes,
        "after_resume": after_resume,
        "tally": tally(name, storage, trials).as_dict(),
    }


def workers_together(
    root: Path,
    marker: str,
    new_storage: Callable[[int], str],
    rounds: int,
    trials: int,
    workers: int = 4,
) -> list[dict[str, Any]]:
    """``rounds`` times: ``workers`` workers started together on the new database
    ``new_storage(round)``; their exit codes, leftovers and the shared budget."""
    results = []
    for r in range(rounds):
        folder, tag = root / f"round-{r}", f"{marker}round{r}"
        folder.mkdir(parents=True, exist_ok=True)
        storage = new_storage(r)
        name = f"chaos-together-{r}"
        spec = write_spec(folder / "spec.yaml", standin_spec(name, tag, trials))
        argv = tuner_argv("worker", str(spec), "--storage", storage)
        procs = [spawn(argv, folder, tag, log=folder / f"worker-{k}.log") for k in range(workers)]
        codes = [wait_exit(p, RUN_TIMEOUT_S) for p in procs]
        outcome = _workers_outcome(codes, tag, name, storage, trials, wait_s=2.0)
        results.append({"exit_codes": codes, **outcome})
    return results


def worker_kill(
    root: Path, marker: str, new_storage: Callable[[int], str], runs: int, trials: int
) -> list[dict[str, Any]]:
    """``runs`` times: 3 workers on a new database, the owner of the first RUNNING trial
    SIGKILLed, the other two left to finish the budget."""
    results = []
    for r in range(runs):
        folder, tag = root / f"run-{r}", f"{marker}wkill{r}"
        folder.mkdir(parents=True, exist_ok=True)
        storage, name = new_storage(r), f"chaos-wkill-{r}"
        spec = write_spec(folder / "spec.yaml", standin_spec(name, tag, trials))
        argv = tuner_argv("worker", str(spec), "--storage", storage, "--heartbeat", "2")
        procs = [spawn(argv, folder, tag, log=folder / f"worker-{k}.log") for k in range(3)]
        victim = _await_running(storage, {p.pid: p for p in procs}, 90.0)
        if victim is not None:
            os.kill(victim.pid, signal.SIGKILL)
            wait_exit(victim, 10)
        codes = [wait_exit(p, RUN_TIMEOUT_S) for p in procs if p is not victim]
        outcome = _workers_outcome(codes, tag, name, storage, trials, wait_s=5.0)
        results.append(
            {"killed_mid_trial": victim is not None, "survivor_exit_codes": codes, **outcome}
        )
    return results


def _workers_outcome(
    codes: list[int | None], tag: str, name: str, storage: str, trials: int, wait_s: float
) -> dict[str, Any]:
    """What a round of workers left: deaths, hangs, marked processes and the study's budget."""
    return {
        "died": sum(1 for c in codes if c not in (0, None)),
        "hung": sum(1 for c in codes if c is None),
        "census": census_after(tag, wait_s=wait_s),
        "tally": tally(name, storage, trials).as_dict(),
    }


def _await_running(storage: str, procs: dict[int, Any], timeout_s: float) -> Any:
    """The worker process that owns a RUNNING trial, once one does (None: none did in time, or
    every worker had exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
        owner = running_owner(storage)
        if owner in procs and procs[owner].poll() is None:
            time.sleep(0.3)  # into the measurement, past the server's start
            return procs[owner]
        time.sleep(0.2)
    return None
