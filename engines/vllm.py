"""vLLM: its search space, rules and export, under the names `vllm serve` uses.

Option names follow vLLM's EngineArgs (underscored in configs, dashed on the command line and
in ``vllm serve --config`` YAML). The real measurement path starts ``vllm serve`` through the
shared server lifecycle in :mod:`engines.serving.measure` and drives it with the shared load generator.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from engines.base import Config, ExportBundle, Param, RunContext, ServingPlan
from engines.served import ServedEngine
from engines.specs import HardwareSpec, ModelSpec

VLLM_VERSION = "0.26.0"
_WEIGHTS = {None: None, "fp8": ("fp8", "fp8"), "awq": ("int4", "bf16"), "gptq": ("int4", "bf16")}
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "auto": "bf16"}
# Booleans whose vLLM default is True: False must be spelled --no-<flag>.
_DEFAULT_TRUE = {"enable_prefix_caching", "enable_chunked_prefill", "async_scheduling"}
# Options vLLM takes inside its JSON --compilation-config, not as flags of their own.
_COMPILATION_CONFIG = ("cudagraph_mode",)
_CUDAGRAPH_MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")
_ATTENTION_BACKENDS = ("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION")


def _parallel_choices(count: int) -> tuple[int, ...]:
    return tuple(n for n in (1, 2, 4, 8, 16) if n <= count)


def _knob(name: str, default: Any, help: str) -> Param:
    """An option pinned at vLLM's default: searched only where a spec widens it
    (``stream_interval: {choices: [1, 8]}``), so studies that do not name it search as before."""
    return Param(name, "categorical", (default,), default=default, help=help)


def _knobs() -> list[Param]:
    """The knobs past precision and batch size (issue 26), as vLLM 0.26.0 names them, at its
    defaults (read from its ``engine/arg_utils.py`` and ``config/*.py``). The simulator models
    none of them: it costs a config through :meth:`VllmEngine.plan`, which ignores them."""
    return [
        _knob(
            "async_scheduling",
            True,
            "overlap scheduling with the GPU step; 0.26.0 turns it on unless an option excludes it "
            "(False: --no-async-scheduling)",
        ),
        _knob(
            "stream_interval",
            1,
            "tokens per streamed chunk (>= 1): larger cuts host overhead, streams coarser",
        ),
        _knob(
            "max_num_partial_prefills",
            1,
            "prompts partially prefilled at once (>1 needs chunked prefill); 0.26.0's scheduler "
            "reads it only to default long_prefill_token_threshold to 4% of max_model_len",
        ),
        _knob(
            "long_prefill_token_threshold",
            0,
            "cap on one request's prefill tokens per step (0: no cap)",
        ),
        _knob(
            "max_cudagraph_capture_size",
            None,
            "largest batch (tokens) captured as a CUDA graph; None: min(2 x max_num_seqs, 512), "
            "at most max_num_batched_tokens",
        ),
        _knob(
            "cudagraph_mode",
            None,
            "--compilation-config's cudagraph_mode: " + ", ".join(_CUDAGRAPH_MODES) + "; None: "
            "the -O level's (O2, the default: FULL_AND_PIECEWISE)",
        ),
        _knob(
            "attention_backend",
            None,
            ", ".join(_ATTENTION_BACKENDS) + "...; None: chosen by vLLM (FLASH_ATTN on Hopper, "
            "FA3 there also for an fp8 KV cache)",
        ),
        _knob(
            "performance_mode",
            "balanced",
            "balanced, interactivity, throughput; in 0.26.0 throughput only doubles max_num_seqs "
            "and max_num_batched_tokens where they are not set (servetune sets both), "
            "interactivity captures CUDA graphs of every size up to 32",
        ),
        _knob(
            "api_server_count",
            1,
            "API server processes in front of the engine (vllm serve --api-server-count)",
        ),
        _knob(
            "scheduling_policy",
            "fcfs",
            "fcfs or priority (by each request's priority field; servetune's load sends none)",
        ),
        _knob(
            "kv_offloading_size",
            None,
            "GiB of CPU memory for offloaded KV cache blocks; None: no offloading",
        ),
    ]


_KNOB_DEFAULTS = {p.name: p.default for p in _knobs()}


def _knob_rules(config: Config, ctx: RunContext) -> list[str]:
    """What vLLM 0.26.0 refuses at start among the knobs (SchedulerConfig's checks)."""
    reasons = []
    partial = int(config.get("max_num_partial_prefills", 1))
    if partial > 1 and not config.get("enable_chunked_prefill", True):
        reasons.append(f"max_num_partial_prefills={partial} needs enable_chunked_prefill")
    threshold = int(config.get("long_prefill_token_threshold", 0))
    max_len = int(config.get("max_model_len", ctx.model.max_context))
    if threshold > max_len:
        reasons.append(f"long_prefill_token_threshold={threshold} exceeds max_model_len={max_len}")
    return reasons


class VllmEngine(ServedEngine):
    """``vllm serve`` with the options that matter for throughput and latency."""

    name = "vllm"
    label = f"vLLM {VLLM_VERSION}"
    key_options = (
        "max_num_seqs",
        "max_num_batched_tokens",
        "tensor_parallel_size",
        "pipeline_parallel_size",
    )

    def space(self, model: ModelSpec, hardware: HardwareSpec) -> list[Param]:
        big_gpu = hardware.gpu_info.memory_gib >= 70
        quant: tuple[Any, ...] = (None, "fp8") + tuple(
            q for q in ("awq", "gptq") if q in model.quantized_checkpoints
        )
        par = _parallel_choices(hardware.count)
        return [
            Param("dtype", "categorical", ("bfloat16", "float16"), default="bfloat16"),
            Param(
                "quantization",
                "categorical",
                quant,
                default=None,
                help="fp8: online W8A8; awq/gptq: int4 weights from a pre-quantized checkpoint",
            ),
            Param("kv_cache_dtype", "categorical", ("auto", "fp8"), default="auto"),
            Param("gpu_memory_utilization", "float", low=0.80, high=0.95, step=0.01, default=0.92),
            Param(
                "max_num_seqs", "int", low=16, high=1024, log=True, default=1024 if big_gpu else 256
            ),
            Param(
                "max_num_batched_tokens",
                "int",
                low=1024,
                high=32768,
                log=True,
                default=8192 if big_gpu else 2048,
            ),
            Param("max_model_len", "categorical", (model.max_context,), default=model.max_context),
            Param("tensor_parallel_size", "categorical", par, default=1),
            Param("pipeline_parallel_size", "categorical", par, default=1),
            Param("enable_prefix_caching", "categorical", (True, False), default=True),
            Param("enable_chunked_prefill", "categorical", (True, False), default=True),
            Param("enforce_eager", "categorical", (False, True), default=False),
            Param("block_size", "categorical", (16, 32), default=16),
            *_knobs(),
        ]

    def plan(self, config: Config, ctx: RunContext) -> ServingPlan:
        model_dtype = _DTYPES[config.get("dtype", "bfloat16")]
        weights = _WEIGHTS[config.get("quantization")] or (model_dtype, model_dtype)
        kv = config.get("kv_cache_dtype", "auto")
        return ServingPlan(
            weight_dtype=weights[0],
            compute_dtype=weights[1] if weights[1] != "bf16" else model_dtype,
            kv_dtype=model_dtype if kv == "auto" else "fp8",
            tp=int(config.get("tensor_parallel_size", 1)),
            pp=int(config.get("pipeline_parallel_size", 1)),
            max_seqs=int(config["max_num_seqs"]),
            max_batched_tokens=int(config["max_num_batched_tokens"]),
            max_model_len=int(config.get("max_model_len", ctx.model.max_context)),
            memory_fraction=float(config["gpu_memory_utilization"]),
            memory_rule="total",
            prefix_caching=bool(config.get("enable_prefix_caching", True)),
            chunked_prefill=bool(config.get("enable_chunked_prefill", True)),
            cuda_graphs=not config.get("enforce_eager", False),
            block_size=int(config.get("block_size", 16)),
        )

    def engine_rules(self, config: Config, ctx: RunContext) -> list[str]:
        quant = config.get("quantization")
        if quant in ("awq", "gptq") and quant not in ctx.model.quantized_checkpoints:
            return [
                f"quantization={quant} needs a pre-quantized checkpoint: set "
                f"model.quantized_checkpoints.{quant}"
            ]
        if quant not in _WEIGHTS:
            return [f"quantization={quant!r} is not one servetune knows for vLLM"]
        return _knob_rules(config, ctx)

    def model_path(self, config: Config, ctx: RunContext) -> str:
        """The checkpoint to serve: pre-quantized for awq/gptq, else the model itself."""
        quant = config.get("quantization")
        return (
            ctx.model.quantized_checkpoints.get(quant, ctx.model.serve_path)
            if quant
            else (ctx.model.serve_path)
        )

    def serve_options(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        """``vllm serve`` options as YAML-ready (dashed key -> value); False booleans as ``no-``,
        compilation options nested under ``compilation-config`` (vLLM's ``--config`` loader
        turns a mapping into JSON). The knobs are written only away from vLLM's defaults, so
        configs from before them serve and export as they did."""
        options: dict[str, Any] = {}
        compilation = {k: config[k] for k in _COMPILATION_CONFIG if config.get(k) is not None}
        for key, value in config.items():
            if value is None or key == "quantization" and value in ("awq", "gptq"):
                continue  # pre-quantized checkpoints declare their own method
            if key in _COMPILATION_CONFIG or key in _KNOB_DEFAULTS and value == _KNOB_DEFAULTS[key]:
                continue
            dashed = key.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    options[dashed] = True
                elif key in _DEFAULT_TRUE:
                    options[f"no-{dashed}"] = True
                continue
            options[dashed] = value
        if compilation:
            options["compilation-config"] = compilation
        return options

    def serve_argv(
        self,
        config: Config,
        ctx: RunContext,
        host: str,
        port: int,
        extra: dict[str, Any] | None = None,
    ) -> list[str]:
        """The full ``vllm serve`` argv (a list, never a shell string).

        ``ctx.options["vllm_args"]`` adds options servetune does not search (e.g.
        ``{"load-format": "dummy"}`` for architecture-only benchmarks); they are never exported.
        Host and port among them are dropped (engines.serving.binding).
        """
        added = {**dict(ctx.options.get("vllm_args") or {}), **(extra or {})}
        return self._argv(config, ctx, host, port, added)

    def _argv(
        self, config: Config, ctx: RunContext, host: str, port: int, added: dict[str, Any]
    ) -> list[str]:
        from engines.serving.binding import without_binding

        argv = ["vllm", "serve", self.model_path(config, ctx), "--host", host, "--port", str(port)]
        for key, value in {**self.serve_options(config, ctx), **without_binding(added)}.items():
            argv.append(f"--{key}")
            if isinstance(value, dict):
                argv.append(json.dumps(value))
            elif value is not True:
                argv.append(str(value))
        return argv

    def export(self, config: Config, ctx: RunContext) -> ExportBundle:
        """``vllm_config.yaml``, and as ``full_command`` the equivalent command line, like the
        YAML without the benchmark-only ``vllm_args``."""
        options = {
            "model": self.model_path(config, ctx),
            "host": "127.0.0.1",
            "port": 8000,
            **self.serve_options(config, ctx),
        }
        text = (
            "# vllm serve --config vllm_config.yaml  (vLLM "
            + VLLM_VERSION
            + ")\n"
            + yaml.safe_dump(options, sort_keys=False)
        )
        return ExportBundle(
            files={"vllm_config.yaml": text},
            command=["vllm", "serve", "--config", "vllm_config.yaml"],
            full_command=self._argv(config, ctx, "127.0.0.1", 8000, {}),
        )

    def server_env(self, config: Config, ctx: RunContext) -> dict[str, str]:
        """Environment for ``vllm serve``: compile caches are kept across trials (never wiped);
        ``ctx.options['cache_dir']`` moves them (VLLM_CACHE_ROOT, default ~/.cache/vllm)."""
        cache = ctx.options.get("cache_dir")
        return {"VLLM_CACHE_ROOT": str(cache)} if cache else {}

    def versions(self) -> dict[str, str]:
        return {"vllm_options": VLLM_VERSION}
