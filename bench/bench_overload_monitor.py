"""False alarms and misses of the overload early stop, on the simulator's H200 runs.

Run from the repository root: ``python bench/bench_overload_monitor.py``. Prints a table and
writes ``bench/results/overload_monitor.json``.

Why a simulator: on a real H200 (studies/real/h200/session4-finalize) the monitor cut every
capacity probe above the reported rate after ~30 requests, with first tokens 30 times inside the
2 s limit; nothing on a GPU could be re-run. The sim's continuous batching (with the profile
calibrated on the H100, which predicts the H200's measurements within 3% on throughput)
reproduces that cut (``5.0 -> 13.5 -> 21.5 requests in flight`` at 20 req/s). For each config
this finds the sim's capacity under the same SLOs, then runs Poisson arrivals at multiples of it
and asks two monitors when they would stop: the old rule (``wait_share=0``: any growing wait)
and today's (the wait must reach half the TTFT limit). A stop below capacity is a false alarm;
no stop above it only costs time (the probe's own p99 still judges it infeasible).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from outputs import results_path

from engines import HardwareSpec, ModelSpec, RunContext, WorkloadSpec
from engines.metrics import RequestRecord, RequestSLO, summarize
from engines.serving.capacity import Probe, search_capacity
from engines.serving.overload import OverloadMonitor
from engines.sim.simulate import simulate_run
from engines.vllm import VllmEngine

RESULTS = results_path("overload_monitor.json")
PROFILE = "h100-llama8b-vllm"
TTFT_LIMIT_MS, TPOT_LIMIT_MS = 2000.0, 60.0  # the finalize driver's capacity SLOs
PROBE_S = 30.0  # seconds of arrivals per probe, about the H200 probes' length
MULTIPLES = (0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 2.0)
FP8 = {
    "quantization": "fp8",
    "kv_cache_dtype": "fp8",
    "max_num_seqs": 512,
    "max_num_batched_tokens": 8192,
    "gpu_memory_utilization": 0.85,
}


def _run(config: dict[str, Any], rate: float, seed: int) -> list[RequestRecord]:
    """The sim's records of ``PROBE_S`` seconds of Poisson arrivals at ``rate``, by finish."""
    engine, model, hardware = VllmEngine(), ModelSpec(name="Llama-3.1-8B"), HardwareSpec(gpu="H200")
    workload = WorkloadSpec(
        input_tokens=1024,
        output_tokens=256,
        num_requests=max(40, round(rate * PROBE_S)),
        warmup_requests=0,
        arrival={"kind": "poisson", "rate": rate},
    )
    ctx = RunContext(model=model, hardware=hardware, workload=workload, seed=seed)
    plan = engine.plan({**engine.defaults(model, hardware), **config}, ctx)
    return sorted(simulate_run("vllm", plan, ctx, PROFILE).result.records, key=lambda r: r.end_s)


def _meets_slo(records: list[RequestRecord]) -> bool:
    m = summarize(records, max(r.end_s for r in records), RequestSLO())
    return m.ttft_ms.p99 <= TTFT_LIMIT_MS and m.tpot_ms.p99 <= TPOT_LIMIT_MS


def _capacity(config: dict[str, Any], seed: int) -> float:
    """The highest rate (to 1%) whose full run meets the SLOs: the real search's bracketing and
    bisection, with the sim's whole run as each probe."""
    found = search_capacity(
        lambda rate: Probe(rate, _meets_slo(_run(config, rate, seed)), 0.0),
        start_rps=2.0,
        max_steps=40,
        rel_tol=0.01,
    )
    return found.capacity_rps


def _stop_at(records: list[RequestRecord], wait_share: float) -> int | None:
    """How many completions the monitor saw when it stopped the run (None: it did not)."""
    monitor = OverloadMonitor(ttft_limit_ms=TTFT_LIMIT_MS, wait_share=wait_share)
    return next((i + 1 for i, r in enumerate(records) if monitor.feed(r)), None)


def measure(configs: dict[str, dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """One row per config and rate: the SLO verdict and both monitors' stops."""
    rows = []
    for name, config in configs.items():
        capacity = _capacity(config, seed)
        for multiple in MULTIPLES:
            records = _run(config, capacity * multiple, seed)
            rows.append(
                {
                    "config": name,
                    "capacity_rps": round(capacity, 2),
                    "multiple": multiple,
                    "rate_rps": round(capacity * multiple, 2),
                    "requests": len(records),
                    "meets_slo": _meets_slo(records),
                    "old_rule_stops_at": _stop_at(records, 0.0),
                    "stops_at": _stop_at(records, 0.5),
                }
            )
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    """False alarms (a stop on a run within the SLOs) and misses (no stop on one beyond them)."""
    within = [r for r in rows if r["meets_slo"]]
    beyond = [r for r in rows if not r["meets_slo"]]
    return {
        "runs_within_slo": len(within),
        "runs_beyond_slo": len(beyond),
        "old_rule_false_alarms": sum(r["old_rule_stops_at"] is not None for r in within),
        "false_alarms": sum(r["stops_at"] is not None for r in within),
        "old_rule_misses": sum(r["old_rule_stops_at"] is None for r in beyond),
        "misses": sum(r["stops_at"] is None for r in beyond),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = measure({"vLLM defaults": {}, "fp8 W + fp8 KV": FP8}, args.seed)
    totals = summary(rows)
    lines = [
        f"{'config':<16} {'capacity':>8} {'x':>4} {'req/s':>6} {'SLO met':>7} "
        f"{'old rule stops at':>17} {'stops at':>8}"
    ]
    for r in rows:
        lines.append(
            f"{r['config']:<16} {r['capacity_rps']:>8.2f} {r['multiple']:>4.1f} "
            f"{r['rate_rps']:>6.1f} {str(r['meets_slo']):>7} "
            f"{str(r['old_rule_stops_at'] or '-'):>17} {str(r['stops_at'] or '-'):>8}"
        )
    lines.append(json.dumps(totals))
    print("\n".join(lines))  # noqa: T201 - a bench script reports on stdout
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"profile": PROFILE, "probe_s": PROBE_S, "seed": args.seed, "rows": rows}
    RESULTS.write_text(json.dumps({**report, "summary": totals}, indent=1))


if __name__ == "__main__":
    main()
