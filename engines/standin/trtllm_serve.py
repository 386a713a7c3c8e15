"""A stand-in ``trtllm-serve``: the pinned release's flags and YAML checks, then a fake server.

It parses the ``serve`` options of TensorRT-LLM's click CLI (``tensorrt_llm/commands/serve.py``)
and fails as click would on anything else (exit 2, ``Error: No such option: --x``). The
``--extra_llm_api_options`` YAML is checked against the keys LlmArgs accepts for the backend
(``engines/data/trtllm_llmargs.yaml``), failing like pydantic's ``extra="forbid"``. The TensorRT
backend wants an engine directory (``config.json``) and ``kv_cache_config.dtype`` auto. Then the
OpenAI-compatible stand-in (:mod:`engines.standin.openai_server`) serves, with
``--max_batch_size`` as its concurrency limit.

Faults and timing come from the environment, so a test can inject them without new flags:
``STANDIN_FAULT`` (one of ``openai_server.FAULTS``), ``STANDIN_FAULT_EVERY``, ``STANDIN_TTFT_MS``,
``STANDIN_ITL_MS``, ``STANDIN_STARTUP_S``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from engines.standin import openai_server
from engines.trtllm._llmargs import BACKENDS, unknown_keys

_PROG = "trtllm-serve serve"
_LOG_LEVELS = ("internal_error", "error", "warning", "info", "verbose", "debug", "trace")
# (flags, type or "flag", default, choices) of `serve`, serve.py as of the 1.2 line.
_OPTIONS: tuple[tuple[tuple[str, ...], Any, Any, tuple[str, ...] | None], ...] = (
    (("--tokenizer",), str, None, None),
    (("--custom_tokenizer",), str, None, None),
    (("--host",), str, "localhost", None),
    (("--port",), int, 8000, None),
    (("--backend",), str, "pytorch", ("pytorch", "tensorrt", "trt", "_autodeploy")),
    (("--custom_module_dirs",), str, None, None),
    (("--log_level",), str, "info", _LOG_LEVELS),
    (("--max_beam_width",), int, 1, None),
    (("--max_batch_size",), int, 2048, None),
    (("--max_num_tokens",), int, 8192, None),
    (("--max_seq_len",), int, None, None),
    (("--tensor_parallel_size", "--tp_size"), int, 1, None),
    (("--pipeline_parallel_size", "--pp_size"), int, 1, None),
    (("--context_parallel_size", "--cp_size"), int, 1, None),
    (("--moe_expert_parallel_size", "--ep_size"), int, None, None),
    (("--moe_cluster_parallel_size", "--cluster_size"), int, None, None),
    (("--gpus_per_node",), int, None, None),
    (("--free_gpu_memory_fraction", "--kv_cache_free_gpu_memory_fraction"), float, 0.9, None),
    (("--num_postprocess_workers",), int, 0, None),
    (("--trust_remote_code",), "flag", False, None),
    (("--revision",), str, None, None),
    (("--config", "--extra_llm_api_options"), str, None, None),
    (("--reasoning_parser",), str, None, None),
    (("--tool_parser",), str, None, None),
    (("--metadata_server_config_file",), str, None, None),
    (("--server_role",), str, None, None),
    (("--fail_fast_on_attention_window_too_large",), "flag", False, None),
    (("--otlp_traces_endpoint",), str, None, None),
    (("--disagg_cluster_uri",), str, None, None),
    (("--enable_chunked_prefill",), "flag", False, None),
    (("--media_io_kwargs",), str, None, None),
    (("--chat_template",), str, None, None),
)


class _ClickLikeParser(argparse.ArgumentParser):
    """argparse that reports errors in click's words and with click's exit status (2)."""

    def error(self, message: str) -> NoReturn:
        _usage_error(message)


def _usage_error(message: str) -> NoReturn:
    print(
        f"Usage: {_PROG} [OPTIONS] MODEL\nTry '{_PROG} --help' for help.\n\nError: {message}",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(2)


def parser() -> argparse.ArgumentParser:
    """The ``serve`` command line of the pinned release."""
    parse = _ClickLikeParser(prog=_PROG, allow_abbrev=False)
    parse.add_argument("model", nargs="?")
    for flags, kind, default, choices in _OPTIONS:
        dest = flags[-1].lstrip("-") if flags[0] == "--config" else flags[0].lstrip("-")
        if kind == "flag":
            parse.add_argument(*flags, dest=dest, action="store_true", default=default)
        else:
            parse.add_argument(*flags, dest=dest, type=kind, default=default, choices=choices)
    return parse


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse as click would: unknown options and a missing MODEL are usage errors (exit 2)."""
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    args, unknown = parser().parse_known_args(argv)
    options = [u for u in unknown if u.startswith("-")]
    if options:
        _usage_error(f"No such option: {options[0].split('=', 1)[0]}")
    if unknown:
        _usage_error(f"Got unexpected extra argument ({unknown[0]})")
    if args.model is None:
        _usage_error("Missing argument 'MODEL'.")
    args.backend = "tensorrt" if args.backend == "trt" else args.backend
    return args


def check_options(path: str | None, backend: str) -> str | None:
    """Why LlmArgs would refuse the YAML at ``path`` (pydantic's words), or None."""
    if path is None:
        return None
    options = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(options, dict):
        return f"{path}: expected a mapping"
    cls = "TorchLlmArgs" if backend == "pytorch" else "TrtLlmArgs"
    bad = unknown_keys(options, backend) if backend in BACKENDS else []
    if bad:
        lines = [f"{len(bad)} validation error{'s' if len(bad) > 1 else ''} for {cls}"]
        for key in bad:
            lines += [key, "  Extra inputs are not permitted [type=extra_forbidden]"]
        return "pydantic_core._pydantic_core.ValidationError: " + "\n".join(lines)
    kv_dtype = (options.get("kv_cache_config") or {}).get("dtype", "auto")
    if backend == "tensorrt" and kv_dtype != "auto":
        return (
            f"AssertionError: KvCacheConfig.dtype={kv_dtype!r} is not supported by the "
            "TensorRT backend; quantize the KV cache when building the engine"
        )
    return None


def _server_argv(args: argparse.Namespace) -> list[str]:
    env = os.environ
    argv = [
        args.model,
        "--host",
        "127.0.0.1" if args.host == "localhost" else args.host,
        "--port",
        str(args.port),
        "--max-concurrency",
        str(args.max_batch_size),
        "--ttft-ms",
        env.get("STANDIN_TTFT_MS", "50"),
        "--itl-ms",
        env.get("STANDIN_ITL_MS", "10"),
    ]
    if env.get("STANDIN_FAULT"):
        argv += [
            "--fault",
            env["STANDIN_FAULT"],
            "--fault-every",
            env.get("STANDIN_FAULT_EVERY", "1"),
        ]
    if env.get("STANDIN_STARTUP_S"):
        argv += ["--startup-s", env["STANDIN_STARTUP_S"]]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    print(
        f"[TensorRT-LLM] stand-in trtllm-serve, backend {args.backend}, model {args.model}",
        flush=True,
    )
    if args.backend == "tensorrt" and not (Path(args.model) / "config.json").is_file():
        print(
            f"RuntimeError: {args.model} is not a TensorRT engine directory (no config.json)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    problem = check_options(args.extra_llm_api_options, args.backend)
    if problem:
        print(f"Traceback (most recent call last):\n{problem}", file=sys.stderr, flush=True)
        return 1
    return openai_server.main(_server_argv(args))


if __name__ == "__main__":
    sys.exit(main())
