"""Many workers on one study: the shared budget, GPU ownership and crash recovery.

Workers are real processes on real storages (a throwaway PostgreSQL server, SQLite files); a
crash is a real ``kill -9``. Trials are made slow by a test engine that sleeps in the worker
process (the driver script below), not by a switch in servetune.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from engines.errors import StudyError
from engines.space import pinned_overrides
from engines.specs import HardwareSpec, ModelSpec
from engines.vllm import VllmEngine
from tuner.spec import parse_spec
from tuner.study.loop import build_engines, counted_trials, fail_reason
from tuner.study.workers import budget_status, parse_gpus, run_worker, run_workers, split_gpus

HEARTBEAT_S, GRACE_S = 1, 2
# One free option and everything else pinned: trials cost little more than their bookkeeping.
_ENGINES = {
    "vllm": pinned_overrides(
        VllmEngine().space(ModelSpec.model_validate("Llama-3.1-8B"), HardwareSpec(gpu="H100-SXM")),
        {"max_model_len": {"value": 8192}, "max_num_seqs": {"choices": [64, 128, 256]}},
    )
}

# A worker process whose engine sleeps in run() from its ``slow_from``-th trial on.
_DRIVER = textwrap.dedent("""
    import json, sys, time
    from tuner.spec import parse_spec
    from tuner.study.loop import build_engines
    from tuner.study.workers import run_worker

    spec = parse_spec(json.loads(open(sys.argv[1]).read()))
    slow_from, delay = int(sys.argv[2]), float(sys.argv[3])

    class Slow:
        def __init__(self, inner):
            self.inner, self.name, self.calls = inner, inner.name, 0
        def __getattr__(self, item):
            return getattr(self.inner, item)
        def run(self, config, ctx):
            self.calls += 1
            if self.calls >= slow_from:
                time.sleep(delay)
            return self.inner.run(config, ctx)

    engines = {k: Slow(v) for k, v in build_engines(spec).items()}
    run_worker(spec, engines=engines, heartbeat_s=1, grace_s=2, poll_s=0.2)
""")


def _spec(storage: str, trials: int, **changes):
    data = {
        "name": "w",
        "model": "Llama-3.1-8B",
        "hardware": {"gpu": "H100-SXM"},
        "workload": {"preset": "chat", "num_requests": 50},
        "engines": _ENGINES,
        "budget": {"trials": trials},
        "storage": storage,
        "seed": 0,
        "sampler": "random",
        "baseline": False,
        "allow_repeats": True,  # budgets of 8-200 trials over 3 configs: the budget is the point
    }
    data.update(changes)
    return parse_spec(data)


def _start_driver(tmp_path: Path, spec, slow_from: int, delay: float) -> subprocess.Popen:
    script, spec_file = tmp_path / "driver.py", tmp_path / "spec.json"
    script.write_text(_DRIVER)
    spec_file.write_text(json.dumps(spec.model_dump(mode="json")))
    return subprocess.Popen(
        [sys.executable, str(script), str(spec_file), str(slow_from), str(delay)],
        stderr=subprocess.DEVNULL,
    )


def _wait_for_running_trial(url: str, pid: int, min_done: int = 0, timeout: float = 60) -> int:
    """The number of the trial worker ``pid`` is running (once ``min_done`` have finished)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            study = optuna.load_study(study_name="w", storage=url)
        except KeyError:
            time.sleep(0.2)
            continue
        trials = study.get_trials(deepcopy=False)
        finished = sum(1 for t in trials if t.state.is_finished())
        for t in trials:
            if (
                t.state.name == "RUNNING"
                and (t.user_attrs.get("worker") or {}).get("pid") == pid
                and finished >= min_done
            ):
                return t.number
        time.sleep(0.2)
    raise AssertionError(f"worker {pid} never ran a trial")


def _assert_exact_budget(study: optuna.Study, budget: int) -> None:
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), "trial numbers repeat or have gaps"
    assert budget_status(study).done == budget
    assert counted_trials(study) == budget
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


# ---------------------------------------------------------------- units
def test_gpu_lists_parse_and_split_into_disjoint_slices():
    assert parse_gpus("0, 1,2,3") == ["0", "1", "2", "3"] and parse_gpus(None) is None
    assert split_gpus(["0", "1", "2", "3"], 2) == [["0", "1"], ["2", "3"]]
    assert split_gpus(None, 3) == [None, None, None]
    with pytest.raises(StudyError, match="names a GPU twice"):
        parse_gpus("0,0")
    with pytest.raises(StudyError, match="cannot be shared by 3 workers"):
        split_gpus(["0", "1"], 3)


