"""Fresh prompts for every run: a server with prefix caching must never see a measured prompt
twice (repeats, capacity probes, a sweep's trials on one server), while lengths stay the same."""

from __future__ import annotations

import re

import httpx
import pytest

from engines.serving.measure import _POOL, close_servers, measure_server
from engines.serving.request_source import prompt_seed, request_source
from engines.standin import REPO_ROOT, STANDIN_MODULE_COMMAND
from engines.vllm import VllmEngine


def test_redraw_keeps_exact_lengths_and_changes_every_prompt(make_ctx, tiny_model_dir):
    source = request_source(make_ctx(model_path=str(tiny_model_dir)))
    again = source.redraw()
    assert [r.input_tokens for r in again] == [r.input_tokens for r in source.measured]
    assert [r.output_tokens for r in again] == [r.output_tokens for r in source.measured]
    assert not {r.prompt for r in again} & {r.prompt for r in source.requests}
    assert all(source.maker.count(r.prompt) == r.input_tokens for r in again)  # still exact


def test_sample_cycles_the_measured_lengths_in_unseen_prompts(make_ctx, tiny_model_dir):
    source = request_source(make_ctx(model_path=str(tiny_model_dir)))
    drawn = source.sample(20)
    measured = source.measured
    assert [r.input_tokens for r in drawn] == [measured[i % 8].input_tokens for i in range(20)]
    assert len({r.prompt for r in drawn}) == 20
    assert not {r.prompt for r in drawn} & {r.prompt for r in source.requests}


def test_trials_sharing_a_server_get_their_own_prompts(make_ctx, tiny_model_dir):
    ctx = make_ctx(model_path=str(tiny_model_dir))
    first = request_source(ctx)
    second = request_source(ctx.__class__(**{**ctx.__dict__, "trial_number": 1}))
    assert prompt_seed(0, 0) != prompt_seed(0, 1) and prompt_seed(0, 1) == prompt_seed(0, 1)
    assert [r.input_tokens for r in first.requests] == [r.input_tokens for r in second.requests]
    assert not {r.prompt for r in first.requests} & {r.prompt for r in second.requests}


def test_dataset_prompts_are_the_datasets_own_and_repeat(make_ctx, tmp_path):
    data = tmp_path / "set.jsonl"
    data.write_text(
        "".join(f'{{"prompt": "ask {i} please", "output_tokens": 4}}\n' for i in range(3))
    )
    ctx = make_ctx(workload={"dataset": str(data), "num_requests": 6})
    source = request_source(ctx)
    assert not source.synthetic and source.redraw() == source.measured


def _cache_hits(base_url: str) -> int:
    text = httpx.get(base_url + "/metrics", timeout=5).text
    return int(re.search(r"vllm:prefix_cache_hits_total\{[^}]*\} (\d+)", text).group(1))


@pytest.mark.slow
def test_repeats_and_capacity_never_hit_the_prefix_cache(make_ctx, tiny_model_dir):
    """Against a stand-in that answers a repeated prompt in 1 ms instead of 40: with fresh
    prompts every run reads ~40 ms, and the server counts no cache hit at all."""
    engine = VllmEngine()
    ctx = make_ctx(
        model_path=str(tiny_model_dir),
        server_command=STANDIN_MODULE_COMMAND,
        env={"PYTHONPATH": str(REPO_ROOT)},
        startup_timeout_s=20.0,
        stop_grace_s=3.0,
        vllm_args={"ttft-ms": 40, "itl-ms": 2, "cached-ttft-ms": 1},
        measurement={"repeats": 3, "capacity": True},
        capacity={"max_steps": 2, "min_duration_s": 0.5, "min_requests": 8},
    )
    config = {**engine.defaults(ctx.model, ctx.hardware), "enable_prefix_caching": True}
    try:
        m = measure_server(engine, config, ctx)
        url = _POOL.current.base_url
        hits = _cache_hits(url)
        # the detector works: the trial's first measured prompt, sent again, is a hit
        again = request_source(ctx).measured[0]
        body = {"model": m.extra.get("model", "x"), "prompt": again.prompt, "max_tokens": 2}
        httpx.post(url + "/v1/completions", json=body, timeout=10).raise_for_status()
        hits_after = _cache_hits(url)
    finally:
        close_servers()
    assert m.runs == 3 and m.capacity_rps is not None
    assert [run["ttft_p99_ms"] > 30 for run in m.extra["runs"]] == [True] * 3
    assert m.ttft_ms.p50 > 35
    assert hits == 0 and hits_after == again.input_tokens
