"""One load-generator shard: warmup, a barrier, then the measured closed or open loop.

:func:`run_shard` is what :mod:`engines.serving.loadgen` runs, in its own event loop for one
process or in each of N worker processes started as ``python loadgen_worker.py`` (a script, so a
worker imports the stdlib and :mod:`sse_client` only, not the ``engines`` package). A worker
reads its job from stdin (pickle), says ``ready`` after its warmup, waits for the common start
time ``t0`` (a ``time.perf_counter()`` value: CLOCK_MONOTONIC on Linux, the same clock in every
process) and writes its records back (pickle). Stdlib only.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

if __package__:
    from .sse_client import Pool, RawRecord
else:  # run as a script by a parent load generator
    from sse_client import Pool, RawRecord  # type: ignore[no-redef]


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
    """Raw records (perf_counter times) of the warmup and measured requests, and when the
    measured phase started and ended."""

    warmup: list[RawRecord]
    measured: list[RawRecord]
    t0: float
    end: float


async def run_shard(shard: Shard, barrier: Callable[[], Awaitable[float]]) -> ShardResult:
    """Warmup (closed loop), then ``barrier()`` gives ``t0``, then the measured requests."""
    pool = Pool(shard.base_url)
    try:
        cap = shard.concurrency or len(shard.warmup) or 1
        warm = await closed_loop(pool, shard.warmup, min(cap, len(shard.warmup)), shard.timeout_s)
        t0 = await barrier()
        if shard.offsets is None:
            workers = shard.concurrency or 1
            measured = await closed_loop(pool, shard.measured, workers, shard.timeout_s)
        else:
            measured = await open_loop(
                pool, shard.measured, shard.offsets, shard.concurrency, t0, shard.timeout_s
            )
        return ShardResult(warm, measured, t0, time.perf_counter())
    finally:
        pool.close()


async def closed_loop(
    pool: Pool, requests: Sequence[bytes], workers: int, timeout_s: float
) -> list[RawRecord]:
    """``workers`` loops, each sending its next request the moment its last one ends."""
    records: list[RawRecord | None] = [None] * len(requests)
    queue = iter(range(len(requests)))

    async def worker() -> None:
        for i in queue:
            records[i] = await pool.send(requests[i], timeout_s)

    await asyncio.gather(*(worker() for _ in range(min(workers, len(requests)))))
    return [r for r in records if r is not None]


async def open_loop(
    pool: Pool,
    requests: Sequence[bytes],
    offsets: Sequence[float],
    cap: int | None,
    t0: float,
    timeout_s: float,
) -> list[RawRecord]:
    """Each request released at ``t0 + offset``; at most ``cap`` in flight when given."""
    gate = asyncio.Semaphore(cap) if cap else None

    async def fire(request: bytes) -> RawRecord:
        if gate is None:
            return await pool.send(request, timeout_s)
        async with gate:
            return await pool.send(request, timeout_s)

    tasks = []
    for request, offset in zip(requests, offsets, strict=True):
        delay = t0 + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(request)))
    return list(await asyncio.gather(*tasks))


async def _stdin_barrier() -> float:
    """Tell the parent our warmup is over; wait for the common start time and sleep until it."""
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    line = sys.stdin.buffer.readline()  # blocks the loop: nothing else is running now
    t0 = float(line)
    delay = t0 - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    return t0


def main() -> int:
    """Worker process: plain dicts both ways, as our classes live in ``__main__`` here."""
    shard = Shard(**pickle.load(sys.stdin.buffer))
    result = asyncio.run(run_shard(shard, _stdin_barrier))
    sys.stdout.buffer.write(pickle.dumps(vars(result), protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