def test_trials_get_the_workers_gpus_and_oversized_configs_are_rejected(tmp_path):
    engines = {
        "vllm": {
            **_ENGINES["vllm"],
            "tensor_parallel_size": {"choices": [1, 2]},
            "pipeline_parallel_size": {"value": 1},
        }
    }
    spec = _spec(
        f"sqlite:///{tmp_path}/s.db", 8, engines=engines, hardware={"gpu": "H100-SXM", "count": 2}
    )
    seen = []

    class Recording:
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def __getattr__(self, item):
            return getattr(self.inner, item)

        def run(self, config, ctx):
            seen.append(
                (
                    config["tensor_parallel_size"],
                    ctx.options["cuda_visible_devices"],
                    ctx.options["env"]["CUDA_VISIBLE_DEVICES"],
                )
            )
            return self.inner.run(config, ctx)

    built = {k: Recording(v) for k, v in build_engines(spec).items()}
    study = run_worker(spec, gpus=["3"], engines=built, heartbeat_s=HEARTBEAT_S)
    assert seen and all(s == (1, "3", "3") for s in seen)
    rejected = [t for t in study.trials if t.state.name == "PRUNED"]
    assert rejected, "random sampling over TP {1, 2} never proposed TP 2"
    assert all("this worker owns 1 (3)" in t.user_attrs["fail"]["detail"] for t in rejected)
    assert all(t.params["vllm.tensor_parallel_size"] == 2 for t in rejected)
    _assert_exact_budget(study, 8)


# ---------------------------------------------------------------- PostgreSQL
@pytest.mark.postgres
def test_four_workers_share_one_budget_exactly(postgres_url):
    spec = _spec(postgres_url, 200)
    study = run_workers(spec, 4, heartbeat_s=HEARTBEAT_S)
    _assert_exact_budget(study, 200)
    workers = Counter(
        (t.user_attrs.get("worker") or {}).get("pid")
        for t in study.trials
        if t.state.name == "COMPLETE"
    )
    assert len(workers) == 4, f"not every worker measured trials: {workers}"
    reasons = {fail_reason(t) for t in study.trials if t.state.name != "COMPLETE"}
    assert reasons <= {"over_budget"}, reasons


@pytest.mark.postgres
def test_killed_worker_trial_is_lost_and_the_budget_still_completes(postgres_url, tmp_path):
    spec = _spec(postgres_url, 20)
    from tuner.study.loop import open_study

    open_study(spec)  # created before the workers race to create it
    victim = _start_driver(tmp_path, spec, slow_from=1, delay=60)
    others = []
    try:
        lost_number = _wait_for_running_trial(postgres_url, victim.pid)
        others = [_start_driver(tmp_path, spec, slow_from=10**9, delay=0) for _ in range(2)]
        time.sleep(0.5)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        for proc in others:
            assert proc.wait(timeout=120) == 0
    finally:
        for proc in [victim, *others]:
            if proc.poll() is None:
                proc.kill()
    study = optuna.load_study(study_name="w", storage=postgres_url)
    lost = study.trials[lost_number]
    assert lost.state.name == "FAIL" and fail_reason(lost) == "worker_lost"
    assert str(victim.pid) in lost.user_attrs["fail"]["detail"]
    _assert_exact_budget(study, 20)
    reasons = Counter(fail_reason(t) for t in study.trials if t.state.name == "FAIL")
    assert reasons["worker_lost"] == 1 and set(reasons) <= {"worker_lost", "over_budget"}


@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_requeue_lost_runs_the_lost_config_again(postgres_url):
    from tuner.study.workers import fail_lost_trials, open_worker_study

    spec = _spec(postgres_url, 3)
    study = open_worker_study(spec, heartbeat_s=HEARTBEAT_S, grace_s=GRACE_S)
    trial = study.ask()
    trial.suggest_categorical("vllm.max_num_seqs", [64, 128, 256])
    study._storage._backend.close()  # stops heartbeats, as a killed worker would
    time.sleep(GRACE_S + 1.5)
    assert fail_lost_trials(study, requeue=True) == [trial.number]
    assert fail_lost_trials(study, requeue=True) == []  # once, whoever notices first
    trials = study.get_trials(deepcopy=False)
    assert fail_reason(trials[0]) == "worker_lost"
    assert trials[1].state.name == "WAITING"
    assert trials[1].system_attrs["fixed_params"] == trials[0].params
    assert trials[1].user_attrs["requeued_from"] == trial.number


# ---------------------------------------------------------------- SQLite
def test_killed_only_worker_resumes_without_losing_completed_trials(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    spec = _spec(url, 8)
    victim = _start_driver(tmp_path, spec, slow_from=4, delay=60)
    try:
        lost_number = _wait_for_running_trial(url, victim.pid, min_done=3)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    before = {
        t.number: t.values
        for t in optuna.load_study(study_name="w", storage=url).trials
        if t.state.name == "COMPLETE"
    }
    assert len(before) == 3
    study = run_worker(spec, heartbeat_s=HEARTBEAT_S, grace_s=GRACE_S, poll_s=0.2)
    after = {t.number: t.values for t in study.trials if t.state.name == "COMPLETE"}
    assert {n: after[n] for n in before} == before
    assert fail_reason(study.trials[lost_number]) == "worker_lost"
    _assert_exact_budget(study, 8)
