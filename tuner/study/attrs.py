"""Every key servetune stores in an Optuna study or trial, spelled here only.

A study outlives the code that wrote it (a worker of last month's release, a notebook reading a
GPU campaign's SQLite file), so a key misspelt in one reader silently reads nothing. Writers and
readers in tuner/ and engines/ name these constants instead of literals (a test fails on a
literal elsewhere, tests/tuner/study/test_attrs_owner.py).

Trial attributes (``trial.user_attrs``): what was measured and why a trial ended as it did.
Every failure reason lands under ``fail`` as ``{"reason", "detail", ...}`` (reasons:
``tuner.study.loop.NOT_COUNTED`` and the engines' ``EngineError`` codes), built by
:func:`fail_record` and read by :func:`fail_reason`.
Study attributes (``study.user_attrs``): the spec a study was opened with and its outcome.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

# trial attributes
FAIL_ATTR = "fail"
ENGINE_ATTR = "engine"  # the engine name the trial ran on
CONFIG_ATTR = "config"  # the full config served (params are only the searched part)
METRICS_ATTR = "metrics"  # flat metric name -> value, for tables and plots
RESULT_ATTR = "result"  # the whole measurement record, feasibility and timing
LOAD_ATTR = "load"  # the load level of a sweep's trial
BASELINE_ATTR = "baseline"  # the study's named baseline
WARM_START_ATTR = "warm_start"  # queued from a sim study's best configs
REPLAY_ATTR = "replay"  # queued from another study's configs
REQUEUED_FROM_ATTR = "requeued_from"  # a dead worker's trial queued again
UNMEASURED_DRAW_ATTR = "unmeasured_draw"  # a repeat draw queued to be measured
WORKER_ATTR = "worker"  # {host, pid, ...} of the worker that ran it
OWNER_ATTR = "owner"  # the live process holding a RUNNING trial (tuner.study.liveness)
# study attributes
SPEC_ATTR = "spec"  # the spec, redacted, as the study was opened with it
SPEC_HASH_ATTR = "spec_hash"
OBJECTIVES_ATTR = "objectives"
SLOS_ATTR = "slos"
VERSIONS_ATTR = "versions"  # tool and engine versions
STARTS_ENQUEUED_ATTR = "starts_enqueued"  # baseline and warm starts queued once
REPLAY_ENQUEUED_ATTR = "replay_enqueued"
FINALISTS_ATTR = "finalists"  # the finalists' re-measurements
REMEASURED_WINNER_ATTR = "remeasured_winner"  # the trial chosen on re-measurement
ACCURACY_REFERENCE_ATTR = "accuracy_reference"  # the reference outputs, measured once
SEARCH_EXHAUSTED = "search_exhausted"  # the sampler has no new config left
DETAIL_CHARS = 2000  # a long engine log line is cut, not stored whole


def fail_record(reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The ``fail`` attribute for ``reason`` (a code) with ``detail`` (one human line)."""
    return {"reason": reason, "detail": str(detail)[:DETAIL_CHARS], **extra}


def fail_reason(trial: FrozenTrial) -> str | None:
    """Why a trial failed or was rejected (None for completed trials)."""
    return (trial.user_attrs.get(FAIL_ATTR) or {}).get("reason")
