"""Capacity under the SLO: the highest request rate a running config sustains within its limits.

The search is a plain function over a *probe* (``rate -> Probe``), so the same bracketing and
bisection serve a real server (:func:`measure_capacity`, open-loop load at each rate on one server,
no restart) and the simulator (a probe that simulates the workload at that rate):

1. bracket: start near a guess (the rate a closed-loop run achieved), double while the SLOs hold,
   halve while they do not;
2. bisect the bracket until it is within ``rel_tol`` of its top, or ``max_steps`` probes ran.

The answer is the highest rate that met every limit; the bracket's width is its resolution.

Overload: a rate above capacity makes the queue grow without bound, so its run would take ever
longer. Each probe runs under :class:`engines.serving.overload.OverloadMonitor`, which ends it at
the first symptom with the partial records and the symptom as ``stopped``. The deadline (the
planned span plus a grace) stays as a backstop for what the monitor cannot see (a server that
stops answering, so nothing finishes): a probe cut by it counts as overloaded too
(``stopped: deadline``).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engines.metrics import Measurement, RequestRecord, RequestSLO, summarize
from engines.serving.overload import OverloadMonitor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CapacityLimits:
    """Upper bounds a rate must meet (None: unconstrained); latencies in ms."""

    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    itl_p99_ms: float | None = None
    e2e_p99_ms: float | None = None
    error_rate: float = 0.01

    @classmethod
    def from_slo(cls, slo: RequestSLO, error_rate: float = 0.01) -> CapacityLimits:
        """Per-request SLO limits read as p99 limits."""
        return cls(slo.ttft_ms, slo.tpot_ms, None, slo.e2e_ms, error_rate)

    def violations(self, metrics: Mapping[str, float]) -> list[str]:
        """Metric names over their limit (a NaN metric with a limit counts as over)."""
        out = []
        for name, bound in vars(self).items():
            if bound is None:
                continue
            value = metrics.get(name, math.nan)
            if not value <= bound:  # NaN fails too
                out.append(name)
        return out


@dataclass(frozen=True)
class Probe:
    """One rate tried: did it meet the limits, what it delivered, and why it stopped early."""

    rate: float
    feasible: bool
    goodput_rps: float
    violations: tuple[str, ...] = ()
    stopped: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CapacityResult:
    """The highest feasible rate found (0 when none was), with the probes that found it."""

    capacity_rps: float
    goodput_rps: float
    bracket: tuple[float, float]
    probes: list[Probe]

    def to_dict(self) -> dict[str, Any]:
        return {
            "capacity_rps": self.capacity_rps,
            "goodput_rps": self.goodput_rps,
            "bracket": list(self.bracket),
            "probes": [
                {
                    "rate": round(p.rate, 6),
                    "feasible": p.feasible,
                    "goodput_rps": p.goodput_rps,
                    "violations": list(p.violations),
                    "stopped": p.stopped,
                }
                for p in self.probes
            ],
        }


def search_capacity(
    probe: Callable[[float], Probe],
    start_rps: float,
    max_steps: int = 8,
    rel_tol: float = 0.1,
    growth: float = 2.0,
    max_rps: float = math.inf,
) -> CapacityResult:
    """Bracket then bisect the rate at which ``probe`` stops being feasible."""
    if start_rps <= 0:
        raise ValueError(f"start_rps must be positive (got {start_rps})")
    low: Probe | None = None
    high: Probe | None = None
    probes: list[Probe] = []
    rate = min(start_rps, max_rps)
    for _ in range(max_steps):
        result = probe(rate)
        probes.append(result)
        if result.feasible:
            low = result
        else:
            high = result
        if low is not None and high is not None:
            if (high.rate - low.rate) <= rel_tol * high.rate:
                break
            rate = (low.rate + high.rate) / 2
        elif low is not None:
            if low.rate >= max_rps:
                break
            rate = min(low.rate * growth, max_rps)
        else:
            rate = high.rate / growth  # type: ignore[union-attr]
    return CapacityResult(
        capacity_rps=low.rate if low else 0.0,
        goodput_rps=low.goodput_rps if low else 0.0,
        bracket=(low.rate if low else 0.0, high.rate if high else math.inf),
        probes=probes,
    )


def probe_from(measurement: Measurement, rate: float, limits: CapacityLimits) -> Probe:
    """A probe result from a measurement taken at ``rate``."""
    metrics = measurement.metrics()
    bad = limits.violations(metrics)
    stopped = (measurement.extra or {}).get("stopped")
    return Probe(
        rate, not bad and not stopped, measurement.goodput_rps, tuple(bad), stopped, metrics
    )


def arrival_offsets(
    count: int, rate: float, kind: Literal["poisson", "uniform"] = "poisson", seed: int = 0
) -> np.ndarray:
    """Send offsets (s) of ``count`` requests at ``rate``: Poisson, or evenly spaced."""
    if kind == "uniform":
        return np.arange(count) / rate
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=count)
    return np.cumsum(gaps) - gaps[0]


@dataclass(frozen=True)
class ProbeTiming:
    """How long each capacity probe sends load, and how long it may take to drain."""

    min_duration_s: float
    grace_s: float


def probe_timing(
    e2e_p50_s: float | None, min_duration_s: float = 10.0, settle: float = 3.0
) -> ProbeTiming:
    """Probe lengths scaled to the config's request latency.

    A probe shorter than a few request latencies measures how big a burst the server absorbs,
    not whether it keeps up: on the H100 (studies/real/h100-finalize) 8 s probes of requests
    that took ~12 s each read a capacity of 36.7 req/s for a config whose closed loop served
    21 req/s. So each probe sends for at least ``settle`` e2e latencies (measured at the trial's
    own load), and may drain for two more before its deadline calls it overloaded.
    """
    latency = max(e2e_p50_s or 0.0, 0.0)
    return ProbeTiming(max(min_duration_s, settle * latency), max(5.0, 2.0 * latency))


def timing_for(e2e_p50_ms: float, options: Mapping[str, Any]) -> ProbeTiming:
    """:func:`probe_timing` for a trial measured at ``e2e_p50_ms`` (NaN: nothing finished), from
    the spec's ``options.capacity`` (``min_duration_s``, ``settle_latencies``): one reading for
    the real search and the simulator's, so their probes last alike."""
    return probe_timing(
        e2e_p50_ms / 1e3 if math.isfinite(e2e_p50_ms) else None,
        float(options.get("min_duration_s", 10.0)),
        float(options.get("settle_latencies", 3.0)),
    )


