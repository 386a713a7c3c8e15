"""Confidence intervals for what a trial measured: pure functions over samples, no I/O.

Two kinds of number need two kinds of interval:

* **Latency percentiles** (TTFT p99...) are statistics of per-request samples. With one run the
  interval is the order-statistic (binomial) interval over requests; with several it is a
  *hierarchical* bootstrap: resample the runs, then the requests within each chosen run, and take
  the pooled percentile, so run-to-run drift (thermal state, other tenants) widens it as it
  should.
* **Rates** (output tokens/s, goodput) are one number per run, so their interval is across runs
  (Student t on the run means). One run gives no interval: ``low``/``high`` are NaN and callers
  leave the ``_ci_`` fields out rather than invent a width.

Watch: a bootstrap interval of p99 needs a few hundred requests per interval to mean much; with
fewer, the top of the sample *is* the p99 and the interval under-covers (see docs/trust.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engines.metrics import PERCENTILES, LatencyStats, Measurement, RequestRecord

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 1000
MAX_BOOTSTRAP_SAMPLES = 20_000
# Per-run rates whose interval is across runs (points: mean of the runs).
RATE_METRICS = (
    "output_tokens_per_s",
    "input_tokens_per_s",
    "requests_per_s",
    "goodput_rps",
    "output_tokens_per_s_per_gpu",
    "cost_per_mtok_usd",
    "joules_per_token",
)


@dataclass(frozen=True)
class Interval:
    """A point value and its two-sided confidence interval at ``level`` (NaN bounds: unknown)."""

    point: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL

    @property
    def known(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def covers(self, value: float) -> bool:
        return self.known and self.low <= value <= self.high


def mean_interval(values: Sequence[float], level: float = DEFAULT_LEVEL) -> Interval:
    """Mean of per-run values with a Student-t interval (NaN bounds with fewer than two runs)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, level)
    point = float(x.mean())
    if x.size < 2:
        return Interval(point, math.nan, math.nan, level)
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(point, point - half, point + half, level)


def percentile_interval(
    runs: Sequence[np.ndarray] | np.ndarray,
    q: float,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    max_samples: int = MAX_BOOTSTRAP_SAMPLES,
) -> Interval:
    """The pooled ``q``-th percentile of samples grouped in runs, with its interval.

    One run: the distribution-free order-statistic interval (ranks from Binomial(n, q)), exact
    and instant. Several runs: a hierarchical bootstrap (runs resampled, then samples within each
    chosen run); runs pooling over ``max_samples`` samples are thinned first, which widens the
    interval a little rather than taking minutes (ITL has one sample per token).
    """
    groups = _groups(runs)
    if not groups:
        return Interval(math.nan, math.nan, math.nan, level)
    pooled = np.concatenate(groups)
    point = float(np.percentile(pooled, q))
    alpha = (1 - level) / 2
    if len(groups) == 1:
        low, high = _order_statistic_bounds(np.sort(pooled), q / 100, alpha)
        return Interval(point, low, high, level)
    rng = np.random.default_rng(seed)
    if pooled.size > max_samples:
        share = max_samples / pooled.size
        groups = [rng.choice(g, size=max(1, int(g.size * share)), replace=False) for g in groups]
    stats = _bootstrap_percentiles(groups, q, resamples, rng)
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Interval(point, float(low), float(high), level)


def _order_statistic_bounds(ordered: np.ndarray, p: float, alpha: float) -> tuple[float, float]:
    """Bounds [x_(l), x_(u)] with P(x_(l) <= true quantile <= x_(u)) >= 1 - 2 alpha."""
    from scipy.stats import binom

    n = ordered.size
    lower = int(binom.ppf(alpha, n, p))  # 0-based index of the l-th order statistic
    upper = int(binom.ppf(1 - alpha, n, p))
    return float(ordered[max(lower - 1, 0)]), float(ordered[min(upper, n - 1)])


