"""The trial record of why a trial failed or was rejected: one key, one shape, one reader.

Every failure reason lands under the trial user attribute ``fail`` as ``{"reason", "detail", ...}``
(reasons: ``tuner.study.loop.NOT_COUNTED`` and the engines' ``EngineError`` codes). Writers build
it with :func:`fail_record` and readers ask :func:`fail_reason`, so the key and its shape are
spelled here only.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

FAIL_ATTR = "fail"
DETAIL_CHARS = 2000  # a long engine log line is cut, not stored whole


def fail_record(reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The ``fail`` attribute for ``reason`` (a code) with ``detail`` (one human line)."""
    return {"reason": reason, "detail": str(detail)[:DETAIL_CHARS], **extra}


def fail_reason(trial: FrozenTrial) -> str | None:
    """Why a trial failed or was rejected (None for completed trials)."""
    return (trial.user_attrs.get(FAIL_ATTR) or {}).get("reason")
