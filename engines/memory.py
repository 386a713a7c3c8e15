"""How much GPU memory a serving plan needs: weights, activations and the KV cache.

Plain arithmetic on the model's shape, shared by validation (does it fit at all?) and the
simulator (how many tokens can the KV cache hold?).
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.base import ServingPlan
from engines.specs import GpuSpec, ModelSpec

GIB = 2**30
# Bytes per parameter as stored; int4 and fp4 carry per-group scales (group 128 fp16: +1/64 B).
WEIGHT_BYTES = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5 + 2 / 128,
    "fp4": 0.5 + 1 / 16,
}
KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "auto": 2.0, "fp8": 1.0, "int8": 1.0}
RUNTIME_OVERHEAD_GIB = 1.5  # CUDA context, NCCL buffers, allocator slack (vLLM logs ~1-2 GiB)
CUDA_GRAPH_GIB = 0.6  # captured graphs' private pools, typical for 8B-70B on recent vLLM


@dataclass(frozen=True)
class MemoryBudget:
    """Per-GPU memory split for one plan, bytes."""

    weights: float
    activations: float
    overhead: float
    kv_cache: float
    kv_bytes_per_token: float

    @property
    def kv_tokens(self) -> int:
        """Tokens the KV cache holds (whole sequence positions, all layers of this GPU's stage)."""
        return max(0, int(self.kv_cache // self.kv_bytes_per_token))


def weight_bytes_per_gpu(model: ModelSpec, plan: ServingPlan) -> float:
    """Weights resident on one GPU: all parameters split evenly over TP x PP."""
    return model.params_b * 1e9 * WEIGHT_BYTES[plan.weight_dtype] / plan.gpus


def kv_bytes_per_token(model: ModelSpec, plan: ServingPlan) -> float:
    """KV-cache bytes one token position costs on one GPU (K and V, this stage's layers).

    KV heads are split by TP, but never below one head per GPU (they are replicated beyond).
    """
    kv_heads = max(1.0, model.num_kv_heads / plan.tp)
    layers = model.num_layers / plan.pp
    return 2.0 * layers * kv_heads * model.head_dim * KV_BYTES[plan.kv_dtype]


def activation_bytes(model: ModelSpec, plan: ServingPlan) -> float:
    """Peak activation memory of the largest step (profiled by engines before sizing the cache)."""
    per_token = (2 * model.intermediate_size + 4 * model.hidden_size) * 2.0 / plan.tp
    logits = plan.max_seqs * model.vocab_size * 4.0 / plan.tp
    return plan.max_batched_tokens * per_token + logits


def memory_budget(model: ModelSpec, gpu: GpuSpec, plan: ServingPlan) -> MemoryBudget:
    """Split one GPU's memory for ``plan``; ``kv_cache`` may come out negative (does not fit)."""
    weights = weight_bytes_per_gpu(model, plan)
    acts = activation_bytes(model, plan)
    overhead = (RUNTIME_OVERHEAD_GIB + (CUDA_GRAPH_GIB if plan.cuda_graphs else 0.0)) * GIB
    total = gpu.memory_bytes
    if plan.memory_rule == "total":
        kv = plan.memory_fraction * total - weights - acts - overhead
    else:
        kv = plan.memory_fraction * (total - weights - acts - overhead)
    return MemoryBudget(weights, acts, overhead, kv, kv_bytes_per_token(model, plan))