def search_bounds(options: Mapping[str, Any]) -> dict[str, Any]:
    """``max_steps`` and ``rel_tol`` of :func:`search_capacity` from the spec's
    ``options.capacity``: the real search and the simulator's stop alike."""
    return {
        "max_steps": int(options.get("max_steps", 8)),
        "rel_tol": float(options.get("rel_tol", 0.1)),
    }


def measure_capacity(
    base_url: str,
    model: str,
    requests: Sequence[Any] | Callable[[int], Sequence[Any]],
    limits: CapacityLimits,
    start_rps: float,
    *,
    min_requests: int = 40,
    min_duration_s: float = 0.0,
    arrival: Literal["poisson", "uniform"] = "poisson",
    grace_s: float = 5.0,
    max_steps: int = 8,
    rel_tol: float = 0.1,
    seed: int = 0,
    slo: RequestSLO = RequestSLO(),
    keep_records: Callable[[int, Sequence[RequestRecord]], None] | None = None,
    **load_options: Any,
) -> CapacityResult:
    """Capacity of the server at ``base_url`` (already warm): open-loop load at each probed rate,
    each probe sending at least ``min_requests`` and lasting at least ``min_duration_s``.
    ``requests`` is either a list, reused cyclically, or a function ``count -> requests`` that
    gives each probe prompts of its own (a server with prefix caching serves prompts it has seen
    from cache: see :mod:`engines.serving.request_source`). ``keep_records(index, records)``, when
    given, receives each probe's request records (a probe cut as overloaded can then be looked at
    afterwards). ``load_options`` go to :func:`engines.serving.loadgen.run_load`."""
    probe_index = itertools.count()

    def probe(rate: float) -> Probe:
        count = max(min_requests, math.ceil(rate * min_duration_s))
        if callable(requests):
            batch = list(requests(count))
        else:
            batch = [requests[i % len(requests)] for i in range(count)]
        offsets = arrival_offsets(count, rate, arrival, seed)
        measurement, records = _run_rate(
            base_url, model, batch, offsets, grace_s, slo, limits, load_options
        )
        if keep_records is not None:
            keep_records(next(probe_index), records)
        result = probe_from(measurement, rate, limits)
        log.info(
            "capacity probe %.3g req/s: %s%s",
            rate,
            "ok" if result.feasible else "over",
            f" ({result.stopped or ', '.join(result.violations)})" if not result.feasible else "",
        )
        return result

    return search_capacity(probe, start_rps, max_steps=max_steps, rel_tol=rel_tol)


