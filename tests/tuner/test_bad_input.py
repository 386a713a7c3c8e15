"""Bad input, as a user types it: one line naming the field, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = {
    "name": "bad",
    "model": "Llama-3.1-8B",
    "hardware": {"gpu": "H100-SXM"},
    "workload": {"preset": "chat", "num_requests": 20},
    "budget": {"trials": 1},
    "storage": "sqlite:///bad.db",
}
CONFIG = {
    "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
    "max_position_embeddings": 8192,
}  # fmt: skip


def _spec(**changes) -> str:
    return yaml.safe_dump({**BASE, **changes})


def _dataset(lines: bytes) -> dict:
    return {"dataset": "data.jsonl", "num_requests": 5, "_file": ("data.jsonl", lines)}


def _model(config) -> dict:
    return {"config_json": "config.json", "_file": ("config.json", json.dumps(config).encode())}


CASES = {
    "not UTF-8": (b"name: \xff\xfe\n", "not UTF-8 text"),
    "binary": (bytes(range(256)), "not UTF-8 text"),
    "NUL bytes": (b"name: a\x00\n", "binary data"),
    "seed -1": (_spec(seed=-1), "seed:"),
    "seed 2**80": (_spec(seed=2**80), "seed:"),
    "NaN SLO": (_spec(slos={"ttft_p99_ms": float("nan")}), "slos: ttft_p99_ms"),
    "negative SLO": (_spec(slos={"ttft_p99_ms": -5}), "slos: ttft_p99_ms"),
    "duplicate key": ("name: a\nname: b\n", "line 2: duplicate key 'name' (first on line 1)"),
    "sweep level 0": (
        _spec(workload={"preset": "chat", "num_requests": 9, "sweep": [0, 4]}),
        "workload.sweep.0",
    ),
    "max_model_len past the context": (
        _spec(engines={"vllm": {"max_model_len": {"value": 10**7}}}),
        "engines.vllm.max_model_len: 10,000,000 is past Llama-3.1-8B's context",
    ),
    "startup_timeout_s abc": (
        _spec(runner="real", options={"startup_timeout_s": "abc"}),
        "options.startup_timeout_s:",
    ),
    "stop_grace_s -1": (_spec(runner="real", options={"stop_grace_s": -1}), "options.stop_grace_s"),
    "loadgen_processes 0": (
        _spec(runner="real", options={"loadgen_processes": 0}),
        "options.loadgen_processes",
    ),
    "misspelt option": (
        _spec(runner="real", options={"startup_timout_s": 5}),
        "did you mean 'startup_timeout_s'?",
    ),
    "dataset line an array": (_dataset(b"[1, 2]\n"), "line 1: expected a JSON object, got list"),
    "dataset line a number": (_dataset(b"3\n"), "expected a JSON object, got int"),
    "dataset line a string": (_dataset(b'"hi"\n'), "expected a JSON object, got str"),
    "dataset Infinity": (_dataset(b'{"prompt": "x", "output_tokens": Infinity}\n'), "Infinity"),
    "dataset 1e30": (_dataset(b'{"prompt": "x", "output_tokens": 1e30}\n'), "output_tokens"),
    "dataset 2**63": (
        _dataset(b'{"prompt": "x", "output_tokens": 9223372036854775808}\n'),
        "output_tokens must be a whole number",
    ),
    "dataset not UTF-8": (_dataset(b'{"prompt": "\xff", "output_tokens": 3}\n'), "not UTF-8"),
    "config.json heads 0": (
        _model({**CONFIG, "num_attention_heads": 0}),
        "num_attention_heads must be a positive whole number",
    ),
    "config.json a list": (_model([1, 2]), "holds a JSON list"),
    "config.json nulls": (_model(dict.fromkeys(CONFIG)), "must be a positive whole number"),
}


def _write_case(cwd: Path, case) -> Path:
    content = case
    if isinstance(case, dict):  # a workload dataset or a model config.json beside the spec
        name, data = case.pop("_file")
        (cwd / name).write_bytes(data)
        field = "workload" if "dataset" in case else "model"
        content = _spec(**{field: case})
    path = cwd / "spec.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_naming_the_field_with_exit_2_and_nothing_written(tmp_path, name):
    case, needle = CASES[name]
    spec = _write_case(tmp_path, dict(case) if isinstance(case, dict) else case)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    done = subprocess.run(
        [sys.executable, "-m", "tuner", "run", str(spec), "--quiet", "--no-export"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-1500:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert needle in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no study, no run folder


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    spec = _write_case(tmp_path, _spec(seed=-1))
    done = subprocess.run(
        [sys.executable, "-m", "tuner", "run", str(spec), "--debug"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" in done.stderr and "seed" in done.stderr
