"""The load generator against the stand-in server: timing accuracy, counts, arrivals, errors."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from engines.datasets import is_sharegpt, read_sharegpt
from engines.metrics import summarize
from engines.serving.lifecycle import free_port
from engines.serving.loadgen import LoadRequest, choose_processes, run_load
from engines.serving.prompts import PromptMaker
from engines.serving.sse_client import Connection, Stream
from engines.standin.openai_server import token_logprob
from engines.workload import WorkloadSpec, plan_requests


def requests(count: int, prompt_words: int = 6, output: int = 12) -> list[LoadRequest]:
    prompt = " ".join(["word"] * prompt_words)
    return [LoadRequest(prompt, prompt_words, output) for _ in range(count)]


def max_overlap(records) -> int:
    events = sorted([(r.start_s, 1) for r in records] + [(r.end_s, -1) for r in records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def _timing_errors(server, concurrency: int, processes: int = 1) -> tuple[list[float], object]:
    result = run_load(
        server.base_url,
        "standin",
        requests(12 + concurrency, output=16),
        concurrency=concurrency,
        warmup=concurrency,
        processes=processes,
    )
    m = summarize(result.records, result.duration_s)
    assert m.num_completed == 12 and not m.errors
    return [abs(m.ttft_ms.p50 - 20.0), abs(m.itl_ms.p50 - 5.0), abs(m.tpot_ms.p50 - 5.0)], m


def _best_of(
    server, concurrency: int, attempts: int = 3, processes: int = 1
) -> tuple[list[float], object]:
    """The attempt with the smallest worst error. On a shared 2-core runner another process can
    hold a CPU through a whole run and delay wake-ups on both sides; that is the machine, not
    the generator, whose own error is a fraction of a millisecond on an idle core."""
    runs = []
    for _ in range(attempts):
        runs.append(_timing_errors(server, concurrency, processes))
        if max(runs[-1][0][:2]) < 0.5:
            break
    return min(runs, key=lambda run: max(run[0]))


def test_ttft_and_itl_match_injected_delays(standin):
    errors, m = _best_of(standin, concurrency=1)
    assert max(errors) < 1.0, (m.ttft_ms, m.itl_ms, m.tpot_ms)


def test_timing_holds_under_concurrency(standin):
    errors, m = _best_of(standin, concurrency=4)
    assert errors[0] < 3.0 and errors[1] < 1.0, (m.ttft_ms, m.itl_ms)


def test_timing_holds_across_worker_processes(standin):
    """Two workers and the stand-in are three busy processes on a 2-core runner: a wake-up
    waits for a core now and then, hence the wider TTFT bound; each record is still timed by
    one process's own clock reads."""
    errors, m = _best_of(standin, concurrency=4, processes=2)
    assert errors[0] < 5.0 and errors[1] < 1.0, (m.ttft_ms, m.itl_ms)


def _closed_loop_rate(server, processes: int) -> tuple[float, object]:
    concurrency, output = 256, 32
    result = run_load(
        server.base_url,
        "standin",
        requests(2 * concurrency + 64, output=output),
        concurrency=concurrency,
        warmup=64,
        processes=processes,
    )
    m = summarize(result.records, result.duration_s)
    assert m.num_completed == 2 * concurrency and not m.errors
    theoretical = concurrency * output / (0.050 + (output - 1) * 0.064)  # two full waves
    return m.output_tokens_per_s / theoretical, m


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_closed_loop_at_256_reaches_the_servers_rate(standin_factory, processes):
    """256 streams at ITL 64 ms (~4k tokens/s offered, within a loaded 2-core runner's means):
    the measured rate is the stand-in's theoretical one. The httpx generator got 15% of it
    here (and 79% of a real vLLM's on an H100): it fell behind reading, so requests were
    refilled late and the server ran far below the planned concurrency."""
    server = standin_factory("--ttft-ms", "50", "--itl-ms", "64")
    runs = []
    for _ in range(3):  # a neighbour holding both cores for a second is not the generator
        runs.append(_closed_loop_rate(server, processes))
        if runs[-1][0] > 0.9:
            break
    ratio, m = max(runs, key=lambda run: run[0])
    assert ratio > 0.9, (ratio, m.output_tokens_per_s, m.ttft_ms, m.itl_ms)
    assert abs(m.itl_ms.p50 - 64.0) < 2.0


