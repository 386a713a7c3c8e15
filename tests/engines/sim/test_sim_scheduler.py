"""Invariants of the continuous-batching scheduler, with a simple stand-in step cost."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engines.metrics import summarize
from engines.sim.scheduler import SchedulerLimits, SimResult, simulate_schedule
from engines.workload import RequestPlan, WorkloadSpec, plan_requests


def toy_step_time(tokens, attended, kv, seqs, decode_only):
    """1 ms per step, 20 us per new token, 10 ns per cached position read."""
    return 1e-3 + 2e-5 * np.asarray(tokens, float) + 1e-8 * np.asarray(kv, float)


LIMITS = SchedulerLimits(
    max_seqs=32,
    max_batched_tokens=1024,
    kv_blocks=4096,
    block_size=16,
    chunked_prefill=True,
    prefix_caching=False,
)


def workload(**changes: object) -> RequestPlan:
    spec = {
        "input_tokens": {"kind": "uniform", "low": 64, "high": 700},
        "output_tokens": {"kind": "uniform", "low": 4, "high": 120},
        "arrival": {"kind": "concurrency", "concurrency": 48},
        "num_requests": 200,
    }
    spec.update(changes)
    seed = int(spec.pop("seed", 0))  # type: ignore[call-overload]
    return plan_requests(WorkloadSpec(**spec), seed)


def run(plan: RequestPlan, **changes: object) -> SimResult:
    return simulate_schedule(plan, dataclasses.replace(LIMITS, **changes), toy_step_time)


def check_invariants(result: SimResult, plan: RequestPlan, limits: SchedulerLimits) -> None:
    measured = plan.count - plan.warmup
    assert len(result.records) == measured
    assert np.all(result.step_blocks <= limits.kv_blocks)
    assert np.all(result.step_running <= limits.max_seqs)
    assert np.all(np.diff(result.step_end_s) > 0)
    for record, out in zip(result.records, plan.output_tokens[plan.warmup :], strict=True):
        assert record.output_tokens == out
        assert record.start_s <= record.first_token_s <= record.end_s
        assert len(record.itl_s) == out - 1
        assert np.sum(record.itl_s) == pytest.approx(record.end_s - record.first_token_s)


@pytest.mark.parametrize("chunked", [True, False])
def test_limits_hold_and_every_request_completes(chunked: bool) -> None:
    plan = workload()
    limits = dataclasses.replace(LIMITS, chunked_prefill=chunked)
    result = simulate_schedule(plan, limits, toy_step_time)
    check_invariants(result, plan, limits)
    assert result.max_in_flight <= 48
    assert result.peak_running == 32  # 48 clients keep the 32 slots full
    if chunked:
        assert np.all(result.step_tokens <= limits.max_batched_tokens)


def test_tiny_cache_preempts_and_still_finishes() -> None:
    plan = workload()
    limits = dataclasses.replace(LIMITS, kv_blocks=60)  # 960 tokens: about two requests
    result = simulate_schedule(plan, limits, toy_step_time)
    assert result.preemptions > 0
    check_invariants(result, plan, limits)
    roomy = run(plan)
    assert roomy.preemptions == 0
    assert result.duration_s > roomy.duration_s


def test_preemption_without_chunked_prefill_finishes_too() -> None:
    plan = workload()
    limits = dataclasses.replace(LIMITS, kv_blocks=60, chunked_prefill=False)
    result = simulate_schedule(plan, limits, toy_step_time)
    assert result.preemptions > 0
    check_invariants(result, plan, limits)


def test_prefix_caching_lowers_ttft_for_shared_prompts() -> None:
    plan = workload(input_tokens=2000, shared_prefix_fraction=0.8, num_requests=100)
    cached = summarize(run(plan, prefix_caching=True, max_batched_tokens=2048).records, 1.0)
    cold = summarize(run(plan, prefix_caching=False, max_batched_tokens=2048).records, 1.0)
    assert cached.ttft_ms.mean < 0.6 * cold.ttft_ms.mean


def test_chunked_prefill_lowers_tail_inter_token_latency_under_long_prompts() -> None:
    plan = workload(
        input_tokens={"kind": "uniform", "low": 2000, "high": 6000},
        output_tokens={"kind": "uniform", "low": 50, "high": 200},
        arrival={"kind": "concurrency", "concurrency": 16},
        num_requests=60,
    )
    chunked = summarize(run(plan, max_batched_tokens=512, kv_blocks=20000).records, 1.0)
    whole = summarize(
        run(plan, chunked_prefill=False, max_batched_tokens=8192, kv_blocks=20000).records, 1.0
    )
    assert chunked.itl_ms.p99 < 0.5 * whole.itl_ms.p99
    assert chunked.tpot_ms.p99 < whole.tpot_ms.p99


def test_same_seed_same_result_and_other_seeds_differ() -> None:
    first = run(workload(seed=3))
    again = run(workload(seed=3))
    other = run(workload(seed=4))
    assert [r.end_s for r in first.records] == [r.end_s for r in again.records]
    assert first.duration_s != other.duration_s


def test_open_loop_requests_start_at_their_arrival() -> None:
    plan = workload(arrival={"kind": "poisson", "rate": 5.0}, num_requests=50)
    result = run(plan)
    starts = np.array([r.start_s for r in result.records])
    assert np.allclose(starts, plan.arrival_s - plan.arrival_s[0])
    # at 5 req/s the toy engine is idle between requests: TTFT is one prefill, not a queue
    ttft = np.array([r.first_token_s - r.start_s for r in result.records])
    assert ttft.max() < 0.1
    assert result.busy_s < result.duration_s


def test_open_loop_concurrency_cap_is_respected() -> None:
    plan = workload(arrival={"kind": "poisson", "rate": 1000.0, "max_concurrency": 8})
    result = run(plan)
    assert result.max_in_flight == 8
    check_invariants(result, plan, LIMITS)


def test_warmup_requests_are_simulated_but_not_recorded() -> None:
    plan = workload(num_requests=50, warmup_requests=10)
    result = run(plan)
    assert len(result.records) == 50
    assert min(r.start_s for r in result.records) == 0.0
    check_invariants(result, plan, LIMITS)


def test_a_thousand_request_trial_is_fast() -> None:
    import time

    plan = plan_requests(
        WorkloadSpec(
            input_tokens=1024,
            output_tokens=256,
            num_requests=1000,
            arrival={"kind": "concurrency", "concurrency": 256},
        ),
        0,
    )
    limits = SchedulerLimits(256, 8192, 28_000, 16, True, True)
    start = time.perf_counter()
    result = simulate_schedule(plan, limits, toy_step_time)
    assert time.perf_counter() - start < 1.0  # generous: the bench tracks the real number
    assert len(result.records) == 1000


def test_admission_delay_adds_exactly_itself_to_an_idle_servers_ttft() -> None:
    plan = workload(arrival={"kind": "poisson", "rate": 5.0}, num_requests=50)
    base, delayed = run(plan), run(plan, admission_delay_s=0.02)
    check_invariants(delayed, plan, LIMITS)
    starts = [r.start_s for r in delayed.records]
    assert starts == pytest.approx([r.start_s for r in base.records])  # arrivals unchanged
    ttft = np.array([r.first_token_s - r.start_s for r in delayed.records])
    ttft0 = np.array([r.first_token_s - r.start_s for r in base.records])
    assert ttft - ttft0 == pytest.approx(np.full(ttft.size, 0.02), abs=1e-9)


def test_admission_delay_turns_a_closed_loop_into_waves() -> None:
    """A closed loop of equal requests whose prompts fill several steps: without a delay each
    replacement joins the next step, one at a time; with one, replacements gather and are
    prefilled in full-budget steps, so many wait and median TTFT grows far beyond the delay."""
    plan = workload(
        input_tokens=512,
        output_tokens=64,
        arrival={"kind": "concurrency", "concurrency": 32},
        num_requests=320,
    )
    base, delayed = run(plan), run(plan, admission_delay_s=0.01)
    check_invariants(delayed, plan, LIMITS)

    def ttft_p50(result: SimResult) -> float:
        return float(np.median([r.first_token_s - r.start_s for r in result.records]))

    assert ttft_p50(delayed) > ttft_p50(base) + 2 * 0.01
    assert len(delayed.records) == len(base.records) == 320


def test_admission_delay_per_stream_grows_with_the_streams_in_flight() -> None:
    """A closed loop of 4 clients and one of 32 with the same per-stream delay: the busier
    server delays each request more."""
    light = workload(arrival={"kind": "concurrency", "concurrency": 4}, num_requests=80)
    busy = workload(arrival={"kind": "concurrency", "concurrency": 32}, num_requests=80)

    def mean_extra_ttft(plan: RequestPlan) -> float:
        base, slowed = run(plan), run(plan, admission_delay_per_stream_s=1e-3)
        check_invariants(slowed, plan, LIMITS)
        ttft = [r.first_token_s - r.start_s for r in slowed.records]
        ttft0 = [r.first_token_s - r.start_s for r in base.records]
        return float(np.mean(ttft) - np.mean(ttft0))

    assert 0.002 < mean_extra_ttft(light) < mean_extra_ttft(busy)


def test_an_admission_delay_gathers_long_prompts_into_waves() -> None:
    """Long prompts at a closed loop whose replacements become schedulable only after a few
    decode steps: the finishing requests of a wave all finish before the next prefill stalls
    them, so decodes see fewer prefill steps (TPOT falls) and new prompts queue together (TTFT
    rises), as the campaign's 6k-token runs did (docs/simulator.md section 6)."""
    limits = dataclasses.replace(LIMITS, max_batched_tokens=1024, max_seqs=64)
    plan = workload(
        input_tokens=900,
        output_tokens=24,
        arrival={"kind": "concurrency", "concurrency": 12},
        num_requests=120,
    )
    base = simulate_schedule(plan, limits, toy_step_time)
    waved = simulate_schedule(
        plan, dataclasses.replace(limits, admission_delay_s=0.009), toy_step_time
    )
    check_invariants(waved, plan, limits)

    def p50(result: SimResult, first: bool) -> float:
        if first:
            return float(np.median([r.first_token_s - r.start_s for r in result.records]))
        return float(np.median([np.mean(r.itl_s) for r in result.records]))

    assert p50(waved, first=False) < 0.9 * p50(base, first=False)
    assert p50(waved, first=True) > p50(base, first=True) + 0.009


