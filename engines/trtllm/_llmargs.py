"""The ``--extra_llm_api_options`` YAML: what servetune writes there, checked against the release.

TensorRT-LLM's LlmArgs are pydantic models with ``extra="forbid"``: one key the pinned release
does not know stops ``trtllm-serve`` before the model loads. The allowed keys live in
``engines/data/trtllm_llmargs.yaml`` (with the source version they were read from); both the
engine and the ``trtllm-serve`` stand-in check against them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from engines.catalog import load_data
from engines.errors import EngineError

BACKENDS = ("pytorch", "tensorrt")


def allowed_top_level(backend: str) -> frozenset[str]:
    """Top-level LlmArgs keys the pinned release accepts on ``backend``."""
    data = load_data("trtllm_llmargs")
    return frozenset(data["common"]) | frozenset(data["backends"][backend])


def llmargs_release() -> str:
    """The TensorRT-LLM release the key list was taken for."""
    return str(load_data("trtllm_llmargs")["release"])


def unknown_keys(options: Mapping[str, Any], backend: str) -> list[str]:
    """Dotted paths of keys pydantic would reject as ``extra_forbidden`` (empty when all fine).

    Nested configs are checked where the data file lists their fields; a nested value of ``None``
    (``cuda_graph_config: null`` disables CUDA graphs) has nothing to check.
    """
    nested = load_data("trtllm_llmargs")["nested"]
    bad = sorted(set(options) - allowed_top_level(backend))
    for path, fields in nested.items():
        value: Any = options
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, Mapping):
            bad += [f"{path}.{key}" for key in sorted(set(value) - set(fields))]
    return bad


def llm_api_options(config: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """The YAML body for ``config``: everything ``trtllm-serve`` has no flag for.

    Not written: ``scheduler_config`` (a YAML value replaces serve's whole default, which carries
    the dynamic batch tuning), ``quant_config``/``build_config`` (the checkpoint or the engine
    directory supplies them). On the TensorRT backend ``kv_cache_config.dtype`` must stay
    ``auto`` (an FP8 KV cache is baked in by ``quantize.py --kv_cache_dtype fp8``) and ``dtype``
    comes from the engine.
    """
    kv: dict[str, Any] = {
        "free_gpu_memory_fraction": float(config["kv_cache_free_gpu_memory_fraction"]),
        "enable_block_reuse": bool(config.get("enable_block_reuse", True)),
    }
    options: dict[str, Any] = {}
    if backend == "pytorch":
        options["dtype"] = config.get("dtype", "bfloat16")
        kv["dtype"] = config.get("kv_cache_dtype", "auto")
    options["kv_cache_config"] = kv
    options["enable_chunked_prefill"] = bool(config.get("enable_chunked_prefill", False))
    if backend == "pytorch":
        # Default-constructed means graphs on; null turns them off. Padding lets batches between
        # captured sizes still replay a graph.
        options["cuda_graph_config"] = (
            {"enable_padding": True} if config.get("cuda_graphs", True) else None
        )
    return options


def checked(options: dict[str, Any], backend: str) -> dict[str, Any]:
    """``options`` unchanged, or EngineError(invalid_argument) naming the first disallowed key."""
    bad = unknown_keys(options, backend)
    if bad:
        raise EngineError(
            "invalid_argument",
            f"extra_llm_api_options key {bad[0]!r} is not accepted by TensorRT-LLM "
            f"{llmargs_release()} (backend {backend}); allowed keys are listed in "
            "engines/data/trtllm_llmargs.yaml",
        )
    return options


def options_text(options: Mapping[str, Any]) -> str:
    """The YAML file's text, headed by the release it was checked against."""
    return (
        f"# extra_llm_api_options for trtllm-serve (TensorRT-LLM {llmargs_release()})\n"
        + yaml.safe_dump(dict(options), sort_keys=False)
    )


def write_options(options: Mapping[str, Any], directory: Path) -> Path:
    """Write the YAML under ``directory``, named by its content (idempotent, safe to share)."""
    text = options_text(options)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"trtllm-extra-options-{digest}.yaml"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path
