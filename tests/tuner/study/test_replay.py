"""Replaying another study's configs: the order the trials are queued in, one server per config
across the sweep's loads, the baseline mark, and the per-request traces each run leaves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engines.errors import SpecError
from engines.serving.measure import close_servers
from engines.serving.request_log import read_request_log
from tuner.analysis.results import trial_records
from tuner.spec import parse_spec
from tuner.study.loop import run_study
from tuner.study.replay import enqueue_configs, parse_trials, trial_configs
from tuner.study.storage import open_storage

ROOT = Path(__file__).resolve().parents[3]


def _source_study(tmp: Path) -> str:
    """A small sim study whose trials hold configs to replay; returns its storage URL."""
    url = f"sqlite:///{tmp}/source.db"
    spec = parse_spec(
        {
            "name": "source",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"input_tokens": 32, "output_tokens": 8, "num_requests": 20},
            "engines": {
                "vllm": {"max_model_len": {"value": 8192}, "max_num_seqs": {"choices": [64, 128]}}
            },
            "budget": {"trials": 4},
            "storage": url,
        }
    )
    run_study(spec)
    return url


def _load(url: str):
    import optuna

    return optuna.load_study(study_name="source", storage=open_storage(url))


def _replay_spec(tmp: Path, monkeypatch) -> dict:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("STANDIN_TTFT_MS", "5")
    monkeypatch.setenv("STANDIN_ITL_MS", "1")
    return {
        "name": "replay",
        "model": "Llama-3.1-8B",
        "hardware": {"gpu": "H200"},
        "workload": {
            "input_tokens": 32,
            "output_tokens": 8,
            "num_requests": 12,
            "arrival": {"kind": "concurrency", "concurrency": 4},
            "sweep": [4, 2],
        },
        "runner": "real",
        "engines": {
            "vllm": {"max_model_len": {"value": 8192}, "max_num_seqs": {"choices": [64, 128]}}
        },
        "budget": {"trials": 4, "trial_timeout_s": 60},
        "baseline": False,
        "sampler": "random",
        "storage": f"sqlite:///{tmp}/replay.db",
        "options": {
            "vllm_server_command": [sys.executable, "-m", "engines.standin.openai_server"],
            "startup_timeout_s": 20,
            "stop_grace_s": 5,
            "workdir": str(tmp / "work"),
            "save_requests": True,
        },
    }


def test_replayed_configs_run_in_order_with_one_server_per_config(tmp_path, monkeypatch):
    source = _source_study(tmp_path)
    first = {}  # the first completed trial of each max_num_seqs, newest config first
    for t in reversed(trial_records(_load(source))):
        if t.state == "COMPLETE":
            first.setdefault(t.config["max_num_seqs"], t.number)
    assert len(first) == 2
    configs = trial_configs(_load(source), list(first.values()))
    spec = parse_spec(_replay_spec(tmp_path, monkeypatch))
    assert enqueue_configs(spec, configs) == 4
    assert enqueue_configs(spec, configs) == 0  # a resumed study is not queued twice
    try:
        study = run_study(spec)
    finally:
        close_servers()
    records = trial_records(study)
    done = [r for r in records if r.state == "COMPLETE"]
    assert len(done) == len(records) == 4
    got = [(r.config["max_num_seqs"], r.attrs["load"]) for r in done]
    want = [(c["max_num_seqs"], load) for _, c in configs for load in (4.0, 2.0)]
    assert got == want
    assert [r.baseline for r in done] == [True, False, False, False]
    logs = list((tmp_path / "work" / "logs").glob("trial-*.log"))
    assert len(logs) == 2  # one server per config, reused across its two loads
    for record in done:
        trace = read_request_log(
            tmp_path / "work" / "requests" / f"trial-{record.number}-run-0.jsonl.gz"
        )
        assert len(trace) == 12 and all(r.error is None for r in trace)
        assert all(r.output_tokens == 8 and len(r.itl_s) == 7 for r in trace)
        ttft_ms = sorted((r.first_token_s - r.start_s) * 1e3 for r in trace)
        assert ttft_ms[len(ttft_ms) // 2] == pytest.approx(
            record.metrics["ttft_p50_ms"], rel=0.05, abs=1.0
        )


def test_replaying_a_trial_that_does_not_exist_names_the_field(tmp_path):
    source = _source_study(tmp_path)
    with pytest.raises(SpecError, match="--trials: study 'source' has no trial 99"):
        trial_configs(_load(source), [0, 99])


@pytest.mark.parametrize("text", ["", "a,b", "1,-2", "3;4"])
def test_trial_lists_that_are_not_numbers_name_the_flag(text):
    with pytest.raises(SpecError, match="--trials: expected trial numbers"):
        parse_trials(text)


def test_trial_lists_keep_their_order():
    assert parse_trials("5, 0,3") == [5, 0, 3]
