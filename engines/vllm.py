"""vLLM: its search space, rules and export, under the names `vllm serve` uses.

Option names follow vLLM's EngineArgs (underscored in configs, dashed on the command line and
in ``vllm serve --config`` YAML). The real measurement path starts ``vllm serve`` through the
shared server lifecycle in :mod:`engines.serving.measure` and drives it with the shared load generator.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml

from engines.base import Config, ExportBundle, Param, RunContext, ServingPlan
from engines.served import ServedEngine
from engines.specs import HardwareSpec, ModelSpec
from engines.vllm_options.table import DEFAULT_VERSION, OptionTable, load_table

VLLM_VERSION = (
    DEFAULT_VERSION  # the release a spec targets when it names none and none is installed
)
_WEIGHTS = {None: None, "fp8": ("fp8", "fp8"), "awq": ("int4", "bf16"), "gptq": ("int4", "bf16")}
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "auto": "bf16"}
# Booleans whose vLLM default is True: False must be spelled --no-<flag>.
_DEFAULT_TRUE = {"enable_prefix_caching", "enable_chunked_prefill", "async_scheduling"}
# Options vLLM takes inside a JSON option, not as flags of their own: config key -> (option, key).
_NESTED = {
    "cudagraph_mode": ("compilation_config", "cudagraph_mode"),
    "speculative_method": ("speculative_config", "method"),
    "num_speculative_tokens": ("speculative_config", "num_speculative_tokens"),
    "prompt_lookup_max": ("speculative_config", "prompt_lookup_max"),
    "prompt_lookup_min": ("speculative_config", "prompt_lookup_min"),
    "draft_tensor_parallel_size": ("speculative_config", "draft_tensor_parallel_size"),
}
# What vLLM resolves a None default to (config/vllm.py, entrypoints/cli/serve.py in 0.26.0):
# servetune's configs hold the value that runs.
_EFFECTIVE = {"async_scheduling": True, "api_server_count": 1}
# Knobs the simulator does not model (it costs a config through VllmEngine.plan, which reads
# none of them): a multi-fidelity study lets the sim narrow precision and batch limits and
# leaves these to the real stage. api_server_count is modelled (ServingPlan.api_servers: the
# API servers' cap on streamed tokens, docs/simulator.md).
SIM_IGNORES = (
    "async_scheduling", "stream_interval", "max_num_partial_prefills",
    "long_prefill_token_threshold", "max_cudagraph_capture_size", "cudagraph_mode",
    "attention_backend", "performance_mode", "scheduling_policy",
    "kv_offloading_size", "speculative_method", "num_speculative_tokens", "prompt_lookup_max",
    "prompt_lookup_min", "draft_tensor_parallel_size",
)  # fmt: skip
_CUDAGRAPH_MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")
_ATTENTION_BACKENDS = ("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION")


def _parallel_choices(count: int) -> tuple[int, ...]:
    return tuple(n for n in (1, 2, 4, 8, 16) if n <= count)


def _knob(name: str, default: Any, help: str, **kw: Any) -> Param:
    """An option pinned at vLLM's default: searched only where a spec widens it
    (``stream_interval: {choices: [1, 8]}``), so studies that do not name it search as before."""
    return Param(name, "categorical", (default,), default=default, help=help, **kw)


def _table_default(table: OptionTable, name: str) -> Any:
    """The release's own default for a knob (from its option table), or the value vLLM
    resolves its None to; None where the release has no such option."""
    if name in _EFFECTIVE:
        return _EFFECTIVE[name]
    option, key = _NESTED.get(name, (name, None))
    entry = table.options.get("--" + option.replace("_", "-"), {})
    return (entry.get("fields") or {}).get(key, {}).get("default") if key else entry.get("default")


def _present(table: OptionTable, name: str) -> bool:
    option, key = _NESTED.get(name, (name, None))
    entry = table.options.get("--" + option.replace("_", "-"))
    return entry is not None and (key is None or key in (entry.get("fields") or {}))


def _speculative(table: OptionTable) -> list[Param]:
    """Speculative decoding (``--speculative-config``), off by default:
    ``speculative_method: {choices: [null, ngram]}`` searches n-gram prompt lookup, and
    ``draft_model`` a smaller model the spec names (``model.draft_path``: vLLM's
    ``speculative_config.model``). vLLM requires num_speculative_tokens, defaults both n-gram
    lookup windows to 5 when neither is set, and runs the draft at tensor parallelism 1 or the
    target's (config/speculative.py); the ranges here are servetune's. Outputs are kept: drafts
    are verified by the target model (greedy agreement 1.0 is checked by the accuracy suite)."""
    drafting = {"speculative_method": ("ngram", "draft_model")}
    ngram = {"speculative_method": ("ngram",)}
    return [
        _knob(
            "speculative_method",
            None,
            "speculative decoding: ngram (prompt lookup, no draft model) or draft_model (needs "
            "model.draft_path); real only: the sim ignores it; None: off. With ngram, "
            "async_scheduling is left to vLLM, which turns it off for CPU n-gram drafting "
            "(0.26.0 and 0.33.0 refuse it forced on); a draft model keeps it",
        ),
        Param(
            "num_speculative_tokens",
            "int",
            low=1,
            high=8,
            default=3,
            when=drafting,
            help="tokens drafted per step (speculative_config.num_speculative_tokens)",
        ),
        Param(
            "prompt_lookup_max",
            "int",
            low=1,
            high=8,
            default=5,
            when=ngram,
            help="longest n-gram looked up in the prompt (vLLM default 5)",
        ),
        Param(
            "prompt_lookup_min",
            "int",
            low=1,
            high=8,
            default=5,
            when=ngram,
            help="shortest n-gram looked up (<= prompt_lookup_max; vLLM default 5)",
        ),
        Param(
            "draft_tensor_parallel_size",
            "categorical",
            (1,),
            default=1,
            when={"speculative_method": ("draft_model",)},
            help="the draft model's tensor parallelism: 1 or tensor_parallel_size "
            "(speculative_config.draft_tensor_parallel_size)",
        ),
    ]


_NO_DRAFT = (
    "speculative_method=draft_model needs model.draft_path (a smaller model with the same "
    "vocabulary)"
)


def _draft_rules(config: Config, ctx: RunContext) -> list[str]:
    """What vLLM's SpeculativeConfig (0.26.0, 0.33.0) refuses for a draft model, checked before
    a server starts: no draft named, a draft TP other than 1 or the target's, vocabularies that
    differ (verify_equal_vocab_size_if_draft_model; read from the draft's config.json when it is
    a local directory)."""
    draft = ctx.model.draft_path
    if not draft:
        return [_NO_DRAFT]
    reasons = []
    draft_tp = int(config.get("draft_tensor_parallel_size", 1))
    tp = int(config.get("tensor_parallel_size", 1))
    if draft_tp not in (1, tp):
        reasons.append(
            f"draft_tensor_parallel_size={draft_tp} must be 1 or tensor_parallel_size={tp}"
        )
    vocab = _local_vocab_size(draft)
    if vocab is not None and vocab != ctx.model.vocab_size:
        reasons.append(
            f"model.draft_path {draft}: vocab_size {vocab} differs from the model's "
            f"{ctx.model.vocab_size} (vLLM refuses a draft of another vocabulary)"
        )
    return reasons


def _local_vocab_size(path: str) -> int | None:
    """``vocab_size`` of a local model directory's config.json; None for a hub id or none."""
    config = Path(path) / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    size = data.get("vocab_size") if isinstance(data, dict) else None
    return size if isinstance(size, int) else None