def test_sequences_sharing_a_cached_prefix_can_read_it_together() -> None:
    """With ``prefix_reads_shared`` 1 the decoding sequences that got the shared prefix from the
    cache read its KV once per step (cascade attention): the run is faster than when each reads
    it, and nothing changes for a workload without a shared prefix."""
    big_kv = 2e-7  # per cached position read, so the prefix's reads are visible in step time

    def step(tokens, attended, kv, seqs, decode_only):
        return 1e-3 + 2e-5 * np.asarray(tokens, float) + big_kv * np.asarray(kv, float)

    limits = dataclasses.replace(LIMITS, prefix_caching=True)
    shared = workload(input_tokens=640, output_tokens=64, shared_prefix_fraction=0.9)
    apart = simulate_schedule(shared, limits, step)
    together = simulate_schedule(shared, dataclasses.replace(limits, prefix_reads_shared=1.0), step)
    check_invariants(together, shared, limits)
    assert together.duration_s < 0.95 * apart.duration_s
    plain = workload(input_tokens=640, output_tokens=64)
    same = simulate_schedule(plain, dataclasses.replace(limits, prefix_reads_shared=1.0), step)
    assert same.duration_s == simulate_schedule(plain, limits, step).duration_s


DECODE_HEAVY = {
    "input_tokens": {"kind": "uniform", "low": 16, "high": 64},
    "output_tokens": {"kind": "uniform", "low": 64, "high": 128},
}


