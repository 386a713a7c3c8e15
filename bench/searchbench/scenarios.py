"""The benchmark's scenarios: study specs on the ``sim`` engine whose spaces are small enough to
enumerate exactly (every option a ``choices`` list or pinned).

Each scenario is an ordinary :class:`~tuner.spec.StudySpec`, so the spaces, rules and SLOs are
exactly what ``servetune run`` would search.
"""

from __future__ import annotations

from typing import Any

from tuner.spec import StudySpec, parse_spec

SLO_CHAT = {"ttft_p99_ms": 2000.0, "tpot_p99_ms": 40.0}

_VLLM_1GPU = {
    "dtype": {"value": "bfloat16"},
    "quantization": {"choices": [None, "fp8"]},
    "kv_cache_dtype": {"choices": ["auto", "fp8"]},
    "gpu_memory_utilization": {"choices": [0.85, 0.9, 0.95]},
    "max_num_seqs": {"choices": [16, 32, 64, 128, 256, 512]},
    "max_num_batched_tokens": {"choices": [1024, 2048, 4096, 8192, 16384]},
    "max_model_len": {"value": 8192},
    "enable_prefix_caching": {"value": True},
    "enable_chunked_prefill": {"choices": [True, False]},
    "enforce_eager": {"choices": [False, True]},
    "block_size": {"value": 16},
}


def _spec(name: str, **fields: Any) -> StudySpec:
    data = {
        "name": name,
        "runner": "sim",
        "seed": 0,
        "baseline": False,
        "objectives": ["output_tokens_per_s", "ttft_p99_ms"],
        **fields,
    }
    return parse_spec(data, f"scenario {name}")


def scenarios() -> dict[str, StudySpec]:
    """Every scenario by name (specs are built fresh; cheap)."""
    chat = {"preset": "chat", "num_requests": 160}
    return {
        "8b-chat-h100": _spec(
            "8b-chat-h100",
            model="Llama-3.1-8B",
            hardware={"gpu": "H100-SXM", "count": 1},
            workload=chat,
            engines={"vllm": _VLLM_1GPU},
            slos=SLO_CHAT,
        ),
        "8b-longctx-h100": _spec(
            "8b-longctx-h100",
            model="Llama-3.1-8B",
            hardware={"gpu": "H100-SXM", "count": 1},
            workload={
                "preset": "summarization",
                "num_requests": 80,
                "arrival": {"kind": "concurrency", "concurrency": 16},
            },
            engines={
                "vllm": {
                    **_VLLM_1GPU,
                    "max_model_len": {"value": 16384},
                    "max_num_batched_tokens": {"choices": [2048, 4096, 8192, 16384]},
                    "max_num_seqs": {"choices": [8, 16, 32, 64, 128]},
                }
            },
            slos={"ttft_p99_ms": 8000.0, "tpot_p99_ms": 60.0},
        ),
        "70b-chat-8xh100": _spec(
            "70b-chat-8xh100",
            model="Llama-3.1-70B",
            hardware={"gpu": "H100-SXM", "count": 8},
            workload=chat,
            engines={
                "vllm": {
                    **_VLLM_1GPU,
                    "tensor_parallel_size": {"choices": [1, 2, 4, 8]},
                    "pipeline_parallel_size": {"choices": [1, 2, 4]},
                    "gpu_memory_utilization": {"choices": [0.9, 0.95]},
                    "max_num_seqs": {"choices": [32, 64, 128, 256]},
                    "max_num_batched_tokens": {"choices": [2048, 4096, 8192]},
                    "enforce_eager": {"value": False},
                }
            },
            slos={"ttft_p99_ms": 3000.0, "tpot_p99_ms": 60.0},
        ),
        "8b-both-engines": _spec(
            "8b-both-engines",
            model="Llama-3.1-8B",
            hardware={"gpu": "H100-SXM", "count": 1},
            workload=chat,
            slos=SLO_CHAT,
            engines={
                "vllm": {
                    **_VLLM_1GPU,
                    "enforce_eager": {"value": False},
                    "gpu_memory_utilization": {"choices": [0.9, 0.95]},
                },
                "trtllm": {
                    "backend": {"value": "pytorch"},
                    "dtype": {"value": "bfloat16"},
                    "quantization": {"value": None},
                    "kv_cache_dtype": {"choices": ["auto", "fp8"]},
                    "kv_cache_free_gpu_memory_fraction": {"choices": [0.85, 0.9, 0.95]},
                    "max_batch_size": {"choices": [16, 32, 64, 128, 256, 512]},
                    "max_num_tokens": {"choices": [1024, 2048, 4096, 8192, 16384]},
                    "max_seq_len": {"value": 8192},
                    "tp_size": {"value": 1},
                    "pp_size": {"value": 1},
                    "enable_block_reuse": {"value": True},
                    "enable_chunked_prefill": {"choices": [True, False]},
                    "cuda_graphs": {"choices": [True, False]},
                },
            },
        ),
    }


def failure_scenario() -> StudySpec:
    """The 8B chat scenario, measured by an engine that also fails by a hidden memory rule."""
    return scenarios()["8b-chat-h100"]


def reality_profile_path() -> str:
    """The perturbed profile that plays 'reality' in the sim-to-real warm-start measurement."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "reality_profile.yaml")


def reality_scenario() -> StudySpec:
    """The 8B chat scenario measured with the perturbed 'reality' profile."""
    return scenarios()["8b-chat-h100"].model_copy(update={"sim_profile": reality_profile_path()})
