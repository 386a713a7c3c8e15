"""TensorRT-LLM: its search space, rules, ``trtllm-serve`` argv and export.

Two backends share one space. ``pytorch`` (the default of ``trtllm-serve`` since 1.0) serves a
Hugging Face checkpoint; quantized weights must come pre-quantized (a ModelOpt export, listed in
``model.quantized_checkpoints`` under the quantization name). ``tensorrt`` serves a compiled
engine: :meth:`TrtllmEngine.prepare` quantizes or converts the checkpoint and runs
``trtllm-build``, cached by build parameters (see ``_build``).

Options that are build parameters on the TensorRT path (``_build.BUILD_PARAMS``) cost a rebuild
when they change; the rest (``RUNTIME_PARAMS``) only a server restart. Every option still has
``Param.restart=True``: ``trtllm-serve`` takes none of them while running.
"""

from __future__ import annotations

from typing import Any

from engines.base import Config, ExportBundle, Param, RunContext, ServingPlan
from engines.metrics import Measurement
from engines.served import ServedEngine
from engines.specs import HardwareSpec, ModelSpec
from engines.trtllm import _build, _llmargs

TRTLLM_RELEASE = "1.2.1"
RUNTIME_PARAMS = (
    "backend",
    "kv_cache_free_gpu_memory_fraction",
    "enable_block_reuse",
    "enable_chunked_prefill",
    "cuda_graphs",
)
# quantization -> (weights as stored, matmul dtype); None: the model dtype for both.
_WEIGHTS: dict[Any, tuple[str, str] | None] = {
    None: None,
    "fp8": ("fp8", "fp8"),
    "int8_sq": ("int8", "int8"),
    "int4_awq": ("int4", "model"),
    "w4a8_awq": ("int4", "fp8"),
    "nvfp4": ("fp4", "fp4"),
}
# Served by the PyTorch backend from a ModelOpt pre-quantized checkpoint; int8_sq only through
# quantize.py and an engine (servetune does not offer it on the PyTorch path).
_PYTORCH_QUANT = ("fp8", "int4_awq", "w4a8_awq", "nvfp4")
_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}
_TRT = {"backend": ("tensorrt",)}
_FP8_CC = 8.9
_FP4_CC = 10.0


def _parallel_choices(count: int) -> tuple[int, ...]:
    return tuple(n for n in (1, 2, 4, 8, 16) if n <= count)


def _build_params(cc: float) -> list[Param]:
    """trtllm-build options, asked only when backend=tensorrt."""
    gemm = (
        ("auto", "disable")
        + (("fp8",) if cc >= _FP8_CC else ())
        + (("nvfp4",) if cc >= _FP4_CC else ())
    )
    return [
        Param(
            "use_paged_context_fmha",
            "categorical",
            (True, False),
            default=True,
            when=_TRT,
            help="build: paged context attention; needed by chunked prefill and block reuse",
        ),
        Param(
            "use_fp8_context_fmha",
            "categorical",
            (False, True),
            default=False,
            when={**_TRT, "kv_cache_dtype": ("fp8",)},
            help="build: FP8 context attention (FP8 weights and KV cache, SM89+)",
        ),
        Param(
            "gemm_plugin",
            "categorical",
            gemm,
            default="auto",
            when=_TRT,
            help="build: GEMM plugin dtype; 'disable' lets TensorRT pick kernels",
        ),
        Param(
            "multiple_profiles",
            "categorical",
            (False, True),
            default=False,
            when=_TRT,
            help="build: several TensorRT optimisation profiles (longer build, faster runtime)",
        ),
    ]


