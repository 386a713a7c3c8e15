"""The GPU sessions' driver (bench/real/h100_vllm.py) end to end against the stand-in server.

Device minutes are scarce (30 a session): a driver that fails on the GPU machine loses a call.
This runs its commands the way a session does (setup, enqueue from the committed H200 grid,
study, finalize), on a copy of the grid's spec that serves the stand-in instead of vLLM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engines.standin import REPO_ROOT

pytestmark = pytest.mark.slow

GRID = REPO_ROOT / "studies" / "real" / "h200-llama8b-vllm-grid.yaml"
GRID_DB = REPO_ROOT / "studies" / "real" / "h200" / "h200-llama8b-vllm-grid.db"


def _spec(tmp_path: Path) -> Path:
    data = yaml.safe_load(GRID.read_text())
    data.update(name="driver", storage=f"sqlite:///{tmp_path}/driver.db")
    data["model"]["path"] = str(tmp_path / "model")
    data["workload"].update(num_requests=8, warmup_requests=2, output_tokens=16, sweep=[4, 2])
    data["workload"]["arrival"] = {"kind": "concurrency", "concurrency": 4}
    data["budget"]["trials"] = 4
    data["options"].update(
        server_command=[sys.executable, "-m", "engines.standin.openai_server"],
        workdir=str(tmp_path / "runs"),
        startup_timeout_s=30,
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _driver(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "bench/real/h100_vllm.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_driver_replays_grid_configs_and_finalizes_them(tmp_path):
    spec, out = _spec(tmp_path), tmp_path / "out"
    _driver("setup", "--spec", str(spec))
    queued = _driver("enqueue", "--spec", str(spec), "--from", str(GRID_DB), "--trials", "0,2")
    assert "queued 4 trials in driver" in queued
    _driver("study", "--spec", str(spec), "--seconds", "400", "--out", str(out))
    assert (out / "driver.db").exists()  # a consistent copy after every trial
    common = ["--spec", str(spec), "--out", str(out), "--no-crosscheck", "--capacity-steps", "2"]
    _driver("finalize", "--only", "baseline", "--repeats", "2", *common)
    _driver("finalize", "--only", "winner", "--repeats", "1", *common)
    base = json.loads((out / "finalists-baseline.json").read_text())
    win = json.loads((out / "finalists-winner.json").read_text())
    assert base["study"] == win["study"] == "driver"
    (b,), (w,) = base["configs"], win["configs"]
    assert b["baseline"] and b["trial"] == 0 and not w["baseline"]
    assert w["config"]["quantization"] == "fp8"  # trial 2 of the grid: the H100 winner's config
    assert b["measurement"]["runs"] == 2 and len(b["measurement"]["extra"]["runs"]) == 2
    probes = b["measurement"]["extra"]["capacity"]["probes"]
    assert 1 <= len(probes) <= 2 and b["measurement"]["capacity_rps"] is not None
    traces = sorted(p.name for p in (tmp_path / "runs" / "finalize" / "requests").iterdir())
    assert "trial-0-run-1.jsonl.gz" in traces and "trial-0-probe-0.jsonl.gz" in traces
