"""An overloaded trial ends early end to end: ``measure_server`` stops its run through the load
generator's hook when the spec asks, and the study records the trial as PRUNED, ``overloaded``."""

from __future__ import annotations

import time

from engines.serving.measure import measure_server
from engines.standin import REPO_ROOT, STANDIN_COMMAND
from engines.vllm import VllmEngine
from tuner.analysis.results import trial_records
from tuner.spec import parse_spec
from tuner.study.loop import OVERLOADED, counted_trials, run_study

# 2 slots, 80 ms a request of 4 tokens: the stand-in serves at most 25 requests/s.
SLOW = [*STANDIN_COMMAND, "--max-concurrency", "2", "--ttft-ms", "20", "--itl-ms", "20"]
OPTIONS = {
    "server_command": SLOW,
    "env": {"PYTHONPATH": str(REPO_ROOT)},
    "stop_grace_s": 3.0,
    "startup_timeout_s": 20.0,
}
SYMPTOMS = ("queue_growing", "ttft_rising")


def _workload(rate: float, count: int) -> dict:
    return {
        "input_tokens": 32,
        "output_tokens": 4,
        "num_requests": count,
        "warmup_requests": 0,
        "arrival": {"kind": "poisson", "rate": rate},
    }


def test_measure_server_stops_an_overloaded_run_when_asked(make_ctx):
    """100 requests/s for a planned 6 s against 25/s: draining would take 24 s. The run stops at
    the first symptom, and neither the second repeat nor the capacity search runs."""
    engine = VllmEngine()
    measurement = {"stop_overloaded": True, "repeats": 2, "capacity": True}
    ctx = make_ctx(workload=_workload(100.0, 600), measurement=measurement, **OPTIONS)
    began = time.monotonic()
    m = measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    took = time.monotonic() - began
    assert str(m.extra.get("stopped")).startswith(SYMPTOMS), m.extra
    assert took < 6.0 and m.duration_s < 3.0, (took, m.duration_s)
    assert m.runs == 1 and m.capacity_rps is None
    assert 24 <= m.num_completed < 300 and not m.errors


def test_measure_server_leaves_a_healthy_run_alone(make_ctx):
    engine = VllmEngine()
    ctx = make_ctx(workload=_workload(8.0, 30), measurement={"stop_overloaded": True}, **OPTIONS)
    m = measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    assert "stopped" not in m.extra and m.num_completed == 30


def test_an_overloaded_trial_is_pruned_with_its_reason(tmp_path):
    spec = parse_spec(
        {
            "name": "overloaded",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": _workload(100.0, 600),
            "runner": "real",
            "engines": {"vllm": {"max_model_len": {"value": 8192}}},
            "slos": {"ttft_p99_ms": 100},
            "measurement": {"stop_overloaded": True},
            "budget": {"trials": 1, "trial_timeout_s": 60},
            "storage": f"sqlite:///{tmp_path}/s.db",
            "options": {**OPTIONS, "workdir": str(tmp_path / "work")},
        }
    )
    began = time.monotonic()
    study = run_study(spec)
    assert time.monotonic() - began < 20.0  # the drain alone would take 24 s
    (record,) = trial_records(study)
    assert record.state == "PRUNED" and record.reason == OVERLOADED
    assert record.detail and record.detail.startswith(SYMPTOMS)
    stored = record.attrs["result"]["measurement"]["extra"]["stopped"]
    assert stored == record.detail and record.metrics["output_tokens_per_s"] > 0
    assert not record.feasible and counted_trials(study) == 1  # it ran: it used up budget


def test_capacity_probes_last_several_request_latencies(make_ctx):
    """A probe shorter than the requests it sends measures a burst, not a steady state (the H100
    read 36.7 req/s for a config that served 21): probes scale with the trial's e2e latency."""
    engine = VllmEngine()
    slow = [*STANDIN_COMMAND, "--max-concurrency", "4", "--ttft-ms", "20", "--itl-ms", "60"]
    workload = {**_workload(5.0, 20), "output_tokens": 8}
    ctx = make_ctx(
        workload=workload,
        measurement={"capacity": True},
        **{**OPTIONS, "server_command": slow},
        capacity={"min_duration_s": 0.5, "settle_latencies": 3.0, "max_steps": 2},
    )
    m = measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    e2e_s = m.e2e_ms.p50 / 1e3
    assert e2e_s > 0.4, m.e2e_ms  # 20 ms + 7 x 60 ms a request
    assert abs(m.extra["capacity"]["probe_s"] - 3.0 * e2e_s) < 1e-6, m.extra["capacity"]
    assert m.capacity_rps is not None and m.capacity_rps > 0


def test_capacity_probes_keep_their_traces_when_asked(make_ctx):
    """With ``save_requests`` every capacity probe's records are written next to the runs'
    traces, so a probe cut as overloaded can be looked at afterwards (the H200's were not)."""
    from engines.serving.request_log import read_request_log, request_log_path

    engine = VllmEngine()
    ctx = make_ctx(
        workload=_workload(8.0, 24),
        measurement={"capacity": True},
        capacity={"max_steps": 3, "min_requests": 20, "min_duration_s": 0.5},
        save_requests=True,
        **OPTIONS,
    )
    m = measure_server(engine, engine.defaults(ctx.model, ctx.hardware), ctx)
    probes = m.extra["capacity"]["probes"]
    assert len(probes) == 3
    for index, probe in enumerate(probes):
        trace = read_request_log(request_log_path(ctx.workdir / "requests", 0, index, "probe"))
        assert len(trace) >= 20 or probe["stopped"], (index, probe, len(trace))
        assert all(r.error is None for r in trace)
    assert not request_log_path(ctx.workdir / "requests", 0, 3, "probe").exists()