class TrtllmEngine(ServedEngine):
    """``trtllm-serve`` on the PyTorch backend or on a ``trtllm-build`` engine."""

    name = "trtllm"
    label = f"TensorRT-LLM {TRTLLM_RELEASE}"
    key_options = ("max_batch_size", "max_num_tokens", "tp_size", "pp_size")
    context_option = "max_seq_len"

    def __init__(self) -> None:
        self._builds: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ space and rules
    def space(self, model: ModelSpec, hardware: HardwareSpec) -> list[Param]:
        cc = hardware.gpu_info.compute_capability
        quant: tuple[Any, ...] = (None, "fp8", "int8_sq", "int4_awq", "w4a8_awq") + (
            ("nvfp4",) if cc >= _FP4_CC else ()
        )
        # The PyTorch backend serves only the precisions a pre-quantized checkpoint exists for;
        # offering the others would spend the search on configs validate() must reject.
        ready = (None,) + tuple(q for q in quant if q in model.quantized_checkpoints)
        par = _parallel_choices(hardware.count)
        return [
            Param("backend", "categorical", ("pytorch", "tensorrt"), default="pytorch"),
            Param("dtype", "categorical", ("bfloat16", "float16"), default="bfloat16"),
            Param(
                "quantization",
                "categorical",
                ready,
                default=None,
                when={"backend": ("pytorch",)},
                key="quantization@pytorch",
                help="from model.quantized_checkpoints (ModelOpt pre-quantized)",
            ),
            Param(
                "quantization",
                "categorical",
                quant,
                default=None,
                when={"backend": ("tensorrt",)},
                key="quantization@tensorrt",
                help="made by quantize.py (ModelOpt) before the engine build",
            ),
            Param("kv_cache_dtype", "categorical", ("auto", "fp8"), default="auto"),
            Param(
                "kv_cache_free_gpu_memory_fraction",
                "float",
                low=0.80,
                high=0.95,
                step=0.01,
                default=0.9,
                help="share of the memory left after weights and activations",
            ),
            Param("max_batch_size", "int", low=16, high=2048, log=True, default=2048),
            Param("max_num_tokens", "int", low=1024, high=32768, log=True, default=8192),
            Param("max_seq_len", "categorical", (model.max_context,), default=model.max_context),
            Param("tp_size", "categorical", par, default=1),
            Param("pp_size", "categorical", par, default=1),
            Param("enable_block_reuse", "categorical", (True, False), default=True),
            # trtllm-serve's own default is False; True keeps the baseline valid for contexts
            # longer than max_num_tokens (the shared length rule needs chunking there).
            Param("enable_chunked_prefill", "categorical", (True, False), default=True),
            Param(
                "cuda_graphs",
                "categorical",
                (True, False),
                default=True,
                when={"backend": ("pytorch",)},
                help="cuda_graph_config set (padding on) or null; engines have no such switch",
            ),
            *_build_params(cc),
        ]

    def plan(self, config: Config, ctx: RunContext) -> ServingPlan:
        model_dtype = _DTYPES[config.get("dtype", "bfloat16")]
        weights = _WEIGHTS.get(config.get("quantization")) or (model_dtype, model_dtype)
        tensorrt = config.get("backend", "pytorch") == "tensorrt"
        return ServingPlan(
            weight_dtype=weights[0],
            compute_dtype=model_dtype if weights[1] == "model" else weights[1],
            kv_dtype="fp8" if config.get("kv_cache_dtype") == "fp8" else model_dtype,
            tp=int(config.get("tp_size", 1)),
            pp=int(config.get("pp_size", 1)),
            max_seqs=int(config["max_batch_size"]),
            max_batched_tokens=int(config["max_num_tokens"]),
            max_model_len=int(config.get("max_seq_len", ctx.model.max_context)),
            memory_fraction=float(config["kv_cache_free_gpu_memory_fraction"]),
            memory_rule="free_after_weights",
            prefix_caching=bool(config.get("enable_block_reuse", True)),
            chunked_prefill=bool(config.get("enable_chunked_prefill", True)),
            # A TensorRT engine runs its whole step as one compiled plan: launch overhead as low
            # as CUDA graphs give the PyTorch backend, so the simulator treats it as graphs on.
            cuda_graphs=tensorrt or bool(config.get("cuda_graphs", True)),
            block_size=32,  # KvCacheConfig.tokens_per_block default
        )

    def engine_rules(self, config: Config, ctx: RunContext) -> list[str]:
        quant = config.get("quantization")
        backend = config.get("backend", "pytorch")
        cc = ctx.hardware.gpu_info.compute_capability
        gpu = ctx.hardware.gpu_info.name
        if quant not in _WEIGHTS:
            return [f"quantization={quant!r} is not one servetune knows for TensorRT-LLM"]
        if backend not in _llmargs.BACKENDS:
            return [f"backend={backend!r} is not one of {', '.join(_llmargs.BACKENDS)}"]
        reasons = []
        if backend == "pytorch" and quant is not None:
            if quant not in _PYTORCH_QUANT:
                reasons.append(
                    f"quantization={quant} on the pytorch backend is not offered; "
                    "use backend=tensorrt (quantize.py builds it)"
                )
            elif quant not in ctx.model.quantized_checkpoints:
                reasons.append(
                    f"quantization={quant} on the pytorch backend needs a ModelOpt "
                    f"pre-quantized checkpoint: set model.quantized_checkpoints.{quant}"
                )
        if config.get("kv_cache_dtype") == "fp8" and cc < _FP8_CC:
            reasons.append(
                f"kv_cache_dtype=fp8 needs compute capability >= {_FP8_CC} "
                f"(Ada/Hopper); {gpu} has {cc}"
            )
        if backend == "tensorrt":
            reasons += _tensorrt_rules(config, cc, gpu)
        return reasons

    # ------------------------------------------------------------------ serving
    def model_path(self, config: Config, ctx: RunContext) -> str:
        """What ``trtllm-serve`` loads: the engine dir, a pre-quantized checkpoint or the model."""
        if config.get("backend") == "tensorrt":
            return str(_build.engine_dir(config, ctx, TRTLLM_RELEASE))
        quant = config.get("quantization")
        return (
            ctx.model.quantized_checkpoints.get(quant, ctx.model.serve_path)
            if quant
            else (ctx.model.serve_path)
        )

    def llm_api_options(self, config: Config) -> dict[str, Any]:
        """The ``--extra_llm_api_options`` body, checked against the pinned release's keys."""
        backend = config.get("backend", "pytorch")
        return _llmargs.checked(_llmargs.llm_api_options(config, backend), backend)

    def serve_flags(self, config: Config, ctx: RunContext, options_path: str) -> list[str]:
        """``trtllm-serve`` arguments after the executable (model first), host and port aside.

        Only spellings every 1.x release accepts: ``--tp_size`` (not ``--tensor_parallel_size``),
        ``--extra_llm_api_options`` (not the newer ``--config`` alias).
        """
        backend = config.get("backend", "pytorch")
        argv = [self.model_path(config, ctx), "--backend", backend]
        if backend == "tensorrt":
            argv += ["--tokenizer", ctx.model.serve_path]
        argv += [
            "--tp_size",
            str(config.get("tp_size", 1)),
            "--pp_size",
            str(config.get("pp_size", 1)),
            "--max_batch_size",
            str(config["max_batch_size"]),
            "--max_num_tokens",
            str(config["max_num_tokens"]),
            "--max_seq_len",
            str(config.get("max_seq_len", ctx.model.max_context)),
            "--kv_cache_free_gpu_memory_fraction",
            str(config["kv_cache_free_gpu_memory_fraction"]),
            "--extra_llm_api_options",
            options_path,
        ]
        return argv

    def serve_argv(self, config: Config, ctx: RunContext, host: str, port: int) -> list[str]:
        """The full ``trtllm-serve`` argv (a list); writes the options YAML under ctx.workdir."""
        path = _llmargs.write_options(self.llm_api_options(config), ctx.workdir)
        prefix = (
            _build.command(ctx, "trtllm_serve_command")
            if ctx.options.get("trtllm_serve_command")
            else ["trtllm-serve"]
        )
        flags = self.serve_flags(config, ctx, str(path))
        # `serve` spelled out: the group's default command, and argv[0:2] is then the command
        # alone, as measure_server's `server_command` option expects.
        return [*prefix, "serve", flags[0], "--host", host, "--port", str(port), *flags[1:]]

    def prepare(self, config: Config, ctx: RunContext) -> dict[str, Any]:
        """Before the server starts: build (or find cached) the TensorRT engine.

        Returns ``build_time_s``, ``engine_size_bytes`` and ``engine_cache_hit`` for the
        measurement's ``extra`` (empty on the PyTorch backend). Raises EngineError(build_failed).
        """
        if config.get("backend") != "tensorrt":
            return {}
        info = _build.ensure_engine(config, ctx, TRTLLM_RELEASE)
        self._builds[str(_build.engine_dir(config, ctx, TRTLLM_RELEASE))] = info
        return info

    def run(self, config: Config, ctx: RunContext) -> Measurement:
        from dataclasses import replace

        from engines.serving.measure import measure_server  # real servers only when asked for

        measurement = measure_server(self, config, ctx)
        info = (
            self._builds.get(self.model_path(config, ctx), {})
            if config.get("backend") == "tensorrt"
            else {}
        )
        missing = {k: v for k, v in info.items() if k not in measurement.extra}
        return (
            replace(measurement, extra={**measurement.extra, **missing})
            if missing
            else (measurement)
        )

    # ------------------------------------------------------------------ export
    def export(self, config: Config, ctx: RunContext) -> ExportBundle:
        backend = config.get("backend", "pytorch")
        yaml_text = _llmargs.options_text(self.llm_api_options(config))
        flags = self.serve_flags(config, ctx, "extra_llm_api_options.yaml")
        if backend == "tensorrt":
            flags[0] = "trtllm_engine"
        serve = [
            "trtllm-serve",
            "serve",
            flags[0],
            "--host",
            "127.0.0.1",  # loopback unless the user opens it up on purpose
            "--port",
            "8000",
            *flags[1:],
        ]
        files = {"extra_llm_api_options.yaml": yaml_text}
        if backend == "pytorch":
            return ExportBundle(
                files=files, command=serve, notes=f"TensorRT-LLM {TRTLLM_RELEASE}, PyTorch backend"
            )
        files["build_engine.sh"] = _build.build_script(config, ctx, TRTLLM_RELEASE)
        return ExportBundle(
            files=files,
            command=serve,
            setup=(("bash", "build_engine.sh"),),
            notes=f"TensorRT-LLM {TRTLLM_RELEASE}, TensorRT engine: build_engine.sh quantizes or "
            "converts and builds into trtllm_engine/ once (again only when a build option "
            "changes); serve.sh serves from it",
            full_command=serve,
        )

    def versions(self) -> dict[str, str]:
        return {"trtllm_options": TRTLLM_RELEASE, "trtllm_llmargs": _llmargs.llmargs_release()}


def _tensorrt_rules(config: Config, cc: float, gpu: str) -> list[str]:
    """Build-parameter combinations trtllm-build or the runtime would refuse."""
    reasons = []
    quant = config.get("quantization")
    paged = config.get("use_paged_context_fmha", True)
    for option in ("enable_chunked_prefill", "enable_block_reuse"):
        if config.get(option) and not paged:
            reasons.append(f"{option}=True on a TensorRT engine needs use_paged_context_fmha=True")
    if config.get("use_fp8_context_fmha"):
        if quant not in ("fp8", "nvfp4") or config.get("kv_cache_dtype") != "fp8":
            reasons.append(
                "use_fp8_context_fmha needs quantization fp8 or nvfp4 and kv_cache_dtype=fp8"
            )
        if cc < _FP8_CC:
            reasons.append(
                f"use_fp8_context_fmha needs compute capability >= {_FP8_CC}; {gpu} has {cc}"
            )
    gemm = config.get("gemm_plugin", "auto")
    if gemm in ("fp8", "nvfp4") and quant != gemm:
        reasons.append(f"gemm_plugin={gemm} needs quantization={gemm}")
    return reasons
