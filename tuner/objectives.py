"""The vocabulary of objectives and SLOs: metric names, their natural directions, and the
Optuna constraint values an SLO turns into. Pure functions, no Optuna import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from engines.metrics import RequestSLO

_LATENCIES = [
    f"{m}_{s}_ms" for m in ("ttft", "tpot", "itl", "e2e") for s in ("mean", "p50", "p90", "p99")
]
DIRECTIONS: dict[str, str] = {
    "output_tokens_per_s": "maximize",
    "output_tokens_per_s_per_gpu": "maximize",
    "input_tokens_per_s": "maximize",
    "requests_per_s": "maximize",
    "goodput_rps": "maximize",
    "capacity_rps": "maximize",
    "accuracy": "maximize",
    "token_agreement": "maximize",
    "perplexity": "minimize",
    "kl_divergence": "minimize",
    "cost_per_mtok_usd": "minimize",
    "joules_per_token": "minimize",
    "gpu_count": "minimize",
    "error_rate": "minimize",
    **{name: "minimize" for name in _LATENCIES},
}
LABELS = {
    "output_tokens_per_s": "output tokens/s",
    "output_tokens_per_s_per_gpu": "output tokens/s per GPU",
    "requests_per_s": "requests/s",
    "goodput_rps": "goodput (req/s within SLO)",
    "capacity_rps": "max req/s within SLO",
    "accuracy": "accuracy",
    "token_agreement": "greedy-token agreement",
    "perplexity": "perplexity",
    "kl_divergence": "KL divergence vs reference",
    "cost_per_mtok_usd": "$ per 1M output tokens",
    "joules_per_token": "J per output token",
    "gpu_count": "GPUs",
    "error_rate": "error rate",
}


def label(metric: str) -> str:
    """Human label for a metric (``ttft_p99_ms`` -> ``TTFT p99 (ms)``)."""
    if metric in LABELS:
        return LABELS[metric]
    name, stat, _ = metric.split("_")
    return f"{name.upper()} {stat} (ms)"


def is_better(metric: str, a: float, b: float) -> bool:
    """True when ``a`` beats ``b`` for ``metric``."""
    return a > b if DIRECTIONS[metric] == "maximize" else a < b


# Every study's limit on failed requests (``slos.error_rate`` changes it): a config whose
# requests fail is never feasible, however fast the rest were served.
DEFAULT_ERROR_RATE = 0.01


def with_error_limit(slos: Mapping[str, float]) -> dict[str, float]:
    """``slos`` with the error-rate limit every study has (``DEFAULT_ERROR_RATE`` unless the
    SLOs set ``error_rate``): these are what decide a trial's feasibility."""
    return {**slos, "error_rate": float(slos.get("error_rate", DEFAULT_ERROR_RATE))}


def constraint_values(metrics: Mapping[str, float], slos: Mapping[str, float]) -> list[float]:
    """Optuna constraint values (<= 0 is satisfied), one per SLO, in the SLOs' order.

    For a metric to minimise the SLO is an upper bound (``ttft_p99_ms: 2000``); for one to
    maximise, a floor (``accuracy: 0.99``). A missing or NaN metric violates its SLO.
    """
    out = []
    for metric, bound in slos.items():
        value = metrics.get(metric, math.nan)
        if value is None or math.isnan(value):
            out.append(math.inf)
        elif DIRECTIONS[metric] == "minimize":
            out.append(float(value - bound))
        else:
            out.append(float(bound - value))
    return out


def request_slo(slos: Mapping[str, float]) -> RequestSLO:
    """Per-request limits used for goodput, from latency SLOs (the tightest per latency kind)."""
    limits: dict[str, float] = {}
    for metric, bound in slos.items():
        kind = metric.split("_")[0]
        if metric.endswith("_ms") and kind in ("ttft", "tpot", "e2e"):
            limits[kind] = min(bound, limits.get(kind, math.inf))
    return RequestSLO(
        ttft_ms=limits.get("ttft"), tpot_ms=limits.get("tpot"), e2e_ms=limits.get("e2e")
    )
