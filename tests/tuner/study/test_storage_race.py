"""Workers started together on a new database: creating or joining the study is race-free.

Each process waits for the same wall-clock instant, then opens the storage and the study, so
they all try to create Optuna's schema at once (the documented "one worker per host" start).
Before the retry, 7 of 15 SQLite and 13 of 20 PostgreSQL workers died on a unique key or an
existing type.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

WORKERS = 6
OPEN_AT_ONCE = """
import sys, time
from tuner.spec import load_spec
from tuner.study.loop import open_study
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
open_study(load_spec(sys.argv[1]))
"""


def _start_together(spec: Path, cwd: Path) -> list[subprocess.CompletedProcess]:
    start = time.time() + 4.0  # past every interpreter's import time on a loaded machine
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, str(spec), repr(start)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        )
        for _ in range(WORKERS)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for p in procs]


def _spec(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / "race.yaml"
    data = {
        "name": "race",
        "model": "Llama-3.1-8B",
        "hardware": {"gpu": "H100-SXM"},
        "workload": {"preset": "chat", "num_requests": 50},
        "storage": storage,
        "budget": {"trials": 4},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def _assert_all_joined(done: list[subprocess.CompletedProcess], storage: str) -> None:
    failed = [d.stderr.strip().splitlines()[-1:] for d in done if d.returncode != 0]
    assert not failed, f"{len(failed)} of {WORKERS} workers died at start: {failed}"
    summaries = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == ["race"]


@pytest.mark.slow
def test_workers_started_together_on_a_new_sqlite_file_all_join(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path}/new.db"
    _assert_all_joined(_start_together(_spec(tmp_path, storage), tmp_path), storage)


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_started_together_on_a_new_postgres_database_all_join(
    tmp_path, postgres_url
) -> None:
    _assert_all_joined(_start_together(_spec(tmp_path, postgres_url), tmp_path), postgres_url)
