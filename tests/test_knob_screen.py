"""The knob screen's driver (bench/real/knob_screen.py) end to end against the stand-in server:
a call as a session makes it, then a second call that resumes the study after a lost trial."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from engines.standin import REPO_ROOT

pytestmark = pytest.mark.slow

SPEC = REPO_ROOT / "studies" / "real" / "h200-beyond-expert.yaml"


def _spec(
    tmp_path: Path, source: Path = SPEC, num_requests: int = 8, output_tokens: int = 16, **options
) -> Path:
    """``source`` shrunk to a CPU: the stand-in server in place of vLLM, a tiny workload."""
    data = yaml.safe_load(source.read_text())
    data["model"]["path"] = str(tmp_path / "model")
    data["workload"].update(
        num_requests=num_requests, warmup_requests=2, output_tokens=output_tokens
    )
    data["workload"]["arrival"] = {"kind": "concurrency", "concurrency": 4}
    data["options"].update(
        server_command=[sys.executable, "-m", "engines.standin.openai_server"],
        workdir=str(tmp_path / "runs"),
        startup_timeout_s=30,
        **options,
    )
    path = tmp_path / f"{source.stem}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _driver(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "bench/real/knob_screen.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_screen_measures_the_plan_in_order_and_resumes(tmp_path):
    spec, out, db = _spec(tmp_path), tmp_path / "out", tmp_path / "state" / "screen.db"
    common = ["--spec", str(spec), "--out", str(out), "--db", str(db)]
    _driver("setup", *common)
    first = _driver("run", "--plan", "expert,api_server_count_4", "--seconds", "900", *common)
    assert "expert: trial 0 COMPLETE" in first and "api_server_count_4: trial 1 COMPLETE" in first
    storage = f"sqlite:///{db}"
    study = optuna.load_study(study_name="h200-beyond-expert", storage=storage)
    study.enqueue_trial({}, user_attrs={"knob": "stale"})  # as a call cut off mid-trial leaves
    plan = "expert,stream_interval_8,api_server_count_4@2,combo"
    again = _driver("run", "--plan", plan, "--last", "expert_end", "--seconds", "900", *common)
    assert "expert: measured already, skipped" in again
    rows = json.loads((out / "knob-screen.json").read_text())
    by_knob = {r["knob"]: r for r in rows}
    assert by_knob["stale"]["state"] == "FAIL" and by_knob["stale"]["fail"]["reason"] == "not_run"
    assert [r["knob"] for r in rows if r["state"] == "COMPLETE"][-1] == "expert_end"
    assert "--api-server-count" in by_knob["api_server_count_4"]["server_argv"]
    assert "--stream-interval" not in by_knob["api_server_count_4"]["server_argv"]
    assert "--api-server-count" not in by_knob["expert"]["server_argv"]
    again_round = by_knob["api_server_count_4@2"]  # a round: the same config on a new server
    assert again_round["options"] == {"api_server_count": 4}
    assert "--api-server-count" in again_round["server_argv"]
    assert again_round["trial"] > by_knob["stream_interval_8"]["trial"]
    assert "--quantization" in by_knob["expert"]["server_argv"]
    assert all(len(r["runs"]) == 2 for r in rows if r["state"] == "COMPLETE")
    combo = by_knob.get("combo")  # the stand-in's numbers decide whether two knobs read above
    assert combo is None or "combo: fewer" not in again
    trials = optuna.load_study(study_name="h200-beyond-expert", storage=storage).trials
    assert trials[0].user_attrs.get("baseline") and trials[-1].user_attrs.get("drift_guard")
    with sqlite3.connect(out / "screen.db") as copy:  # the copy in --out holds every trial
        assert copy.execute("select count(*) from trials").fetchone()[0] == len(trials)


CAPACITY_SPEC = REPO_ROOT / "studies" / "real" / "h200-beyond-expert-capacity.yaml"
CAPACITY_KNOBS = REPO_ROOT / "studies" / "real" / "h200-beyond-expert-capacity-knobs.yaml"


def test_capacity_screen_searches_each_config_and_combines_on_capacity(tmp_path):
    """The capacity screen (workload 2): each config's trial carries a capacity search whose
    probes ran on its own server, and ``combo`` picks by ``capacity_rps``, not tok/s."""
    probes = {"min_duration_s": 2, "settle_latencies": 1, "max_steps": 3, "rel_tol": 0.3}
    spec = _spec(tmp_path, CAPACITY_SPEC, num_requests=12, output_tokens=8, capacity=probes)
    out, db = tmp_path / "out", tmp_path / "state" / "capacity.db"
    common = ["--spec", str(spec), "--knobs", str(CAPACITY_KNOBS), "--out", str(out)]
    common += ["--db", str(db)]
    _driver("setup", *common)
    plan = "expert,batched_4096,api_server_count_4,combo"
    printed = _driver("run", "--plan", plan, "--seconds", "900", "--later-s", "60", *common)
    rows = {r["knob"]: r for r in json.loads((out / "knob-screen.json").read_text())}
    for name in ("expert", "batched_4096", "api_server_count_4"):
        row = rows[name]
        assert row["state"] == "COMPLETE", row
        assert row["capacity_rps"] > 0 and row["capacity"]["probes"], row
        assert row["capacity_rps"] == row["capacity"]["capacity_rps"]
        assert f"{name}: trial {row['trial']} COMPLETE" in printed and "req/s" in printed
    argv = rows["batched_4096"]["server_argv"]
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "4096"
    above = sorted(
        (
            n
            for n in ("batched_4096", "api_server_count_4")
            if rows[n]["capacity_rps"] > rows["expert"]["capacity_rps"]
        ),
        key=lambda n: rows[n]["capacity_rps"],
    )
    if len(above) < 2:
        assert "combo" not in rows and "combo: fewer than two knobs" in printed
    else:
        assert rows["combo"]["options"] == {"api_server_count": 4, "max_num_batched_tokens": 4096}


EXTRACTION_SPEC = REPO_ROOT / "studies" / "real" / "h200-smollm2-extraction.yaml"
EXTRACTION_KNOBS = REPO_ROOT / "studies" / "real" / "h200-smollm2-extraction-knobs.yaml"


def test_extraction_screen_records_the_servers_counters_and_agreement(tmp_path):
    """Workload 3: dataset prompts (bench/real/extraction_dataset.py), an accuracy reference
    (the expert), n-gram speculation; each trial carries the server's own counters (prefix-cache
    hit rate, acceptance) read from ``/metrics`` and its greedy agreement with the expert."""
    dataset = tmp_path / "extraction.jsonl"
    subprocess.run(
        [
            sys.executable,
            "bench/real/extraction_dataset.py",
            str(dataset),
            "--rows",
            "40",
            "--output-tokens",
            "8",
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    spec = _spec(tmp_path, EXTRACTION_SPEC, num_requests=12)
    data = yaml.safe_load(spec.read_text())
    data["workload"]["dataset"] = str(dataset)
    data["accuracy"].update(prompts=2, gen_tokens=4, budget_tokens=64)
    spec.write_text(yaml.safe_dump(data))
    out, db = tmp_path / "out", tmp_path / "state" / "extraction.db"
    common = ["--spec", str(spec), "--knobs", str(EXTRACTION_KNOBS), "--out", str(out)]
    common += ["--db", str(db)]
    _driver("setup", *common)
    printed = _driver("run", "--plan", "expert,ngram_3", "--seconds", "900", *common)
    rows = {r["knob"]: r for r in json.loads((out / "knob-screen.json").read_text())}
    expert, ngram = rows["expert"], rows["ngram_3"]
    assert expert["state"] == ngram["state"] == "COMPLETE", (expert, ngram)
    assert "--speculative-config" in ngram["server_argv"]
    assert "--speculative-config" not in expert["server_argv"]
    counted = ngram["server_metrics"]
    # 2 warmup + 12 measured answers of 8 tokens; the stand-in accepts 1 of 3 drafts a step
    assert counted["generation_tokens_delta"] == 14 * 8
    assert counted["spec_acceptance_rate"] == pytest.approx(1 / 3)
    assert counted["spec_mean_acceptance_length"] == pytest.approx(2.0)
    assert "spec_acceptance_rate" not in expert["server_metrics"]
    assert 0.0 <= expert["server_metrics"]["prefix_cache_hit_rate"] <= 1.0
    assert expert["token_agreement"] == ngram["token_agreement"] == 1.0
    assert "spec_acceptance_rate=0.333" in printed
