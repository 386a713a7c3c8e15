"""Overload: when an open-loop run's queue grows without bound, say so as records finish.

:class:`OverloadMonitor` is the load generator's streaming hook (``run_load(...,
on_record=monitor.feed)``): it reads each record as it finishes, names the symptom (requests in
flight and their wait keep growing, or TTFT keeps rising beyond its limit) and so lets a run that
is already lost end there. A capacity probe above capacity then costs a few hundred completions
at most instead of the time the server needs to drain its queue
(:mod:`engines.serving.capacity`); :mod:`engines.serving.measure` uses it for a trial's own open-loop run
when the spec asks (``stop_overloaded``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from engines.metrics import RequestRecord


class OverloadMonitor:
    """Says when a run is overloaded, from records fed in completion order.

    Two symptoms, both needing ``3 * window`` records before they fire: requests in flight at
    each arrival keep growing (mean over each third of the run rises, the last third's over
    ``growth`` times the middle's and at least ``min_in_flight``) and so does the wait for the
    first token (median by thirds, the same way), or the TTFT medians of the last three windows of
    ``window`` requests rise monotonically and the latest is beyond ``ttft_limit_ms``.

    Why both counts and waits: judged early (on the first records, as a live hook does) a healthy
    run that ramps up to many requests in flight shows the count rising just as an overloaded one
    does; what differs is that its requests do not wait longer and longer.

    Why the wait must also be material (the last third's median at least ``wait_share`` of the
    TTFT limit, or four times the first third's when there is no limit): on a real
    server the first token also comes later as the batch fills. On an H200 (vLLM, Llama-3.1-8B,
    studies/real/h200/session4-finalize) probes at 18-20 req/s were cut after ~30 records as
    ``4.5 -> 12.5 -> 17.0 requests in flight, median TTFT 49 -> 67 ms``: the first seconds of a
    ramp-up (rate x latency is ~40 in flight there), with first tokens 30 times inside the 2 s
    limit. An overloaded server's wait keeps growing, so it still crosses the floor within the
    probe (or the probe's own p99 judges it).

    :meth:`feed` is a load-generator hook (``run_load(..., on_record=monitor.feed)``) and runs in
    its event loop, so a check (a sort of every record so far) is not made on every record of a
    long run: after each one the next waits until the run has grown by ``recheck`` (5 %), which
    keeps the total cost near O(n log n) and delays a verdict by at most that share of the run.
    """

    def __init__(
        self,
        ttft_limit_ms: float | None,
        window: int = 8,
        growth: float = 1.25,
        min_in_flight: int = 4,
        recheck: float = 0.05,
        wait_share: float = 0.5,
    ) -> None:
        self.ttft_limit_ms = ttft_limit_ms
        self.wait_share = wait_share
        self.window = window
        self.growth = growth
        self.min_in_flight = min_in_flight
        self.recheck = recheck
        self.records: list[RequestRecord] = []
        self.reason: str | None = None
        self._next_check = 3 * window

    def feed(self, record: RequestRecord) -> str | None:
        """Add one finished record; returns the overload reason once there is one."""
        self.records.append(record)
        count = len(self.records)
        if self.reason is None and count >= self._next_check:
            self._next_check = count + max(1, int(count * self.recheck))
            self.reason = self._ttft_rising() or self._queue_growing()
        return self.reason

    def _ttft_rising(self) -> str | None:
        if self.ttft_limit_ms is None:
            return None
        recent = _ttfts_ms(sorted(self.records, key=lambda r: r.start_s))[-3 * self.window :]
        medians = [float(np.median(part)) for part in np.split(recent, 3)]
        if medians[0] < medians[1] < medians[2] and medians[-1] > self.ttft_limit_ms:
            return f"ttft_rising: recent median TTFT {medians[-1]:.0f} ms > {self.ttft_limit_ms:g}"
        return None

    def _queue_growing(self) -> str | None:
        ordered = sorted(self.records, key=lambda r: r.start_s)
        starts = np.array([r.start_s for r in ordered])
        ends = np.sort(np.array([r.end_s for r in ordered]))
        in_flight = np.arange(1, starts.size + 1) - np.searchsorted(ends, starts, side="right")
        # thirds, not first-vs-last: a run starting on an idle server ramps up to its steady state
        a, b, c = (float(part.mean()) for part in np.array_split(in_flight, 3))
        if not (a < b < c and c >= self.min_in_flight and c > self.growth * b):
            return None
        # ... and the wait must grow with it: a healthy ramp-up to many requests in flight (rate x
        # latency) raises the count over the first records just as well, at a steady TTFT
        waits = [float(np.median(part)) for part in np.array_split(_ttfts_ms(ordered), 3)]
        if self.ttft_limit_ms is not None:
            floor = self.wait_share * self.ttft_limit_ms
        else:
            floor = 4.0 * waits[0]  # no limit to compare with: the wait quadrupled
        rising = waits[0] < waits[1] < waits[2] and waits[2] > self.growth * waits[1]
        if rising and waits[2] >= floor:
            return (
                f"queue_growing: {a:.1f} -> {b:.1f} -> {c:.1f} requests in flight, "
                f"median TTFT {waits[1]:.0f} -> {waits[2]:.0f} ms"
            )
        return None


def _ttfts_ms(records: Sequence[RequestRecord]) -> np.ndarray:
    """TTFT of each record in ms (inf when no token came)."""
    return np.array(
        [
            (r.first_token_s - r.start_s) * 1e3 if r.first_token_s is not None else math.inf
            for r in records
        ]
    )
