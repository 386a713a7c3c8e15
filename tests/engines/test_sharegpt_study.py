"""ShareGPT datasets drive a study on either runner, as a JSON array or as JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engines.datasets import dataset_requests
from tuner.spec import parse_spec
from tuner.study.loop import run_study

ROOT = Path(__file__).resolve().parents[2]
CONVERSATIONS = [
    {"conversations": [
        {"from": "human", "value": f"question number {i} " + "word " * (8 + i)},
        {"from": "gpt", "value": "answer " * (4 + i % 5)},
        {"from": "human", "value": "and a follow-up that is not used"},
    ]}
    for i in range(12)
] + [{"conversations": [{"from": "gpt", "value": "no human turn first"}]}]  # fmt: skip


def _write(tmp_path: Path, form: str) -> Path:
    path = tmp_path / f"sharegpt.{form}"
    if form == "json":
        path.write_text(json.dumps(CONVERSATIONS))
    else:
        path.write_text("\n".join(json.dumps(c) for c in CONVERSATIONS) + "\n")
    return path


@pytest.mark.parametrize("form", ["json", "jsonl"])
def test_both_forms_read_the_same_requests(tmp_path, form):
    rows = dataset_requests(_write(tmp_path, form))
    assert len(rows) == 12  # the conversation without a human turn first is skipped
    assert rows[0][2].startswith("question number 0") and rows[0][1] == len("answer " * 4) // 4


@pytest.mark.parametrize("runner", ["sim", "real"])
@pytest.mark.parametrize("form", ["json", "jsonl"])
def test_a_study_runs_on_a_sharegpt_dataset(tmp_path, form, runner):
    data = {
        "name": "sharegpt",
        "model": "Llama-3.1-8B",
        "hardware": {"gpu": "H100-SXM"},
        "workload": {
            "dataset": str(_write(tmp_path, form)),
            "num_requests": 12,
            "arrival": {"kind": "concurrency", "concurrency": 4},
        },
        "engines": {
            "vllm": {"max_num_seqs": {"choices": [4, 8]}, "max_model_len": {"value": 4096}}
        },
        "budget": {"trials": 2, "trial_timeout_s": 60},
        "sampler": "grid",
        "baseline": False,
        "runner": runner,
        "storage": f"sqlite:///{tmp_path}/s.db",
    }
    if runner == "real":
        data["options"] = {
            "server_command": [sys.executable, "-m", "engines.standin.openai_server"],
            "vllm_args": {"ttft-ms": 5, "itl-ms": 1},
            "env": {"PYTHONPATH": str(ROOT)},
            "startup_timeout_s": 20,
            "stop_grace_s": 2,
            "workdir": str(tmp_path / "runs"),
        }
    study = run_study(parse_spec(data))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2, [(t.state.name, t.user_attrs.get("fail")) for t in study.trials]
    for trial in done:
        measured = trial.user_attrs["result"]["measurement"]
        assert measured["num_completed"] == 12 and measured["estimated"] is (runner == "sim")
