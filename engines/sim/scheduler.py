"""A step-level simulator of continuous batching over a paged KV cache.

Each iteration builds one engine step the way vLLM's scheduler does, asks a cost function how
long it takes, and advances the clock:

* chunked prefill (vLLM V1): every running decode gets one token, then partially prefilled
  requests and then waiting ones get prefill chunks while the ``max_batched_tokens`` budget,
  ``max_seqs`` and free KV blocks allow;
* no chunked prefill (prefill-first, vLLM V0): when a waiting prompt fits, the step prefills whole
  prompts only and running decodes pause; otherwise it is a decode step;
* a step that cannot get KV blocks for its running requests preempts the newest one (recompute:
  its blocks are freed and it re-queues first, to prefill prompt plus generated tokens again);
* with prefix caching, once one request has computed the shared prefix, later requests skip its
  full blocks, and the cache holds those blocks once.

Speed comes from leaping: while nothing changes but context lengths (pure decode, nobody can be
admitted, no arrival, no completion, blocks to spare), the next ``k`` steps differ only linearly,
so they are costed in one vectorised call. A trial of 1,000 requests costs a few hundred
iterations, not a quarter of a million token events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.metrics import RequestRecord
from engines.sim.costs import prefill_attended
from engines.workload import RequestPlan

# (new_tokens, attended_positions, kv_positions_read, sequences, decode_only) -> seconds per step;
# called with scalars for one step and with arrays (one entry per step) for a leap.
StepTimeFn = Callable[..., "float | np.ndarray"]


@dataclass(frozen=True)
class SchedulerLimits:
    """The engine limits the scheduler honours."""

    max_seqs: int
    max_batched_tokens: int
    kv_blocks: int
    block_size: int
    chunked_prefill: bool
    prefix_caching: bool
    admission_delay_s: float = 0.0  # arrival at the server -> first schedulable (see _send)
    admission_delay_per_stream_s: float = 0.0  # more of it per request already in flight
    api_servers: int = 1  # API server processes sharing those streams (--api-server-count)
    # seconds of API server work per token it streams, all its processes together (see _deliver)
    api_token_s: float = 0.0
    # share of the per-sequence reads of a cached shared prefix's KV that sequences sharing it
    # save: 0 reads it once per sequence (paged attention), 1 once per step (cascade attention)
    prefix_reads_shared: float = 0.0


@dataclass(frozen=True)
class SimResult:
    """Measured requests (warmup excluded) and a per-step trace of the whole run."""

    records: list[RequestRecord]
    duration_s: float
    step_end_s: np.ndarray
    step_tokens: np.ndarray  # tokens processed per step
    step_running: np.ndarray  # running sequences per step
    step_blocks: np.ndarray  # KV blocks in use (upper bound within a leap)
    max_in_flight: int  # requests sent and not yet finished, at most
    preemptions: int
    busy_s: float  # time spent in steps (the rest the engine idled waiting for arrivals)

    @property
    def peak_running(self) -> int:
        return int(self.step_running.max()) if self.step_running.size else 0


def _ceil_div(a: np.ndarray | int, b: int) -> np.ndarray | int:
    return -(-a // b)


class _Batcher:
    """Mutable state of one simulated run; :func:`simulate_schedule` is the way in."""

    def __init__(self, plan: RequestPlan, limits: SchedulerLimits, step_time: StepTimeFn) -> None:
        self.lim, self.step_time = limits, step_time
        self.max_seqs = min(limits.max_seqs, limits.max_batched_tokens)
        self.n = n = plan.count
        self.inp = plan.input_tokens.astype(np.int64)
        self.out = np.maximum(plan.output_tokens.astype(np.int64), 1)
        self.arrival = plan.arrival_s
        self.cap = plan.concurrency or n
        self.target = self.inp.copy()  # tokens to prefill (prompt, plus outputs after preemption)
        self.ctx = np.zeros(n, np.int64)  # KV positions computed (prefix-cache hits included)
        self.gen = np.zeros(n, np.int64)
        self.skip = np.zeros(n, np.int64)  # prefix positions shared from the cache
        self.blocks = np.zeros(n, np.int64)  # private KV blocks held
        self.start, self.first, self.end = (np.full(n, np.nan) for _ in range(3))
        self.segments: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        self.seg_open = np.full(n, -1, np.int64)
        self.running: list[int] = []
        self.waiting: deque[int] = deque()
        self.pending: deque[tuple[float, int]] = deque()  # (schedulable at, request)
        self.sent = self.in_flight = self.max_in_flight = self.done = 0
        # the API servers stream every token the engine emits, in order: when they are through
        # with what is emitted so far, and the finished requests they have still to deliver
        self.api_free_at = 0.0
        self.deliveries: deque[tuple[float, int]] = deque()  # (client sees it at, requests)
        self.delivered_log: list[np.ndarray] = []  # per step: when its tokens reach the clients
        self.slot_freed_at = 0.0
        self.now, self.steps, self.used, self.preemptions = 0.0, 0, 0, 0
        bs = limits.block_size
        self.prefix_tokens = (plan.shared_prefix_tokens // bs) * bs if limits.prefix_caching else 0
        self.prefix_ready = False
        # per step run (one step or a leap): ends, durations, tokens, running, blocks, decoded
        self.log: list[tuple[np.ndarray, np.ndarray, int, int, int, bool]] = []

    # -- arrivals --------------------------------------------------------------------------
    def _send(self, i: int, at: float) -> None:
        """Request ``i`` reaches the server at ``at``; the scheduler sees it
        ``admission_delay_s`` later (HTTP, tokenization and the API server's queue, which under
        hundreds of streams is busy writing their tokens)."""
        self.start[i] = at
        delay = self._admission_delay()
        if delay > 0:
            # the API server hands requests on in order: none overtakes an earlier one
            ready = max(at + delay, self.pending[-1][0] if self.pending else 0.0)
            self.pending.append((ready, i))
        else:
            self.waiting.append(i)
        self.sent += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _admission_delay(self) -> float:
        """Arrival -> schedulable for a request sent now: a fixed part (HTTP, tokenizing) and a
        part per stream the API server is already serving (one Python process writes every
        stream's tokens, so a request waits longer for its turn the more streams are open; with
        several API servers each serves its share of them)."""
        streams = self.in_flight / max(self.lim.api_servers, 1)
        return self.lim.admission_delay_s + self.lim.admission_delay_per_stream_s * streams

    def _release(self) -> None:
        """Send every request that has arrived (open loop) or has a free slot (closed loop)."""
        while self.deliveries and self.deliveries[0][0] <= self.now:
            at, count = self.deliveries.popleft()
            if self.in_flight >= self.cap:
                self.slot_freed_at = at
            self.in_flight -= count
        while self.sent < self.n and self.in_flight < self.cap:
            if self.arrival is None:
                self._send(self.sent, self.now)
            elif self.arrival[self.sent] <= self.now:
                self._send(self.sent, max(float(self.arrival[self.sent]), self.slot_freed_at))
            else:
                break
        while self.pending and self.pending[0][0] <= self.now:
            self.waiting.append(self.pending.popleft()[1])

    def _next_arrival(self) -> float:
        """When the next request becomes schedulable (a send, the end of a pending delay, or a
        delivery that frees a client)."""
        ready = self.pending[0][0] if self.pending else np.inf
        if self.deliveries and self.sent < self.n:
            ready = min(ready, self.deliveries[0][0])
        if self.arrival is None or self.sent >= self.n or self.in_flight >= self.cap:
            return ready
        return min(ready, float(self.arrival[self.sent]) + self._admission_delay())

    # -- KV blocks and preemption ----------------------------------------------------------
    @property
    def free(self) -> int:
        return self.lim.kv_blocks - self.used

    def _preempt_newest(self) -> int:
        """Evict the newest running request (recompute); return its id."""
        victim = self.running.pop()
        self.used -= int(self.blocks[victim])
        self.blocks[victim] = self.ctx[victim] = self.skip[victim] = 0
        self.target[victim] = self.inp[victim] + self.gen[victim]
        self._close_segment(victim, self.steps - 1)
        self.waiting.appendleft(victim)
        self.preemptions += 1
        return victim

    def _close_segment(self, i: int, last_step: int) -> None:
        if self.seg_open[i] >= 0:
            self.segments[i].append((int(self.seg_open[i]), last_step))
            self.seg_open[i] = -1

    # -- one step ------------------------------------------------------------------------
    def _decode_set(self) -> np.ndarray:
        """Running requests past prefill, given blocks for their next token (preempting if short)."""
        bs = self.lim.block_size
        while True:
            run = np.fromiter(self.running, np.int64, len(self.running))
            dec = run[self.ctx[run] >= self.target[run]]
            want = _ceil_div(self.ctx[dec] + 1 - self.skip[dec], bs)
            need = int((want - self.blocks[dec]).sum())
            if need <= self.free or not self.running:
                break
            self._preempt_newest()
        self.blocks[dec] = want
        self.used += need
        return dec

    def _admit(self, budget: int, chunks: list[tuple[int, int, int]]) -> None:
        """Give prefill chunks to waiting requests in order while budget, seqs and blocks allow."""
        bs = self.lim.block_size
        while self.waiting and budget > 0 and len(self.running) < self.max_seqs:
            i = self.waiting[0]
            hit = 0
            if self.prefix_ready and self.ctx[i] == 0:
                hit = min(self.prefix_tokens, int((self.target[i] - 1) // bs * bs))
            remaining = int(self.target[i]) - hit
            if self.lim.chunked_prefill:  # a chunk may also shrink to the blocks left
                chunk = min(remaining, budget, self.free * bs)
            elif remaining > budget and chunks:
                break  # whole prompts only; an oversized one goes alone
            else:
                chunk = remaining
            need = int(_ceil_div(chunk, bs))
            if chunk <= 0 or need > self.free:
                break
            self.waiting.popleft()
            self.ctx[i] = self.skip[i] = hit
            self.blocks[i] = need
            self.used += need
            self.running.append(i)
            chunks.append((i, hit, chunk))
            budget -= chunk

    def _continue_prefills(self, budget: int, chunks: list[tuple[int, int, int]]) -> int:
        """Next chunks for running requests still prefilling (chunked prefill only)."""
        bs = self.lim.block_size
        run = np.fromiter(self.running, np.int64, len(self.running))
        for i in run[self.ctx[run] < self.target[run]].tolist():
            if budget <= 0:
                break
            if i not in self.running:  # preempted to make room for an earlier one
                continue
            chunk = min(int(self.target[i] - self.ctx[i]), budget)
            need = int(_ceil_div(self.ctx[i] + chunk - self.skip[i], bs) - self.blocks[i])
            while need > self.free and self.running[-1] != i:
                self._preempt_newest()
            if need > self.free:
                self._preempt_newest()  # i itself is the newest: it waits for room
                break
            self.blocks[i] += need
            self.used += need
            chunks.append((i, int(self.ctx[i]), chunk))
            budget -= chunk
        return budget

    def _plan_step(self) -> tuple[np.ndarray, list[tuple[int, int, int]], bool]:
        """Decide one step: decoding requests, prefill chunks, and whether it may be leapt."""
        chunks: list[tuple[int, int, int]] = []
        preemptions = self.preemptions
        if not self.lim.chunked_prefill:
            if self.waiting:
                self._admit(self.lim.max_batched_tokens, chunks)
            if chunks:  # prefill-first: running decodes pause for this step
                return np.zeros(0, np.int64), chunks, False
            return self._decode_set(), chunks, self.preemptions == preemptions
        dec = self._decode_set()
        budget = self._continue_prefills(self.lim.max_batched_tokens - dec.size, chunks)
        if self.preemptions == preemptions:
            self._admit(budget, chunks)
            # with no chunk nobody is mid-prefill (one would have had budget), so the step repeats
            return dec, chunks, not chunks
        return dec[np.isin(dec, self.running)], chunks, False

    def _run_step(self, dec: np.ndarray, chunks: list[tuple[int, int, int]]) -> None:
        """Cost and apply one planned step."""
        prefill = sum(c for _, _, c in chunks)
        positions = int((self.ctx[dec] + 1).sum())
        attended = positions + sum(prefill_attended(o, c) for _, o, c in chunks)
        kv_read = positions - self._prefix_reads_saved(dec) + sum(o for _, o, _ in chunks)
        kv_read += prefill
        tokens = dec.size + prefill
        seqs = dec.size + len(chunks)
        duration = float(self.step_time(tokens, attended, kv_read, seqs, not chunks))
        self.now += duration
        self._log(np.array([self.now]), np.array([duration]), tokens, bool(dec.size))
        self.ctx[dec] += 1
        self.gen[dec] += 1
        emitted, firsts = [dec], []
        for i, _, chunk in chunks:
            self.ctx[i] += chunk
            self._maybe_cache_prefix(i)
            if self.ctx[i] == self.target[i]:  # prefill done: first (or next) token comes out
                self.gen[i] += 1
                if np.isnan(self.first[i]):
                    firsts.append(i)
                self.seg_open[i] = self.steps - 1
                emitted.append(np.array([i]))
        tokens_out = np.concatenate(emitted)
        delivered = float(self._deliver(np.array([self.now]), tokens_out.size)[-1])
        self.first[firsts] = delivered
        self._finish(tokens_out, delivered)

    def _prefix_reads_saved(self, dec: np.ndarray) -> int:
        """KV positions a step does not read because decoding sequences that share the cached
        prefix read it together (``prefix_reads_shared`` > 0): that share of their shared
        positions beyond one copy."""
        saved = min(self.lim.prefix_reads_shared, 1.0)
        shared = self.skip[dec]
        if saved <= 0.0 or int((shared > 0).sum()) < 2:
            return 0
        return int(round(saved * (int(shared.sum()) - int(shared.max()))))

    def _maybe_cache_prefix(self, i: int) -> None:
        """Once a request has computed the shared prefix, keep its blocks cached (if room)."""
        held = self.prefix_tokens // self.lim.block_size
        if (
            self.prefix_tokens
            and not self.prefix_ready
            and self.ctx[i] >= self.prefix_tokens
            and held <= self.free
        ):
            self.prefix_ready = True
            self.used += held

    def _leap(self, dec: np.ndarray) -> None:
        """Run the next k identical decode steps at once (blocks for step 0 already taken)."""
        bs, r = self.lim.block_size, dec.size
        k = int((self.out[dec] - self.gen[dec]).min())
        base = self.ctx[dec] + 1 - self.skip[dec]  # positions written by step 0
        others = self.used - int(self.blocks[dec].sum())
        if (
            others + int(self.blocks[dec].sum()) + r * int(_ceil_div(k - 1, bs))
            > self.lim.kv_blocks
        ):
            lo, hi = 1, k  # largest k whose last step still fits: blocks grow monotonically
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if others + int(_ceil_div(base + mid - 1, bs).sum()) <= self.lim.kv_blocks:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
        steps = np.arange(k)
        positions = int((self.ctx[dec] + 1).sum()) + r * steps
        kv_read = positions - self._prefix_reads_saved(dec)
        durations = self.step_time(np.full(k, r), positions, kv_read, np.full(k, r), True)
        ends = self.now + np.cumsum(durations)
        arrival = self._next_arrival()
        if arrival < ends[-1]:
            k = int(np.searchsorted(ends, arrival)) + 1
            durations, ends = durations[:k], ends[:k]
        self.now = float(ends[-1])
        self.ctx[dec] += k
        self.gen[dec] += k
        self.used -= int(self.blocks[dec].sum())
        self.blocks[dec] = _ceil_div(self.ctx[dec] - self.skip[dec], bs)
        self.used += int(self.blocks[dec].sum())
        self._log(ends, durations, r, True)
        self._finish(dec, float(self._deliver(ends, r)[-1]))

    def _deliver(self, ends: np.ndarray, tokens_per_step: int) -> np.ndarray:
        """When the API servers have written the tokens of each step ending at ``ends`` (each
        emitting ``tokens_per_step``): they start on a step's tokens once it ends and once they
        are through with the earlier ones. With no API cost that is when the steps end.

        The engine does not wait for them (its process runs on), so a backlog delays only what
        the clients see: tokens, completions, and under a closed loop the next request.
        """
        work = self.lim.api_token_s * tokens_per_step
        if work <= 0.0:
            delivered = ends
        else:
            # free_k = max(free_{k-1}, end_k) + work, unrolled over the steps: the free time
            # after step k is k * work past the latest of free_0 and end_j - (j - 1) * work
            steps = np.arange(ends.size)
            latest = np.maximum.accumulate(np.maximum(ends - steps * work, self.api_free_at))
            delivered = latest + (steps + 1) * work
            self.api_free_at = float(delivered[-1])
        self.delivered_log.append(delivered)
        return delivered

    def _finish(self, candidates: np.ndarray, delivered: float) -> None:
        """Complete requests that produced their last token in the step just run; their clients
        see it at ``delivered``, when the API servers have written it."""
        done = candidates[self.gen[candidates] >= self.out[candidates]]
        if not done.size:
            return
        for i in done.tolist():
            self.end[i] = delivered
            self._close_segment(i, self.steps - 1)
            self.used -= int(self.blocks[i])
            self.blocks[i] = 0
        finished = set(done.tolist())
        self.running = [i for i in self.running if i not in finished]
        self.done += done.size
        self.deliveries.append((delivered, done.size))

    def _log(self, ends: np.ndarray, durations: np.ndarray, tokens: int, decoded: bool) -> None:
        self.log.append((ends, durations, tokens, len(self.running), self.used, decoded))
        self.steps += ends.size

    # -- the run -----------------------------------------------------------------------
    def run(self) -> None:
        finished = 0
        while finished < self.n:
            self._release()
            while not self.running and not self.waiting:
                # idle until a request can be scheduled: a delivery frees a client, who sends;
                # the request then waits out its admission delay
                upcoming = self._next_arrival()
                if not np.isfinite(upcoming):
                    raise RuntimeError("simulator stalled: nothing to run and nothing to arrive")
                self.now = max(self.now, upcoming)
                self._release()
            steps_before = self.steps
            dec, chunks, leap = self._plan_step()
            if leap and dec.size:
                self._leap(dec)
            elif dec.size or chunks:
                self._run_step(dec, chunks)
            if self.steps == steps_before:
                raise RuntimeError("simulator stalled: a step could be planned for nobody")
            finished = self.done

    # -- results -------------------------------------------------------------------------
    def _trace(self, column: int) -> np.ndarray:
        """One per-step column of the log, leaps expanded to one entry per step."""
        if not self.log:
            return np.zeros(0)
        if column < 2:
            return np.concatenate([entry[column] for entry in self.log])
        sizes = [entry[0].size for entry in self.log]
        return np.repeat(np.array([entry[column] for entry in self.log]), sizes)

    def _itl(
        self,
        i: int,
        ends: np.ndarray,
        durations: np.ndarray,
        decode_steps: np.ndarray,
        decode_count: np.ndarray,
    ) -> np.ndarray:
        """Gaps between request ``i``'s streamed tokens as its client sees them (``ends``: when
        each step's tokens reach the clients, later than the step's end behind an API backlog).

        A request emits a token at the step ending its prefill (segment start) and at every
        decoding step until it finishes or is preempted (segment end).
        """
        segments = self.segments[i]
        if len(segments) == 1 and self.lim.api_token_s <= 0.0:
            a, b = segments[0]
            if decode_count[b + 1] - decode_count[a + 1] == b - a:  # no prefill-only steps
                return durations[a + 1 : b + 1]
        times = []
        for a, b in segments:
            times.append(ends[[a]])
            times.append(ends[decode_steps[decode_count[a + 1] : decode_count[b + 1]]])
        return np.diff(np.concatenate(times))

    def result(self, warmup: int) -> SimResult:
        """Records of the measured requests (``warmup`` first ones dropped) and the step trace."""
        ends, durations = self._trace(0), self._trace(1)
        seen = np.concatenate(self.delivered_log) if self.delivered_log else ends
        decoded = self._trace(5).astype(bool)
        decode_steps = np.flatnonzero(decoded)
        decode_count = np.concatenate([[0], np.cumsum(decoded)])
        t0 = float(np.min(self.start[warmup:])) if self.n > warmup else 0.0
        records = [
            RequestRecord(
                start_s=float(self.start[i]) - t0,
                first_token_s=float(self.first[i]) - t0,
                end_s=float(self.end[i]) - t0,
                input_tokens=int(self.inp[i]),
                output_tokens=int(self.out[i]),
                itl_s=self._itl(i, seen, durations, decode_steps, decode_count),
            )
            for i in range(warmup, self.n)
        ]
        duration = float(np.max(self.end[warmup:]) - t0) if records else 0.0
        return SimResult(
            records=records,
            duration_s=duration,
            step_end_s=ends,
            step_tokens=self._trace(2),
            step_running=self._trace(3),
            step_blocks=self._trace(4),
            max_in_flight=self.max_in_flight,
            preemptions=self.preemptions,
            busy_s=float(durations.sum()),
        )


def simulate_schedule(
    plan: RequestPlan, limits: SchedulerLimits, step_time: StepTimeFn
) -> SimResult:
    """Run every request of ``plan`` through the batcher; deterministic for a given plan."""
    if limits.kv_blocks < 1 or limits.max_seqs < 1 or limits.max_batched_tokens < 1:
        raise ValueError(f"scheduler limits must be positive: {limits}")
    batcher = _Batcher(plan, limits, step_time)
    batcher.run()
    return batcher.result(min(plan.warmup, plan.count))
