"""Physical rules every engine shares: parallelism vs heads and GPUs, precision vs hardware,
memory fit, and sequence-length limits. Each returns human-readable reasons, never raises.
"""

from __future__ import annotations

from engines.base import RunContext, ServingPlan
from engines.memory import GIB, memory_budget

# Lowest compute capability whose tensor cores run each compute dtype.
MIN_CAPABILITY = {"fp8": 8.9, "fp4": 10.0, "int8": 7.5, "bf16": 8.0, "fp16": 7.0}


def physical_rules(plan: ServingPlan, ctx: RunContext) -> list[str]:
    """Reasons ``plan`` cannot run on ``ctx.hardware`` for ``ctx.model`` and ``ctx.workload``."""
    return (
        parallelism_rules(plan, ctx)
        or precision_rules(plan, ctx)
        or length_rules(plan, ctx)
        or memory_rules(plan, ctx)
    )


def parallelism_rules(plan: ServingPlan, ctx: RunContext) -> list[str]:
    model, count = ctx.model, ctx.hardware.count
    reasons = []
    if plan.gpus > count:
        reasons.append(
            f"TP*PP = {plan.tp}*{plan.pp} = {plan.gpus} exceeds the {count} GPU(s) available"
        )
    if model.num_attention_heads % plan.tp:
        reasons.append(
            f"TP={plan.tp} does not divide the {model.num_attention_heads} attention heads"
        )
    kv = model.num_kv_heads
    if kv % plan.tp and plan.tp % kv:
        reasons.append(f"TP={plan.tp} neither divides nor is a multiple of the {kv} KV heads")
    if plan.pp > model.num_layers:
        reasons.append(f"PP={plan.pp} exceeds the {model.num_layers} layers")
    return reasons


def precision_rules(plan: ServingPlan, ctx: RunContext) -> list[str]:
    gpu = ctx.hardware.gpu_info
    reasons = []
    for what, dtype in (("compute", plan.compute_dtype), ("weights", plan.weight_dtype)):
        need = MIN_CAPABILITY.get(dtype)
        if dtype in ("fp8", "fp4") and need and gpu.compute_capability < need:
            arch = "Blackwell" if dtype == "fp4" else "Ada/Hopper"
            reasons.append(
                f"{dtype} {what} need compute capability >= {need} ({arch}); "
                f"{gpu.name} has {gpu.compute_capability}"
            )
    return reasons


def length_rules(plan: ServingPlan, ctx: RunContext) -> list[str]:
    reasons = []
    if plan.max_model_len > ctx.model.max_context:
        reasons.append(
            f"max model length {plan.max_model_len} exceeds the model's context "
            f"{ctx.model.max_context}"
        )
    longest = ctx.workload.max_sequence_tokens
    if longest > plan.max_model_len:
        reasons.append(
            f"the workload's longest request ({longest} tokens) exceeds max model "
            f"length {plan.max_model_len}"
        )
    if not plan.chunked_prefill and plan.max_batched_tokens < plan.max_model_len:
        reasons.append(
            f"max batched tokens {plan.max_batched_tokens} < max model length "
            f"{plan.max_model_len} needs chunked prefill"
        )
    if plan.max_batched_tokens < plan.max_seqs:
        reasons.append(
            f"max batched tokens {plan.max_batched_tokens} < max sequences {plan.max_seqs}"
        )
    return reasons


def memory_rules(plan: ServingPlan, ctx: RunContext) -> list[str]:
    gpu = ctx.hardware.gpu_info
    budget = memory_budget(ctx.model, gpu, plan)
    need_tokens = plan.max_model_len
    if budget.kv_tokens < need_tokens:
        return [
            f"does not fit: weights {budget.weights / GIB:.1f} GiB + activations "
            f"{budget.activations / GIB:.1f} GiB + overhead {budget.overhead / GIB:.1f} GiB leave "
            f"{max(budget.kv_cache, 0) / GIB:.1f} GiB of KV cache on a {gpu.memory_gib:.0f} GiB "
            f"{gpu.name}: {budget.kv_tokens} tokens, fewer than one {need_tokens}-token sequence"
        ]
    return []
