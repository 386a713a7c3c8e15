"""The study the chaos benchmark runs and what it reads back from its storage.

A real-runner study on the stand-in server, a few trials of about a second each: one searched
option (``max_num_seqs``) and everything else pinned, so every trial starts a server and no trial
is rejected by a rule before it runs (a rejected trial would hide a lost one).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

PINNED = {
    "dtype": {"value": "bfloat16"},
    "quantization": {"value": None},
    "kv_cache_dtype": {"value": "auto"},
    "gpu_memory_utilization": {"value": 0.9},
    "max_num_batched_tokens": {"value": 8192},
    "max_model_len": {"value": 4096},
    "enable_prefix_caching": {"value": True},
    "enable_chunked_prefill": {"value": True},
    "enforce_eager": {"value": False},
    "block_size": {"value": 16},
}


def standin_spec(
    name: str,
    marker: str,
    trials: int,
    *,
    storage: str | None = None,
    loadgen_processes: int | str = "auto",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A stand-in study of ``trials`` trials; its servers carry ``marker`` in their argv."""
    options: dict[str, Any] = {
        "server_command": ["python", "-m", "engines.standin.openai_server"],
        "vllm_args": {"ttft-ms": 20, "itl-ms": 12, "jitter-ms": 4, "chaos-marker": marker},
        "startup_timeout_s": 30,
        "stop_grace_s": 2,
        "workdir": f"runs/{name}",
        "loadgen_processes": loadgen_processes,
    }
    if env:
        options["env"] = env
    spec: dict[str, Any] = {
        "name": name,
        "model": {"name": "Llama-3.1-8B"},
        "hardware": {"gpu": "H100-SXM", "count": 1},
        "workload": {
            "name": "chaos",
            "input_tokens": 8,
            "output_tokens": 8,
            "arrival": {"kind": "concurrency", "concurrency": 4},
            "num_requests": 16,
            "warmup_requests": 0,
        },
        "runner": "real",
        "engines": {"vllm": {"max_num_seqs": {"choices": [1, 2, 3, 4, 6, 8, 12, 16]}, **PINNED}},
        "baseline": False,
        "objectives": [{"output_tokens_per_s": "max"}, {"ttft_p99_ms": "min"}],
        "measurement": {"repeats": 1, "capacity": False},
        "finalists": {"count": 0},
        "budget": {"trials": trials, "trial_timeout_s": 60},
        "sampler": "random",
        "seed": 0,
        "options": options,
    }
    if storage:
        spec["storage"] = storage
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    """``spec`` as YAML at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@dataclass(frozen=True)
class Tally:
    """A study's trials against its budget, as the failure columns count them."""

    budget: int
    counted: int  # tuner.study.loop.counted_trials: finished or running, holding budget
    finished: int  # COMPLETE, FAIL or PRUNED and holding budget
    running: int

    @property
    def lost(self) -> int:
        return max(0, self.budget - self.finished)

    @property
    def duplicated(self) -> int:
        return max(0, self.counted - self.budget)

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "lost": self.lost, "duplicated": self.duplicated}


def tally(name: str, storage: str, budget: int) -> Tally:
    """Read study ``name`` from ``storage`` (a budget of trials none of which ran when the study
    was never created: all lost)."""
    import optuna
    from optuna.trial import TrialState

    from tuner.study.loop import counted_trials, holds_budget

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # never created (every worker died first): nothing ran
        return Tally(budget, 0, 0, 0)
    trials = study.get_trials(deepcopy=False)
    done = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    return Tally(
        budget=budget,
        counted=counted_trials(study),
        finished=sum(1 for t in trials if t.state in done and holds_budget(t)),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
    )


def running_owner(storage: str) -> int | None:
    """The pid of a worker measuring a RUNNING trial, once one is (plain SQL: opening the
    storage through Optuna would create the schema itself and join the race being measured)."""
    import sqlalchemy

    query = sqlalchemy.text(
        "SELECT a.value_json FROM trials t JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND a.key = 'worker'"
    )
    engine = sqlalchemy.create_engine(storage, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    except sqlalchemy.exc.DBAPIError:  # no tables yet
        return None
    finally:
        engine.dispose()
    for (value,) in rows:
        pid = (json.loads(value) or {}).get("pid")
        if pid:
            return int(pid)
    return None
