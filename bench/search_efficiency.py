"""How few trials the tuner needs: strategies against the exact grid optimum of sim scenarios,
the learned failure model, and the sim-first warm start.

Run from the repository root: ``python bench/search_efficiency.py`` (about 10 minutes on two
cores once the grids are cached; evaluating the grids the first time adds ~5 minutes). 20 seeds
by default: with 10, random search's median on the 70B scenario swings by 10 points between seed
sets (0.97 on seeds 0-9 at 10 trials, 0.78 on seeds 10-29). Prints
tables and writes ``bench/results/search_efficiency.json`` and ``.md``. The grids (ground truth)
are cached under ``bench/results/search_grid_cache/``. ``--quick`` is the short version the tests
run.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outputs import results_dir
from searchbench.experiments import efficiency, failures, warm_start  # noqa: E402
from searchbench.report import markdown, summary_lines  # noqa: E402
from searchbench.scenarios import scenarios  # noqa: E402

RESULTS = results_dir()
STRATEGY_NAMES = ("random", "grid-shuffled", "tpe", "nsga2", "gp", "default")
log = logging.getLogger("search_efficiency")


def _jobs(args: argparse.Namespace) -> list[tuple]:
    jobs = []
    seeds = list(range(args.seeds))
    for name in args.scenarios:
        for kind in ("single", "multi"):
            for strategy in args.strategies:
                if strategy == "gp":
                    if kind == "single" and args.gp_seeds:
                        jobs.append((name, kind, strategy, list(range(args.gp_seeds)), [10, 20]))
                    continue
                jobs.append((name, kind, strategy, seeds, args.budgets))
    return jobs


def _run(job: tuple) -> dict[str, Any]:
    return efficiency(*job)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--budgets", type=lambda s: [int(b) for b in s.split(",")], default=[10, 20, 30, 50, 100]
    )
    parser.add_argument("--scenarios", nargs="*", default=list(scenarios()))
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGY_NAMES))
    parser.add_argument(
        "--gp-seeds",
        type=int,
        default=2,
        help="GP is slow on CPU (~3 s a trial on 2 busy cores): single objective, "
        "budgets 10 and 20, this many seeds; 0 skips it",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "search_efficiency.json")
    parser.add_argument("--quick", action="store_true", help="3 seeds, budgets 10/20, no GP")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budgets, args.gp_seeds = 3, [10, 20], 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    from searchbench.strategies import case  # grids are built here, before the pool forks

    for name in args.scenarios:
        case(name, "single")
    case("8b-chat-h100-reality", "single")
    rows = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for row in pool.map(_run, _jobs(args)):
            rows.append(row)
            log.info(
                "%s %s %s done (%.0fs)",
                row["scenario"],
                row["objective"],
                row["strategy"],
                time.monotonic() - started,
            )
        fail_job = pool.submit(failures, range(args.seeds), 30)
        warm_job = pool.submit(warm_start, range(args.seeds), 50, 5)
        fail_result, warm_result = fail_job.result(), warm_job.result()
    result = {
        "command": "python bench/search_efficiency.py" + (" --quick" if args.quick else ""),
        "seeds": args.seeds,
        "budgets": args.budgets,
        "gp_seeds": args.gp_seeds,
        "scenarios": _scenario_facts(args.scenarios),
        "efficiency": rows,
        "failures": fail_result,
        "warm_start": warm_result,
        "elapsed_s": round(time.monotonic() - started, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(result))
    for line in summary_lines(result):
        log.info(line)
    return result


def _scenario_facts(names: list[str]) -> dict[str, Any]:
    from searchbench.experiments import truth
    from searchbench.strategies import case

    out = {}
    for name in names:
        single, multi = case(name, "single"), case(name, "multi")
        points = list(single.grid.points.values())
        out[name] = {
            "grid_points": len(points),
            "valid": len(single.grid.valid),
            "feasible": sum(single.objective.feasible(p) for p in points),
            "optimum_output_tokens_per_s": round(truth(single), 1),
            "true_front_hypervolume": round(truth(multi), 1),
            "hv_reference": multi.objective.reference,
            "slos": single.objective.slos,
        }
    return out


if __name__ == "__main__":
    main()
