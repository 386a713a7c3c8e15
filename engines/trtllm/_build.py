"""The TensorRT engine path: checkpoint (quantize.py or convert_checkpoint.py), then trtllm-build.

Building an engine takes minutes, so built engines are cached under a key that hashes every
build parameter (plus the model, the release and the commands used): a trial that only changes
runtime options (memory fraction, block reuse, chunked prefill) reuses the engine, and one that
changes a build parameter gets its own. Checkpoints are cached the same way on their own key, so
changing a trtllm-build flag does not re-run an hour of ModelOpt calibration.

Every step is an argv list run with its output appended to a log under ``ctx.workdir``; a step
that runs past ``ctx.timeout_s`` is killed with its whole process group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engines.base import Config, RunContext
from engines.errors import EngineError

log = logging.getLogger(__name__)

# What each build step depends on. A trial differing from a cached one only in other options
# (RUNTIME_PARAMS in the engine module) reuses the cached engine.
CHECKPOINT_PARAMS = ("dtype", "quantization", "kv_cache_dtype", "tp_size", "pp_size")
BUILD_PARAMS = CHECKPOINT_PARAMS + (
    "max_batch_size",
    "max_num_tokens",
    "max_seq_len",
    "use_paged_context_fmha",
    "use_fp8_context_fmha",
    "gemm_plugin",
    "multiple_profiles",
)
DEFAULT_COMMANDS = {
    "trtllm_build_command": ["trtllm-build"],
    # Relative to a TensorRT-LLM checkout (the NGC container has one under /app/tensorrt_llm).
    "quantize_command": ["python3", "examples/quantization/quantize.py"],
    "convert_command": ["python3", "examples/models/core/llama/convert_checkpoint.py"],
}
_METADATA = "servetune_build.json"


def command(ctx: RunContext, option: str) -> list[str]:
    """An executable prefix from ``ctx.options`` (a list or a shell-like string) or the default."""
    value = ctx.options.get(option) or DEFAULT_COMMANDS.get(option)
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def cache_root(ctx: RunContext) -> Path:
    """Where engines and checkpoints are kept between trials and studies."""
    configured = ctx.options.get("engine_cache_dir")
    return Path(configured) if configured else Path.home() / ".cache/servetune/trt-engines"


def _digest(
    config: Config,
    ctx: RunContext,
    params: tuple[str, ...],
    release: str,
    commands: tuple[str, ...],
) -> str:
    payload = {
        "release": release,
        "model": ctx.model.serve_path,
        "model_name": ctx.model.name,
        "params": {p: config.get(p) for p in params},
        "commands": {c: command(ctx, c) for c in commands},
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_dir(config: Config, ctx: RunContext, release: str) -> Path:
    key = _digest(config, ctx, CHECKPOINT_PARAMS, release, ("quantize_command", "convert_command"))
    return cache_root(ctx) / "checkpoints" / key


def engine_dir(config: Config, ctx: RunContext, release: str) -> Path:
    """The cached engine directory ``config`` is served from (built or not yet)."""
    key = _digest(
        config,
        ctx,
        BUILD_PARAMS,
        release,
        ("quantize_command", "convert_command", "trtllm_build_command"),
    )
    return cache_root(ctx) / "engines" / key


def uses_modelopt(config: Config) -> bool:
    """quantize.py (ModelOpt) for any quantized weight or KV cache; convert_checkpoint otherwise."""
    return config.get("quantization") is not None or config.get("kv_cache_dtype") == "fp8"


def checkpoint_argv(config: Config, model_dir: str, out: str, prefix: list[str]) -> list[str]:
    """``quantize.py`` or ``convert_checkpoint.py`` argv writing a TensorRT-LLM checkpoint."""
    argv = [
        *prefix,
        "--model_dir",
        model_dir,
        "--output_dir",
        out,
        "--dtype",
        config.get("dtype", "bfloat16"),
        "--tp_size",
        str(config.get("tp_size", 1)),
        "--pp_size",
        str(config.get("pp_size", 1)),
    ]
    if uses_modelopt(config):
        argv += ["--qformat", config.get("quantization") or "full_prec"]
        if config.get("kv_cache_dtype") == "fp8":
            argv += ["--kv_cache_dtype", "fp8"]
    return argv


def _switch(value: Any) -> str:
    return "enable" if value else "disable"


def build_argv(config: Config, ckpt: str, out: str, prefix: list[str]) -> list[str]:
    """``trtllm-build`` argv; limits are always explicit (defaults moved between releases)."""
    workers = int(config.get("tp_size", 1)) * int(config.get("pp_size", 1))
    return [
        *prefix,
        "--checkpoint_dir",
        ckpt,
        "--output_dir",
        out,
        "--max_batch_size",
        str(config["max_batch_size"]),
        "--max_num_tokens",
        str(config["max_num_tokens"]),
        "--max_seq_len",
        str(config["max_seq_len"]),
        # builder.py asserts max_input_len <= max_seq_len; the default (1024) would reject
        # every longer prompt at request time.
        "--max_input_len",
        str(config["max_seq_len"]),
        "--gemm_plugin",
        str(config.get("gemm_plugin", "auto")),
        "--use_paged_context_fmha",
        _switch(config.get("use_paged_context_fmha", True)),
        "--use_fp8_context_fmha",
        _switch(config.get("use_fp8_context_fmha", False)),
        "--multiple_profiles",
        _switch(config.get("multiple_profiles", False)),
        "--workers",
        str(workers),
    ]


def run_step(argv: list[str], log_path: Path, timeout_s: float, what: str) -> float:
    """Run one build step, output appended to ``log_path``; returns seconds taken.

    Raises EngineError(build_failed) on a non-zero exit, a missing executable or a timeout (the
    step's whole process group is killed, so nothing is left running).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("ab") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineError(
                "build_failed",
                f"{what}: cannot run {argv[0]!r}: {exc.strerror}",
                log_path=str(log_path),
            ) from None
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise EngineError(
                "build_failed", f"{what} ran past {timeout_s:.0f} s", log_path=str(log_path)
            ) from None
    if code != 0:
        raise EngineError(
            "build_failed", f"{what} exited with {code}: {_tail(log_path)}", log_path=str(log_path)
        )
    return time.monotonic() - start


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _publish(tmp: Path, final: Path, metadata: Mapping[str, Any]) -> None:
    """Mark ``tmp`` complete and move it into place; a concurrent twin that won keeps its copy."""
    (tmp / _METADATA).write_text(json.dumps(metadata, indent=1, default=str))
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / _METADATA).is_file():
            raise


