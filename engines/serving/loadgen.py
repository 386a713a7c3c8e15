"""Drive an OpenAI-compatible server with planned traffic and time every streamed chunk.

Requests go to ``/v1/completions`` (or ``/v1/chat/completions``) with ``stream: true``,
``stream_options.include_usage``, ``ignore_eos`` and ``max_tokens`` equal to the planned output
length, either closed-loop (``concurrency`` requests in flight: each one ends, the next is sent
at once) or open-loop at the plan's arrival offsets (optionally capped at N in flight).

Timing follows ``vllm bench serve`` with ``time.perf_counter``: a request starts just before it is
written to its connection; TTFT is the first chunk that carries text; ITL is the gap between
consecutive text chunks (one per chunk, not per token); the request ends at its last text chunk.
Output tokens come from the usage chunk when the server sends one, else one per text chunk.
Warmup requests run first and are left out; the measured window runs from the common start
``t0`` to the last completion.

The generator must never be the bottleneck: the HTTP client is :mod:`engines.serving.sse_client`
(a few µs of CPU per streamed token, not httpx's ~60), and at high concurrency the plan is
sharded over worker processes (:mod:`engines.serving.loadgen_worker`), each with its own event
loop and a share of the concurrency, started together after every warmup has ended.

Streaming hook: ``on_record`` sees each measured record the moment it finishes (worker processes
send theirs over their stdout pipe as they go), so a monitor such as
:class:`engines.serving.overload.OverloadMonitor` can end a run that is already lost. When it
returns a reason the run issues nothing more, drops its requests in flight (they are neither
recorded nor delivered) and returns the records it has, with ``stopped`` set to that reason. The
hook runs in the generator's event loop: it must be cheap (a few µs), or timing suffers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engines.metrics import RequestRecord
from engines.serving import loadgen_worker
from engines.serving.interrupts import run_cancelling_on_signals
from engines.serving.loadgen_worker import FRAME, Shard, ShardResult, run_shard
from engines.serving.sse_client import Pool, RawRecord

#: Above this many requests in flight ``processes="auto"`` shards: one event loop takes ~10-15k
#: streamed tokens/s with room to spare (bench/results/bench_loadgen.json), and 128 streams at a
#: fast decode (~10 ms ITL) already ask for 12.8k.
STREAMS_PER_PROCESS = 128
_START_MARGIN_S = 0.05  # between the last worker's "ready" and the common start

#: ``on_record(record) -> reason | None``: one measured record as it finishes (times from the
#: common start); a non-empty reason stops the run.
RecordHook = Callable[[RequestRecord], "str | None"]


@dataclass(frozen=True)
class LoadRequest:
    """One request to send: its prompt and planned token counts."""

    prompt: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LoadResult:
    """Measured requests (warmup excluded), the measured window and the warmup requests;
    ``stopped`` is the hook's reason when the run was ended early (its records are then the
    requests that finished before the stop)."""

    records: list[RequestRecord]
    duration_s: float
    warmup_records: list[RequestRecord] = field(default_factory=list)
    processes: int = 1
    stopped: str | None = None


def request_body(
    model: str, request: LoadRequest, chat: bool, extra_body: Mapping[str, Any] | None
) -> bytes:
    """The JSON body for one request (encoded once, before timing starts)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.output_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
    }
    if chat:
        body["messages"] = [{"role": "user", "content": request.prompt}]
        body["max_completion_tokens"] = request.output_tokens
    else:
        body["prompt"] = request.prompt
    body.update(extra_body or {})
    return json.dumps(body).encode()


