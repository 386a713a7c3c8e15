"""How fast a whole sim study runs: the 200-trial target of the core issue.

    python bench/bench_study.py [--trials 200] [--repeats 3]

Runs the quickstart spec (both engines, NSGA-II... whatever its sampler is) for ``--trials``
counted trials on a fresh SQLite file, several times, and reports the wall time, trials per
second and the share spent in the simulator versus Optuna and storage. Prints a table and
writes ``bench/results/bench_study.json``. The load average is recorded: on a shared 2-core
machine the numbers move with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from outputs import results_path

from engines.sim.engine import SimulatedEngine
from tuner.spec import load_spec
from tuner.study.loop import build_engines, counted_trials, run_study

RESULTS = results_path("bench_study.json")
SPEC = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


class _Timed(SimulatedEngine):
    """The sim engine, with the time spent inside ``run`` added up."""

    seconds = 0.0

    def run(self, config, ctx):
        start = time.perf_counter()
        try:
            return super().run(config, ctx)
        finally:
            _Timed.seconds += time.perf_counter() - start


def one_study(trials: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(SPEC, storage=f"sqlite:///{tmp}/bench.db", seed=seed)
        spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"trials": trials})})
        engines = {n: _Timed(e.target) for n, e in build_engines(spec).items()}
        _Timed.seconds = 0.0
        start = time.perf_counter()
        study = run_study(spec, engines=engines)
        wall = time.perf_counter() - start
        total = len(study.trials)
        assert counted_trials(study) == trials
    return {
        "seed": seed,
        "wall_s": round(wall, 2),
        "counted_trials": trials,
        "all_trials": total,
        "sim_s": round(_Timed.seconds, 2),
        "per_trial_ms": round(1000 * wall / total, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_before = os.getloadavg()[0]
    runs = [one_study(args.trials, seed) for seed in range(args.repeats)]
    walls = [r["wall_s"] for r in runs]
    result = {
        "spec": str(SPEC.relative_to(SPEC.parents[1])),
        "trials": args.trials,
        "runs": runs,
        "median_wall_s": statistics.median(walls),
        "target_s": 30.0,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"{'seed':>4} {'wall s':>8} {'sim s':>7} {'trials':>7} {'ms/trial':>9}")
    for r in runs:
        print(
            f"{r['seed']:>4} {r['wall_s']:>8} {r['sim_s']:>7} {r['all_trials']:>7} "
            f"{r['per_trial_ms']:>9}"
        )
    print(
        f"median wall: {result['median_wall_s']} s for {args.trials} counted trials "
        f"(target <= 30 s); load average {result['load_average_before']} -> "
        f"{result['load_average_after']} on {result['cpus']} CPUs"
    )


if __name__ == "__main__":
    main()
