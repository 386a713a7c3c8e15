"""The load generator's ceiling and whether it keeps a paced server at its planned concurrency.

Clients compared, all against the stand-in on this machine:

* ``httpx (old)``: the generator as it was at commit 060c6b1 (httpx ``aiter_raw``), loaded
  from git; it under-measured a real vLLM server by 21% at concurrency 256 on an H100;
* ``lean x1``: :mod:`engines.serving.sse_client` in one event loop (``processes=1``);
* ``lean x2``: the same plan sharded over two worker processes (``processes=2``);
* ``aiohttp ref``: a minimal client written like ``vllm bench serve``'s (aiohttp,
  ``iter_any``, one ``json.loads`` per event), the yardstick the issue compares against.

Two tables. *Ceiling*: the stand-in sends every token at once (TTFT 0, ITL 0), so the client and
the stand-in (which share the machine's cores) are all that limit the rate: a lower bound on the
client's own ceiling, with its CPU per token. *Paced*: TTFT 50 ms, ITL 20 ms, 256 tokens,
concurrency 256 (the H100 case: ~12.7k tokens/s offered), requests a multiple of the
concurrency so the theoretical rate is exact; the stand-in's ``running`` count is sampled every
100 ms and must stay at 256.

Run: ``PYTHONPATH=. python bench/bench_loadgen.py [--quick]``; writes
``bench/results/bench_loadgen.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from outputs import results_path

from engines.metrics import RequestRecord, summarize
from engines.serving.lifecycle import ServerProcess, free_port
from engines.serving.loadgen import LoadRequest, LoadResult, request_body, run_load
from engines.standin import STANDIN_COMMAND as STANDIN

REPO = Path(__file__).resolve().parents[1]
RESULTS = results_path("bench_loadgen.json")
OLD_COMMIT = "060c6b1"


def old_run_load() -> Callable[..., LoadResult]:
    """``run_load`` of the httpx generator, from git."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:engines/serving/loadgen.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_loadgen.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_loadgen", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["old_loadgen"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.run_load


def aiohttp_run_load(
    base_url: str, model: str, requests: list[LoadRequest], *, concurrency: int, warmup: int = 0
) -> LoadResult:
    """A closed loop the way ``vllm bench serve`` streams (its request function, trimmed)."""
    import aiohttp

    async def one(session, url, body, t0) -> RequestRecord:
        start = time.perf_counter()
        first = last = None
        itl, tokens, pending = [], 0, ""
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
            async for chunk in r.content.iter_any():
                now = time.perf_counter()
                messages = (pending + chunk.decode()).split("\n\n")
                pending = messages.pop()
                for message in messages:
                    payload = message.strip().removeprefix("data: ")
                    if not payload or payload == "[DONE]":
                        continue
                    data = json.loads(payload)
                    if data.get("choices") and data["choices"][0].get("text"):
                        if first is None:
                            first = now
                        else:
                            itl.append(now - last)
                        last = now
                    elif data.get("usage"):
                        tokens = data["usage"]["completion_tokens"]
        return RequestRecord(start - t0, first - t0, last - t0, 32, tokens, tuple(itl))

    async def loop(bodies, workers, session, url) -> tuple[list[RequestRecord], float]:
        queue, records, t0 = iter(bodies), [], time.perf_counter()

        async def worker():
            for body in queue:
                records.append(await one(session, url, body, t0))

        await asyncio.gather(*(worker() for _ in range(workers)))
        return records, time.perf_counter() - t0

    async def main() -> LoadResult:
        bodies = [request_body(model, r, False, None) for r in requests]
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = base_url + "/v1/completions"
            await loop(bodies[:warmup], max(1, min(warmup, concurrency)), session, url)
            records, duration = await loop(bodies[warmup:], concurrency, session, url)
        return LoadResult(records, duration)

    return asyncio.run(main())


def lean(processes: int) -> Callable[..., LoadResult]:
    return lambda *args, **kw: run_load(*args, processes=processes, **kw)


CLIENTS = {
    "httpx (old)": old_run_load,
    "lean x1": lambda: lean(1),
    "lean x2": lambda: lean(2),
    "aiohttp ref": lambda: aiohttp_run_load,
}


class RunningSampler:
    """Samples the stand-in's ``vllm:num_requests_running`` every 100 ms in a thread."""

    def during(self, start: float, end: float) -> list[int]:
        """Samples in the middle 80% of ``[start, end]`` (wave edges left out)."""
        margin = (end - start) / 10
        return [n for t, n in self.samples if start + margin <= t <= end - margin]

    def __init__(self, base_url: str) -> None:
        self.url, self.samples, self._stop = base_url + "/metrics", [], threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(trust_env=False) as client:
            while not self._stop.wait(0.1):
                text = client.get(self.url).text
                line = next(x for x in text.splitlines() if "num_requests_running" in x)
                self.samples.append((time.perf_counter(), int(float(line.split()[-1]))))

    def __enter__(self) -> RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(
    run: Callable[..., LoadResult],
    base_url: str,
    concurrency: int,
    output: int,
    count: int,
    warmup: int,
) -> dict:
    """One closed-loop run: rates over the measured window, client CPU (workers included)."""
    load = [LoadRequest("hello " * 32, 32, output) for _ in range(count + warmup)]
    cpu0 = _cpu()
    result = run(base_url, "standin", load, concurrency=concurrency, warmup=warmup)
    cpu = _cpu() - cpu0
    m = summarize(result.records, result.duration_s)
    return {
        "concurrency": concurrency,
        "output_tokens": output,
        "requests": count,
        "completed": m.num_completed,
        "errors": dict(m.errors),
        "duration_s": round(m.duration_s, 3),
        "tokens_per_s": round(m.output_tokens_per_s, 1),
        "client_cpu_us_per_token": round(cpu / max(1, (count + warmup) * output) * 1e6, 2),
        "ttft_p50_ms": round(m.ttft_ms.p50, 2),
        "itl_p50_ms": round(m.itl_ms.p50, 3),
        "tpot_p50_ms": round(m.tpot_ms.p50, 3),
    }


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished workers (the stand-in runs on)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def standin(*flags: str) -> ServerProcess:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="bench-loadgen-")) / "standin.log"
    argv = [*STANDIN, "--port", str(port), *flags]
    return ServerProcess(
        argv, port, log, env={**os.environ, "PYTHONUNBUFFERED": "1"}, startup_timeout_s=30
    )