def _run_rate(
    base_url: str,
    model: str,
    batch: list[Any],
    offsets: np.ndarray,
    grace_s: float,
    slo: RequestSLO,
    limits: CapacityLimits,
    load_options: Mapping[str, Any],
) -> tuple[Measurement, list[RequestRecord]]:
    import asyncio

    from engines.serving.loadgen import run_load

    deadline = float(offsets[-1]) + grace_s
    monitor = OverloadMonitor(limits.ttft_p99_ms)
    try:
        result = run_load(
            base_url,
            model,
            batch,
            arrival_s=list(offsets),
            deadline_s=deadline,
            on_record=monitor.feed,
            **load_options,
        )
    except (TimeoutError, asyncio.TimeoutError):
        cut = {"stopped": f"deadline: over {deadline:.1f} s"}
        return summarize([], deadline, slo, extra=cut), []
    measured = summarize(result.records, result.duration_s, slo, extra={"stopped": result.stopped})
    return measured, result.records


def estimate_capacity(
    measure_at: Callable[[Any], Measurement],
    ctx: Any,
    start_rps: float,
    probe_s: float,
    min_requests: int = 50,
    max_requests: int = 20_000,
    max_steps: int = 8,
    rel_tol: float = 0.1,
) -> CapacityResult:
    """Capacity from a model (the simulator): ``measure_at(ctx')`` where ``ctx'`` is ``ctx`` with
    Poisson arrivals at the probed rate for ``probe_s`` seconds (no warmup).

    Each probe lasts as long as the real search's (:func:`probe_timing`): a fixed request count
    (300 until session 5) made fast probes shorter than one request latency, which measures a
    burst rather than a steady state. The sim then read 46-58 req/s for vLLM's defaults on an
    H200 whose real capacity under the same SLOs was 25.4 (studies/real/h200/session5-finalize).
    ``min_requests`` and ``max_requests`` bound the count (the latter only to bound time)."""
    import dataclasses

    from engines.workload import Arrival

    limits = CapacityLimits.from_slo(ctx.slo)

    def probe(rate: float) -> Probe:
        count = min(max(min_requests, math.ceil(rate * probe_s)), max_requests)
        workload = ctx.workload.model_copy(
            update={
                "arrival": Arrival(kind="poisson", rate=rate),
                "num_requests": count,
                "warmup_requests": 0,
                "sweep": None,
            }
        )
        return probe_from(measure_at(dataclasses.replace(ctx, workload=workload)), rate, limits)

    return search_capacity(probe, start_rps, max_steps=max_steps, rel_tol=rel_tol)
