"""Long real studies say what they are doing: one progress line per server and run event."""

from __future__ import annotations

import logging

from engines.serving import measure_server
from engines.standin import REPO_ROOT, STANDIN_MODULE_COMMAND
from engines.vllm import VllmEngine


def test_a_real_run_logs_server_start_ready_warmup_and_measuring(make_ctx, tiny_model_dir, caplog):
    engine = VllmEngine()
    ctx = make_ctx(
        workload={
            "input_tokens": 32,
            "output_tokens": 8,
            "num_requests": 40,
            "warmup_requests": 4,
            "arrival": {"kind": "concurrency", "concurrency": 4},
        },
        model_path=str(tiny_model_dir),
        server_command=STANDIN_MODULE_COMMAND,
        env={"PYTHONPATH": str(REPO_ROOT)},
        stop_grace_s=3.0,
        startup_timeout_s=20.0,
    )
    with caplog.at_level(logging.INFO, logger="servetune.progress"):
        measured = measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    lines = [r.getMessage() for r in caplog.records if r.name == "servetune.progress"]
    assert measured.num_completed == 40
    assert any(line.strip().startswith("server starting on port") for line in lines)
    assert any("server ready in" in line for line in lines)
    assert "  warmup: 4 requests" in lines and "  run 1: measuring 40 requests" in lines
    progress = [line for line in lines if "requests," in line and "tok/s so far" in line]
    assert [line.split()[1] for line in progress] == ["10/40", "20/40", "30/40"]
