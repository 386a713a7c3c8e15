"""Failed requests never win: a real-runner study on the stand-in where one config is the faster
but answers a third of its requests with HTTP 500. With no error-rate SLO in the spec that trial
is infeasible (the 1% default) and the other is exported; ``slos.error_rate: 0.5`` lets it win,
so it is the limit, not chance, that decides."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from engines.errors import SpecError
from engines.standin import REPO_ROOT, STANDIN_SCRIPT
from tuner.analysis.export import export_trial
from tuner.analysis.results import study_front, trial_records
from tuner.console import print_front
from tuner.spec import parse_spec
from tuner.study.loop import run_study

# vllm serve's argv in, the stand-in out: max_num_seqs 128 is fast (1 ms TTFT and ITL) and
# fails every third request with HTTP 500; 64 is slower (150/5 ms) and sound. The TTFT gap is
# wide because p99 of 30 requests is their slowest: one request stalled ~25 ms on a busy CI
# machine once made the fast server's p99 read above a 20 ms server's.
SHIM = """
import os, sys
argv = sys.argv[1:]
faulty = argv[argv.index("--max-num-seqs") + 1] == "128"
extra = ["--ttft-ms", "1", "--itl-ms", "1", "--fault", "http_500", "--fault-every", "3"]
os.execv(sys.executable, [sys.executable, {script!r}, *argv,
         *(extra if faulty else ["--ttft-ms", "150", "--itl-ms", "5"])])
"""
PINNED = {
    "dtype": "bfloat16",
    "quantization": None,
    "kv_cache_dtype": "auto",
    "gpu_memory_utilization": 0.9,
    "max_num_batched_tokens": 8192,
    "max_model_len": 8192,
    "enable_prefix_caching": True,
    "enable_chunked_prefill": True,
    "enforce_eager": False,
    "block_size": 16,
}


def _spec(tmp: Path, name: str, slos: dict):
    shim = tmp / "shim.py"
    shim.write_text(SHIM.format(script=str(STANDIN_SCRIPT)))
    return parse_spec(
        {
            "name": name,
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {
                "input_tokens": 32,
                "output_tokens": 16,
                "num_requests": 30,
                "warmup_requests": 0,
                "arrival": {"kind": "concurrency", "concurrency": 3},
            },
            "runner": "real",
            "engines": {
                "vllm": {
                    **{k: {"value": v} for k, v in PINNED.items()},
                    "max_num_seqs": {"choices": [64, 128]},
                }
            },
            "objectives": ["output_tokens_per_s", "ttft_p99_ms"],
            "slos": slos,
            "sampler": "grid",
            "baseline": False,
            "budget": {"trials": 2, "trial_timeout_s": 60},
            "storage": f"sqlite:///{tmp}/{name}.db",
            "options": {
                "server_command": [sys.executable, str(shim)],
                "env": {"PYTHONPATH": str(REPO_ROOT)},
                "startup_timeout_s": 20,
                "stop_grace_s": 3,
                "workdir": str(tmp / "work"),
            },
        }
    )


def _by_seqs(study) -> dict[int, object]:
    return {r.config["max_num_seqs"]: r for r in trial_records(study) if r.state == "COMPLETE"}


@pytest.mark.slow
def test_a_trial_with_failed_requests_is_infeasible_and_never_exported(tmp_path):
    spec = _spec(tmp_path, "errors", {"ttft_p99_ms": 5000})
    study = run_study(spec)
    trials = _by_seqs(study)
    faulty, sound = trials[128], trials[64]
    assert 0.25 <= faulty.metrics["error_rate"] <= 0.4  # every third request got HTTP 500
    assert sound.metrics["error_rate"] == 0.0
    # it would win on both objectives, were failed requests allowed
    assert faulty.metrics["output_tokens_per_s"] > sound.metrics["output_tokens_per_s"]
    assert faulty.metrics["ttft_p99_ms"] < sound.metrics["ttft_p99_ms"]
    assert not faulty.feasible and sound.feasible
    assert faulty.attrs["result"]["constraints"][-1] == pytest.approx(
        faulty.metrics["error_rate"] - 0.01
    )
    assert study.user_attrs["slos"] == {"ttft_p99_ms": 5000, "error_rate": 0.01}
    assert study_front(study).winner == sound.number
    result = export_trial(study, spec, tmp_path / "export")
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert result.trial == sound.number and manifest["config"]["max_num_seqs"] == 64
    assert manifest["slos"]["error_rate"] == 0.01
    console = Console(record=True, width=200)
    print_front(study, console)
    shown = console.export_text()
    assert "error rate <= 1%" in shown and "0.0%" in shown and "1 config among 1 feasible" in shown

    looser = _spec(tmp_path, "errors-allowed", {"ttft_p99_ms": 5000, "error_rate": 0.5})
    allowed = run_study(looser)
    assert study_front(allowed).winner == _by_seqs(allowed)[128].number


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_error_rate_slo_is_a_share_of_requests(tmp_path, rate):
    with pytest.raises(SpecError, match="slos: error_rate is a share of requests, 0 to 1"):
        _spec(tmp_path, "bad", {"error_rate": rate})