def ceiling_table(clients: dict, grid: list[tuple[int, int, int]]) -> list[dict]:
    rows = []
    with standin("--ttft-ms", "0", "--itl-ms", "0") as server:
        for name, make in clients.items():
            run = make()
            for concurrency, output, count in grid:
                row = measure(run, server.base_url, concurrency, output, count, min(concurrency, 8))
                rows.append({"client": name, **row})
                _print_row(rows[-1])
    return rows


def paced_table(clients: dict, concurrency: int, waves: int) -> list[dict]:
    ttft_s, itl_s, output = 0.05, 0.02, 256
    theory = concurrency * output / (ttft_s + (output - 1) * itl_s)
    rows = []
    with standin("--ttft-ms", "50", "--itl-ms", "20") as server:
        for name, make in clients.items():
            run = make()
            with RunningSampler(server.base_url) as sampler:
                row = measure(run, server.base_url, concurrency, output, waves * concurrency, 64)
                returned = time.perf_counter()
            busy = sampler.during(returned - row["duration_s"], returned)
            row.update(
                theoretical_tokens_per_s=round(theory, 1),
                ratio=round(row["tokens_per_s"] / theory, 3),
                running_median=statistics.median(busy) if busy else None,
                running_min=min(busy) if busy else None,
            )
            rows.append({"client": name, **row})
            _print_row(rows[-1])
    return rows


def _print_row(row: dict) -> None:
    extra = ""
    if "ratio" in row:
        extra = (
            f" ratio {row['ratio']:.3f}, running median {row['running_median']} min "
            f"{row['running_min']}"
        )
    print(
        f"{row['client']:<12} c={row['concurrency']:<4} out={row['output_tokens']:<4} "
        f"{row['tokens_per_s']:>9.0f} tok/s  {row['client_cpu_us_per_token']:>6.1f} us/tok  "
        f"ITL p50 {row['itl_p50_ms']:>7.3f} ms  errors {sum(row['errors'].values())}{extra}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    args = parser.parse_args()
    grid = [(1, 256, 40), (32, 256, 128), (256, 128, 512)]
    if args.quick:
        grid = [(32, 128, 64)]
    load_before = os.getloadavg()
    print("ceiling: stand-in TTFT 0, ITL 0 (client and stand-in share this machine)")
    ceiling = ceiling_table(CLIENTS, grid)
    print("paced: stand-in TTFT 50 ms, ITL 20 ms, 256 tokens, concurrency 256")
    paced = paced_table(CLIENTS, 256, 1 if args.quick else 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "what": "load generator clients against the stand-in: the ceiling (TTFT 0, ITL 0) "
                "and a paced closed loop at concurrency 256 (TTFT 50 ms, ITL 20 ms) against its "
                "theoretical rate; client CPU includes worker processes",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                },
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "ceiling": ceiling,
                "paced": paced,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
