"""What sharing a study costs: trial bookkeeping per trial with 4 workers on PostgreSQL, and the
wall-clock speed-up of a sim study with 2 workers over 1.

Run from the repository root: ``python bench/bench_workers.py``. Starts a throwaway PostgreSQL
server (tests/postgres.py; needs the ``postgresql`` package), prints a table and writes
``bench/results/bench_workers.json``.

* **Bookkeeping**: every worker's engine returns one cached measurement instantly, so each
  worker's time per trial is all storage and sampler work (ask, suggestions, attributes, tell,
  heartbeats, the budget checks). Reported per trial and per worker, next to the same loop in a
  single plain ``run_study`` process for comparison.
* **Speed-up**: the same sim study (real simulations) with ``run_workers`` 1 and 2, wall clock
  from launch to the last worker's exit (worker start-up included).

The machine may be shared: the load average before and after is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from outputs import results_path

from engines.space import pinned_overrides
from engines.specs import HardwareSpec, ModelSpec
from engines.vllm import VllmEngine

REPO = Path(__file__).resolve().parents[1]
RESULTS = results_path("bench_workers.json")
ENGINES = {
    "vllm": pinned_overrides(
        VllmEngine().space(ModelSpec.model_validate("Llama-3.1-8B"), HardwareSpec(gpu="H100-SXM")),
        {"max_model_len": {"value": 8192}, "max_num_seqs": {"choices": [64, 128, 256]}},
    )
}


def make_spec(name: str, storage: str, trials: int, num_requests: int = 50):
    from tuner.spec import parse_spec

    return parse_spec(
        {
            "name": name,
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"preset": "chat", "num_requests": num_requests},
            "engines": ENGINES,
            "budget": {"trials": trials},
            "storage": storage,
            "sampler": "random",
            "baseline": False,
        }
    )


class CachedEngine:
    """Measures the first config once and returns that measurement for every trial."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.cached = inner, inner.name, None

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def run(self, config, ctx):
        if self.cached is None:
            self.cached = self.inner.run(config, ctx)
        return self.cached


def bookkeeping_worker(spec_json: str) -> None:
    """One worker of the bookkeeping run; prints its trial count and loop seconds as JSON."""
    from tuner.spec import parse_spec
    from tuner.study.loop import build_engines
    from tuner.study.workers import run_worker

    spec = parse_spec(json.loads(spec_json))
    engines = {k: CachedEngine(v) for k, v in build_engines(spec).items()}
    start = time.perf_counter()
    study = run_worker(spec, engines=engines, poll_s=0.05)
    seconds = time.perf_counter() - start
    mine = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if (t.user_attrs.get("worker") or {}).get("pid") == os.getpid()
    )
    print(json.dumps({"trials": mine, "seconds": seconds}))


def time_bookkeeping(url: str, trials: int, workers: int) -> dict:
    from tuner.study.loop import build_engines, open_study, run_study

    spec = make_spec("bookkeeping", url, trials)
    open_study(spec)
    argv = [
        sys.executable,
        __file__,
        "--bookkeeping-worker",
        json.dumps(spec.model_dump(mode="json")),
    ]
    start = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - start
    per_trial = [r["seconds"] / r["trials"] for r in reports if r["trials"]]
    single = make_spec("bookkeeping-single", url, trials)
    engines = {k: CachedEngine(v) for k, v in build_engines(single).items()}
    t0 = time.perf_counter()
    run_study(single, engines=engines)
    single_s = (time.perf_counter() - t0) / trials
    return {
        "workers": workers,
        "trials": trials,
        "wall_s": wall,
        "trials_per_s": trials / wall,
        "worker_s_per_trial_mean": sum(per_trial) / len(per_trial),
        "worker_s_per_trial": per_trial,
        "trials_per_worker": [r["trials"] for r in reports],
        "single_process_run_study_s_per_trial": single_s,
    }


def time_speedup(url_for, trials: int) -> dict:
    from tuner.study.workers import run_workers

    out = {}
    for workers in (1, 2):
        spec = make_spec(f"speedup-{workers}", url_for(workers), trials)
        start = time.perf_counter()
        run_workers(spec, workers, heartbeat_s=5)
        out[workers] = time.perf_counter() - start
    return {
        "trials": trials,
        "wall_s_1_worker": out[1],
        "wall_s_2_workers": out[2],
        "speedup": out[1] / out[2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="bookkeeping trials")
    parser.add_argument("--speedup-trials", type=int, default=60)
    parser.add_argument("--bookkeeping-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bookkeeping_worker:
        bookkeeping_worker(args.bookkeeping_worker)
        return
    import importlib.util

    # tests/postgres.py by path: putting tests/ on sys.path would shadow the engines package
    loader = importlib.util.spec_from_file_location("pg_helper", REPO / "tests" / "postgres.py")
    pg_helper = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(pg_helper)
    PostgresServer, missing_reason = pg_helper.PostgresServer, pg_helper.missing_reason

    if missing_reason():
        raise SystemExit(f"cannot start PostgreSQL: {missing_reason()}")
    load_before = os.getloadavg()
    server = PostgresServer().start()
    try:
        book = time_bookkeeping(server.create_database("bookkeeping"), args.trials, 4)
        speed = time_speedup(lambda n: server.create_database(f"speedup{n}"), args.speedup_trials)
    finally:
        server.stop()
    result = {
        "bookkeeping_postgres_4_workers": book,
        "speedup_sim_postgres": speed,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        (
            "bookkeeping, 4 workers on PostgreSQL",
            f"{book['trials']} trials",
            f"{1000 * book['worker_s_per_trial_mean']:.0f} ms per trial per worker; "
            f"{book['trials_per_s']:.1f} trials/s overall",
        ),
        (
            "same loop, one plain run_study process",
            f"{book['trials']} trials",
            f"{1000 * book['single_process_run_study_s_per_trial']:.0f} ms per trial",
        ),
        ("sim study, 1 worker", f"{speed['trials']} trials", f"{speed['wall_s_1_worker']:.1f} s"),
        (
            "sim study, 2 workers",
            f"{speed['trials']} trials",
            f"{speed['wall_s_2_workers']:.1f} s (speed-up x{speed['speedup']:.2f})",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for what, size, value in rows:
        print(f"{what:<{width}}  {size:>11}  {value}")
    print(
        f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs; wrote {RESULTS.relative_to(REPO)}"
    )


if __name__ == "__main__":
    main()
