"""The one measurement record every engine returns, and the pure math that fills it.

The simulator and the real load generator both produce per-request timings and call
:func:`summarize`, so a sim trial and a real trial are computed the same way (definitions follow
``vllm bench serve``: TPOT excludes the first token, output throughput is output tokens over the
benchmark's wall time, goodput counts requests meeting every per-request SLO).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class RequestRecord:
    """Timings of one request, seconds relative to the run's start.

    ``itl_s`` holds the gaps between consecutive streamed tokens (after the first). A failed
    request has ``error`` set (a short kind: ``http_500``, ``stream_cut``, ``timeout``...).
    """

    start_s: float
    first_token_s: float | None
    end_s: float
    input_tokens: int
    output_tokens: int
    itl_s: Sequence[float] | np.ndarray = ()
    error: str | None = None


@dataclass(frozen=True)
class LatencyStats:
    """Mean and percentiles of one latency, milliseconds; NaN when nothing was measured."""

    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, samples_s: np.ndarray) -> LatencyStats:
        if samples_s.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan)
        ms = samples_s * 1000.0
        p50, p90, p99 = np.percentile(ms, PERCENTILES)
        return cls(float(ms.mean()), float(p50), float(p90), float(p99))


@dataclass(frozen=True)
class RequestSLO:
    """Per-request limits for goodput (ms); None means unconstrained."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None


@dataclass(frozen=True)
class Measurement:
    """Everything one trial measured (or, with ``estimated``, predicted).

    Shared by the sim and the real engines; :meth:`metrics` flattens it into the names objectives
    and SLOs refer to (``ttft_p99_ms``, ``output_tokens_per_s``...). ``intervals`` maps a metric
    to its confidence interval ``(low, high)`` (flattened as ``<metric>_ci_low/high``; see
    :mod:`engines.uncertainty`) over ``runs`` repeats of the workload.
    """

    num_requests: int
    num_completed: int
    duration_s: float
    output_tokens_per_s: float
    input_tokens_per_s: float
    requests_per_s: float
    goodput_rps: float
    ttft_ms: LatencyStats
    tpot_ms: LatencyStats
    itl_ms: LatencyStats
    e2e_ms: LatencyStats
    errors: Mapping[str, int] = field(default_factory=dict)
    estimated: bool = False
    gpu_count: int = 1
    cost_per_mtok_usd: float | None = None
    joules_per_token: float | None = None
    accuracy: float | None = None
    accuracy_metric: str | None = None
    accuracy_estimated: bool = False
    capacity_rps: float | None = None
    intervals: Mapping[str, Sequence[float]] = field(default_factory=dict)
    runs: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat numeric view: the vocabulary of objectives and SLO constraints."""
        out: dict[str, float] = {
            "output_tokens_per_s": self.output_tokens_per_s,
            "input_tokens_per_s": self.input_tokens_per_s,
            "requests_per_s": self.requests_per_s,
            "goodput_rps": self.goodput_rps,
            "error_rate": 1.0 - self.num_completed / max(1, self.num_requests),
            "gpu_count": float(self.gpu_count),
            "output_tokens_per_s_per_gpu": self.output_tokens_per_s / self.gpu_count,
        }
        for name in ("ttft", "tpot", "itl", "e2e"):
            stats: LatencyStats = getattr(self, f"{name}_ms")
            for stat, value in asdict(stats).items():
                out[f"{name}_{stat}_ms"] = value
        for opt in ("cost_per_mtok_usd", "joules_per_token", "accuracy", "capacity_rps"):
            value = getattr(self, opt)
            if value is not None:
                out[opt] = float(value)
        for name, (low, high) in self.intervals.items():  # see engines.uncertainty
            out[f"{name}_ci_low"] = float(low)
            out[f"{name}_ci_high"] = float(high)
        measured = (self.extra.get("accuracy") or {}).get("metrics") or {}
        for name, value in measured.items():  # perplexity, token_agreement... (engines.accuracy)
            if value is not None:
                out[name] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with the trial)."""
        data = asdict(self)
        data["errors"] = dict(self.errors)
        data["extra"] = dict(self.extra)
        data["intervals"] = {k: [float(v) for v in pair] for k, pair in self.intervals.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`."""
        kwargs = dict(data)
        for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            kwargs[name] = LatencyStats(**kwargs[name])
        return cls(**kwargs)


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    slo: RequestSLO = RequestSLO(),
    **fields: Any,
) -> Measurement:
    """Aggregate per-request records of one run into a :class:`Measurement`.

    ``duration_s`` is the measured window (first send to last completion, warmup excluded).
    Extra keyword ``fields`` (``estimated``, ``gpu_count``, ``extra``...) pass through.
    """
    ok = [r for r in records if r.error is None and r.first_token_s is not None]
    errors = Counter(r.error for r in records if r.error is not None)
    ttft = np.array([r.first_token_s - r.start_s for r in ok])  # type: ignore[operator]
    e2e = np.array([r.end_s - r.start_s for r in ok])
    out_tokens = np.array([r.output_tokens for r in ok], dtype=float)
    in_tokens = np.array([r.input_tokens for r in ok], dtype=float)
    multi = out_tokens > 1
    tpot = (e2e[multi] - ttft[multi]) / (out_tokens[multi] - 1) if ok else np.array([])
    itl_parts = [np.asarray(r.itl_s, dtype=float) for r in ok if len(r.itl_s)]
    itl = np.concatenate(itl_parts) if itl_parts else np.array([])
    good = np.ones(len(ok), dtype=bool)
    if slo.ttft_ms is not None:
        good &= ttft * 1000 <= slo.ttft_ms
    if slo.tpot_ms is not None:
        per_req_tpot = np.where(multi, (e2e - ttft) / np.maximum(out_tokens - 1, 1), 0.0)
        good &= per_req_tpot * 1000 <= slo.tpot_ms
    if slo.e2e_ms is not None:
        good &= e2e * 1000 <= slo.e2e_ms
    window = max(duration_s, 1e-9)
    return Measurement(
        num_requests=len(records),
        num_completed=len(ok),
        duration_s=duration_s,
        output_tokens_per_s=float(out_tokens.sum() / window),
        input_tokens_per_s=float(in_tokens.sum() / window),
        requests_per_s=len(ok) / window,
        goodput_rps=float(good.sum() / window),
        ttft_ms=LatencyStats.of(ttft),
        tpot_ms=LatencyStats.of(tpot),
        itl_ms=LatencyStats.of(itl),
        e2e_ms=LatencyStats.of(e2e),
        errors=dict(errors),
        **fields,
    )


def cost_per_mtok(output_tokens_per_s: float, gpu_count: int, price_per_gpu_hour: float) -> float:
    """Dollars per million output tokens at a sustained throughput (inf when nothing came out)."""
    if output_tokens_per_s <= 0:
        return math.inf
    return gpu_count * price_per_gpu_hour / 3600.0 / output_tokens_per_s * 1e6
