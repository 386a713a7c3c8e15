"""How long one continuous-batching step takes: a roofline per GPU plus fixed overheads.

A step runs ``new_tokens`` through the model (decode tokens and prefill chunks together) while
attention reads ``kv_tokens`` cached positions. On each GPU the step costs

    t_micro = max(FLOPs / (peak * MFU), bytes / (bandwidth * efficiency)) + TP all-reduces
    t_step  = pp * t_micro + (pp - 1) * stage_transfer + CPU overhead

where FLOPs = 2 * active_params * tokens + 4 * layers * heads * head_dim * attended positions and
bytes = weights touched + KV positions read. With pipeline parallelism the batch is cut into
``min(pp, seqs)`` micro-batches that flow through the stages back to back, so a full pipeline
reads each stage's weights once per micro-batch and keeps every stage busy; a single sequence
walks the stages one after another (the bubble). Every function here is pure and takes numpy
arrays, so the scheduler can cost many identical decode steps in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.base import ServingPlan
from engines.memory import WEIGHT_BYTES, kv_bytes_per_token
from engines.sim.profiles import EngineProfile
from engines.specs import GpuSpec, ModelSpec

ArrayLike = float | np.ndarray  # one step (scalar) or many (one entry per step)

# Which datasheet rate a compute dtype runs at; a GPU without it falls back to bf16 (A100 serves
# fp8 checkpoints through weight-only kernels that upcast to bf16).
_RATE_FIELD = {
    "bf16": "bf16_tflops",
    "fp16": "bf16_tflops",
    "fp8": "fp8_tflops",
    "int8": "int8_tops",
    "fp4": "fp4_tflops",
}


@dataclass(frozen=True)
class StepCosts:
    """Per-plan constants of the roofline, computed once per trial (per-GPU unless noted)."""

    linear_flops_per_token: float  # whole model: 2 * active parameters
    attn_flops_per_position: float  # whole model: 4 * layers * heads * head_dim
    dense_weight_bytes: float  # bytes read once per micro-batch whatever the batch
    expert_bytes: float  # MoE: bytes of one expert across this GPU's layers (0 when dense)
    num_experts: int
    experts_per_token: int
    kv_bytes_per_token: float
    flops_per_s: float  # effective: peak * MFU * precision multipliers
    bytes_per_s: float  # effective: bandwidth * efficiency * precision multipliers
    tp: int
    pp: int
    allreduce_bytes_per_token: float  # per micro-batch token, all of this stage's layers
    allreduce_count: int  # all-reduces per micro-batch (2 per layer of the stage)
    allreduce_bytes_per_s: float
    allreduce_latency_s: float
    stage_transfer_s: float
    overhead_graph_s: float
    overhead_eager_s: float
    overhead_per_seq_s: float
    host_per_seq_s: float = 0.0  # the engine core's work per sequence, beside the GPU's


def compute_rate(gpu: GpuSpec, plan: ServingPlan, profile: EngineProfile) -> float:
    """Effective FLOP/s of one GPU for the plan's compute dtype (peak * MFU * kernel factors)."""
    peak = getattr(gpu, _RATE_FIELD.get(plan.compute_dtype, "bf16_tflops"))
    dtype = plan.compute_dtype
    if peak is None:
        peak, dtype = gpu.bf16_tflops, "bf16"
    rate = peak * 1e12 * profile.prefill_mfu * profile.compute_efficiency.get(dtype, 1.0)
    if WEIGHT_BYTES[plan.weight_dtype] < WEIGHT_BYTES.get(dtype, 2.0):
        rate *= profile.weight_only_compute_efficiency  # dequantising inside the GEMM
    return rate


