"""Engine efficiency profiles: how close each engine gets to the GPU's roofline.

Built-in profiles live in ``engines/data/sim_profiles.yaml``, one per engine, every constant with
its source. A calibration run can write a fitted profile to ``engines/data/profiles/<name>.yaml``
(or anywhere, then named by path); it may set ``base: vllm`` and override only what it fitted.
Constants are written either bare (``prefill_mfu: 0.5``) or with a source
(``prefill_mfu: {value: 0.5, source: "..."}``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from engines.catalog import load_data
from engines.errors import SpecError

log = logging.getLogger(__name__)

FITTED_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"
FALLBACK_ENGINE = "vllm"  # engines without a profile of their own are costed like vLLM


@dataclass(frozen=True)
class EngineProfile:
    """Efficiency constants of one engine (fractions of peak, seconds of overhead)."""

    name: str
    prefill_mfu: float  # share of the dtype's peak FLOP/s large GEMMs reach
    decode_bw_efficiency: float  # share of HBM bandwidth weight and KV reads reach
    step_overhead_graph_s: float  # CPU cost of a decode-only step replayed from CUDA graphs
    step_overhead_eager_s: float  # CPU cost of a step launched eagerly (mixed or graphs off)
    eager_launch_s_per_layer: float  # extra kernel-launch time per layer without graphs
    step_overhead_per_seq_s: float  # per-sequence scheduling, sampling and detokenising
    allreduce_efficiency: float  # share of the interconnect bandwidth an all-reduce reaches
    allreduce_latency_s: float  # fixed cost of one all-reduce
    stage_transfer_latency_s: float  # hand-off of activations between pipeline stages
    weight_only_compute_efficiency: float  # GEMM slowdown dequantising int4/fp8 weights inline
    compute_efficiency: Mapping[str, float] = field(default_factory=dict)  # by compute dtype
    weight_bandwidth_efficiency: Mapping[str, float] = field(default_factory=dict)  # by weights
    kv_bandwidth_efficiency: Mapping[str, float] = field(default_factory=dict)  # by KV dtype
    # Arrival at the server -> first schedulable, in the API server (HTTP, tokenization, and its
    # queue while it streams hundreds of responses). Under a closed loop it decides whether
    # prefills trickle in one per step or gather into full-budget waves (TTFT p50 on the H100
    # and H200 runs: docs/calibration.md). 0 in the built-in profiles; `servetune calibrate`
    # fits it.
    admission_delay_s: float = 0.0
    # The same delay's part per request already in flight: the fit at 256 clients (41 ms on the
    # H100) overshot light loads, where the campaign's chat turns at 8 clients waited ~10 ms.
    # 0 in the built-ins.
    admission_delay_per_stream_s: float = 0.0
    # Per sequence in every step of a plan without CUDA graphs (enforce_eager): the campaign's
    # eager TPOT grew with the batch, 10 ms over graphs at 8 sequences and 17 ms at 48
    # (docs/simulator.md), which one fixed per-step cost cannot follow. 0 in the built-ins.
    eager_per_seq_s: float = 0.0
    # Per step of a plan without CUDA graphs, on top of the eager launch cost that mixed steps
    # of a graphed plan pay too: the unfused, uncompiled model's fixed cost (the same data's
    # intercept). 0 in the built-ins.
    eager_step_s: float = 0.0
    # Per sequence in every step, by KV-cache dtype: the fixed cost of an attention path that
    # dequantises the cache (scales, a second kernel), which is why an fp8 cache was no faster
    # than bf16 at contexts under ~1k and faster only at long ones. 0 in the built-ins.
    kv_per_seq_s: Mapping[str, float] = field(default_factory=dict)
    # Share of the per-sequence reads of a cached shared prefix's KV that the sequences sharing
    # it save by reading it together, as vLLM's cascade attention does for a long common
    # prefix: 0 (the built-ins) reads it once per sequence, 1 once per step.
    prefix_reads_shared: float = 0.0
    # The host's two processes run beside the GPU (vLLM V1 with async scheduling): the engine
    # core's scheduling and output handling, per sequence in a step, makes a step as long as
    # the longer of it and the GPU's work; one API server's streaming (detokenising, SSE frames,
    # its share of HTTP and tokenising), per token it writes, shared by `api_servers` processes,
    # queues behind the engine and delays what clients see (bench/sim_host_limits.py,
    # docs/simulator.md).
    host_per_seq_s: float = 0.0
    api_per_token_s: float = 0.0


def strip_sources(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Strip ``{value, source}`` wrappers, recursively, leaving plain numbers."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and "value" in value:
            out[key] = value["value"]
        elif isinstance(value, Mapping):
            out[key] = strip_sources(value)
        else:
            out[key] = value
    return out


def _builtin() -> dict[str, dict[str, Any]]:
    return {name: strip_sources(raw) for name, raw in load_data("sim_profiles")["profiles"].items()}


@lru_cache(maxsize=64)
def _read_file(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SpecError(f"sim profile: cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise SpecError(f"sim profile: {path} must hold a mapping")
    return data


def _resolve(engine_name: str, profile: str | None) -> tuple[str, dict[str, Any]]:
    """Find the constants a profile reference names: built-in, fitted by name, or a file path."""
    builtin = _builtin()
    if profile is None or profile in builtin:
        name = profile or engine_name
        if name not in builtin:
            log.warning("no sim profile for engine %r; using the %s profile", name, FALLBACK_ENGINE)
            name = FALLBACK_ENGINE
        return name, builtin[name]
    path = Path(profile)
    if not path.suffix:
        path = FITTED_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(builtin))
        raise SpecError(f"sim profile {profile!r}: not a built-in ({known}) nor a file ({path})")
    raw = strip_sources(_read_file(str(path.resolve())))
    base = raw.pop("base", engine_name if engine_name in builtin else FALLBACK_ENGINE)
    if base not in builtin:
        raise SpecError(f"sim profile {path}: base {base!r} is not one of {', '.join(builtin)}")
    merged = {**builtin[base], **raw.pop("constants", {}), **raw}
    return str(merged.pop("name", path.stem)), merged


def load_profile(engine_name: str, profile: str | None = None) -> EngineProfile:
    """The efficiency profile to cost ``engine_name`` with (``profile`` overrides the built-in)."""
    name, constants = _resolve(engine_name, profile)
    known = {f.name for f in fields(EngineProfile)}
    unknown = set(constants) - known - {"description", "source", "sources"}
    if unknown:
        raise SpecError(f"sim profile {name!r}: unknown constants {', '.join(sorted(unknown))}")
    try:
        return EngineProfile(
            name=name, **{k: v for k, v in constants.items() if k in known and k != "name"}
        )
    except TypeError as exc:
        raise SpecError(f"sim profile {name!r}: {exc}") from None


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def profile_version(profile: str | None) -> str:
    """``name@hash`` of the constants a trial is costed with (all built-ins when ``None``)."""
    if profile is None:
        builtin = {name: _without_neutral(c) for name, c in _builtin().items()}
        return f"builtin@{_digest(builtin)}"
    return profile_label(load_profile(FALLBACK_ENGINE, profile))


_ADDED_LATER = (
    "admission_delay_s",
    "admission_delay_per_stream_s",
    "eager_per_seq_s",
    "eager_step_s",
    "kv_per_seq_s",
    "prefix_reads_shared",
    "host_per_seq_s",
    "api_per_token_s",
)


def _neutral(value: Any) -> bool:
    """A constant that changes nothing: 0, or a per-dtype map of zeros."""
    if isinstance(value, Mapping):
        return not any(value.values())
    return not value


def profile_label(loaded: EngineProfile) -> str:
    """``name@hash`` of one loaded profile, stored with every simulated trial."""
    return f"{loaded.name}@{_digest(_without_neutral(asdict(loaded)))}"


def _without_neutral(constants: Mapping[str, Any]) -> dict[str, Any]:
    """``constants`` less those added later that are at their neutral 0, so the labels of
    profiles made before they existed stand (stored trials, cached search grids)."""
    return {k: v for k, v in constants.items() if not (k in _ADDED_LATER and _neutral(v))}
