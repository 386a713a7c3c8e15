"""A tuner killed with SIGKILL leaves no server behind, and its resume loses no trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _spec(tmp_path: Path, marker: int, trials: int = 3, processes: int | str = "auto") -> Path:
    spec = {
        "name": "killed",
        "model": {"name": "Llama-3.1-8B"},
        "hardware": {"gpu": "H100-SXM"},
        "workload": {
            "input_tokens": 16, "output_tokens": 16, "num_requests": 120,
            "arrival": {"kind": "concurrency", "concurrency": 4},
        },
        "runner": "real",
        "storage": f"sqlite:///{tmp_path}/killed.db",
        "engines": {"vllm": {"max_num_seqs": {"choices": [2, 4, 8]}, "max_model_len": {"value": 4096}}},
        "budget": {"trials": trials, "trial_timeout_s": 120},
        "sampler": "grid",
        "baseline": False,
        "options": {
            "server_command": [sys.executable, "-m", "engines.standin.openai_server"],
            "vllm_args": {"ttft-ms": 20, "itl-ms": 20, "seed": marker, "spawn-child": True},
            "env": {"PYTHONPATH": str(ROOT)},
            "startup_timeout_s": 20,
            "stop_grace_s": 2,
            "workdir": str(tmp_path / "runs"),
            "loadgen_processes": processes,
        },
    }  # fmt: skip
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _groups_of(marker: int) -> set[int]:
    """Process groups of the stand-in servers started with ``--seed marker``."""
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"engines.standin.openai_server" in argv and str(marker).encode() in argv:
            groups.add(int(stat.rsplit(")", 1)[1].split()[2]))
    return groups


def _members(groups: set[int]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) in groups and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def _run(spec: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(spec), "--quiet", "--no-export"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.slow
def test_sigkill_of_the_tuner_leaves_no_server_and_the_resume_meets_the_budget(tmp_path):
    marker = 700000 + os.getpid() % 100000
    spec = _spec(tmp_path, marker)
    tuner = _run(spec, tmp_path)
    groups: set[int] = set()
    deadline = time.monotonic() + 60
    while not groups and time.monotonic() < deadline:  # until a trial's server is up
        groups = _groups_of(marker)
        time.sleep(0.2)
    assert groups, "no stand-in server started"
    time.sleep(1.5)  # mid-trial: the load is running
    tuner.send_signal(signal.SIGKILL)
    tuner.wait(10)
    left = _members(groups)
    for _ in range(40):  # within a few seconds
        if not left:
            break
        time.sleep(0.2)
        left = _members(groups)
    for pid in left:  # do not leak them into the next test, but fail
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes of the server's group alive 8 s after kill -9: {left}"

    resumed = _run(spec, tmp_path)
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err.decode()[-2000:]
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{tmp_path}/killed.db")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states, states
    assert states.count("COMPLETE") == 3, states
    lost = [t for t in study.trials if t.state.name == "FAIL"]
    assert all(t.user_attrs["fail"]["reason"] == "worker_lost" for t in lost), states
    assert _groups_of(marker) == set()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_the_trial_in_flight_like_ctrl_c(tmp_path, signum):
    marker = 800000 + signum * 1000 + os.getpid() % 1000
    spec = _spec(tmp_path, marker, trials=2, processes=2)  # load worker processes too
    tuner = _run(spec, tmp_path)
    deadline = time.monotonic() + 60
    groups: set[int] = set()
    while not groups and time.monotonic() < deadline:
        groups = _groups_of(marker)
        time.sleep(0.2)
    assert groups, "no stand-in server started"
    time.sleep(1.5)
    tuner.send_signal(signum)
    _, err = tuner.communicate(timeout=30)
    assert tuner.returncode == 130, err.decode()[-2000:]
    assert "interrupted" in err.decode() and "Traceback" not in err.decode(), err.decode()
    assert _members(groups) == []  # stopped by the tuner itself, before it exited
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{tmp_path}/killed.db")
    last = study.trials[-1]
    assert last.state.name == "FAIL" and last.user_attrs["fail"]["reason"] == "interrupted"
    assert "RUNNING" not in [t.state.name for t in study.trials]
