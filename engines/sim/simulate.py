"""One simulated trial: size the KV cache, schedule the workload, cost every step, summarise.

The pieces are plain functions: :mod:`engines.memory` sizes the cache, :mod:`.scheduler` decides
what each continuous-batching step holds, :mod:`.costs` prices a step, and
:func:`engines.metrics.summarize` turns per-request timings into the same :class:`Measurement` a
real benchmark produces, marked ``estimated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from engines.base import RunContext, ServingPlan
from engines.catalog import load_data
from engines.errors import EngineError
from engines.memory import GIB, MemoryBudget, memory_budget
from engines.metrics import Measurement, cost_per_mtok, summarize
from engines.sim.costs import build_costs, step_time
from engines.sim.profiles import EngineProfile, load_profile, profile_label, strip_sources
from engines.sim.scheduler import SchedulerLimits, SimResult, simulate_schedule
from engines.workload import measured_window, plan_requests

# Board power while serving: a floor even when idle between steps, rising with busy time.
# Serving GPUs typically draw 60-90% of TDP under load (nvidia-smi traces in MLPerf Inference
# power submissions); an engineering estimate, like the accuracy factors below.
IDLE_POWER_SHARE = 0.3
BUSY_POWER_SHARE = 0.6
ACCURACY_METRIC = "estimated relative accuracy (published evals)"


def estimated_accuracy(plan: ServingPlan) -> float:
    """Accuracy relative to bf16 from published quantisation studies (engines/data/accuracy.yaml)."""
    table = strip_sources(load_data("accuracy"))
    label = plan.precision.split("/kv-")[0]
    weights = table["weights"].get(label, table["by_weight_dtype"].get(plan.weight_dtype, 1.0))
    return float(weights) * float(table["kv"].get(plan.kv_dtype, 1.0))


def joules_per_token(result: SimResult, tdp_watts: float, gpus: int, tokens_per_s: float) -> float:
    """Energy per output token: board power scaled by how busy the engine was."""
    span = float(result.step_end_s[-1]) if result.step_end_s.size else 0.0
    busy = min(1.0, result.busy_s / span) if span > 0 else 0.0
    watts = tdp_watts * (IDLE_POWER_SHARE + BUSY_POWER_SHARE * busy) * gpus
    return watts / tokens_per_s if tokens_per_s > 0 else float("inf")


@dataclass(frozen=True)
class SimRun:
    """The scheduled run behind a simulated measurement: its per-request records and steps."""

    result: SimResult
    kv_cache_tokens: int
    budget: MemoryBudget
    profile: EngineProfile


def simulate_run(
    engine_name: str, plan: ServingPlan, ctx: RunContext, profile: str | None = None
) -> SimRun:
    """Schedule ``ctx.workload`` on ``plan``; raise EngineError('oom') if no request fits.

    Separate from :func:`simulate` so what reads request records as they finish (the overload
    monitor's tests) can use the same continuous-batching run a sim trial summarises."""
    costs_profile = load_profile(engine_name, profile)
    gpu = ctx.hardware.gpu_info
    budget = memory_budget(ctx.model, gpu, plan)
    blocks = budget.kv_tokens // plan.block_size
    requests = measured_window(plan_requests(ctx.workload, ctx.seed))  # warmup: its own phase
    longest = int((requests.input_tokens + requests.output_tokens).max())
    if blocks * plan.block_size < longest:
        raise EngineError(
            "oom",
            (
                f"KV cache holds {blocks * plan.block_size} tokens per GPU "
                f"({max(budget.kv_cache, 0) / GIB:.1f} GiB after {budget.weights / GIB:.1f} GiB of "
                f"weights), fewer than the longest request ({longest} tokens)"
            ),
        )
    limits = SchedulerLimits(
        max_seqs=plan.max_seqs,
        max_batched_tokens=plan.max_batched_tokens,
        kv_blocks=blocks,
        block_size=plan.block_size,
        chunked_prefill=plan.chunked_prefill,
        prefix_caching=plan.prefix_caching,
        admission_delay_s=costs_profile.admission_delay_s,
        admission_delay_per_stream_s=costs_profile.admission_delay_per_stream_s,
        api_servers=plan.api_servers,
        api_token_s=costs_profile.api_per_token_s / max(plan.api_servers, 1),
        prefix_reads_shared=costs_profile.prefix_reads_shared,
    )
    costs = build_costs(ctx.model, gpu, plan, costs_profile)
    result = simulate_schedule(requests, limits, partial(step_time, costs))
    return SimRun(result, blocks * plan.block_size, budget, costs_profile)


def simulate(
    engine_name: str, plan: ServingPlan, ctx: RunContext, profile: str | None = None
) -> Measurement:
    """Predict what ``plan`` measures under ``ctx.workload``; raise EngineError('oom') if no fit."""
    run = simulate_run(engine_name, plan, ctx, profile)
    result, budget, costs_profile = run.result, run.budget, run.profile
    gpu = ctx.hardware.gpu_info
    out_tokens = sum(r.output_tokens for r in result.records)
    tokens_per_s = out_tokens / result.duration_s if result.duration_s > 0 else 0.0
    return summarize(
        result.records,
        result.duration_s,
        ctx.slo,
        estimated=True,
        gpu_count=plan.gpus,
        cost_per_mtok_usd=cost_per_mtok(tokens_per_s, plan.gpus, ctx.hardware.price_per_gpu_hour),
        joules_per_token=joules_per_token(result, gpu.tdp_watts, plan.gpus, tokens_per_s),
        accuracy=estimated_accuracy(plan),
        accuracy_metric=ACCURACY_METRIC,
        accuracy_estimated=True,
        extra={
            "kv_cache_tokens": run.kv_cache_tokens,
            "weights_gib": round(budget.weights / GIB, 3),
            "kv_cache_gib": round(max(budget.kv_cache, 0.0) / GIB, 3),
            "peak_running": result.peak_running,
            "preemptions": result.preemptions,
            "engine_profile": profile_label(costs_profile),
        },
    )