def build_costs(
    model: ModelSpec, gpu: GpuSpec, plan: ServingPlan, profile: EngineProfile
) -> StepCosts:
    """Turn a model, GPU, plan and engine profile into the constants :func:`step_time` needs."""
    total_bytes = model.params_b * 1e9 * WEIGHT_BYTES[plan.weight_dtype] / plan.gpus
    experts, top_k = model.num_experts or 0, model.experts_per_token or 0
    expert_bytes = 0.0
    if experts > top_k > 0:
        # total = shared + E * e and active = shared + k * e, so one expert holds e parameters
        per_expert = (model.params_b * 1e9 - model.active_params) / (experts - top_k)
        expert_bytes = per_expert * WEIGHT_BYTES[plan.weight_dtype] / plan.gpus
    bandwidth = (
        gpu.memory_bandwidth_gbps
        * 1e9
        * profile.decode_bw_efficiency
        * profile.weight_bandwidth_efficiency.get(plan.weight_dtype, 1.0)
    )
    stage_layers = model.num_layers / plan.pp
    eager = profile.step_overhead_eager_s + profile.eager_launch_s_per_layer * stage_layers
    no_graphs = eager + profile.eager_step_s  # every step of an enforce_eager plan
    return StepCosts(
        linear_flops_per_token=2.0 * model.active_params,
        attn_flops_per_position=4.0 * model.num_layers * model.num_attention_heads * model.head_dim,
        dense_weight_bytes=total_bytes - expert_bytes * experts,
        expert_bytes=expert_bytes,
        num_experts=experts,
        experts_per_token=top_k,
        # attention kernels reading a quantised cache dequantise as they go: per byte they
        # stream slower than weight GEMVs, so fewer bytes do not buy a proportional speedup
        kv_bytes_per_token=kv_bytes_per_token(model, plan)
        / profile.kv_bandwidth_efficiency.get(plan.kv_dtype, 1.0),
        flops_per_s=compute_rate(gpu, plan, profile),
        bytes_per_s=bandwidth,
        tp=plan.tp,
        pp=plan.pp,
        allreduce_bytes_per_token=2 * stage_layers * model.hidden_size * 2.0,
        allreduce_count=int(round(2 * stage_layers)),
        allreduce_bytes_per_s=gpu.interconnect_gbps * 1e9 * profile.allreduce_efficiency,
        allreduce_latency_s=profile.allreduce_latency_s,
        stage_transfer_s=profile.stage_transfer_latency_s,
        overhead_graph_s=profile.step_overhead_graph_s if plan.cuda_graphs else no_graphs,
        overhead_eager_s=eager if plan.cuda_graphs else no_graphs,
        # per sequence, every step: scheduling and sampling; without CUDA graphs, the eager
        # path's cost that grows with the batch; and a dequantising KV-cache attention path's
        overhead_per_seq_s=profile.step_overhead_per_seq_s
        + (0.0 if plan.cuda_graphs else profile.eager_per_seq_s)
        + profile.kv_per_seq_s.get(plan.kv_dtype, 0.0),
        host_per_seq_s=profile.host_per_seq_s,
    )


def weight_bytes_read(costs: StepCosts, tokens: ArrayLike) -> ArrayLike:
    """Weight bytes one micro-batch of ``tokens`` reads: dense part plus the experts it routes to.

    Expected distinct experts for T tokens each picking k of E: E * (1 - (1 - k/E)^T).
    """
    if costs.expert_bytes == 0.0:
        return costs.dense_weight_bytes  # broadcasts
    e, k = costs.num_experts, costs.experts_per_token
    touched = e * (1.0 - (1.0 - k / e) ** np.maximum(tokens, 1.0))
    return costs.dense_weight_bytes + costs.expert_bytes * touched


def allreduce_time(costs: StepCosts, tokens: ArrayLike) -> ArrayLike:
    """TP communication of one micro-batch: ring all-reduces of tokens x hidden bf16 activations."""
    if costs.tp == 1:
        return 0.0  # broadcasts
    ring = 2.0 * (costs.tp - 1) / costs.tp
    volume = ring * costs.allreduce_bytes_per_token * tokens
    return volume / costs.allreduce_bytes_per_s + costs.allreduce_count * costs.allreduce_latency_s


def step_time(
    costs: StepCosts,
    new_tokens: ArrayLike,
    attended: ArrayLike,
    kv_tokens: ArrayLike,
    seqs: ArrayLike,
    decode_only: bool,
) -> ArrayLike:
    """Seconds for steps that process ``new_tokens`` attending ``attended`` positions in total.

    ``kv_tokens`` are cached positions read by attention; ``seqs`` sequences are in the batch.
    Scalars give a scalar, arrays (one entry per step) an array. Decode-only steps replay CUDA
    graphs (when the plan has them), so their CPU cost is lower. The engine core's own work
    (scheduling, handing outputs on) runs beside the GPU's: a step lasts as long as the longer
    of the two. The API servers' streaming is the scheduler's (it delays what clients see, not
    the engine).
    """
    micro = np.maximum(np.minimum(costs.pp, seqs), 1.0)  # micro-batches in flight
    gpus = costs.tp * costs.pp
    flops = (
        costs.linear_flops_per_token * new_tokens + costs.attn_flops_per_position * attended
    ) / (gpus * micro)
    tokens_micro = new_tokens / micro
    read = weight_bytes_read(costs, tokens_micro) + costs.kv_bytes_per_token * kv_tokens / micro
    roofline = np.maximum(flops / costs.flops_per_s, read / costs.bytes_per_s)
    per_micro = roofline + allreduce_time(costs, tokens_micro)
    overhead = costs.overhead_graph_s if decode_only else costs.overhead_eager_s
    gpu_side = (
        costs.pp * per_micro
        + (costs.pp - 1) * costs.stage_transfer_s
        + overhead
        + costs.overhead_per_seq_s * seqs
    )
    return np.maximum(gpu_side, costs.host_per_seq_s * seqs)


def prefill_attended(offset: int, chunk: int) -> int:
    """Positions a causal prefill chunk attends: token t of the chunk sees offset + t + 1."""
    return chunk * offset + chunk * (chunk + 1) // 2