def test_token_counts_from_usage_and_from_chunks(standin):
    with_usage = run_load(standin.base_url, "standin", requests(3, 7, 9), concurrency=3)
    assert [(r.input_tokens, r.output_tokens) for r in with_usage.records] == [(7, 9)] * 3
    assert all(len(r.itl_s) == 8 for r in with_usage.records)
    no_usage = run_load(
        standin.base_url,
        "standin",
        [LoadRequest("a b", 99, 5)],
        concurrency=1,
        extra_body={"stream_options": {"include_usage": False}},
    )
    record = no_usage.records[0]
    assert record.output_tokens == 5  # one per text chunk
    assert record.input_tokens == 99  # the planned count, as the server sent none


def test_chat_endpoint(standin):
    result = run_load(standin.base_url, "standin", requests(2, 4, 6), concurrency=2, chat=True)
    assert [r.output_tokens for r in result.records] == [6, 6]
    assert all(r.error is None for r in result.records)


@pytest.mark.parametrize("processes", [1, 2])
def test_closed_loop_respects_concurrency(standin, processes):
    result = run_load(
        standin.base_url, "standin", requests(12, output=6), concurrency=3, processes=processes
    )
    assert len(result.records) == 12 and result.processes == processes
    assert max_overlap(result.records) == 3


def test_records_keep_plan_order_across_processes(standin):
    plan = [LoadRequest("a b c", 3, n) for n in (2, 3, 4, 5, 6, 7, 8, 9)]
    result = run_load(standin.base_url, "standin", plan, concurrency=3, warmup=2, processes=2)
    assert [r.output_tokens for r in result.warmup_records] == [2, 3]
    assert [r.output_tokens for r in result.records] == [4, 5, 6, 7, 8, 9]
    assert min(r.start_s for r in result.records) >= 0.0


def test_choose_processes():
    assert choose_processes(3, 1, 10) == 3
    assert choose_processes("auto", 64, 800, cpus=16) == 1
    assert choose_processes("auto", 256, 800, cpus=16) == 2
    assert choose_processes("auto", 256, 800, cpus=2) == 1  # a core is left to the server
    assert choose_processes("auto", None, 1000, cpus=4) == 3  # uncapped open loop: the plan
    with pytest.raises(ValueError, match="loadgen_processes"):
        choose_processes(0, 8, 10)


def test_plain_http_only():
    with pytest.raises(ValueError, match="http://"):
        run_load("https://example.com", "m", requests(1), concurrency=1)


@pytest.mark.parametrize("processes", [1, 2])
def test_poisson_arrivals_follow_the_plan(standin, processes):
    workload = WorkloadSpec(
        input_tokens=8, output_tokens=4, num_requests=15, arrival={"kind": "poisson", "rate": 40.0}
    )
    plan = plan_requests(workload, seed=3)
    result = run_load(
        standin.base_url,
        "standin",
        requests(plan.count, output=4),
        arrival_s=plan.arrival_s,
        processes=processes,
    )
    starts = np.array([r.start_s for r in result.records])
    # A request's start is stamped once its body is written, after any new connection is made,
    # so it trails its arrival by connection set-up; the spacing follows the plan.
    lateness = starts - plan.arrival_s
    assert np.median(lateness) < 0.025, lateness
    assert abs((starts[-1] - starts[0]) - (plan.arrival_s[-1] - plan.arrival_s[0])) < 0.03
    gaps = np.diff(plan.arrival_s)
    assert gaps.std() > 0  # really random, not evenly spaced


