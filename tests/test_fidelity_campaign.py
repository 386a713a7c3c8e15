"""The calibration campaign's driver (bench/real/fidelity_campaign.py) end to end against the
stand-in server: one server per config across all shapes and rounds, fresh prompt text for every
run, a config that cannot start recorded once, a call cut short resumed by the next, and the
result read back as calibration points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engines.standin import REPO_ROOT

pytestmark = pytest.mark.slow

CAMPAIGN = REPO_ROOT / "studies" / "real" / "h200-fidelity-campaign.yaml"


def _campaign(tmp_path: Path) -> Path:
    """The real campaign shrunk to a CPU: the stand-in server, three of its shapes with a few
    requests each, four configs (one the stand-in refuses to start for want of KV-cache memory,
    one the memory model rejects before any start)."""
    data = yaml.safe_load(CAMPAIGN.read_text())
    study = data["study"]
    study["model"]["path"] = str(tmp_path / "model")
    study["engines"]["vllm"]["gpu_memory_utilization"] = {"choices": [0.92, 0.25, 0.16, 0.01]}
    study["options"].update(
        server_command=[sys.executable, "-m", "engines.standin.openai_server"],
        workdir=str(tmp_path / "runs"),
        startup_timeout_s=30,
    )
    keep = ("chat", "poisson", "shared-prefix")
    data["shapes"] = {name: data["shapes"][name] for name in keep}
    for entry in data["shapes"].values():
        entry["workload"].update(num_requests=6, warmup_requests=2)
        entry["workload"]["output_tokens"] = 8
    data["shapes"]["poisson"]["workload"]["arrival"]["rate"] = 50
    data["configs"] = {
        "defaults": {},
        "no-memory": {"gpu_memory_utilization": 0.16},
        "no-fit": {"gpu_memory_utilization": 0.01},
        "fp8": {"quantization": "fp8"},
    }
    data["rounds"] = {"defaults": 2}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _driver(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "bench/real/fidelity_campaign.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _port(argv: list[str]) -> str:
    return argv[argv.index("--port") + 1]


def test_campaign_serves_each_config_once_with_fresh_prompts_and_resumes(tmp_path):
    campaign, out, db = _campaign(tmp_path), tmp_path / "out", tmp_path / "state" / "c.db"
    common = ["--campaign", str(campaign), "--out", str(out), "--db", str(db)]
    _driver("setup", *common)
    # a call with room for the first server and a few shapes only: it stops, saying why
    short = _driver("run", "--trials", "4", *common)
    assert "--trials 4 measured; stopping here" in short.stdout
    first_rows = json.loads((out / "campaign.json").read_text())
    assert len(first_rows) == 4
    # too little time for another start: the call says so and measures nothing more
    tight = _driver("run", "--seconds", "20", "--start-s", "60", "--first-start-s", "60", *common)
    assert "s needed" in tight.stdout and "stopping here" in tight.stdout
    assert len(json.loads((out / "campaign.json").read_text())) == 4
    _driver("run", "--seconds", "900", "--start-s", "5", "--first-start-s", "5", *common)
    rows = json.loads((out / "campaign.json").read_text())
    by = {(r["config"], r["round"], r["shape"]): r for r in rows}

    done = [r for r in rows if r["config"] == "defaults"]
    assert sorted((r["round"], r["shape"]) for r in done) == [
        (k, s) for k in (1, 2) for s in ("chat", "poisson", "shared-prefix")
    ]
    assert all(r["state"] == "COMPLETE" for r in done)
    # the resumed call measured nothing twice: one trial per (config, round, shape)
    assert len({(r["config"], r["round"], r["shape"]) for r in rows}) == len(rows)

    # one server per config: defaults' six trials (two calls: at most two servers) share ports
    # within a call, and fp8 runs on a server of its own with its own flags
    ports = {_port(r["server_argv"]) for r in done}
    assert len(ports) <= 2
    fp8 = [r for r in rows if r["config"] == "fp8"]
    assert len(fp8) == 3 and {_port(r["server_argv"]) for r in fp8}.isdisjoint(ports)
    assert sum(not r["server_reused"] for r in fp8) == 1
    assert all("--quantization" in r["server_argv"] for r in fp8)
    assert not any("--quantization" in r["server_argv"] for r in done)

    # a server that cannot start is tried once; its other shapes are not run
    failed = [r for r in rows if r["config"] == "no-memory"]
    assert len(failed) == 1 and failed[0]["state"] == "FAIL"
    assert failed[0]["fail"]["reason"] == "oom"
    # a config the memory model rejects never starts a server: rejected on each shape, cheaply
    rejected = [r for r in rows if r["config"] == "no-fit"]
    assert len(rejected) == 3 and all(r["state"] == "PRUNED" for r in rejected)
    assert all(r["server_argv"] is None for r in rejected)

    # hygiene: no run's prompts were served before, on a server that ran every shape and round,
    # except the shared prefix's, which the stand-in sees as new prompts too (its user turns
    # differ), so every hit rate is zero
    for r in done + fp8:
        assert r["server_metrics"]["prefix_cache_hit_rate"] == 0.0, r

    assert by[("defaults", 1, "poisson")]["output_tokens_per_s"] > 0

    from tuner.calibration.points import load_points

    points = load_points([str(db)])
    assert len(points) == 9  # 6 of defaults + 3 of fp8: the failed config is no point
    assert {p.study for p in points} == {
        "h200-campaign-chat",
        "h200-campaign-poisson",
        "h200-campaign-shared-prefix",
    }
    shapes = {p.study: p.ctx.workload for p in points}
    assert shapes["h200-campaign-shared-prefix"].shared_prefix_fraction == pytest.approx(0.89)
    assert shapes["h200-campaign-poisson"].arrival.kind == "poisson"
    repeated = [
        p for p in points if p.study == "h200-campaign-chat" and p.config["quantization"] is None
    ]
    assert len(repeated) == 2 and repeated[0].key == repeated[1].key


def test_a_bad_campaign_is_one_line_naming_the_field(tmp_path):
    data = yaml.safe_load(CAMPAIGN.read_text())
    data["configs"]["fp8"] = {"quantization": "int3"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    done = _driver("specs", "--campaign", str(path), "--dir", str(tmp_path / "s"), check=False)
    assert done.returncode != 0
    assert "configs.fp8.quantization" in done.stderr and "Traceback" not in done.stderr
    data["rounds"] = {"nonexistent": 2}
    data["configs"]["fp8"] = {"quantization": "fp8"}
    path.write_text(yaml.safe_dump(data))
    done = _driver("specs", "--campaign", str(path), "--dir", str(tmp_path / "s"), check=False)
    assert "rounds.nonexistent" in done.stderr and "Traceback" not in done.stderr
