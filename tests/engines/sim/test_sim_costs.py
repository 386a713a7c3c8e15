"""The roofline step costs, the profiles they read and the accuracy estimates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from engines.base import ServingPlan
from engines.errors import SpecError
from engines.sim.costs import allreduce_time, build_costs, prefill_attended, step_time
from engines.sim.profiles import load_profile, profile_version
from engines.sim.simulate import estimated_accuracy
from engines.specs import GpuSpec, HardwareSpec, ModelSpec

LLAMA_8B = ModelSpec.model_validate("Llama-3.1-8B")
H100 = HardwareSpec(gpu="H100-SXM").gpu_info
VLLM = load_profile("vllm")


def make_plan(**changes: object) -> ServingPlan:
    base = ServingPlan(
        weight_dtype="bf16",
        compute_dtype="bf16",
        kv_dtype="bf16",
        tp=1,
        pp=1,
        max_seqs=256,
        max_batched_tokens=8192,
        max_model_len=8192,
        memory_fraction=0.9,
        memory_rule="total",
        prefix_caching=True,
        chunked_prefill=True,
        cuda_graphs=True,
    )
    return dataclasses.replace(base, **changes)


def cost(
    plan: ServingPlan,
    tokens: int,
    attended: int,
    kv: int,
    seqs: int,
    decode: bool,
    model: ModelSpec = LLAMA_8B,
    gpu: GpuSpec = H100,
) -> float:
    costs = build_costs(model, gpu, plan, VLLM)
    return float(
        step_time(
            costs,
            np.array([tokens]),
            np.array([attended]),
            np.array([kv]),
            np.array([seqs]),
            decode,
        )[0]
    )


def test_fp8_halves_weight_bytes_and_nearly_halves_small_batch_decode() -> None:
    bf16 = build_costs(LLAMA_8B, H100, make_plan(), VLLM)
    fp8 = build_costs(LLAMA_8B, H100, make_plan(weight_dtype="fp8", compute_dtype="fp8"), VLLM)
    assert fp8.dense_weight_bytes == pytest.approx(bf16.dense_weight_bytes / 2)
    overhead = bf16.overhead_graph_s + bf16.overhead_per_seq_s
    t_bf16 = cost(make_plan(), 1, 500, 500, 1, True) - overhead
    t_fp8 = (
        cost(make_plan(weight_dtype="fp8", compute_dtype="fp8"), 1, 500, 500, 1, True) - overhead
    )
    assert 1.8 < t_bf16 / t_fp8 < 2.05


def test_fp8_kv_halves_kv_bytes_per_token() -> None:
    bf16 = build_costs(LLAMA_8B, H100, make_plan(), VLLM)
    kv8 = build_costs(LLAMA_8B, H100, make_plan(kv_dtype="fp8"), VLLM)
    assert bf16.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert kv8.kv_bytes_per_token == pytest.approx(bf16.kv_bytes_per_token / 2)


def test_prefill_time_grows_linearly_with_tokens() -> None:
    plan = make_plan()
    times = [cost(plan, n, prefill_attended(0, n), n, 1, False) for n in (2048, 4096, 8192)]
    assert times[1] / times[0] == pytest.approx(2.0, rel=0.1)
    assert times[2] / times[1] == pytest.approx(2.0, rel=0.1)


def test_prefill_is_compute_bound_near_the_profiles_mfu() -> None:
    seconds = cost(make_plan(), 8192, prefill_attended(0, 8192), 8192, 1, False)
    flops = 2 * LLAMA_8B.active_params * 8192
    mfu = flops / seconds / (H100.bf16_tflops * 1e12)
    assert 0.8 * VLLM.prefill_mfu < mfu < VLLM.prefill_mfu


def test_tensor_parallel_lowers_step_time_but_pays_for_all_reduces() -> None:
    tp1, tp2 = make_plan(), make_plan(tp=2)
    assert allreduce_time(build_costs(LLAMA_8B, H100, tp1, VLLM), 4096.0) == 0
    comm = allreduce_time(build_costs(LLAMA_8B, H100, tp2, VLLM), 4096.0)
    assert comm > 0
    for args in (
        (4096, prefill_attended(0, 4096), 4096, 1, False),
        (256, 256 * 1000, 256 * 1000, 256, True),
    ):
        t1, t2 = cost(tp1, *args), cost(tp2, *args)
        assert t1 / 2 < t2 < t1


def test_pipeline_parallel_adds_a_bubble_for_one_sequence_but_helps_a_full_batch() -> None:
    pp1, pp2 = make_plan(), make_plan(pp=2)
    single = (1, 1000, 1000, 1, True)
    assert cost(pp2, *single) > cost(pp1, *single)
    full = (256, 256 * 2000, 256 * 2000, 256, True)
    assert cost(pp2, *full) < cost(pp1, *full)


def test_moe_reads_only_the_experts_its_tokens_route_to() -> None:
    mixtral = ModelSpec.model_validate("Mixtral-8x7B")
    plan = make_plan(tp=2)
    costs = build_costs(mixtral, H100, plan, VLLM)
    all_bytes = mixtral.params_b * 1e9 * 2 / 2
    assert costs.dense_weight_bytes + 8 * costs.expert_bytes == pytest.approx(all_bytes)
    one = cost(plan, 1, 100, 100, 1, True, model=mixtral)
    many = cost(plan, 64, 6400, 6400, 64, True, model=mixtral)
    assert one < many
    # one token touches 2 of 8 experts: well under the dense read time of all weights
    assert one < 0.6 * all_bytes / costs.bytes_per_s


def test_compute_dtype_without_tensor_cores_falls_back_to_bf16_rate() -> None:
    a100 = HardwareSpec(gpu="A100-80GB").gpu_info
    fp8 = build_costs(LLAMA_8B, a100, make_plan(weight_dtype="fp8", compute_dtype="fp8"), VLLM)
    bf16 = build_costs(LLAMA_8B, a100, make_plan(), VLLM)
    assert fp8.flops_per_s < bf16.flops_per_s  # bf16 peak, minus the weight-only dequant cost
    h100_fp8 = build_costs(LLAMA_8B, H100, make_plan(weight_dtype="fp8", compute_dtype="fp8"), VLLM)
    assert (
        1.3 < h100_fp8.flops_per_s / build_costs(LLAMA_8B, H100, make_plan(), VLLM).flops_per_s < 2
    )


def test_eager_mode_costs_more_per_decode_step() -> None:
    graphs = cost(make_plan(), 64, 64_000, 64_000, 64, True)
    eager = cost(make_plan(cuda_graphs=False), 64, 64_000, 64_000, 64, True)
    assert eager > graphs + 0.001


def test_trtllm_profile_is_faster_than_vllm_at_high_batch_decode() -> None:
    trt = load_profile("trtllm")
    args = (np.array([256]), np.array([256_000]), np.array([256_000]), np.array([256]), True)
    t_vllm = step_time(build_costs(LLAMA_8B, H100, make_plan(), VLLM), *args)[0]
    t_trt = step_time(build_costs(LLAMA_8B, H100, make_plan(), trt), *args)[0]
    assert 1.05 < t_vllm / t_trt < 1.35


def test_fitted_profile_loads_by_path_and_inherits_its_base(tmp_path) -> None:
    path = tmp_path / "fitted.yaml"
    path.write_text(yaml.safe_dump({"base": "vllm", "name": "h100-lab", "prefill_mfu": 0.42}))
    fitted = load_profile("vllm", str(path))
    assert fitted.name == "h100-lab" and fitted.prefill_mfu == 0.42
    assert fitted.decode_bw_efficiency == VLLM.decode_bw_efficiency
    version = profile_version(str(path))
    assert version.startswith("h100-lab@") and version != profile_version("vllm")
    assert profile_version(None).startswith("builtin@")


def test_bad_profiles_fail_with_the_name(tmp_path) -> None:
    with pytest.raises(SpecError, match="nope"):
        load_profile("vllm", "nope")
    path = tmp_path / "typo.yaml"
    path.write_text("prefil_mfu: 0.5\n")
    with pytest.raises(SpecError, match="prefil_mfu"):
        load_profile("vllm", str(path))


def test_unknown_engine_falls_back_to_the_vllm_profile() -> None:
    assert load_profile("sglang").prefill_mfu == VLLM.prefill_mfu


@pytest.mark.parametrize(
    ("changes", "low", "high"),
    [
        ({}, 1.0, 1.0),
        ({"weight_dtype": "fp8", "compute_dtype": "fp8"}, 0.995, 0.999),
        ({"kv_dtype": "fp8"}, 0.997, 0.999),
        ({"weight_dtype": "int8", "compute_dtype": "int8"}, 0.98, 0.995),
        ({"weight_dtype": "int4"}, 0.98, 0.99),
        ({"weight_dtype": "int4", "compute_dtype": "fp8"}, 0.98, 0.99),
        ({"weight_dtype": "fp4", "compute_dtype": "fp4"}, 0.98, 0.99),
        ({"weight_dtype": "fp8", "compute_dtype": "fp8", "kv_dtype": "fp8"}, 0.99, 0.998),
    ],
)
def test_every_precision_gets_an_accuracy_estimate(changes: dict, low: float, high: float) -> None:
    assert low <= estimated_accuracy(make_plan(**changes)) <= high


def _with(**constants: object):
    return dataclasses.replace(VLLM, **constants)


def _step(profile, plan: ServingPlan, seqs: int, decode: bool = True) -> float:
    costs = build_costs(LLAMA_8B, H100, plan, profile)
    args = (np.array([seqs]), np.array([seqs * 512]), np.array([seqs * 512]), np.array([seqs]))
    return float(step_time(costs, *args, decode)[0])


def test_the_eager_cost_grows_with_the_batch_and_only_without_cuda_graphs() -> None:
    """The campaign's eager TPOT exceeded graphs' by more at 48 sequences than at 8: the
    per-sequence part follows the batch, the per-step part does not, and neither touches a
    plan with CUDA graphs (decode or mixed steps)."""
    fitted = _with(eager_per_seq_s=2e-4, eager_step_s=3e-3)
    eager, graphs = make_plan(cuda_graphs=False), make_plan()
    extra = [_step(fitted, eager, s) - _step(VLLM, eager, s) for s in (8, 48)]
    assert extra[0] == pytest.approx(3e-3 + 8 * 2e-4, rel=1e-6)
    assert extra[1] == pytest.approx(3e-3 + 48 * 2e-4, rel=1e-6)
    for decode in (True, False):
        assert _step(fitted, graphs, 48, decode) == _step(VLLM, graphs, 48, decode)
    mixed = _step(fitted, eager, 8, False) - _step(VLLM, eager, 8, False)
    assert mixed == pytest.approx(extra[0], rel=1e-6)


def test_a_kv_dtypes_per_sequence_cost_applies_to_that_dtype_only() -> None:
    fitted = _with(kv_per_seq_s={"fp8": 3e-5})
    fp8 = make_plan(kv_dtype="fp8")
    assert _step(fitted, fp8, 48) - _step(VLLM, fp8, 48) == pytest.approx(48 * 3e-5, rel=1e-6)
    assert _step(fitted, make_plan(), 48) == _step(VLLM, make_plan(), 48)


def test_neutral_late_constants_keep_a_profiles_label(tmp_path) -> None:
    """Constants added at 0 leave the label of a profile made before them unchanged (stored
    trials and cached search grids carry it); a non-zero value changes it."""
    plain, zeros, set_ = (tmp_path / f"{n}.yaml" for n in ("plain", "zeros", "set"))
    plain.write_text(yaml.safe_dump({"base": "vllm", "name": "lab", "prefill_mfu": 0.5}))
    late = {
        "eager_per_seq_s": 0.0,
        "eager_step_s": 0.0,
        "admission_delay_per_stream_s": 0.0,
        "prefix_reads_shared": 0.0,
    }
    zeros.write_text(
        yaml.safe_dump(
            {"base": "vllm", "name": "lab", "prefill_mfu": 0.5, **late, "kv_per_seq_s": {"fp8": 0}}
        )
    )
    set_.write_text(
        yaml.safe_dump({"base": "vllm", "name": "lab", "prefill_mfu": 0.5, "eager_step_s": 1e-3})
    )
    assert profile_version(str(plain)) == profile_version(str(zeros))
    assert profile_version(str(set_)) != profile_version(str(plain))


def test_the_engine_cores_work_beside_the_gpu_lengthens_only_steps_shorter_than_it() -> None:
    """host_per_seq_s runs beside the GPU: a step lasts the longer of the two, never their sum.
    SmolLM2-135M's decode step at 256 sequences is a fraction of the 8.4 ms the host needs;
    Llama-8B's prefill of 8k tokens takes far longer, so the host's share hides behind it."""
    small = ModelSpec.model_validate("SmolLM2-135M")
    plan = make_plan()
    host = dataclasses.replace(VLLM, host_per_seq_s=33e-6)
    none = dataclasses.replace(VLLM, host_per_seq_s=0.0)
    args = (np.array([256]), np.array([256 * 500]), np.array([256 * 500]), np.array([256]))
    gpu_only = float(step_time(build_costs(small, H100, plan, none), *args, True)[0])
    with_host = float(step_time(build_costs(small, H100, plan, host), *args, True)[0])
    assert gpu_only < 256 * 33e-6 / 2
    assert with_host == pytest.approx(256 * 33e-6)
    prefill = (np.array([8192]), np.array([8192 * 4096]), np.array([0]), np.array([8]))
    long_gpu = float(step_time(build_costs(LLAMA_8B, H100, plan, none), *prefill, False)[0])
    long_host = float(step_time(build_costs(LLAMA_8B, H100, plan, host), *prefill, False)[0])
    assert long_host == long_gpu