def _knobs(table: OptionTable) -> list[Param]:
    """The knobs past precision and batch size (issue 26), under vLLM's names, at the targeted
    release's defaults (its option table); a knob the release lacks is left out
    (``max_num_partial_prefills`` is gone in 0.33.0). The simulator models none of them."""
    knobs = _knob_list()
    return [
        _knob(p.name, _table_default(table, p.name), p.help, when=p.when)
        for p in knobs
        if _present(table, p.name)
    ]


def _knob_list() -> list[Param]:
    """The knobs with their help, defaults filled in from the table by :func:`_knobs`."""
    return [
        _knob(
            "async_scheduling",
            True,
            "overlap scheduling with the GPU step; 0.26.0 turns it on unless an option excludes it "
            "(False: --no-async-scheduling)",
            when={"speculative_method": (None, "draft_model")},
        ),
        _knob(
            "stream_interval",
            1,
            "tokens per streamed chunk (>= 1): larger cuts host overhead, streams coarser",
        ),
        _knob(
            "max_num_partial_prefills",
            1,
            "prompts partially prefilled at once; 0.26.0 refuses any value but 1 at start "
            "(NotImplementedError: Concurrent Partial Prefill is not supported; seen on an H200)",
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


def _knob_rules(config: Config, ctx: RunContext, table: OptionTable) -> list[str]:
    """What the targeted release refuses at start among the knobs, read from each release's
    source (0.26.0 and 0.33.0 alike unless said): SpeculativeConfig's n-gram window and draft
    checks (config/speculative.py), SchedulerConfig's threshold check (config/scheduler.py),
    and 0.26.0's refusal of concurrent partial prefill (EngineArgs._check_feature_supported;
    0.33.0 has no such option, so its table keeps it out of the space)."""
    reasons = []
    if config.get("speculative_method") == "draft_model":
        reasons += _draft_rules(config, ctx)
    if config.get("speculative_method") == "ngram":
        low, high = config.get("prompt_lookup_min", 5), config.get("prompt_lookup_max", 5)
        if low > high:
            reasons.append(f"prompt_lookup_min={low} must be <= prompt_lookup_max={high}")
    partial = int(config.get("max_num_partial_prefills", 1))
    refuses_partial = table.has("--max-num-partial-prefills")  # 0.33.0 has no such option
    if partial != 1 and refuses_partial:  # EngineArgs._check_feature_supported, before loading
        reasons.append(
            f"max_num_partial_prefills={partial}: vLLM refuses concurrent partial prefill "
            "(NotImplementedError at start); only 1 runs"
        )
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
    settings = ("version",)
    context_option = "max_model_len"
    lossless_options = ("speculative_method",)  # vLLM's rejection sampling keeps greedy outputs
    numerics_options = ("dtype", "quantization", "kv_cache_dtype")

    def __init__(self, version: str | None = None) -> None:
        """``version``: the vLLM release whose options to use and check against (a spec's
        ``engines.vllm.version``); default: the installed vLLM's, else 0.26.0."""
        self.table = load_table(None if version is None else str(version))
        self.label = f"vLLM {self.table.version}"  # type: ignore[misc]

    def unknown_option(self, name: str, known: list[str]) -> str:
        """A name outside the space: a vLLM option servetune does not search, or a misspelling
        (closest real name, from the space or else from the release's whole table)."""
        release = f"vLLM {self.table.version}"
        if self.table.has(name):
            return f"a {release} option servetune does not search; pass it in options.vllm_args"
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else self.table.suggest(name)
        return f"not an option of {release}{hint}"

    def check_space(self, space: list[Param], where: str) -> None:
        """Every option of the space exists in the targeted release, and every value it can
        take is one the release accepts (choices, type)."""
        for param in space:
            values = param.choices if param.kind == "categorical" else (param.low, param.high)
            for value in values:
                self._check_option(param.name, value, f"{where}.{param.name}")

    def _check_option(self, key: str, value: Any, where: str) -> None:
        if key in _NESTED:
            option, field = _NESTED[key]
            if value is not None:
                self.table.check_nested(option, {field: value}, where)
            else:
                self.table.flag(option, where)
        elif (
            isinstance(value, int | float) and not isinstance(value, bool) and key != "quantization"
        ):
            self.table.check_value(
                key,
                int(value)
                if float(value).is_integer() and self.table.flag(key, where).get("type") == "int"
                else value,
                where,
            )
        elif key == "quantization" and value in ("awq", "gptq"):
            self.table.flag(key, where)  # pre-quantized: the checkpoint names its method
        else:
            self.table.check_value(key, value, where)

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
            *_speculative(self.table),
            *_knobs(self.table),
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
            api_servers=int(config.get("api_server_count") or 1),
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
        return _knob_rules(config, ctx, self.table)

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
        nested: dict[str, dict[str, Any]] = {}
        defaults = {p.name: p.default for p in _knobs(self.table)}
        for key, value in config.items():
            if value is None or key == "quantization" and value in ("awq", "gptq"):
                continue  # pre-quantized checkpoints declare their own method
            if key in _NESTED:
                if config.get("speculative_method") or _NESTED[key][0] != "speculative_config":
                    nested.setdefault(_NESTED[key][0], {})[_NESTED[key][1]] = value
                continue
            if key in defaults and value == defaults[key]:
                continue
            dashed = key.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    options[dashed] = True
                elif key in _DEFAULT_TRUE:
                    options[f"no-{dashed}"] = True
                continue
            options[dashed] = value
        speculative = nested.get("speculative_config")
        if speculative and speculative.get("method") == "draft_model" and ctx.model.draft_path:
            speculative["model"] = ctx.model.draft_path
        for option, values in nested.items():
            self.table.check_nested(option, values, f"vLLM option {option}")
            options[option.replace("_", "-")] = values
        for key in options:
            self.table.flag(key, "vLLM option")
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
        They are checked against the targeted release's option table unless
        ``options.server_command`` runs another server in vLLM's place (a stand-in takes flags of
        its own, such as ``--ttft-ms``).
        Host and port among them are dropped (engines.serving.binding).
        """
        added = {**dict(ctx.options.get("vllm_args") or {}), **(extra or {})}
        own = ctx.options.get("vllm_server_command") or ctx.options.get("server_command")
        if not own:  # another server (a stand-in) in vLLM's place has flags of its own
            for key in added:
                self.table.flag(key, f"options.vllm_args.{key}")
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
            f"# vllm serve --config vllm_config.yaml  (vLLM {self.table.version})\n"
            f"# every option checked against vLLM {self.table.version}'s own ({self.table.path})\n"
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
        return {"vllm_options": self.table.version}
