"""Where a benchmark writes its table and JSON.

A plain run writes under ``bench/results/local/`` (git-ignored), so trying a benchmark never
dirties the checkout; ``BENCH_RECORD=1`` writes the tracked ``bench/results/`` files, the numbers
the docs quote, when they are meant to be replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

RECORDED = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    """The folder this run writes into (created)."""
    folder = RECORDED if os.environ.get("BENCH_RECORD") == "1" else RECORDED / "local"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def results_path(name: str) -> Path:
    """``name`` in :func:`results_dir`."""
    return results_dir() / name
