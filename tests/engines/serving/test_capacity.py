"""The capacity search finds a stand-in's known saturation point; overloaded runs stop early."""

from __future__ import annotations

import math
import time

import pytest

from engines.metrics import RequestRecord
from engines.serving.capacity import (
    CapacityLimits,
    Probe,
    measure_capacity,
    search_capacity,
)
from engines.serving.loadgen import LoadRequest
from engines.serving.overload import OverloadMonitor


def test_search_brackets_then_bisects_to_the_tolerance() -> None:
    truth = 37.0
    found = search_capacity(lambda r: Probe(r, r <= truth, r), start_rps=5.0, rel_tol=0.05)
    low, high = found.bracket
    assert low <= truth < high and (high - low) <= 0.05 * high
    assert found.capacity_rps == low and len(found.probes) <= 8


def test_nothing_feasible_is_capacity_zero() -> None:
    found = search_capacity(lambda r: Probe(r, False, 0.0), start_rps=10.0, max_steps=4)
    assert found.capacity_rps == 0.0 and found.bracket[1] == pytest.approx(10 / 8)


def test_limits_read_p99_and_error_rate() -> None:
    limits = CapacityLimits(ttft_p99_ms=100, tpot_p99_ms=20)
    assert limits.violations({"ttft_p99_ms": 90, "tpot_p99_ms": 25, "error_rate": 0.0}) == [
        "tpot_p99_ms"
    ]
    assert "ttft_p99_ms" in limits.violations({"ttft_p99_ms": math.nan, "error_rate": 0.5})


def test_monitor_names_a_growing_queue_and_rising_ttft() -> None:
    # arrivals every 10 ms, service 20 ms one at a time: the queue and TTFT grow without bound
    records, free = [], 0.0
    for i in range(30):
        start = i * 0.01
        begin = max(start, free)
        free = begin + 0.02
        records.append(RequestRecord(start, begin + 0.005, free, 8, 4))
    monitor = OverloadMonitor(ttft_limit_ms=50)
    reasons = [monitor.feed(r) for r in sorted(records, key=lambda r: r.end_s)]
    assert reasons[-1] is not None and reasons[-1].startswith(("ttft_rising", "queue_growing"))
    steady = [RequestRecord(i * 0.01, i * 0.01 + 0.005, i * 0.01 + 0.02, 8, 4) for i in range(30)]
    quiet = OverloadMonitor(ttft_limit_ms=50)
    assert all(quiet.feed(r) is None for r in steady)


def test_monitor_is_quiet_while_a_healthy_run_ramps_up() -> None:
    # 100 requests/s of 1 s each on a server with room for all: 100 in flight at steady state.
    # The first records to finish all started during the ramp-up, so the count in flight rises
    # over them as it would in an overload, but their wait for the first token stays at 20 ms.
    records = [RequestRecord(i * 0.01, i * 0.01 + 0.02, i * 0.01 + 1.0, 8, 50) for i in range(300)]
    monitor = OverloadMonitor(ttft_limit_ms=100)
    assert all(monitor.feed(r) is None for r in records)


def _real_ramp_up(rate: float = 20.0, count: int = 60) -> list[RequestRecord]:
    """The start of a healthy open-loop run as an H200 served it (studies/real/h200/
    session4-finalize, a probe cut as ``5.0 -> 13.5 -> 21.5 requests in flight, median TTFT
    41 -> 65 ms``): requests take ~2.5 s, so the count in flight climbs towards 50, and as the
    batch fills each token and the first one come a little later (40 -> 70 ms), far inside a
    2 s limit. The old monitor read it as ``5.5 -> 15.5 -> 25.0 ..., 47 -> 59 ms``."""
    out = []
    for i in range(count):
        start = i / rate
        ttft = 0.040 + 0.030 * min(1.0, start / 1.5) ** 2
        out.append(RequestRecord(start, start + ttft, start + 2.5 + 0.02 * i, 1024, 256))
    return out


@pytest.mark.parametrize("limit", [2000.0, None])
def test_monitor_is_quiet_while_a_real_server_fills_its_batch(limit) -> None:
    monitor = OverloadMonitor(ttft_limit_ms=limit)
    assert all(monitor.feed(r) is None for r in sorted(_real_ramp_up(), key=lambda r: r.end_s))


def test_monitor_names_an_overload_whose_wait_nears_the_limit() -> None:
    # the same server offered more than it serves: each request waits 60 ms longer than the last
    records = [
        RequestRecord(i / 30, i / 30 + 0.05 + 0.06 * i, i / 30 + 2.6 + 0.06 * i, 1024, 256)
        for i in range(60)
    ]
    monitor = OverloadMonitor(ttft_limit_ms=2000.0)
    reasons = [monitor.feed(r) for r in sorted(records, key=lambda r: r.end_s)]
    assert reasons[-1] is not None and reasons[-1].startswith("queue_growing"), reasons[-1]