def _read_metadata(path: Path) -> dict[str, Any] | None:
    marker = path / _METADATA
    return json.loads(marker.read_text()) if marker.is_file() else None


def _make_checkpoint(config: Config, ctx: RunContext, release: str, log_path: Path) -> Path:
    final = checkpoint_dir(config, ctx, release)
    if _read_metadata(final) is not None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    option = "quantize_command" if uses_modelopt(config) else "convert_command"
    argv = checkpoint_argv(config, ctx.model.serve_path, str(tmp), command(ctx, option))
    try:
        seconds = run_step(argv, log_path, ctx.timeout_s, option.removesuffix("_command"))
    except EngineError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(
        tmp,
        final,
        {
            "checkpoint_time_s": seconds,
            "release": release,
            "params": {p: config.get(p) for p in CHECKPOINT_PARAMS},
        },
    )
    return final


def ensure_engine(config: Config, ctx: RunContext, release: str) -> dict[str, Any]:
    """Build the engine ``config`` needs unless cached; returns what a study may record.

    ``build_time_s`` is what building this config costs from the Hugging Face model (checkpoint
    plus engine, as first measured, also on a cache hit); ``engine_cache_hit`` says whether this
    trial paid it.
    """
    final = engine_dir(config, ctx, release)
    cached = _read_metadata(final)
    if cached is not None:
        log.info("TensorRT engine cache hit: %s", final)
        return {
            "build_time_s": cached["build_time_s"],
            "engine_size_bytes": cached["engine_size_bytes"],
            "engine_cache_hit": True,
        }
    log_path = Path(ctx.workdir) / f"trtllm-build-{final.name}.log"
    ckpt = _make_checkpoint(config, ctx, release, log_path)
    ckpt_time = float((_read_metadata(ckpt) or {}).get("checkpoint_time_s", 0.0))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    argv = build_argv(config, str(ckpt), str(tmp), command(ctx, "trtllm_build_command"))
    try:
        seconds = run_step(argv, log_path, ctx.timeout_s, "trtllm-build")
    except EngineError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = _dir_bytes(tmp)
    _publish(
        tmp,
        final,
        {
            "build_time_s": ckpt_time + seconds,
            "engine_size_bytes": size,
            "release": release,
            "model": ctx.model.serve_path,
            "params": {p: config.get(p) for p in BUILD_PARAMS},
        },
    )
    return {
        "build_time_s": ckpt_time + seconds,
        "engine_size_bytes": size,
        "engine_cache_hit": False,
    }


def build_script(config: Config, ctx: RunContext, release: str) -> str:
    """A bash script for users: checkpoint, then ``trtllm-build`` into ``trtllm_engine/``, skipped
    when that folder already holds this build (its key file matches), so serve.sh can run it
    before every start at no cost and an engine is never rebuilt for a restart."""
    examples = "${TRTLLM_EXAMPLES:-/app/tensorrt_llm/examples}"
    tool = (
        "quantization/quantize.py"
        if uses_modelopt(config)
        else "models/core/llama/convert_checkpoint.py"
    )
    step1 = checkpoint_argv(config, ctx.model.serve_path, "trtllm_ckpt", ["python3", "TOOL"])
    step2 = build_argv(config, "trtllm_ckpt", "trtllm_engine", ["trtllm-build"])
    tool_line = shlex.join(step1).replace("TOOL", f'"{examples}/{tool}"', 1)
    key = hashlib.sha256(f"{release}\n{tool_line}\n{shlex.join(step2)}".encode()).hexdigest()[:16]
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            f"# Build a TensorRT engine (TensorRT-LLM {release}) into ./trtllm_engine, generated by",
            "# servetune; does nothing when that engine is already this build (key below).",
            "# TRTLLM_EXAMPLES: the examples/ folder of a TensorRT-LLM checkout of the same release",
            "# (convert_checkpoint.py lives in the model family's folder; llama shown).",
            "set -euo pipefail",
            f"key={key}",
            'if [ "$(cat trtllm_engine/servetune-build.key 2>/dev/null)" = "$key" ]; then',
            '  echo "trtllm_engine/ holds this build ($key): not rebuilding"',
            "  exit 0",
            "fi",
            "rm -rf trtllm_ckpt trtllm_engine",
            tool_line,
            shlex.join(step2),
            'echo "$key" > trtllm_engine/servetune-build.key',
            "",
        ]
    )
