"""One load-generator shard: warmup, a barrier, then the measured closed or open loop.

:func:`run_shard` is what :mod:`engines.serving.loadgen` runs, in its own event loop for one
process or in each of N worker processes started as ``python loadgen_worker.py`` (a script, so a
worker imports the stdlib and :mod:`sse_client` only, not the ``engines`` package).

Measured records leave the shard as they finish (``on_record``), not at its end, so the parent can
watch a run while it goes (and stop it: ``stop``); a stopped shard issues nothing more and drops
its requests in flight (their connections closed, no record), so it ends within one event-loop
turn rather than after the server has drained its queue.

Worker protocol (stdlib only; plain tuples and dicts, as our classes live in ``__main__`` there):
the job comes on stdin (pickle); the worker answers ``ready`` after its warmup and reads the common
start time ``t0`` (a ``time.perf_counter()`` value: CLOCK_MONOTONIC on Linux, the same clock in
every process); then stdout carries frames (4-byte length, pickle): ``("record", i, raw)`` per
finished measured request (written in batches at most :data:`BATCH_S` apart),
``("result", {...})`` last. Any later stdin line, or stdin closing
(the parent gone), stops the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

if __package__:
    from .sse_client import Pool, RawRecord
else:  # run as a script by a parent load generator
    from sse_client import Pool, RawRecord  # type: ignore[no-redef]

#: ``on_record(i, raw)``: measured request ``i`` of the shard finished with ``raw``.
RecordSink = Callable[[int, RawRecord], None]
FRAME = struct.Struct("<I")
#: A worker's records reach the parent at most this late (they are sent in batches).
BATCH_S = 0.01


@dataclass
class Shard:
    """What one event loop sends: requests as whole HTTP bytes, and how."""

    base_url: str
    warmup: list[bytes]
    measured: list[bytes]
    concurrency: int | None  # closed loop: workers; open loop: cap (None: uncapped)
    offsets: list[float] | None  # open loop: send times after t0; None: closed loop
    timeout_s: float


@dataclass
class ShardResult:
    """Raw records (perf_counter times) of the warmup requests, and when the measured phase
    started and ended (its records went to ``on_record`` as they finished)."""

    warmup: list[RawRecord]
    t0: float
    end: float


async def run_shard(
    shard: Shard,
    barrier: Callable[[], Awaitable[float]],
    on_record: RecordSink,
    stop: asyncio.Event,
) -> ShardResult:
    """Warmup (closed loop), then ``barrier()`` gives ``t0``, then the measured requests until
    they are all done or ``stop`` is set."""
    pool = Pool(shard.base_url)
    try:
        cap = shard.concurrency or len(shard.warmup) or 1
        warm = await closed_loop(pool, shard.warmup, min(cap, len(shard.warmup)), shard.timeout_s)
        t0 = await barrier()
        if shard.offsets is None:
            workers = shard.concurrency or 1
            phase = closed_loop(pool, shard.measured, workers, shard.timeout_s, on_record, stop)
        else:
            phase = open_loop(
                pool,
                shard.measured,
                shard.offsets,
                shard.concurrency,
                t0,
                shard.timeout_s,
                on_record,
                stop,
            )
        await until_stopped(phase, stop)
        return ShardResult(warm, t0, time.perf_counter())
    finally:
        pool.close()


async def until_stopped(phase: Awaitable[object], stop: asyncio.Event) -> None:
    """Await ``phase``, cancelling it if ``stop`` is set first.

    The loops also check ``stop`` before each send, as a request task can swallow its cancel
    (see :func:`_cancel`) and would otherwise go on to its next request."""
    task = asyncio.ensure_future(phase)
    if stop.is_set():
        task.cancel()
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def closed_loop(
    pool: Pool,
    requests: Sequence[bytes],
    workers: int,
    timeout_s: float,
    on_record: RecordSink | None = None,
    stop: asyncio.Event | None = None,
) -> list[RawRecord]:
    """``workers`` loops, each sending its next request the moment its last one ends (none
    once ``stop`` is set)."""
    records: list[RawRecord | None] = [None] * len(requests)
    queue = iter(range(len(requests)))

    async def worker() -> None:
        for i in queue:
            if stop is not None and stop.is_set():
                return
            records[i] = raw = await pool.send(requests[i], timeout_s)
            if on_record is not None:
                on_record(i, raw)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(workers, len(requests)))]
    try:
        await _all_done(tasks)
    finally:
        await _cancel(tasks)
    return [r for r in records if r is not None]


async def open_loop(
    pool: Pool,
    requests: Sequence[bytes],
    offsets: Sequence[float],
    cap: int | None,
    t0: float,
    timeout_s: float,
    on_record: RecordSink | None = None,
    stop: asyncio.Event | None = None,
) -> list[RawRecord]:
    """Each request released at ``t0 + offset`` (none once ``stop`` is set); at most ``cap`` in
    flight when given."""
    gate = asyncio.Semaphore(cap) if cap else None
    records: list[RawRecord | None] = [None] * len(requests)

    async def fire(i: int) -> None:
        if gate is None:
            records[i] = raw = await pool.send(requests[i], timeout_s)
        else:
            async with gate:
                if stop is not None and stop.is_set():
                    return
                records[i] = raw = await pool.send(requests[i], timeout_s)
        if on_record is not None:
            on_record(i, raw)

    tasks: list[asyncio.Future[None]] = []
    try:
        for i, offset in enumerate(offsets):
            delay = t0 + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop is not None and stop.is_set():
                break
            tasks.append(asyncio.ensure_future(fire(i)))
        await _all_done(tasks)
    finally:
        await _cancel(tasks)
    return [r for r in records if r is not None]


async def _all_done(tasks: Sequence[asyncio.Future[None]]) -> None:
    """Wait for every task, or raise the first error (the rest are left to :func:`_cancel`, as
    they are when this is cancelled: ``gather`` would wait for tasks that swallowed a cancel)."""
    if tasks:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()


async def _cancel(tasks: Sequence[asyncio.Future[None]]) -> None:
    """Cancel the requests still in flight (a stopped run) and wait until they have let go of
    their connections, so none outlives its run. A task can swallow a cancel (``wait_for`` on
    Python < 3.12, when its awaited step has just completed): it is cancelled again until done."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.05)