# 4 slots, 20 ms to the first token then 3 more tokens 10 ms apart: 50 ms a request,
# so the stand-in serves at most 4 / 0.05 = 80 requests/s.
SLOTS, TTFT_MS, ITL_MS, TOKENS = 4, 20.0, 10.0, 4
SATURATION_RPS = SLOTS / ((TTFT_MS + (TOKENS - 1) * ITL_MS) / 1000)


def _requests(n: int) -> list[LoadRequest]:
    return [LoadRequest("hello there world", 3, TOKENS) for _ in range(n)]


def test_capacity_search_finds_the_standin_saturation_point_within_two_steps(standin_factory):
    # Two steps, not one: on a busy 2-core machine one stall of ~15 ms fails a probe just below
    # saturation (it read 68.75 of 80 once, with a README check beside it). A search that
    # stopped at its start (50) or overshot by doubling (100) still fails.
    server = standin_factory(
        "--max-concurrency",
        str(SLOTS),
        "--ttft-ms",
        str(TTFT_MS),
        "--itl-ms",
        str(ITL_MS),
    )
    found = measure_capacity(
        server.base_url,
        "standin",
        _requests(60),
        CapacityLimits(ttft_p99_ms=TTFT_MS + 15),
        start_rps=50.0,
        min_requests=60,
        arrival="uniform",  # evenly spaced: no queueing below saturation, a growing one above
        grace_s=3.0,
        rel_tol=0.1,
        request_timeout_s=10.0,
    )
    low, high = found.bracket
    step = high - low
    assert step <= 0.1 * high, found.to_dict()  # bisected to rel_tol, so two steps stay narrow
    assert low - 2 * step <= SATURATION_RPS <= high + 2 * step, found.to_dict()
    assert abs(found.capacity_rps - SATURATION_RPS) <= 2 * step, found.to_dict()
    assert found.goodput_rps > 0


def test_an_overloaded_standin_run_stops_early_and_says_why(standin_factory):
    server = standin_factory("--max-concurrency", "1", "--ttft-ms", "20", "--itl-ms", "10")
    # 20 requests/s of service, offered 200/s: draining 300 requests would take 15 s. The monitor
    # sees the symptom after 24 completions (~1.2 s) through the load generator's hook and ends
    # the probe there, long before the deadline backstop (planned span 1.5 s + 20 s of grace).
    began = time.monotonic()
    found = measure_capacity(
        server.base_url,
        "standin",
        _requests(300),
        CapacityLimits(ttft_p99_ms=100),
        start_rps=200.0,
        min_requests=300,
        arrival="uniform",
        grace_s=20.0,
        max_steps=1,
        request_timeout_s=30.0,
    )
    took = time.monotonic() - began
    (probe,) = found.probes
    assert not probe.feasible and probe.stopped, found.to_dict()
    assert probe.stopped.startswith(("ttft_rising", "queue_growing")), probe.stopped
    assert took < 5.0 and found.capacity_rps == 0.0


def test_the_deadline_still_ends_a_probe_in_which_nothing_finishes(standin_factory):
    """The backstop for what the monitor cannot see: a server that answers nothing in time."""
    server = standin_factory("--ttft-ms", "5000")
    found = measure_capacity(
        server.base_url,
        "standin",
        _requests(10),
        CapacityLimits(ttft_p99_ms=100),
        start_rps=20.0,
        min_requests=10,
        arrival="uniform",
        grace_s=0.5,
        max_steps=1,
        request_timeout_s=30.0,
    )
    (probe,) = found.probes
    assert not probe.feasible and probe.stopped and probe.stopped.startswith("deadline")


def test_probe_timing_scales_with_latency_above_its_floors() -> None:
    from engines.serving.capacity import probe_timing

    short = probe_timing(0.2, min_duration_s=10.0)
    assert (short.min_duration_s, short.grace_s) == (10.0, 5.0)
    long = probe_timing(12.0, min_duration_s=10.0, settle=3.0)
    assert (long.min_duration_s, long.grace_s) == (36.0, 24.0)
    assert probe_timing(None).min_duration_s == 10.0


def _sim_h200_records(rate: float) -> list[RequestRecord]:
    """vLLM's defaults on an H200 under Poisson arrivals, 1024 in / 256 out, as the sim schedules
    them with the profile calibrated on the H100 runs, in the order they finish."""
    from engines.base import RunContext
    from engines.sim.simulate import simulate_run
    from engines.specs import HardwareSpec, ModelSpec
    from engines.vllm import VllmEngine
    from engines.workload import WorkloadSpec

    engine, model, hardware = VllmEngine(), ModelSpec(name="Llama-3.1-8B"), HardwareSpec(gpu="H200")
    workload = WorkloadSpec.model_validate(
        {
            "input_tokens": 1024,
            "output_tokens": 256,
            "num_requests": int(rate * 30),
            "warmup_requests": 0,
            "arrival": {"kind": "poisson", "rate": rate},
        }
    )
    ctx = RunContext(model=model, hardware=hardware, workload=workload)
    plan = engine.plan(engine.defaults(model, hardware), ctx)
    run = simulate_run("vllm", plan, ctx, profile="h100-llama8b-vllm")
    return sorted(run.result.records, key=lambda r: r.end_s)