def choose_processes(
    processes: int | str, concurrency: int | None, count: int, cpus: int | None = None
) -> int:
    """Worker processes for a run: ``processes`` itself, or for ``"auto"`` one per
    :data:`STREAMS_PER_PROCESS` requests in flight (``count`` when uncapped), at most one per
    spare CPU (one is left to the server's front end when it shares the machine)."""
    if processes != "auto":
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"loadgen_processes must be 'auto' or a positive int: {processes!r}")
        return processes
    in_flight = concurrency or count
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(-(-in_flight // STREAMS_PER_PROCESS), cpus - 1))


async def run_load_async(
    base_url: str,
    model: str,
    requests: Sequence[LoadRequest],
    *,
    arrival_s: Sequence[float] | None = None,
    concurrency: int | None = None,
    warmup: int = 0,
    chat: bool = False,
    request_timeout_s: float = 600.0,
    extra_body: Mapping[str, Any] | None = None,
    deadline_s: float | None = None,
    processes: int | str = "auto",
    on_record: RecordHook | None = None,
) -> LoadResult:
    """Send ``requests`` (the first ``warmup`` of them as warmup) and time them.

    ``arrival_s`` None means closed loop at ``concurrency`` (required then); otherwise requests
    are released at those offsets (re-based to the first measured one), at most ``concurrency``
    in flight when given. ``processes`` shards the plan over worker processes (``"auto"``: see
    :func:`choose_processes`). ``on_record`` gets each measured record as it finishes and may stop
    the run (module docstring). The whole run raises ``TimeoutError`` after ``deadline_s``.
    """
    if arrival_s is None and not concurrency:
        raise ValueError("closed-loop load needs a concurrency")
    pool = Pool(base_url)  # checks the URL before anything is sent
    path = "/v1/chat/completions" if chat else "/v1/completions"
    wire = [pool.request_bytes(path, request_body(model, r, chat, extra_body)) for r in requests]
    warm = min(warmup, len(requests))
    offsets = None
    if arrival_s is not None:
        offsets = [arrival_s[i] - arrival_s[warm] for i in range(warm, len(requests))]
    count = choose_processes(processes, concurrency, len(requests) - warm)
    shards, owners = _split(base_url, wire, warm, concurrency, offsets, request_timeout_s, count)
    collector = _Collector(owners, requests, warm, on_record)
    run = _in_process(shards[0], collector) if count == 1 else _in_workers(shards, collector)
    results = await asyncio.wait_for(run, deadline_s)
    return _merge(results, owners, requests, collector)


def run_load(
    base_url: str, model: str, requests: Sequence[LoadRequest], **options: Any
) -> LoadResult:
    """Blocking wrapper of :func:`run_load_async` (its own event loop).

    Called where an event loop already runs in this thread (a Jupyter kernel: every real study
    run from a notebook), the load runs on a thread of its own, since ``asyncio.run`` refuses to
    nest; ``on_record`` callbacks then come from that thread. In the main thread an interrupt
    (Ctrl-C, SIGTERM, SIGHUP) cancels the run, which stops its workers, and then raises as it
    would have (:mod:`.interrupts`). From a notebook an interrupt returns at once
    (the thread is not waited for: it ends at the load's deadline, or sooner once the study
    stops the server)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: no loop here
        return run_cancelling_on_signals(run_load_async(base_url, model, requests, **options))
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="servetune-load")
    try:
        coroutine = run_load_async(base_url, model, requests, **options)
        return pool.submit(asyncio.run, coroutine).result()
    finally:
        pool.shutdown(wait=False)


def _split(
    base_url: str,
    wire: list[bytes],
    warm: int,
    concurrency: int | None,
    offsets: list[float] | None,
    timeout_s: float,
    count: int,
) -> tuple[list[Shard], list[tuple[list[int], list[int]]]]:
    """``count`` shards with equal shares of the concurrency (the first ones get the remainder)
    and of the requests, interleaved so each shard sees the plan's mix and arrival pattern; plus
    each shard's (warmup, measured) indices into the plan."""
    count = min(count, concurrency or count, max(1, len(wire) - warm))
    shares = [None] * count if not concurrency else _shares(concurrency, count)
    shards, owners = [], []
    for k in range(count):
        warm_idx = list(range(k, warm, count))
        measured_idx = list(range(warm + k, len(wire), count))
        shards.append(
            Shard(
                base_url=base_url,
                warmup=[wire[i] for i in warm_idx],
                measured=[wire[i] for i in measured_idx],
                concurrency=shares[k],
                offsets=None if offsets is None else [offsets[i - warm] for i in measured_idx],
                timeout_s=timeout_s,
            )
        )
        owners.append((warm_idx, measured_idx))
    return shards, owners


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (k < total % parts) for k in range(parts)]


class _Collector:
    """Measured records as the shards report them (in plan order), fed to the hook; the first
    reason the hook gives calls ``request_stop``."""

    def __init__(
        self,
        owners: list[tuple[list[int], list[int]]],
        requests: Sequence[LoadRequest],
        warm: int,
        on_record: RecordHook | None,
    ) -> None:
        self.t0 = math.nan  # the common start, set before the first measured record
        self.measured: list[RequestRecord | None] = [None] * (len(requests) - warm)
        self.stopped: str | None = None
        self.request_stop: Callable[[], None] = lambda: None
        self._owners = [measured_idx for _, measured_idx in owners]
        self._requests = requests
        self._warm = warm
        self._on_record = on_record

    def add(self, shard: int, i: int, raw: RawRecord) -> None:
        """Shard ``shard``'s measured request ``i`` finished."""
        index = self._owners[shard][i]
        record = _record(raw, self.t0, self._requests[index])
        self.measured[index - self._warm] = record
        if self._on_record is None:
            return
        reason = self._on_record(record)
        if reason and self.stopped is None:
            self.stopped = reason
            self.request_stop()


async def _in_process(shard: Shard, collector: _Collector) -> list[ShardResult]:
    stop = asyncio.Event()
    collector.request_stop = stop.set

    async def now() -> float:
        collector.t0 = time.perf_counter()
        return collector.t0

    return [await run_shard(shard, now, lambda i, raw: collector.add(0, i, raw), stop)]


async def _in_workers(shards: list[Shard], collector: _Collector) -> list[ShardResult]:
    """Run each shard in a worker process; start their measured phases at one common ``t0``,
    collect their records as they stream in, and pass a stop on to every worker still running."""
    procs: list[asyncio.subprocess.Process] = []
    try:
        for shard in shards:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                loadgen_worker.__file__,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            procs.append(proc)
            proc.stdin.write(pickle.dumps(vars(shard), protocol=pickle.HIGHEST_PROTOCOL))  # type: ignore[union-attr]
        for proc in procs:
            if await proc.stdout.readline() != b"ready\n":  # type: ignore[union-attr]
                raise RuntimeError(f"load generator worker {proc.pid} died during warmup")
        collector.t0 = t0 = time.perf_counter() + _START_MARGIN_S
        collector.request_stop = lambda: _send_stop(procs)
        for proc in procs:
            proc.stdin.write(f"{t0!r}\n".encode())  # type: ignore[union-attr]
            await proc.stdin.drain()  # type: ignore[union-attr]
        results = await asyncio.gather(
            *(_stream_from(proc, k, collector) for k, proc in enumerate(procs))
        )
        for proc in procs:
            if await proc.wait() != 0:
                raise RuntimeError(f"load generator worker {proc.pid} failed")
        return results
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def _stream_from(
    proc: asyncio.subprocess.Process, shard: int, collector: _Collector
) -> ShardResult:
    """Read one worker's frames: its records as they finish, then its result."""
    reader = proc.stdout
    try:
        while True:
            (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))  # type: ignore[union-attr]
            message = pickle.loads(await reader.readexactly(size))  # type: ignore[union-attr]
            if message[0] == "result":
                proc.stdin.close()  # type: ignore[union-attr]
                return ShardResult(**message[1])
            collector.add(shard, message[1], message[2])
    except asyncio.IncompleteReadError:
        raise RuntimeError(f"load generator worker {proc.pid} died mid-run") from None


