"""Stand-ins for the TensorRT engine tools: ``trtllm-build``, ``quantize.py``, ``convert_checkpoint.py``.

``python -m engines.standin.trtllm_build {build,quantize,convert} ...``. Each parses the real
tool's flags with argparse, as the real tools do (an unknown flag: exit 2, "unrecognized
arguments"), writes a fake output directory (a checkpoint ``config.json`` and rank files, or an
engine ``config.json`` with the build parameters and ``rank<N>.engine`` files) and appends one
line per run to ``$STANDIN_BUILD_LOG`` so tests can count builds.

Environment: ``STANDIN_BUILD_S`` (seconds each run sleeps), ``STANDIN_ENGINE_BYTES`` (size of each
rank file, default 4096), ``STANDIN_BUILD_FAULT`` (``fail``: trtllm-build exits 1 after printing
an error; ``fail_quantize``: quantize.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_DTYPES = ("auto", "float16", "bfloat16", "float32")
_QFORMATS = ("nvfp4", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "int8_wo", "int4_wo", "full_prec")
_SWITCH = ("enable", "disable")
_PLUGIN_DTYPES = ("auto", "float16", "float32", "bfloat16", "int32", "disable")
_GEMM_DTYPES = _PLUGIN_DTYPES + ("fp8", "nvfp4")
_LOG_LEVELS = ("internal_error", "error", "warning", "info", "verbose", "debug", "trace")


def _build_parser() -> argparse.ArgumentParser:
    """``trtllm-build`` options servetune may use, plus the common rest (commands/build.py)."""
    p = argparse.ArgumentParser(prog="trtllm-build", allow_abbrev=False)
    for name in (
        "--checkpoint_dir",
        "--model_config",
        "--build_config",
        "--model_cls_file",
        "--model_cls_name",
        "--input_timing_cache",
        "--output_timing_cache",
        "--visualize_network",
    ):
        p.add_argument(name, default=None)
    p.add_argument("--output_dir", default="engine_outputs")
    for name in (
        "--max_batch_size",
        "--max_input_len",
        "--max_beam_width",
        "--max_num_tokens",
        "--opt_num_tokens",
        "--max_encoder_input_len",
        "--workers",
        "--max_draft_len",
        "--tokens_per_block",
        "--max_lora_rank",
    ):
        p.add_argument(name, type=int, default=None)
    p.add_argument("--max_seq_len", "--max_decoder_seq_len", dest="max_seq_len", type=int)
    p.add_argument("--max_prompt_embedding_table_size", "--max_multimodal_len", type=int, default=0)
    p.add_argument("--kv_cache_type", choices=("continuous", "paged", "disabled"))
    p.add_argument("--profiling_verbosity", choices=("layer_names_only", "detailed", "none"))
    p.add_argument("--log_level", choices=_LOG_LEVELS, default="info")
    p.add_argument("--logits_dtype", choices=("float16", "float32"))
    for flag in (
        "--strip_plan",
        "--weight_sparsity",
        "--weight_streaming",
        "--fast_build",
        "--enable_debug_output",
        "--dry_run",
        "--monitor_memory",
        "--gather_context_logits",
        "--gather_generation_logits",
        "--gather_all_token_logits",
    ):
        p.add_argument(flag, action="store_true")
    for plugin in (
        "gpt_attention_plugin",
        "bert_attention_plugin",
        "gemm_swiglu_plugin",
        "fp8_rowwise_gemm_plugin",
        "lora_plugin",
        "moe_plugin",
        "nccl_plugin",
        "mamba_conv1d_plugin",
        "low_latency_gemm_plugin",
        "gemm_allreduce_plugin",
    ):
        p.add_argument(f"--{plugin}", choices=_PLUGIN_DTYPES)
    p.add_argument("--gemm_plugin", choices=_GEMM_DTYPES, default="disable")
    for feature in (
        "context_fmha",
        "remove_input_padding",
        "use_paged_context_fmha",
        "use_fp8_context_fmha",
        "fuse_fp4_quant",
        "multiple_profiles",
        "paged_state",
        "streamingllm",
        "norm_quant_fusion",
        "reduce_fusion",
        "user_buffer",
        "use_fused_mlp",
        "pp_reduce_scatter",
        "bert_context_fmha_fp32_acc",
    ):
        p.add_argument(f"--{feature}", choices=_SWITCH)
    return p


def _checkpoint_parser(tool: str) -> argparse.ArgumentParser:
    """``quantize.py`` (ModelOpt) or llama's ``convert_checkpoint.py``: the flags servetune uses
    and their common neighbours."""
    p = argparse.ArgumentParser(prog=tool, allow_abbrev=False)
    p.add_argument("--model_dir", required=True)
    p.add_argument(
        "--output_dir", default="exported_model" if tool == "quantize.py" else "tllm_checkpoint"
    )
    p.add_argument("--dtype", choices=_DTYPES, default="auto")
    for name in ("--tp_size", "--pp_size", "--cp_size", "--calib_size", "--workers"):
        p.add_argument(name, type=int, default=1)
    p.add_argument("--calib_dataset", default="cnn_dailymail")
    if tool == "quantize.py":
        p.add_argument("--qformat", choices=_QFORMATS, default="full_prec")
        p.add_argument("--kv_cache_dtype", choices=("int8", "fp8"), default=None)
        p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
        p.add_argument("--batch_size", type=int, default=1)
        p.add_argument("--seed", type=int, default=1234)
        p.add_argument("--awq_block_size", type=int, default=128)
        p.add_argument("--calib_max_seq_length", type=int, default=512)
        p.add_argument("--export_format", choices=("tensorrt_llm", "hf"), default="tensorrt_llm")
    else:
        p.add_argument("--use_weight_only", action="store_true")
        p.add_argument(
            "--weight_only_precision",
            choices=("int8", "int4", "int8_gptq", "int4_gptq", "int4_awq"),
        )
        for flag in (
            "--int8_kv_cache",
            "--fp8_kv_cache",
            "--use_fp8",
            "--load_by_shard",
            "--load_model_on_cpu",
            "--use_parallel_embedding",
        ):
            p.add_argument(flag, action="store_true")
    return p


def _note(kind: str, out: Path) -> None:
    log = os.environ.get("STANDIN_BUILD_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(f"{kind} {out}\n")


def _fail(what: str) -> int:
    print(
        f"[TensorRT-LLM][ERROR] {what}: injected failure (STANDIN_BUILD_FAULT)",
        file=sys.stderr,
        flush=True,
    )
    return 1


def build(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    time.sleep(float(os.environ.get("STANDIN_BUILD_S", "0")))
    if os.environ.get("STANDIN_BUILD_FAULT") == "fail":
        return _fail("trtllm-build")
    ckpt = Path(args.checkpoint_dir or ".") / "config.json"
    if not ckpt.is_file():
        print(f"FileNotFoundError: {ckpt}", file=sys.stderr, flush=True)
        return 1
    pretrained = json.loads(ckpt.read_text())
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_config = {
        k: v
        for k, v in vars(args).items()
        if k not in ("checkpoint_dir", "output_dir") and v is not None
    }
    (out / "config.json").write_text(
        json.dumps(
            {"version": "standin", "pretrained_config": pretrained, "build_config": build_config},
            indent=1,
        )
    )
    ranks = int(pretrained.get("mapping", {}).get("world_size", 1))
    size = int(os.environ.get("STANDIN_ENGINE_BYTES", "4096"))
    for rank in range(ranks):
        (out / f"rank{rank}.engine").write_bytes(b"\0" * size)
    _note("build", out)
    print(f"[TensorRT-LLM] Engine written to {out}", flush=True)
    return 0


def checkpoint(tool: str, argv: list[str]) -> int:
    args = _checkpoint_parser(tool).parse_args(argv)
    time.sleep(float(os.environ.get("STANDIN_BUILD_S", "0")))
    if tool == "quantize.py" and os.environ.get("STANDIN_BUILD_FAULT") == "fail_quantize":
        return _fail("quantize.py")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = args.tp_size * args.pp_size
    quant = {
        "quant_algo": getattr(args, "qformat", None),
        "kv_cache_quant_algo": getattr(args, "kv_cache_dtype", None),
    }
    (out / "config.json").write_text(
        json.dumps(
            {
                "dtype": args.dtype,
                "quantization": quant,
                "model_dir": args.model_dir,
                "mapping": {"world_size": world, "tp_size": args.tp_size, "pp_size": args.pp_size},
            },
            indent=1,
        )
    )
    for rank in range(world):
        (out / f"rank{rank}.safetensors").write_bytes(b"\0" * 64)
    _note("quantize" if tool == "quantize.py" else "convert", out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("build", "quantize", "convert"):
        print(
            "usage: python -m engines.standin.trtllm_build {build,quantize,convert} ...",
            file=sys.stderr,
        )
        return 2
    if argv[0] == "build":
        return build(argv[1:])
    return checkpoint("quantize.py" if argv[0] == "quantize" else "convert_checkpoint.py", argv[1:])


if __name__ == "__main__":
    sys.exit(main())
