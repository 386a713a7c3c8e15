"""What is served and where: model architecture and hardware, as validated records.

Both are written by users in a study spec (by catalogue name or in full) and read by every engine:
the real ones to start servers, the simulator to cost each step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.catalog import catalog_entry
from engines.errors import SpecError

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(BaseModel):
    """A transformer's shape: enough to count its FLOPs, weight bytes and KV-cache bytes.

    Give a catalogue name (``Llama-3.1-8B``), a full architecture, or ``config_json`` (a Hugging
    Face config.json, read for the shape). ``path`` is what a real server is started with (a model
    directory or hub id); it defaults to the name.
    """

    model_config = _STRICT

    name: str
    params_b: float = Field(gt=0, description="total parameters, billions")
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_context: int = Field(gt=0)
    num_experts: int | None = Field(default=None, gt=0)
    experts_per_token: int | None = Field(default=None, gt=0)
    active_params_b: float | None = Field(default=None, gt=0)
    path: str | None = None
    quantized_checkpoints: dict[str, str] = Field(
        default_factory=dict,
        description="precision -> pre-quantized checkpoint (e.g. fp8: /ckpt/llama-fp8)",
    )
    draft_path: str | None = Field(
        default=None,
        description="a smaller model with the same vocabulary (directory or hub id) for "
        "draft-model speculative decoding: vLLM's speculative_config.model",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return catalog_entry("models", data)
        if isinstance(data, dict) and "config_json" in data:
            data = dict(data)
            data = {**_read_hf_config(Path(data.pop("config_json"))), **data}
        elif (
            isinstance(data, dict)
            and "name" in data
            and set(data) <= {"name", "path", "quantized_checkpoints", "draft_path"}
        ):
            data = {**catalog_entry("models", data["name"]), **data}
        return data

    @model_validator(mode="after")
    def _check_shape(self) -> ModelSpec:
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if (self.num_experts is None) != (self.experts_per_token is None):
            raise ValueError("num_experts and experts_per_token go together")
        return self

    @property
    def serve_path(self) -> str:
        """What to hand a real server: the model directory or hub id."""
        return self.path or self.name

    @property
    def active_params(self) -> float:
        """Parameters touched per token (all of them unless mixture-of-experts)."""
        return (self.active_params_b or self.params_b) * 1e9


def _read_hf_config(path: Path) -> dict[str, Any]:
    """Map a Hugging Face config.json onto ModelSpec fields, estimating the parameter count."""
    try:
        cfg = json.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"model.config_json: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"model.config_json: {path} is not JSON ({exc.msg})") from None
    if not isinstance(cfg, dict):
        raise SpecError(
            f"model.config_json: {path} holds a JSON {type(cfg).__name__}, not a model config"
        )

    def size(key: str, default: Any = None) -> int:
        value = cfg.get(key, default)
        if value is None and default is None and key not in cfg:
            raise SpecError(f"model.config_json: {path} lacks {key!r}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(
                f"model.config_json: {path}: {key} must be a positive whole number (got {value!r})"
            )
        return value

    hidden = size("hidden_size")
    heads = size("num_attention_heads")
    layers = size("num_hidden_layers")
    inter = size("intermediate_size")
    vocab = size("vocab_size")
    kv_heads = size("num_key_value_heads", heads)
    head_dim = (
        size("head_dim", hidden // heads or 1)
        if cfg.get("head_dim") is not None
        else (hidden // heads)
    )
    if head_dim < 1:
        raise SpecError(f"model.config_json: {path}: hidden_size {hidden} < {heads} heads")
    experts = size("num_local_experts") if cfg.get("num_local_experts") is not None else None
    per_layer_attn = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
    per_layer_mlp = 3 * hidden * inter * (experts or 1)
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    params = layers * (per_layer_attn + per_layer_mlp) + embed
    out: dict[str, Any] = {
        "name": cfg.get("_name_or_path") or path.parent.name,
        "params_b": round(params / 1e9, 3),
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "max_context": size("max_position_embeddings", 4096),
        "path": str(path.parent),
    }
    if experts:
        top_k = size("num_experts_per_tok", 2)
        active = layers * (per_layer_attn + 3 * hidden * inter * top_k) + embed
        out.update(
            num_experts=int(experts),
            experts_per_token=top_k,
            active_params_b=round(active / 1e9, 3),
        )
    return out


class GpuSpec(BaseModel):
    """One GPU model's datasheet numbers (dense, no sparsity)."""

    model_config = _STRICT

    name: str
    memory_gib: float = Field(gt=0)
    memory_bandwidth_gbps: float = Field(gt=0, description="HBM/GDDR GB/s")
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: float | None = Field(default=None, gt=0)
    int8_tops: float | None = Field(default=None, gt=0)
    fp4_tflops: float | None = Field(default=None, gt=0)
    interconnect_gbps: float = Field(gt=0, description="per-GPU GPU-to-GPU GB/s (NVLink or PCIe)")
    compute_capability: float
    tdp_watts: float = Field(gt=0)
    price_per_hour_usd: float = Field(gt=0)
    source: str

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30


class HardwareSpec(BaseModel):
    """Which GPUs and how many; ``gpu`` is a catalogue name, price overrides the catalogue's."""

    model_config = _STRICT

    gpu: str
    count: int = Field(default=1, ge=1, le=64)
    price_per_gpu_hour_usd: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _check_gpu(cls, data: Any) -> Any:
        if isinstance(data, dict) and "gpu" in data:
            data = {**data, "gpu": catalog_entry("gpus", str(data["gpu"]))["name"]}
        return data

    @property
    def gpu_info(self) -> GpuSpec:
        """The catalogue entry of this GPU."""
        return GpuSpec(**catalog_entry("gpus", self.gpu))

    @property
    def price_per_gpu_hour(self) -> float:
        return self.price_per_gpu_hour_usd or self.gpu_info.price_per_hour_usd