def _send_stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        stdin = proc.stdin
        if proc.returncode is None and stdin is not None and not stdin.is_closing():
            stdin.write(b"stop\n")


def _merge(
    results: list[ShardResult],
    owners: list[tuple[list[int], list[int]]],
    requests: Sequence[LoadRequest],
    collector: _Collector,
) -> LoadResult:
    """Records in plan order, times relative to the common start (each warmup to its own)."""
    t_warm = min((raw[0] for r in results for raw in r.warmup), default=collector.t0)
    warmup: list[RequestRecord | None] = [None] * (len(requests) - len(collector.measured))
    for result, (warm_idx, _) in zip(results, owners, strict=True):
        for i, raw in zip(warm_idx, result.warmup, strict=True):
            warmup[i] = _record(raw, t_warm, requests[i])
    return LoadResult(
        records=[r for r in collector.measured if r is not None],
        duration_s=max(r.end for r in results) - collector.t0,
        warmup_records=[r for r in warmup if r is not None],
        processes=len(results),
        stopped=collector.stopped,
    )


def _record(raw: RawRecord, t0: float, request: LoadRequest) -> RequestRecord:
    start, first, end, prompt, completion, chunks, itl, error = raw
    return RequestRecord(
        start_s=start - t0,
        first_token_s=None if first is None else first - t0,
        end_s=end - t0,
        input_tokens=prompt or request.input_tokens,
        output_tokens=completion or chunks,
        itl_s=itl,
        error=error,
    )
