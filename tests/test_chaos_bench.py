"""The chaos benchmark (bench/chaos.py) end to end in a tiny configuration: real CLI
subprocesses, stand-in servers, SQLite and (when it can start) PostgreSQL.

It checks the bench measures and reports what it was asked to, not that the failure columns are
0: reading 0 is the benchmark's verdict on the code, and a test that demanded it would fail for
the bugs the benchmark exists to count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import chaos  # noqa: E402
from chaosbench.procs import marked_processes  # noqa: E402
from chaosbench.report import COLUMNS  # noqa: E402

pytestmark = pytest.mark.slow

TRIAL_COLUMNS = ("trials_lost", "trials_duplicated", "trials_left_running")
APPLIES = {
    "clean run (no kill)": TRIAL_COLUMNS,
    "kill -9 run, resume": TRIAL_COLUMNS,
    "4 workers at once, SQLite": (*TRIAL_COLUMNS, "workers_died_at_start"),
    "4 workers at once, PostgreSQL": (*TRIAL_COLUMNS, "workers_died_at_start"),
    "kill -9 1 of 3 workers, PostgreSQL": (*TRIAL_COLUMNS, "workers_died_at_start"),
    "bad inputs, one run each": ("bad_inputs_mishandled",),
    "secrets in URLs and env": ("secrets_found",),
}
ASKED_RUNS = {
    "clean run (no kill)": 1,
    "kill -9 run, resume": 1,
    "4 workers at once, SQLite": 1,
    "4 workers at once, PostgreSQL": 1,
    "kill -9 1 of 3 workers, PostgreSQL": 1,
    "bad inputs, one run each": 3,
}


def test_tiny_chaos_run_reports_every_column(tmp_path: Path) -> None:
    result = chaos.run_chaos(kills=1, worker_rounds=1, worker_kills=1, bad_inputs=3, seed=1)
    data = json.loads(chaos.write_json(result, tmp_path / "chaos.json").read_text())

    assert data["columns"] == COLUMNS
    rows = {r["scenario"]: r for r in data["rows"]}
    assert set(rows) == set(APPLIES)
    for name, r in rows.items():
        assert set(COLUMNS) <= set(r), name
        if r.get("note", "").startswith("skipped"):  # PostgreSQL cannot start here: said why
            assert "PostgreSQL" in name and r["runs"] == 0
            continue
        if name in ASKED_RUNS:
            assert r["runs"] == ASKED_RUNS[name], name
        for column in ("servers_left", "loadgen_workers_left", *APPLIES[name]):
            assert isinstance(r[column], int) and r[column] >= 0, (name, column, r[column])
        for column in set(COLUMNS[2:]) - {"servers_left", "loadgen_workers_left", *APPLIES[name]}:
            assert r[column] is None, (name, column)

    # the detail behind the rows: one kill, drawn inside the clean run's duration
    (kill,) = data["detail"]["kill"]
    assert 0 < kill["kill_at_s"] < data["detail"]["clean"]["seconds"]
    assert kill["tally"]["budget"] == chaos.KILL_TRIALS
    assert [c["case"] for c in data["detail"]["bad_inputs"]] == [
        c.name for c in chaos.badinput.CASES[:3]
    ]
    assert rows["secrets in URLs and env"]["runs"] == data["detail"]["secrets"]["commands"] > 0
    # nothing the bench started outlives it
    assert marked_processes(data["marker"]) == {"servers": [], "loadgen": []}
