"""Per-request timings of a real run, kept as a gzipped JSON-lines file.

Aggregates (p50, p99) say how a config did; the per-request trace says why. The H100 runs showed
a median TTFT of 1.65 s that the simulator put at 0.23 s, and percentiles alone could not tell
whether requests queued in waves or the frontend lagged. ``vllm bench serve --save-detailed``
keeps the same kind of trace. One line per request, times in seconds from the run's start,
inter-token gaps rounded to 0.1 ms (a 256-token request is ~1.5 kB before compression).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engines.metrics import RequestRecord

_DIGITS = 4  # 0.1 ms


def write_request_log(path: Path, records: Iterable[RequestRecord]) -> Path:
    """Write ``records`` to ``path`` (gzipped JSON lines), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for r in records:
            line = {
                "start_s": round(r.start_s, 6),
                "first_token_s": None if r.first_token_s is None else round(r.first_token_s, 6),
                "end_s": round(r.end_s, 6),
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "itl_s": [round(float(x), _DIGITS) for x in np.asarray(r.itl_s, dtype=float)],
                "error": r.error,
            }
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
    return path


def read_request_log(path: Path) -> list[RequestRecord]:
    """The records :func:`write_request_log` wrote."""
    with gzip.open(path, "rt", encoding="utf-8") as source:
        return [_record(json.loads(line)) for line in source if line.strip()]


def _record(row: dict) -> RequestRecord:
    return RequestRecord(
        start_s=float(row["start_s"]),
        first_token_s=row["first_token_s"],
        end_s=float(row["end_s"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        itl_s=np.asarray(row.get("itl_s") or [], dtype=float),
        error=row.get("error"),
    )


def request_log_path(folder: Path, trial: int | None, index: int, kind: str = "run") -> Path:
    """Where run ``index`` of trial ``trial`` keeps its trace under ``folder``; ``kind="probe"``
    for its capacity probes (numbered in the order probed)."""
    name = "trial" if trial is None else f"trial-{trial}"
    return folder / f"{name}-{kind}-{index}.jsonl.gz"
