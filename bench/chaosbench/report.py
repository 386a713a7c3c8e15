"""The chaos benchmark's table: one row per scenario, the same columns for all (None where a
column does not apply to a scenario, shown as ``-``)."""

from __future__ import annotations

from typing import Any

COLUMNS = [
    "scenario",
    "runs",
    "servers_left",
    "loadgen_workers_left",
    "trials_lost",
    "trials_duplicated",
    "trials_left_running",
    "workers_died_at_start",
    "bad_inputs_mishandled",
    "secrets_found",
]
FAILURE_COLUMNS = COLUMNS[2:]


def row(
    scenario: str,
    runs: int,
    censuses: list[dict[str, int]] | None = None,
    tallies: list[dict[str, int]] | None = None,
    **counts: int | None,
) -> dict[str, Any]:
    """A table row: leftovers summed over ``censuses``, trial counts over ``tallies``, other
    failure columns from ``counts`` (e.g. ``workers_died_at_start=1``)."""
    out: dict[str, Any] = dict.fromkeys(COLUMNS)
    out.update(scenario=scenario, runs=runs)
    if censuses is not None:
        out["servers_left"] = sum(c["servers"] for c in censuses)
        out["loadgen_workers_left"] = sum(c["loadgen"] for c in censuses)
    if tallies is not None:
        out["trials_lost"] = sum(t["lost"] for t in tallies)
        out["trials_duplicated"] = sum(t["duplicated"] for t in tallies)
        out["trials_left_running"] = sum(t["running"] for t in tallies)
    unknown = set(counts) - set(FAILURE_COLUMNS)
    if unknown:
        raise KeyError(f"not a column: {sorted(unknown)}")
    out.update(counts)
    return out


def skipped(scenario: str, reason: str) -> dict[str, Any]:
    """The row of a scenario that could not run here, saying why."""
    return {**row(scenario, 0), "note": f"skipped: {reason}"}


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="chaos benchmark (every failure column should be 0)")
    for column in COLUMNS:
        table.add_column(
            column.replace("_", " "), justify="left" if column == "scenario" else "right"
        )
    for r in rows:
        cells = ["-" if r[c] is None else str(r[c]) for c in COLUMNS]
        if r.get("note"):
            cells[0] += f" ({r['note']})"
        table.add_row(*cells)
    Console(width=200).print(table)