def _tokens_per_s(result: SimResult) -> float:
    return sum(r.output_tokens for r in result.records) / result.duration_s


def test_the_api_servers_streaming_caps_a_closed_loops_tokens_per_second() -> None:
    """The toy engine decodes ~19k tokens/s at 32 sequences; an API server spending 200 us per
    token can write 5k/s, and a closed loop's clients wait for it, so the run goes at the API's
    pace. Two API servers (half the cost each token) nearly double it."""
    plan = workload(num_requests=400, **DECODE_HEAVY)
    free = _tokens_per_s(run(plan))
    one = run(plan, api_token_s=2e-4)
    two = run(plan, api_token_s=1e-4)
    check_invariants(one, plan, LIMITS)
    check_invariants(two, plan, LIMITS)
    assert free > 3 * 5000
    assert 0.85 * 5000 < _tokens_per_s(one) <= 1.01 * 5000
    assert 1.6 < _tokens_per_s(two) / _tokens_per_s(one) < 2.05
    # the backlog shows in what the clients see: later first tokens
    ttft = [r.first_token_s - r.start_s for r in one.records]
    ttft0 = [r.first_token_s - r.start_s for r in run(plan).records]
    assert np.median(ttft) > 2 * np.median(ttft0)


def test_an_api_server_with_time_to_spare_changes_little() -> None:
    """At a tenth of the engine's rate the API servers keep up: under 5% slower, not capped."""
    plan = workload(num_requests=400, **DECODE_HEAVY)
    base, streamed = run(plan), run(plan, api_token_s=5e-6)
    check_invariants(streamed, plan, LIMITS)
    assert 0.95 < _tokens_per_s(streamed) / _tokens_per_s(base) <= 1.0


def test_an_engine_idle_behind_the_api_servers_waits_for_them_and_the_admission_delay() -> None:
    """Two clients, a slow API server and an admission delay: the engine often has nothing to
    run until a delivery frees a client whose next request then waits out its delay. The run
    idles through that instead of stalling, and each request still reaches the engine the delay
    after its client saw the previous one end."""
    plan = workload(num_requests=40, arrival={"kind": "concurrency", "concurrency": 2})
    result = run(plan, api_token_s=1e-3, admission_delay_s=0.02)
    check_invariants(result, plan, LIMITS)
    quick = run(plan, admission_delay_s=0.02)
    assert result.duration_s > quick.duration_s + 0.02
    ttft = [r.first_token_s - r.start_s for r in result.records]
    assert min(ttft) >= 0.02
