"""TensorRT-LLM engine: space, rules, argv and YAML, engine cache, and real lifecycles against
the ``trtllm-serve`` / ``trtllm-build`` stand-ins (engines/standin)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engines import EngineError, RunContext, get_engine
from engines.serving.measure import close_servers
from engines.specs import HardwareSpec, ModelSpec
from engines.standin import trtllm_build, trtllm_serve
from engines.trtllm import BUILD_PARAMS, RUNTIME_PARAMS, TrtllmEngine, _build, _llmargs
from engines.workload import WorkloadSpec

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "engines" / "standin" / "bin"
SMALL = WorkloadSpec(
    input_tokens=16,
    output_tokens=4,
    num_requests=8,
    arrival={"kind": "concurrency", "concurrency": 4},
)


def _ctx(tmp_path=None, gpu="H100-SXM", count=1, model="Llama-3.1-8B", **options):
    workdir = (tmp_path / "work") if tmp_path else Path("/nonexistent")
    if tmp_path:
        options = {
            "engine_cache_dir": str(tmp_path / "cache"),
            "quantize_command": [sys.executable, "-m", "engines.standin.trtllm_build", "quantize"],
            "convert_command": [sys.executable, "-m", "engines.standin.trtllm_build", "convert"],
            "startup_timeout_s": 20,
            "stop_grace_s": 5,
            **options,
        }
    return RunContext(
        model=ModelSpec.model_validate(model),
        hardware=HardwareSpec(gpu=gpu, count=count),
        workload=SMALL,
        workdir=workdir,
        timeout_s=60,
        options=options,
    )


def _config(ctx, **changes):
    config = TrtllmEngine().defaults(ctx.model, ctx.hardware)
    config.update(max_seq_len=8192, **changes)
    if changes.get("backend") == "tensorrt":
        config.pop("cuda_graphs", None)
        for param in TrtllmEngine().space(ctx.model, ctx.hardware):
            if param.applies(config) and param.name not in config:
                config[param.name] = param.default
    return config


@pytest.fixture
def standins(tmp_path, monkeypatch, live_children):
    """Stand-in executables on PATH, a build log, and no server or child left afterwards."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("STANDIN_BUILD_LOG", str(tmp_path / "builds.log"))
    monkeypatch.setenv("STANDIN_TTFT_MS", "5")
    monkeypatch.setenv("STANDIN_ITL_MS", "1")
    yield tmp_path / "builds.log"
    close_servers()
    assert live_children() == set()