@pytest.mark.parametrize("processes", [1, 2])
def test_warmup_is_excluded(standin, processes):
    result = run_load(
        standin.base_url,
        "standin",
        requests(8, output=3),
        concurrency=2,
        warmup=3,
        processes=processes,
    )
    assert len(result.records) == 5 and len(result.warmup_records) == 3
    assert min(r.start_s for r in result.records) >= 0.0
    assert result.duration_s >= max(r.end_s for r in result.records) - 1e-6


def test_saturation_shows_up_as_ttft(standin_factory):
    server = standin_factory("--ttft-ms", "10", "--itl-ms", "2", "--max-concurrency", "1")
    result = run_load(server.base_url, "standin", requests(6, output=10), concurrency=3)
    ttft = np.array([r.first_token_s - r.start_s for r in result.records])
    assert np.median(ttft) > 0.025  # queued behind a request that takes 10 + 9 * 2 ms


@pytest.mark.parametrize("fault", ["http_500", "stream_cut"])
def test_errors_are_counted_by_kind(standin_factory, fault):
    server = standin_factory(
        "--ttft-ms", "2", "--itl-ms", "1", "--fault", fault, "--fault-every", "2"
    )
    result = run_load(server.base_url, "standin", requests(8, output=6), concurrency=1)
    m = summarize(result.records, result.duration_s)
    assert m.errors == {fault: 4}
    assert m.num_completed == 4


_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(
        b"%x\r\n%s\r\n" % (len(event), event)
        for event in (
            b'data: {"choices": [{"text": " a"}]}\n\n',
            b": keep-alive comment\n\n",
            b'data: {"choices": [{"text": ""}]}\n\ndata: {"choices": [{"text": " b"}]}\n\n',
            b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n',
            b"data: [DONE]\n\n",
        )
    )
    + b"0\r\n\r\n"
)


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


async def _parse(response: bytes, piece: int) -> tuple[Stream, bool]:
    conn = Connection()
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    stream = Stream()
    done = conn.send(b"", stream)
    for i in range(0, len(response), piece):
        conn.data_received(response[i : i + piece])
    if not done.done():
        conn.connection_lost(None)
    return stream, conn.reusable


