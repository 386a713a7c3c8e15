"""How fast the simulator is: one 1,000-request trial, and 200 trials over random vLLM configs.

Run from the repository root: ``python bench/bench_sim.py``. Prints a table and writes
``bench/results/bench_sim.json``. Only ``simulate`` calls are timed (config sampling and
validation are not; the tuner's study loop has its own bench).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from typing import Any

import numpy as np
from outputs import results_path

from engines import HardwareSpec, ModelSpec, RunContext, WorkloadSpec, get_engine
from engines.base import Param
from engines.errors import EngineError
from engines.sim.simulate import simulate

RESULTS = results_path("bench_sim.json")
MODEL = ModelSpec.model_validate("Llama-3.1-8B")
FIXED_1K = WorkloadSpec(
    input_tokens=1024,
    output_tokens=256,
    num_requests=1000,
    arrival={"kind": "concurrency", "concurrency": 256},
)


def sample(param: Param, rng: np.random.Generator) -> Any:
    """One value of ``param``, drawn the way a random sampler would."""
    if param.kind == "categorical":
        return param.choices[int(rng.integers(len(param.choices)))]
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    value = (
        math.exp(rng.uniform(math.log(low), math.log(high)))
        if param.log
        else rng.uniform(low, high)
    )
    if param.step:
        value = low + round((value - low) / param.step) * param.step
    return int(round(value)) if param.kind == "int" else round(float(value), 6)


def time_one_trial(repeats: int) -> dict[str, Any]:
    """Median wall time of one 1,000-request trial (1024 in / 256 out, concurrency 256)."""
    engine = get_engine("vllm")
    hardware = HardwareSpec(gpu="H100-SXM")
    ctx = RunContext(model=MODEL, hardware=hardware, workload=FIXED_1K)
    plan = engine.plan({**engine.defaults(MODEL, hardware), "max_num_seqs": 256}, ctx)
    simulate("vllm", plan, ctx)  # warm caches (YAML, imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        measurement = simulate("vllm", plan, ctx)
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "output_tokens_per_s": measurement.output_tokens_per_s,
    }


def time_random_trials(count: int, seed: int) -> dict[str, Any]:
    """Wall time of ``count`` simulate calls on valid random configs of vLLM's space (2x H100)."""
    engine = get_engine("vllm")
    hardware = HardwareSpec(gpu="H100-SXM", count=2)
    workload = WorkloadSpec.model_validate("chat")
    rng = np.random.default_rng(seed)
    space = engine.space(MODEL, hardware)
    times, skipped, ooms = [], 0, 0
    while len(times) < count:
        config: dict[str, Any] = {}
        for param in space:
            if param.applies(config):
                config[param.name] = sample(param, rng)
        ctx = RunContext(
            model=MODEL, hardware=hardware, workload=workload, seed=int(rng.integers(1 << 30))
        )
        if engine.validate(config, ctx):
            skipped += 1
            continue
        plan = engine.plan(config, ctx)
        start = time.perf_counter()
        try:
            simulate("vllm", plan, ctx)
        except EngineError:
            ooms += 1
        times.append(time.perf_counter() - start)
    arr = np.array(times)
    return {
        "trials": count,
        "total_s": float(arr.sum()),
        "median_s": float(np.median(arr)),
        "p90_s": float(np.percentile(arr, 90)),
        "max_s": float(arr.max()),
        "invalid_configs_skipped": skipped,
        "oom": ooms,
        "workload": "chat (500 requests)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    one = time_one_trial(args.repeats)
    many = time_random_trials(args.trials, args.seed)
    rows = [
        ("one trial, 1000 x 1024/256 @256, median", f"{one['median_s'] * 1000:.1f} ms"),
        ("one trial, min / max", f"{one['min_s'] * 1000:.1f} / {one['max_s'] * 1000:.1f} ms"),
        (f"{many['trials']} random vLLM configs, total", f"{many['total_s']:.2f} s"),
        (
            "random configs, median / p90 / max",
            f"{many['median_s'] * 1000:.1f} / {many['p90_s'] * 1000:.1f} / "
            f"{many['max_s'] * 1000:.1f} ms",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    print("\n".join(lines))  # noqa: T201 - a bench script reports on stdout
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "one_trial": one,
                "random_trials": many,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
