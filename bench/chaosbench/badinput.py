"""The bad-input sweep: specs and options of issue 23 item 10, each run as ``servetune run FILE``
in a fresh folder.

Handled means: exit code 2, stderr one line, no traceback, and nothing written into the folder
(no study database, no run folder). A case that passes validation runs its study, so the sim
cases have a 2-trial budget and the runner-option cases 1 stand-in trial.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from chaosbench.procs import census_after, run_cli
from chaosbench.studies import standin_spec

GOOD_LINE = '{"input_tokens": 8, "output_tokens": 4}\n'
LLAMA_CONFIG = {
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
}


def sim_spec() -> dict[str, Any]:
    """A valid sim study that finishes in seconds (what every sim case breaks one field of)."""
    return {
        "name": "bad-input",
        "model": "Llama-3.1-8B",
        "hardware": {"gpu": "H100-SXM"},
        "workload": {"preset": "chat", "num_requests": 20},
        "engines": {"vllm": {}},
        "budget": {"trials": 2},
        "sampler": "random",
        "baseline": False,
        "finalists": {"count": 0},
    }


@dataclass(frozen=True)
class Case:
    """One bad input: ``write(folder)`` puts the spec (and its files) there, returns the spec."""

    name: str
    write: Callable[[Path], Path]


def _spec(change: Callable[[dict[str, Any]], None], base: Callable[[], dict] = sim_spec):
    def write(folder: Path) -> Path:
        data = base()
        change(data)
        path = folder / "spec.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def _raw(content: bytes):
    def write(folder: Path) -> Path:
        path = folder / "spec.yaml"
        path.write_bytes(content)
        return path

    return write


def _dataset(bad_line: bytes):
    def change(data: dict[str, Any]) -> None:
        data["workload"] = {"dataset": "data.jsonl", "num_requests": 20}

    def write(folder: Path) -> Path:
        (folder / "data.jsonl").write_bytes(GOOD_LINE.encode() + bad_line + b"\n")
        return _spec(change)(folder)

    return write


def _config(content: Any):
    def write(folder: Path) -> Path:
        (folder / "model").mkdir()
        (folder / "model" / "config.json").write_text(json.dumps(content))
        return _spec(lambda d: d.update(model={"config_json": "model/config.json"}))(folder)

    return write


def _option(key: str, value: Any):
    def change(data: dict[str, Any]) -> None:
        data["options"][key] = value
        data["options"]["workdir"] = "runs"

    return _spec(change, lambda: standin_spec("bad-input", "bad-input-", 1))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


_VALID = yaml.safe_dump(sim_spec(), sort_keys=False)
CASES = [
    Case("spec not UTF-8", _raw(_VALID.encode() + b"# caf\xe9 \xff\xfe\n")),
    Case("spec is binary", _raw(bytes(range(256)) * 4)),
    Case("seed -1", _spec(_set("seed", -1))),
    Case("seed 2**80", _spec(_set("seed", 2**80))),
    Case("SLO NaN", _spec(_set("slos", {"ttft_p99_ms": float("nan")}))),
    Case("SLO negative", _spec(_set("slos", {"ttft_p99_ms": -5.0}))),
    Case("duplicate YAML key", _raw((_VALID + "seed: 1\nseed: 2\n").encode())),
    Case("sweep level 0", _spec(_set("workload.sweep", [0, 4]))),
    Case("sweep level negative", _spec(_set("workload.sweep", [-2.0]))),
    Case("dataset line is an array", _dataset(b"[1, 2]")),
    Case("dataset line is a number", _dataset(b"42")),
    Case("dataset line is a string", _dataset(b'"hello"')),
    Case("dataset Infinity", _dataset(b'{"input_tokens": Infinity, "output_tokens": 4}')),
    Case("dataset 1e30 tokens", _dataset(b'{"input_tokens": 1e30, "output_tokens": 4}')),
    Case(
        "dataset 2**63 tokens",
        _dataset(b'{"input_tokens": 9223372036854775808, "output_tokens": 4}'),
    ),
    Case("dataset not UTF-8", _dataset(b'{"prompt": "caf\xe9", "output_tokens": 4}')),
    Case("config.json heads 0", _config({**LLAMA_CONFIG, "num_attention_heads": 0})),
    Case("config.json a list", _config([LLAMA_CONFIG])),
    Case("config.json nulls", _config({k: None for k in LLAMA_CONFIG})),
    Case(
        "max_model_len > context", _spec(_set("engines.vllm", {"max_model_len": {"value": 262144}}))
    ),
    Case("startup_timeout_s: abc", _option("startup_timeout_s", "abc")),
    Case("stop_grace_s: -1", _option("stop_grace_s", -1)),
    Case("loadgen_processes: 0", _option("loadgen_processes", 0)),
    Case("unknown option key", _option("no_such_option", 1)),
]


def sweep(root: Path, marker: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Run the first ``limit`` cases (all by default); one result per case."""
    return [
        _one(case, root / f"case-{i}", f"{marker}bad{i}") for i, case in enumerate(CASES[:limit])
    ]


def _one(case: Case, folder: Path, marker: str) -> dict[str, Any]:
    folder.mkdir(parents=True)
    spec = case.write(folder)
    before = set(folder.rglob("*"))
    done = run_cli(["run", str(spec.name)], folder, marker, timeout_s=120)
    census = census_after(marker, wait_s=1.0)
    left = sorted(str(p.relative_to(folder)) for p in set(folder.rglob("*")) - before)
    lines = done.stderr.strip().splitlines()
    traceback = "Traceback (most recent call last)" in done.stderr + done.stdout
    right = done.returncode == 2 and len(lines) == 1 and not traceback
    return {
        "case": case.name,
        "returncode": done.returncode,
        "stderr_lines": len(lines),
        "stderr_last": lines[-1][:300] if lines else "",
        "traceback": traceback,
        "files_left": left[:10],
        "handled": right and not left,
        "census": census,
    }