@pytest.mark.parametrize("piece", [1, 7, 64, 100_000])
def test_client_parses_however_the_bytes_are_split(piece):
    import asyncio

    stream, reusable = asyncio.run(_parse(_CHUNKED, piece))
    assert stream.done and stream.error is None and reusable
    assert stream.chunks == 2 and len(stream.itl) == 1
    assert stream.usage == {"prompt_tokens": 3, "completion_tokens": 2}
    error = b"HTTP/1.1 503 Busy\r\nContent-Length: 5\r\n\r\nbusy!"
    stream, reusable = asyncio.run(_parse(error, piece))
    assert stream.error == "http_503" and reusable
    until_close = b"HTTP/1.0 200 OK\r\n\r\n" + b'data: {"choices": [{"text": "x"}]}\n\n'
    stream, reusable = asyncio.run(_parse(until_close + b"data: [DONE]\n\n", piece))
    assert stream.done and stream.chunks == 1 and not reusable
    stream, _ = asyncio.run(_parse(_CHUNKED[: len(_CHUNKED) // 2], piece))
    assert stream.error == "stream_cut"
    stream, _ = asyncio.run(_parse(_CHUNKED.replace(b'" a"', b"' a'"), piece))
    assert stream.error == "bad_chunk"


def test_connect_and_timeout_errors(standin_factory):
    nobody = run_load(f"http://127.0.0.1:{free_port()}", "x", requests(2), concurrency=1)
    assert [r.error for r in nobody.records] == ["connect", "connect"]
    slow = standin_factory("--ttft-ms", "500")
    late = run_load(slow.base_url, "standin", requests(1), concurrency=1, request_timeout_s=0.1)
    assert late.records[0].error == "timeout"


def test_standin_echo_logprobs_and_metrics(standin):
    body = {
        "model": "standin",
        "prompt": "alpha beta gamma",
        "max_tokens": 0,
        "echo": True,
        "logprobs": 1,
    }
    with httpx.Client(trust_env=False) as client:
        data = client.post(standin.base_url + "/v1/completions", json=body).json()
        metrics = client.get(standin.base_url + "/metrics").text
    logprobs = data["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["alpha", "beta", "gamma"]
    assert logprobs["token_logprobs"] == [None, token_logprob("beta"), token_logprob("gamma")]
    assert "vllm:num_requests_running" in metrics


def test_prompts_have_exact_token_counts(tiny_model_dir):
    from engines.serving.prompts import load_tokenizer

    maker = PromptMaker(load_tokenizer(tiny_model_dir), seed=1)
    assert maker.exact and maker.special_tokens == 1
    lengths = [5, 17, 64, 300]
    prompts = maker.make(lengths, shared_prefix=4)
    assert [maker.count(p) for p in prompts] == lengths
    ids = [maker.tokenizer.encode(p).ids for p in prompts]
    assert all(i[:4] == ids[0][:4] for i in ids)  # the shared prefix, BOS included
    assert len({tuple(i[4:9]) for i in ids[1:]}) == 3  # and different after it


def test_prompts_are_distinct_tokens_not_unknowns(tmp_path):
    """A word-level vocabulary of ``t<id>`` tokens (the dummy-weights model's tokenizer):
    every prompt token must be a real, varied id, never ``<unk>`` repeated, or the server's
    prefix cache serves the prompts for free (seen on an H100: 98% hit rate)."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    from engines.serving.prompts import load_tokenizer

    tok = tokenizers.Tokenizer(models.WordLevel({f"t{i}": i for i in range(5000)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    maker = PromptMaker(load_tokenizer(tmp_path), seed=0)
    prompts = maker.make([512, 512])
    ids = [maker.tokenizer.encode(p).ids for p in prompts]
    assert [len(i) for i in ids] == [512, 512]
    assert 0 not in ids[0] and len(set(ids[0])) > 400
    assert sum(a == b for a, b in zip(*ids, strict=True)) < 10


def test_prompts_without_tokenizer_are_word_counts():
    maker = PromptMaker(None, seed=0)
    assert not maker.exact and "approximate" in maker.label
    assert [len(p.split()) for p in maker.make([3, 40])] == [3, 40]


def test_sharegpt_files(tmp_path: Path):
    rows = [
        {
            "conversations": [
                {"from": "human", "value": "hello there"},
                {"from": "gpt", "value": "general kenobi you are bold"},
            ]
        },
        {"conversations": [{"from": "gpt", "value": "orphan"}]},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(rows))
    assert is_sharegpt(path)
    assert read_sharegpt(path) == (("hello there", "general kenobi you are bold"),)


def test_run_load_works_where_an_event_loop_already_runs(standin):
    """A Jupyter kernel runs an event loop in its main thread, where ``asyncio.run`` refuses to
    start another: a real study run from a notebook failed every trial with "asyncio.run() cannot
    be called from a running event loop". The blocking call now runs its load on a thread."""
    import asyncio
    import threading

    seen_threads = set()

    def note(record) -> None:
        seen_threads.add(threading.current_thread().name)

    async def inside_a_loop():
        return run_load(
            standin.base_url, "standin", requests(6, output=4), concurrency=3, on_record=note
        )

    result = asyncio.run(inside_a_loop())
    assert len(result.records) == 6 and not [r for r in result.records if r.error]
    assert all(name.startswith("servetune-load") for name in seen_threads)
    plain = run_load(standin.base_url, "standin", requests(2), concurrency=2, on_record=note)
    assert len(plain.records) == 2 and threading.current_thread().name in seen_threads