def _verdict(records: list[RequestRecord], **monitor: float) -> str | None:
    watch = OverloadMonitor(ttft_limit_ms=2000.0, **monitor)
    return next((reason for r in records if (reason := watch.feed(r))), None)


def test_monitor_on_the_simulated_h200_quiet_within_the_slo_and_names_real_overload() -> None:
    """The sim's continuous batching reproduces the real probe that was cut (in flight
    5.0 -> 13.5 -> 21.5 at 20 req/s, first tokens under 0.1 s): the old rule (no floor on the
    wait) names it, the monitor does not. Far above capacity it still stops the run early."""
    ramp = _sim_h200_records(20.0)
    assert _verdict(ramp, wait_share=0.0) is not None  # the false alarm the H200 raised
    for rate in (12.0, 17.0, 20.0, 23.0):
        records = _sim_h200_records(rate)
        assert max(r.first_token_s - r.start_s for r in records) < 2.0, rate  # within the SLO
        assert _verdict(records) is None, rate
    overloaded = _sim_h200_records(46.0)
    watch = OverloadMonitor(ttft_limit_ms=2000.0)
    stopped_at = next(i for i, r in enumerate(overloaded) if watch.feed(r))
    assert stopped_at < len(overloaded) // 2, (stopped_at, len(overloaded))


def test_sim_capacity_probes_last_as_long_as_the_real_searchs() -> None:
    """Each simulated probe sends ``rate x probe_s`` requests (within its bounds), as a real
    probe sends for ``probe_s`` seconds; a fixed count made fast probes shorter than one request."""
    from engines.base import RunContext
    from engines.metrics import RequestSLO, summarize
    from engines.serving.capacity import estimate_capacity
    from engines.specs import HardwareSpec, ModelSpec
    from engines.workload import WorkloadSpec

    ctx = RunContext(
        model=ModelSpec(name="Llama-3.1-8B"),
        hardware=HardwareSpec(gpu="H200"),
        workload=WorkloadSpec(input_tokens=64, output_tokens=8, num_requests=100),
        slo=RequestSLO(ttft_ms=1000.0),
    )
    seen: list[tuple[float, int]] = []

    def measure_at(probe_ctx: RunContext):
        rate, count = probe_ctx.workload.arrival.rate, probe_ctx.workload.num_requests
        seen.append((rate, count))
        ok = rate <= 40.0
        record = RequestRecord(0.0, 0.5 if ok else 5.0, 6.0, 64, 8)
        return summarize([record] * count, 6.0, RequestSLO())

    found = estimate_capacity(measure_at, ctx, start_rps=10.0, probe_s=30.0, max_requests=2000)
    assert 40.0 * 0.9 <= found.capacity_rps <= 40.0
    assert all(count == min(max(50, math.ceil(rate * 30.0)), 2000) for rate, count in seen)
    assert any(count == 2000 for _, count in seen) and any(count > 300 for _, count in seen)


def test_sim_capacity_of_the_h200_finalists_is_near_the_measured() -> None:
    """The sim (profile fitted on the H100 only) against the capacities measured on an H200 in
    session 5 under the same SLOs: vLLM's defaults 25.4 req/s, the grid's best fp8 config 35.4.
    Before probes lasted as long as the real search's, the sim read 46-58 for the defaults."""
    import json
    from pathlib import Path

    from engines import get_engine
    from engines.base import RunContext
    from engines.metrics import RequestSLO
    from engines.specs import HardwareSpec, ModelSpec
    from engines.workload import WorkloadSpec

    folder = Path(__file__).resolve().parents[3] / "studies/real/h200/session5-finalize"
    engine = get_engine("vllm", runner="sim", profile="h100-llama8b-vllm")
    ctx = RunContext(
        model=ModelSpec(name="Llama-3.1-8B"),
        hardware=HardwareSpec(gpu="H200"),
        workload=WorkloadSpec.model_validate(
            {
                "input_tokens": 1024,
                "output_tokens": 256,
                "num_requests": 800,
                "arrival": {"kind": "concurrency", "concurrency": 256},
            }
        ),
        slo=RequestSLO(ttft_ms=2000.0, tpot_ms=60.0),
        options={"measurement": {"capacity": True}},
    )
    estimated = {}
    for name in ("baseline", "winner"):
        entry = json.loads((folder / f"finalists-{name}.json").read_text())["configs"][0]
        measured = entry["measurement"]["capacity_rps"]
        estimated[name] = engine.run(entry["config"], ctx).capacity_rps
        assert 0.85 * measured <= estimated[name] <= 1.25 * measured, (name, estimated, measured)
    assert estimated["winner"] > estimated["baseline"]
