"""A real-runner study over vLLM and TensorRT-LLM at once, end to end, against the stand-ins:
both engines' servers start, get measured, stop, and the study exports its winner."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tuner.analysis.export import export_trial
from tuner.analysis.results import trial_records
from tuner.spec import parse_spec
from tuner.study.loop import run_study

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def standin_env(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "PATH", f"{ROOT / 'engines' / 'standin' / 'bin'}{os.pathsep}{os.environ['PATH']}"
    )
    monkeypatch.setenv("STANDIN_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("STANDIN_BUILD_LOG", str(tmp_path / "builds.log"))
    monkeypatch.setenv("STANDIN_TTFT_MS", "5")
    monkeypatch.setenv("STANDIN_ITL_MS", "1")
    return tmp_path


def test_study_over_both_engines_runs_on_the_standins(standin_env):
    tmp = standin_env
    spec = parse_spec(
        {
            "name": "both",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {
                "input_tokens": 32,
                "output_tokens": 8,
                "num_requests": 12,
                "arrival": {"kind": "concurrency", "concurrency": 4},
            },
            "runner": "real",
            "engines": {
                "vllm": {
                    "max_model_len": {"value": 8192},
                    "quantization": {"value": None},
                    "max_num_seqs": {"choices": [64, 128]},
                },
                "trtllm": {"max_seq_len": {"value": 8192}, "backend": {"choices": ["pytorch"]}},
            },
            "budget": {"trials": 6, "trial_timeout_s": 60},
            "storage": f"sqlite:///{tmp}/both.db",
            "options": {
                "vllm_server_command": [sys.executable, "-m", "engines.standin.openai_server"],
                "trtllm_serve_command": [sys.executable, "-m", "engines.standin.trtllm_serve"],
                "startup_timeout_s": 20,
                "stop_grace_s": 5,
                "workdir": str(tmp / "work"),
                "engine_cache_dir": str(tmp / "cache"),
            },
        }
    )
    study = run_study(spec)
    done = [r for r in trial_records(study) if r.state == "COMPLETE"]
    assert {r.engine for r in done} == {"vllm", "trtllm"}  # both baselines were measured
    assert all(not r.estimated and r.metrics["output_tokens_per_s"] > 0 for r in done)
    argv = {r.engine: r.attrs["result"]["measurement"]["extra"]["server_argv"] for r in done}
    assert "--max-num-seqs" in argv["vllm"] and "--extra_llm_api_options" in argv["trtllm"]
    result = export_trial(study, spec, tmp / "export")
    manifest = json.loads((tmp / "export" / "manifest.json").read_text())
    assert manifest["measured"] == "measured" and manifest["engine"] == result.engine