def _groups(runs: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(runs, np.ndarray) and runs.ndim == 1:
        runs = [runs]
    return [np.asarray(r, dtype=float) for r in runs if len(r)]


def _bootstrap_percentiles(
    groups: list[np.ndarray], q: float, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """``resamples`` replicates of the pooled percentile: runs drawn with replacement, then
    ``m`` samples (the median run size) from each drawn run, so every run weighs the same."""
    flat = np.concatenate(groups)
    sizes = np.array([g.size for g in groups])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    m = int(np.median(sizes))
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    within = (rng.random((resamples, len(groups), m)) * sizes[picks][..., None]).astype(np.int64)
    idx = (offsets[picks][..., None] + within).reshape(resamples, -1)
    return np.percentile(flat[idx], q, axis=1)


def latency_samples(records: Sequence[RequestRecord]) -> dict[str, np.ndarray]:
    """Per-request latencies in ms (``ttft``, ``tpot``, ``itl``, ``e2e``), defined as in
    :func:`engines.metrics.summarize` (TPOT only for requests with more than one token)."""
    ok = [r for r in records if r.error is None and r.first_token_s is not None]
    ttft = np.array([r.first_token_s - r.start_s for r in ok], dtype=float)  # type: ignore[operator]
    e2e = np.array([r.end_s - r.start_s for r in ok], dtype=float)
    out_tokens = np.array([r.output_tokens for r in ok], dtype=float)
    multi = out_tokens > 1
    tpot = (e2e[multi] - ttft[multi]) / (out_tokens[multi] - 1) if ok else np.array([])
    parts = [np.asarray(r.itl_s, dtype=float) for r in ok if len(r.itl_s)]
    itl = np.concatenate(parts) if parts else np.array([])
    return {"ttft": ttft * 1e3, "tpot": tpot * 1e3, "itl": itl * 1e3, "e2e": e2e * 1e3}


def run_intervals(
    records_per_run: Sequence[Sequence[RequestRecord]],
    rates_per_run: Sequence[Mapping[str, float]],
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Intervals for every latency percentile (``ttft_p99_ms``...) and every rate in
    :data:`RATE_METRICS` that the runs report, keyed by metric name."""
    out: dict[str, Interval] = {}
    samples = [latency_samples(r) for r in records_per_run]
    for kind in ("ttft", "tpot", "itl", "e2e"):
        runs = [s[kind] for s in samples]
        for q in PERCENTILES:
            out[f"{kind}_p{q}_ms"] = percentile_interval(runs, q, level, resamples, seed)
    for metric in RATE_METRICS:
        values = [m[metric] for m in rates_per_run if m.get(metric) is not None]
        if values:
            out[metric] = mean_interval(values, level)
    return out


def beats_outside_noise(metric_direction: str, candidate: Interval, incumbent: Interval) -> bool:
    """True when ``candidate`` beats ``incumbent`` by more than the noise: for a metric to
    maximise, the candidate's CI low is above the incumbent's CI high (its point when the
    incumbent has no interval); mirrored for one to minimise. Unknown candidate CI: False."""
    if not candidate.known:
        return False
    if metric_direction == "maximize":
        bar = incumbent.high if incumbent.known else incumbent.point
        return candidate.low > bar
    bar = incumbent.low if incumbent.known else incumbent.point
    return candidate.high < bar


@dataclass(frozen=True)
class MeasureSettings:
    """How a trial measures: ``repeats`` runs of the workload, ``warmup_requests`` before the
    first (None: the workload's own), each run at least ``min_duration_s`` long (the workload
    repeated), intervals at ``level``, whether to search ``capacity_rps`` afterwards, and
    whether to end an open-loop run once it is overloaded (``stop_overloaded``).

    Engines read it from ``ctx.options['measurement']`` (the study fills it from the spec)."""

    repeats: int = 1
    warmup_requests: int | None = None
    min_duration_s: float = 0.0
    level: float = DEFAULT_LEVEL
    capacity: bool = False
    stop_overloaded: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MeasureSettings:
        data = dict(options.get("measurement") or {})
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def combine_runs(
    measurements: Sequence[Measurement],
    records_per_run: Sequence[Sequence[RequestRecord]],
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Measurement:
    """One measurement from several runs of the same config: rates are the mean of the runs,
    latency percentiles are pooled over every request, and ``intervals`` hold the confidence
    interval of each (see the module docstring). Per-run values go to ``extra['runs']``."""
    if not measurements:
        raise ValueError("combine_runs needs at least one run")
    per_run = [m.metrics() for m in measurements]
    found = run_intervals(records_per_run, per_run, level, resamples, seed)
    pooled = latency_samples([r for run in records_per_run for r in run])
    rates = {
        name: mean_interval([m.get(name, math.nan) for m in per_run], level).point
        for name in ("output_tokens_per_s", "input_tokens_per_s", "requests_per_s", "goodput_rps")
    }
    optional = {
        name: mean_interval(
            [getattr(m, name) for m in measurements if getattr(m, name) is not None]
        ).point
        if any(getattr(m, name) is not None for m in measurements)
        else None
        for name in ("cost_per_mtok_usd", "joules_per_token")
    }
    errors: dict[str, int] = {}
    for m in measurements:
        for kind, count in m.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    first = measurements[0]
    return replace(
        first,
        num_requests=sum(m.num_requests for m in measurements),
        num_completed=sum(m.num_completed for m in measurements),
        duration_s=sum(m.duration_s for m in measurements),
        ttft_ms=LatencyStats.of(pooled["ttft"] / 1e3),
        tpot_ms=LatencyStats.of(pooled["tpot"] / 1e3),
        itl_ms=LatencyStats.of(pooled["itl"] / 1e3),
        e2e_ms=LatencyStats.of(pooled["e2e"] / 1e3),
        errors=errors,
        intervals={k: (i.low, i.high) for k, i in found.items() if i.known},
        runs=len(measurements),
        extra={**first.extra, "runs": [_run_summary(m) for m in per_run], "ci_level": level},
        **rates,
        **optional,
    )


def _run_summary(metrics: Mapping[str, float]) -> dict[str, float]:
    keep = (*RATE_METRICS, "ttft_p99_ms", "tpot_p99_ms", "itl_p99_ms", "e2e_p99_ms", "error_rate")
    return {k: metrics[k] for k in keep if k in metrics}
