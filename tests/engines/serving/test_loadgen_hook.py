"""The load generator's streaming hook against the stand-in: records as they finish, early stop."""

from __future__ import annotations

import time

import httpx
import pytest

from engines.serving.loadgen import LoadRequest, run_load
from engines.serving.overload import OverloadMonitor

# 2 slots, 20 ms to the first token then 3 more 20 ms apart: 80 ms a request, so the stand-in
# serves at most 25 requests/s.
SERVER = ("--max-concurrency", "2", "--ttft-ms", "20", "--itl-ms", "20")
TOKENS = 4


def _plan(rate: float, span_s: float) -> tuple[list[LoadRequest], list[float]]:
    count = round(rate * span_s)
    return [LoadRequest("hello there world", 3, TOKENS)] * count, [i / rate for i in range(count)]


def _watched(server, rate: float, span_s: float, processes: int):
    """An open-loop run under an :class:`OverloadMonitor`; every record the hook saw, and the
    wall time of the run."""
    requests, arrivals = _plan(rate, span_s)
    monitor, seen = OverloadMonitor(ttft_limit_ms=100), []

    def hook(record):
        seen.append(record)
        return monitor.feed(record)

    began = time.perf_counter()
    result = run_load(
        server.base_url,
        "standin",
        requests,
        arrival_s=arrivals,
        processes=processes,
        request_timeout_s=30.0,
        on_record=hook,
    )
    return result, seen, time.perf_counter() - began


def _queue_empties(server, within_s: float) -> bool:
    """Whether the stand-in's running and waiting requests drop to 0 within ``within_s``."""
    deadline = time.monotonic() + within_s
    with httpx.Client(trust_env=False) as client:
        while time.monotonic() < deadline:
            text = client.get(server.base_url + "/metrics").text
            counts = [float(x.split()[-1]) for x in text.splitlines() if "num_requests_" in x]
            if not any(counts):
                return True
            time.sleep(0.02)
    return False


@pytest.mark.parametrize("processes", [1, 2])
def test_an_overloaded_run_stops_early_and_says_why(
    standin_factory, live_children, assert_no_leftovers, processes
):
    """100 requests/s offered to a 25 requests/s server for a planned 6 s: the queue (and TTFT)
    grows without bound, and draining it would take 24 s. The monitor needs 24 completions
    (about 1 s here) to name the symptom; the run then ends at once, its requests in flight
    dropped, worker processes included."""
    server = standin_factory(*SERVER)
    before = live_children()
    result, seen, wall_s = _watched(server, rate=100.0, span_s=6.0, processes=processes)
    assert result.stopped and result.stopped.startswith(("ttft_rising", "queue_growing"))
    assert wall_s < 3.0, (wall_s, result.stopped)  # half the planned span; the drain is 24 s
    assert 24 <= len(result.records) < 100 and result.processes == processes
    assert all(r.error is None for r in result.records)  # dropped requests are not records
    assert result.duration_s == pytest.approx(max(r.end_s for r in result.records), abs=0.5)
    assert sorted(map(id, seen)) == sorted(map(id, result.records))
    assert live_children() == before  # no worker left behind
    assert _queue_empties(server, within_s=1.0)  # the dropped requests' connections were closed
    server.stop()
    assert_no_leftovers(server)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_healthy_run_is_not_stopped_and_the_hook_saw_every_record(
    standin_factory, live_children, processes
):
    """10 requests/s to the same 25 requests/s server: nothing queues, the run goes to its end,
    and the hook got each record (the same objects, in completion order) that the result has."""
    server = standin_factory(*SERVER)
    before = live_children()
    result, seen, _ = _watched(server, rate=10.0, span_s=3.0, processes=processes)
    assert result.stopped is None
    assert len(result.records) == 30 and all(r.error is None for r in result.records)
    assert sorted(map(id, seen)) == sorted(map(id, result.records))
    if processes == 1:  # one event loop: delivered exactly as they finished
        assert [r.end_s for r in seen] == sorted(r.end_s for r in seen)
    assert [r.start_s for r in result.records] == sorted(r.start_s for r in result.records)
    assert live_children() == before


def test_a_stop_ends_a_closed_loop_too(standin_factory):
    """Any hook can stop a run: the closed loop sends nothing after the stop and keeps what
    finished (here the 5th record asks for the stop; 2 were in flight and are dropped)."""
    server = standin_factory(*SERVER)
    requests = [LoadRequest("a b c", 3, TOKENS)] * 40

    def fifth(record, count=[0]):  # noqa: B006 - a counter across calls
        count[0] += 1
        return "enough" if count[0] == 5 else None

    result = run_load(server.base_url, "standin", requests, concurrency=2, on_record=fifth)
    assert result.stopped == "enough"
    assert 5 <= len(result.records) <= 6 and result.duration_s < 1.0