def _builds(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


# ---------------------------------------------------------------- space, plan, rules
def test_space_defaults_fit_their_params_and_are_valid():
    ctx = _ctx()
    engine = TrtllmEngine()
    for param in engine.space(ctx.model, ctx.hardware):
        if param.kind == "categorical":
            assert param.default in param.choices, param.name
        else:
            assert param.low <= param.default <= param.high, param.name
    config = engine.defaults(ctx.model, ctx.hardware)
    assert config["backend"] == "pytorch" and "gemm_plugin" not in config
    assert engine.validate(config, ctx) == []
    assert set(BUILD_PARAMS) | set(RUNTIME_PARAMS) >= set(
        p.name for p in engine.space(ctx.model, ctx.hardware)
    )


def test_plan_reads_free_after_weights_and_quantization():
    ctx = _ctx()
    plan = TrtllmEngine().plan(
        _config(ctx, backend="tensorrt", quantization="w4a8_awq", kv_cache_dtype="fp8"), ctx
    )
    assert plan.memory_rule == "free_after_weights"
    assert (plan.weight_dtype, plan.compute_dtype, plan.kv_dtype) == ("int4", "fp8", "fp8")
    assert plan.cuda_graphs  # engines count as graphs on
    awq = TrtllmEngine().plan(_config(ctx, backend="tensorrt", quantization="int4_awq"), ctx)
    assert (awq.weight_dtype, awq.compute_dtype) == ("int4", "bf16")


def test_fp8_rejected_on_a100():
    ctx = _ctx(gpu="A100-80GB")
    engine = TrtllmEngine()
    reasons = engine.validate(_config(ctx, backend="tensorrt", quantization="fp8"), ctx)
    assert reasons and "compute capability >= 8.9" in reasons[0]
    reasons = engine.validate(_config(ctx, kv_cache_dtype="fp8"), ctx)
    assert reasons and "kv_cache_dtype=fp8" in reasons[0]


def test_nvfp4_only_on_blackwell():
    h100, b200 = _ctx(), _ctx(gpu="B200")
    engine = TrtllmEngine()
    quant = {p.name: p for p in engine.space(h100.model, h100.hardware)}["quantization"]
    assert "nvfp4" not in quant.choices
    reasons = engine.validate(_config(h100, backend="tensorrt", quantization="nvfp4"), h100)
    assert reasons and "Blackwell" in reasons[0]
    assert engine.validate(_config(b200, backend="tensorrt", quantization="nvfp4"), b200) == []


def test_pytorch_quantization_needs_a_checkpoint():
    ctx = _ctx()
    engine = TrtllmEngine()
    reasons = engine.validate(_config(ctx, quantization="int4_awq"), ctx)
    assert reasons == [
        "quantization=int4_awq on the pytorch backend needs a ModelOpt "
        "pre-quantized checkpoint: set model.quantized_checkpoints.int4_awq"
    ]
    assert "int8_sq" in engine.validate(_config(ctx, quantization="int8_sq"), ctx)[0]
    with_ckpt = _ctx(
        model={"name": "Llama-3.1-8B", "quantized_checkpoints": {"int4_awq": "/ckpt/llama-awq"}}
    )
    config = _config(with_ckpt, quantization="int4_awq")
    assert engine.validate(config, with_ckpt) == []
    assert engine.model_path(config, with_ckpt) == "/ckpt/llama-awq"
    # The TensorRT path makes its own checkpoint with quantize.py.
    assert engine.validate(_config(ctx, backend="tensorrt", quantization="int4_awq"), ctx) == []


def test_tensorrt_build_rules():
    ctx = _ctx()
    engine = TrtllmEngine()
    reasons = engine.engine_rules(
        _config(ctx, backend="tensorrt", use_paged_context_fmha=False), ctx
    )
    assert any("enable_chunked_prefill=True" in r for r in reasons)
    reasons = engine.engine_rules(_config(ctx, backend="tensorrt", use_fp8_context_fmha=True), ctx)
    assert any("use_fp8_context_fmha needs quantization" in r for r in reasons)
    assert engine.engine_rules(_config(ctx, backend="tensorrt", gemm_plugin="fp8"), ctx)
    # Generic rule, not repeated here: no chunking needs max_num_tokens >= max_seq_len.
    reasons = engine.validate(_config(ctx, enable_chunked_prefill=False, max_num_tokens=4096), ctx)
    assert reasons and "needs chunked prefill" in reasons[0]


# ---------------------------------------------------------------- argv and YAML
def test_serve_argv_and_yaml_use_only_allowed_names(tmp_path):
    ctx = _ctx(tmp_path)
    engine = TrtllmEngine()
    argv = engine.serve_argv(
        _config(ctx, kv_cache_dtype="fp8", cuda_graphs=False), ctx, "127.0.0.1", 8123
    )
    assert argv[:3] == ["trtllm-serve", "serve", ctx.model.serve_path]
    args = trtllm_serve.parse(argv[1:])  # exits (fails the test) on any unknown flag
    assert (args.port, args.backend, args.max_seq_len, args.tensor_parallel_size) == (
        8123,
        "pytorch",
        8192,
        1,
    )
    options = yaml.safe_load(Path(args.extra_llm_api_options).read_text())
    assert options == {
        "dtype": "bfloat16",
        "kv_cache_config": {
            "free_gpu_memory_fraction": 0.9,
            "enable_block_reuse": True,
            "dtype": "fp8",
        },
        "enable_chunked_prefill": True,
        "cuda_graph_config": None,
    }
    assert trtllm_serve.check_options(args.extra_llm_api_options, "pytorch") is None
    assert Path(args.extra_llm_api_options).parent == ctx.workdir

    trt = _config(ctx, backend="tensorrt", kv_cache_dtype="fp8")
    targs = trtllm_serve.parse(engine.serve_argv(trt, ctx, "127.0.0.1", 8124)[1:])
    assert targs.backend == "tensorrt" and targs.tokenizer == ctx.model.serve_path
    assert targs.model == str(_build.engine_dir(trt, ctx, "1.2.1"))
    toptions = yaml.safe_load(Path(targs.extra_llm_api_options).read_text())
    assert "dtype" not in toptions["kv_cache_config"] and "cuda_graph_config" not in toptions
    assert trtllm_serve.check_options(targs.extra_llm_api_options, "tensorrt") is None


def test_disallowed_keys_are_refused_by_engine_and_stand_in(tmp_path):
    assert _llmargs.unknown_keys({"cuda_graph_config": {}, "build_config": {}}, "pytorch") == [
        "build_config"
    ]
    assert _llmargs.unknown_keys(
        {
            "kv_cache_config": {"dtyp": "fp8"},
            "scheduler_config": {"dynamic_batch_config": {"x": 1}},
        },
        "tensorrt",
    ) == ["kv_cache_config.dtyp", "scheduler_config.dynamic_batch_config.x"]
    with pytest.raises(EngineError) as err:
        _llmargs.checked({"max_num_seqs": 8}, "pytorch")
    assert err.value.reason == "invalid_argument" and "max_num_seqs" in str(err.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kv_cache_config: {free_gpu_memory_fraction: 0.9, bogus: 1}\n")
    env = {**os.environ, "STANDIN_PYTHON": sys.executable}
    done = subprocess.run(
        [str(BIN / "trtllm-serve"), "m", "--extra_llm_api_options", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 1 and "Extra inputs are not permitted" in done.stderr
    assert "kv_cache_config.bogus" in done.stderr
    done = subprocess.run(
        [str(BIN / "trtllm-serve"), "m", "--max_num_seqs", "8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2 and "Error: No such option: --max_num_seqs" in done.stderr


def test_build_steps_parse_with_the_stand_in_tools():
    ctx = _ctx()
    config = _config(
        ctx,
        backend="tensorrt",
        quantization="fp8",
        kv_cache_dtype="fp8",
        use_fp8_context_fmha=True,
        gemm_plugin="fp8",
    )
    quant = _build.checkpoint_argv(config, "/m", "/c", [])
    assert quant[quant.index("--qformat") + 1] == "fp8" and "--kv_cache_dtype" in quant
    trtllm_build._checkpoint_parser("quantize.py").parse_args(quant)
    build = _build.build_argv(config, "/c", "/e", [])
    args = trtllm_build._build_parser().parse_args(build)
    assert (args.use_fp8_context_fmha, args.gemm_plugin, args.max_input_len) == (
        "enable",
        "fp8",
        8192,
    )
    plain = _build.checkpoint_argv(_config(ctx, backend="tensorrt"), "/m", "/c", [])
    assert "--qformat" not in plain
    trtllm_build._checkpoint_parser("convert_checkpoint.py").parse_args(plain)


def test_export_pytorch_and_tensorrt(tmp_path):
    ctx = _ctx()
    engine = TrtllmEngine()
    bundle = engine.export(_config(ctx), ctx)
    assert bundle.command[:3] == ["trtllm-serve", "serve", ctx.model.serve_path]
    assert "--extra_llm_api_options" in bundle.command
    assert "TensorRT-LLM 1.2.1" in bundle.files["extra_llm_api_options.yaml"]
    trt = engine.export(_config(ctx, backend="tensorrt", quantization="fp8"), ctx)
    script = trt.files["build_engine.sh"]
    assert trt.setup == (("bash", "build_engine.sh"),) and "TensorRT-LLM 1.2.1" in script
    assert trt.command[:3] == ["trtllm-serve", "serve", "trtllm_engine"]
    assert "--backend" in trt.command and "tensorrt" in trt.command
    assert "quantization/quantize.py" in script and "--qformat fp8" in script
    assert "trtllm-build --checkpoint_dir trtllm_ckpt" in script
    assert "trtllm-serve" not in script  # serve.sh serves; the script only builds
    path = tmp_path / "build_engine.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_the_exported_tensorrt_engine_is_built_once_and_served_from_its_folder(tmp_path):
    """serve.sh runs build_engine.sh, which builds on the first start only: trtllm's tools are
    replaced by scripts on PATH that log their calls and write what trtllm-build writes."""
    import json as _json

    from tuner.analysis.export import serve_script

    ctx = _ctx()
    bundle = TrtllmEngine().export(_config(ctx, backend="tensorrt", quantization="fp8"), ctx)
    out = tmp_path / "export"
    out.mkdir()
    for name, text in bundle.files.items():
        (out / name).write_text(text)
    (out / "serve.sh").write_text(serve_script("TensorRT-LLM", bundle))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    fake = {
        "python3": f'echo "python3 $*" >> {calls}',
        "trtllm-build": f"echo trtllm-build >> {calls}; mkdir -p trtllm_engine; echo {{}} > trtllm_engine/config.json",
        "trtllm-serve": f'echo "trtllm-serve $*" >> {calls}',
    }
    for name, body in fake.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TRTLLM_EXAMPLES": "/ex"}
    for _ in range(3):  # three starts of the server
        done = subprocess.run(
            ["bash", "serve.sh"], cwd=out, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert [line.split()[0] for line in lines] == [
        "python3", "trtllm-build", "trtllm-serve", "trtllm-serve", "trtllm-serve",
    ]  # fmt: skip
    assert lines[-1].startswith("trtllm-serve serve trtllm_engine")
    assert _json.loads((out / "trtllm_engine" / "config.json").read_text()) == {}


# ---------------------------------------------------------------- engine cache
def test_engine_cache_rebuilds_only_for_build_params(tmp_path, standins):
    ctx = _ctx(tmp_path)
    engine = TrtllmEngine()
    first = engine.prepare(_config(ctx, backend="tensorrt"), ctx)
    assert first["engine_cache_hit"] is False and first["engine_size_bytes"] >= 4096
    again = engine.prepare(
        _config(
            ctx,
            backend="tensorrt",
            enable_block_reuse=False,
            kv_cache_free_gpu_memory_fraction=0.85,
        ),
        ctx,
    )
    assert again["engine_cache_hit"] is True
    assert again["build_time_s"] == first["build_time_s"]
    assert _builds(standins) == ["convert", "build"]
    engine.prepare(_config(ctx, backend="tensorrt", max_batch_size=64), ctx)
    assert _builds(standins) == ["convert", "build", "build"]  # checkpoint reused
    assert engine.prepare(_config(ctx), ctx) == {}  # pytorch: nothing to build


def test_build_failure_is_build_failed_and_leaves_nothing(tmp_path, standins, monkeypatch):
    monkeypatch.setenv("STANDIN_BUILD_FAULT", "fail")
    ctx = _ctx(tmp_path)
    config = _config(ctx, backend="tensorrt")
    with pytest.raises(EngineError) as err:
        TrtllmEngine().run(config, ctx)
    assert err.value.reason == "build_failed" and "injected failure" in str(err.value)
    assert Path(err.value.log_path).is_file()
    engines = tmp_path / "cache" / "engines"
    assert [p.name for p in engines.iterdir()] == []  # no half-built engine is cached


# ---------------------------------------------------------------- full lifecycles
def test_full_measurement_pytorch_backend(tmp_path, standins):
    ctx = _ctx(tmp_path)
    measurement = TrtllmEngine().run(_config(ctx, max_batch_size=2), ctx)
    assert measurement.num_completed == measurement.num_requests == 8
    assert measurement.output_tokens_per_s > 0 and measurement.ttft_ms.p50 >= 5
    argv = measurement.extra["server_argv"]
    assert "--backend" in argv and argv[argv.index("--max_batch_size") + 1] == "2"


def test_full_measurement_tensorrt_engine_records_build(tmp_path, standins):
    ctx = _ctx(tmp_path)
    measurement = TrtllmEngine().run(
        _config(ctx, backend="tensorrt", quantization="fp8", kv_cache_dtype="fp8"), ctx
    )
    assert measurement.num_completed == 8
    assert measurement.extra["engine_size_bytes"] >= 4096
    assert measurement.extra["build_time_s"] >= 0
    assert measurement.extra["engine_cache_hit"] is False
    assert _builds(standins) == ["quantize", "build"]


def test_oom_at_start_is_reason_oom(tmp_path, standins):
    ctx = _ctx(tmp_path, env={"STANDIN_FAULT": "oom_exit"})
    with pytest.raises(EngineError) as err:
        TrtllmEngine().run(_config(ctx), ctx)
    assert err.value.reason == "oom"


def test_unknown_flag_is_invalid_argument(tmp_path, standins):
    class WithVllmFlag(TrtllmEngine):
        def serve_flags(self, config, ctx, options_path):
            return [*super().serve_flags(config, ctx, options_path), "--max_num_seqs", "8"]

    ctx = _ctx(tmp_path)
    with pytest.raises(EngineError) as err:
        WithVllmFlag().run(_config(ctx), ctx)
    assert err.value.reason == "invalid_argument"
    assert "No such option: --max_num_seqs" in str(err.value)


def test_sim_runner_uses_the_plan():
    ctx = _ctx()
    engine = get_engine("trtllm")
    measurement = engine.run(_config(ctx), ctx)
    assert measurement.estimated and measurement.output_tokens_per_s > 0
