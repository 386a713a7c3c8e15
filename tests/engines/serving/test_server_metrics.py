"""The server's own counters a trial records (engines/serving/server_metrics.py), read from
Prometheus text as vLLM 0.26.0 writes it: several engines' label sets, ``_created`` samples,
the cache-config info gauge."""

from __future__ import annotations

import pytest

from engines.serving.server_metrics import (
    CounterWindow,
    counter_deltas,
    derived,
    parse_prometheus,
)

VLLM_TEXT = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 500.0
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 300.0
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 40.0
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 120.0
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 60.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="m",position="0"} 30.0
vllm:num_requests_running{engine="0",model_name="m"} 7.0
vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_gpu_blocks="9000"} 1.0
process_cpu_seconds_total 12.5
vllm:generation_tokens_total{engine="0",model_name="m"} NaN
"""


def test_counters_are_summed_over_engines_and_other_samples_ignored():
    totals, infos = parse_prometheus(VLLM_TEXT)
    assert totals["prefix_cache_queries"] == 1500.0  # both engines (api/data parallel) add up
    assert "prefix_cache_queries_created" not in totals and "num_requests_running" not in totals
    assert "process_cpu_seconds" not in totals  # not vLLM's
    assert "generation_tokens" not in totals  # a NaN is no reading
    assert infos["cache_config_info"]["num_gpu_blocks"] == "9000"


def test_rates_come_from_the_difference_of_two_scrapes():
    before, _ = parse_prometheus(VLLM_TEXT)
    after_text = (
        VLLM_TEXT.replace("} 1000.0", "} 3000.0")
        .replace("} 300.0", "} 1300.0")
        .replace("} 40.0", "} 90.0")
        .replace("} 120.0", "} 270.0")
        .replace("} 60.0\n", "} 160.0\n")
    )
    after, infos = parse_prometheus(after_text)
    record = derived(counter_deltas(before, after), infos)
    assert record["prefix_cache_hit_rate"] == pytest.approx(1000 / 2000)
    assert record["spec_acceptance_rate"] == pytest.approx(100 / 150)
    assert record["spec_mean_acceptance_length"] == pytest.approx(1 + 100 / 50)
    assert record["kv_cache_tokens"] == 9000 * 16
    assert record["prefix_cache_queries_delta"] == 2000.0


def test_no_traffic_gives_no_rates_and_a_silent_server_no_record():
    totals, infos = parse_prometheus(VLLM_TEXT)
    record = derived(counter_deltas(totals, totals), infos)
    assert "prefix_cache_hit_rate" not in record and "spec_acceptance_rate" not in record
    window = CounterWindow("http://127.0.0.1:9")  # nothing listens on the discard port
    window.start()
    assert window.stop() == {}
