"""What the server itself counted during a trial: prefix-cache hits, speculative acceptance.

The load generator sees latencies and tokens; why they are what they are is in the server's
Prometheus counters. A trial that shares a prefix by accident (a run hitting cache blocks of an
earlier run) or a speculative config whose drafts are mostly rejected looks like any other from
the client side. So the measurement scrapes ``/metrics`` before its first run and after its last
and records the differences: the prefix-cache hit rate (vLLM counts looked-up and hit prompt
tokens), the n-gram or draft acceptance rate and mean accepted length, preemptions, and the
KV-cache size the server allocated (``vllm:cache_config_info``). Names are vLLM 0.26.0's
(vllm/v1/metrics/loggers.py, vllm/v1/spec_decode/metrics.py); a server that exposes none of
them (TensorRT-LLM's ``trtllm-serve``) gives an empty record, never an error.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping

import httpx

COUNTERS = (
    "prefix_cache_queries",
    "prefix_cache_hits",
    "spec_decode_num_drafts",
    "spec_decode_num_draft_tokens",
    "spec_decode_num_accepted_tokens",
    "num_preemptions",
    "prompt_tokens",
    "generation_tokens",
)
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> tuple[dict[str, float], dict[str, dict[str, str]]]:
    """Sum every ``vllm:<counter>_total`` over its label sets, and keep the labels of the info
    gauges (``vllm:cache_config_info``); other lines are ignored."""
    totals: dict[str, float] = {}
    infos: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name = match["name"]
        if name.endswith("_info"):
            infos[name.removeprefix("vllm:")] = dict(_LABEL.findall(match["labels"] or ""))
            continue
        if not (name.startswith("vllm:") and name.endswith("_total")):
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if math.isfinite(value):
            key = name.removeprefix("vllm:").removesuffix("_total")
            totals[key] = totals.get(key, 0.0) + value
    return totals, infos


def scrape(
    base_url: str, timeout_s: float = 5.0
) -> tuple[dict[str, float], dict[str, dict[str, str]]] | None:
    """The server's counters now, or None when ``/metrics`` does not answer with text."""
    try:
        response = httpx.get(base_url + "/metrics", timeout=timeout_s)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_prometheus(response.text)


def counter_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """The counters of :data:`COUNTERS` that both scrapes hold, as ``after - before``."""
    return {k: after[k] - before[k] for k in COUNTERS if k in after and k in before}


def derived(
    deltas: Mapping[str, float], infos: Mapping[str, Mapping[str, str]]
) -> dict[str, float]:
    """Rates a reader compares across configs, from the deltas of one trial's runs."""
    out: dict[str, float] = {f"{k}_delta": v for k, v in deltas.items()}
    queries = deltas.get("prefix_cache_queries", 0.0)
    if queries > 0:
        out["prefix_cache_hit_rate"] = deltas.get("prefix_cache_hits", 0.0) / queries
    drafted = deltas.get("spec_decode_num_draft_tokens", 0.0)
    if drafted > 0:
        accepted = deltas.get("spec_decode_num_accepted_tokens", 0.0)
        out["spec_acceptance_rate"] = accepted / drafted
        drafts = deltas.get("spec_decode_num_drafts", 0.0)
        if drafts > 0:  # vLLM's "mean acceptance length": the bonus token plus those accepted
            out["spec_mean_acceptance_length"] = 1.0 + accepted / drafts
    cache = infos.get("cache_config_info", {})
    with contextlib.suppress(KeyError, ValueError):
        out["kv_cache_tokens"] = float(cache["num_gpu_blocks"]) * float(cache["block_size"])
    return out


class CounterWindow:
    """Scrape at :meth:`start` and :meth:`stop`; :attr:`record` is what happened between."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._before: tuple[dict[str, float], dict[str, dict[str, str]]] | None = None
        self.record: dict[str, float] = {}

    def start(self) -> None:
        self._before = scrape(self.base_url)

    def stop(self) -> dict[str, float]:
        after = scrape(self.base_url) if self._before is not None else None
        if self._before is not None and after is not None:
            self.record = derived(counter_deltas(self._before[0], after[0]), after[1])
        return self.record
