"""Who runs each trial, so that a trial whose process died is not left RUNNING forever.

Every trial records its owner (host, pid and the process's start time from ``/proc``) when it is
asked for. A process that is ``kill -9``ed, OOM-killed or loses its machine never tells its
trial; Optuna's heartbeat covers workers that enable it, but a plain ``servetune run`` has none.
At the start of every run and on every turn of a worker, :func:`fail_dead_owners` fails each
RUNNING trial whose owner on this host is gone (pid not alive, or alive as another process
since the start time differs) as ``worker_lost``, which uses no budget: the resumed study meets
its budget exactly, and a worker waiting on that trial stops waiting. Owners on other hosts are
left to the heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.study.attrs import FAIL_ATTR, OWNER_ATTR, fail_record  # noqa: F401 - re-exported
from tuner.study.optuna_private import finish_trial, id_of

log = logging.getLogger(__name__)


def owner_record(pid: int | None = None) -> dict[str, Any]:
    """This process (or ``pid``) as a trial's owner."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "started": process_start(pid)}


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22), or None
    where there is no /proc: with the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_alive(record: dict[str, Any]) -> bool | None:
    """Whether the owner still runs; None when that cannot be told from here (another host)."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return None
    started = process_start(record["pid"])
    if started is None:
        return False if Path("/proc").is_dir() else None
    return record.get("started") in (None, started)


def fail_dead_owners(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose owner is gone as ``worker_lost``; returns their numbers."""
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get(OWNER_ATTR)
        if not owner or owner_alive(owner) is not False:
            continue
        detail = (
            f"its process (host {owner.get('host')} pid {owner.get('pid')}) is gone: killed, "
            "crashed or its machine lost; found at the next start"
        )
        record = {FAIL_ATTR: fail_record("worker_lost", detail, worker=owner)}
        if not finish_trial(study, id_of(trial), record, TrialState.FAIL):
            continue  # another process failed it first
        lost.append(trial.number)
        log.warning("trial %d: %s", trial.number, detail)
    return lost