class _Outbox:
    """Frames for stdout, written together at most :data:`BATCH_S` apart: one write (and one
    wake-up of the parent) per batch rather than per record, on cores the server may share."""

    def __init__(self) -> None:
        self._frames: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def put(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._frames.append(FRAME.pack(len(data)) + data)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sys.stdout.buffer.write(b"".join(self._frames))
        sys.stdout.buffer.flush()
        self._frames.clear()


async def _worker(shard: Shard) -> None:
    """The shard with stdin as its barrier and stop line, stdout as its record stream (the
    result frame last)."""
    loop = asyncio.get_running_loop()
    outbox = _Outbox()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer.raw)
    stop = asyncio.Event()

    def on_record(i: int, raw: RawRecord) -> None:
        outbox.put(("record", i, raw))

    async def watch_stdin() -> None:
        await stdin.readline()  # "stop", or b"" when the parent is gone
        stop.set()

    async def barrier() -> float:
        sys.stdout.buffer.write(b"ready\n")
        sys.stdout.buffer.flush()
        line = await stdin.readline()
        if not line:
            raise SystemExit("load generator worker: the parent closed stdin before the start")
        t0 = float(line)
        watcher.append(asyncio.ensure_future(watch_stdin()))
        delay = t0 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        return t0

    watcher: list[asyncio.Future[None]] = []
    try:
        result = await run_shard(shard, barrier, on_record, stop)
    finally:
        for task in watcher:
            task.cancel()
    outbox.put(("result", vars(result)))
    outbox.flush()


def main() -> int:
    """Worker process: reads the job, streams records, ends with the result frame."""
    asyncio.run(_worker(Shard(**pickle.load(sys.stdin.buffer))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
