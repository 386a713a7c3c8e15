"""A bridge to lm-evaluation-harness: its ``local-completions`` model on the running server.

:func:`lm_eval_argv` builds the exact command (``lm_eval --model local-completions --model_args
base_url=http://HOST:PORT/v1/completions,model=NAME,tokenizer=... --tasks ...``);
:func:`run_lm_eval` runs it when ``lm_eval`` is on PATH (``pip install lm-eval``) and
:func:`parse_results` reads the ``results_<date>.json`` it writes under ``--output_path``.
lm-eval downloads its task data sets from the Hugging Face hub on first use, so it needs the
network (or a filled ``HF_DATASETS_CACHE``). ``tokenizer`` is a Hugging Face id or a local
directory: loglikelihood tasks (multiple choice) tokenize on the client side to split context
from continuation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.errors import EngineError


@dataclass(frozen=True)
class HarnessResult:
    """Per task, metric name (``acc``, ``acc_norm``, ``exact_match``...) -> value."""

    tasks: Mapping[str, Mapping[str, float]]
    path: str
    config: Mapping[str, Any]

    def mean(self, metric: str) -> float:
        """Mean of ``metric`` over the tasks that report it (NaN when none does)."""
        values = [m[metric] for m in self.tasks.values() if metric in m]
        return sum(values) / len(values) if values else float("nan")


def lm_eval_argv(
    base_url: str,
    model: str,
    tasks: Sequence[str],
    output_path: str | Path,
    *,
    tokenizer: str | None = None,
    num_concurrent: int = 8,
    limit: int | None = None,
    seed: int = 0,
    executable: str = "lm_eval",
) -> list[str]:
    """The ``lm_eval`` argv for the server at ``base_url`` (``http://host:port``)."""
    if not tasks:
        raise ValueError("give at least one lm-eval task")
    model_args = [
        f"base_url={base_url.rstrip('/')}/v1/completions",
        f"model={model}",
        *([f"tokenizer={tokenizer}"] if tokenizer else []),
        f"num_concurrent={num_concurrent}",
        "max_retries=3",
        "tokenized_requests=False",
    ]
    argv = [
        executable,
        "--model",
        "local-completions",
        "--model_args",
        ",".join(model_args),
        "--tasks",
        ",".join(tasks),
        "--output_path",
        str(output_path),
        "--seed",
        str(seed),
    ]
    if limit is not None:
        argv += ["--limit", str(limit)]
    return argv


def parse_results(output_path: str | Path) -> HarnessResult:
    """Read the newest ``results_*.json`` under ``output_path`` (a file or a folder).

    lm-eval keys metrics as ``"<metric>,<filter>"`` (``"acc,none"``); the filter is kept only
    when it is not ``none`` (``"exact_match,strict-match"``).
    """
    path = Path(output_path)
    if path.is_dir():
        found = sorted(path.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise EngineError("lm_eval_failed", f"no results_*.json under {path}")
        path = found[-1]
    data = json.loads(path.read_text(encoding="utf-8"))
    tasks: dict[str, dict[str, float]] = {}
    for task, metrics in (data.get("results") or {}).items():
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue  # "alias" and "N/A" stderr values
            name, _, filt = key.partition(",")
            clean[name if filt in ("", "none") else f"{name},{filt}"] = float(value)
        tasks[task] = clean
    return HarnessResult(tasks=tasks, path=str(path), config=data.get("config") or {})


def run_lm_eval(argv: Sequence[str], timeout_s: float = 3600.0) -> HarnessResult:
    """Run ``argv`` (from :func:`lm_eval_argv`) and parse what it wrote."""
    if shutil.which(argv[0]) is None:
        raise EngineError(
            "lm_eval_missing", f"{argv[0]} is not installed (pip install lm-eval) or not on PATH"
        )
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise EngineError("lm_eval_failed", f"lm_eval ran over {timeout_s:g} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise EngineError("lm_eval_failed", f"lm_eval exited {done.returncode}: {last[:300]}")
    return parse_results(argv[list(argv).index("--output_path") + 1])
