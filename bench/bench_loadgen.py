"""The load generator's ceiling: streamed tokens per second it sustains against the stand-in.

The stand-in sends every token at once (TTFT 0, ITL 0), so what limits the rate is the client
(parsing SSE chunks, timing them) and the stand-in itself, which share this machine's cores.
The number is therefore a lower bound on the generator's own ceiling; a real engine that streams
more than this would be under-measured and the table says where that starts.

Run: ``PYTHONPATH=. python bench/bench_loadgen.py [--quick]``; writes
``bench/results/bench_loadgen.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from engines.metrics import summarize
from engines.serving.lifecycle import ServerProcess, free_port
from engines.serving.loadgen import LoadRequest, run_load
from engines.standin import STANDIN_COMMAND as STANDIN

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "bench_loadgen.json"


def measure(base_url: str, concurrency: int, output_tokens: int, requests: int) -> dict:
    """One closed-loop run; rates over the measured window."""
    load = [LoadRequest("hello " * 32, 32, output_tokens) for _ in range(requests)]
    began = time.process_time()
    result = run_load(
        base_url, "standin", load, concurrency=concurrency, warmup=min(concurrency, 8)
    )
    cpu = time.process_time() - began
    m = summarize(result.records, result.duration_s)
    return {
        "concurrency": concurrency,
        "output_tokens": output_tokens,
        "requests": requests,
        "completed": m.num_completed,
        "errors": dict(m.errors),
        "duration_s": round(m.duration_s, 3),
        "tokens_per_s": round(m.output_tokens_per_s, 1),
        "requests_per_s": round(m.requests_per_s, 2),
        "client_cpu_s": round(cpu, 3),
        "client_cpu_us_per_token": round(cpu / max(1, m.num_completed * output_tokens) * 1e6, 2),
        "ttft_p50_ms": round(m.ttft_ms.p50, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    args = parser.parse_args()
    grid = [(1, 256), (8, 256), (32, 256), (128, 128)] if not args.quick else [(8, 128)]
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-loadgen-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows = []
    with ServerProcess(
        [*STANDIN, "--port", str(port), "--ttft-ms", "0", "--itl-ms", "0"],
        port,
        log_dir / "standin.log",
        env=env,
        startup_timeout_s=30,
    ) as server:
        for concurrency, output in grid:
            requests = max(4 * concurrency, 40) if not args.quick else 40
            rows.append(measure(server.base_url, concurrency, output, requests))
    print(
        f"{'conc':>5} {'out':>5} {'reqs':>5} {'tok/s':>10} {'req/s':>8} "
        f"{'cpu us/tok':>10} {'errors':>8}"
    )
    for row in rows:
        print(
            f"{row['concurrency']:>5} {row['output_tokens']:>5} {row['completed']:>5} "
            f"{row['tokens_per_s']:>10.0f} {row['requests_per_s']:>8.1f} "
            f"{row['client_cpu_us_per_token']:>10.1f} {sum(row['errors'].values()):>8}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "what": "streamed tokens/s the load generator sustains against the stand-in (TTFT 0, "
                "ITL 0), both on this machine",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_average_1m_after": round(os.getloadavg()[0], 2),
                },
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
