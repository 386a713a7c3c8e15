"""The Optuna study: open or resume it, run trials, share it between workers, replay and re-measure.

:mod:`.loop` is the tuning loop (ask -> veto -> validate -> measure -> tell); :mod:`.search`
turns engine spaces into suggestions and samplers, :mod:`.strategy` is the default strategy
(``sampler: auto``) and :mod:`.vetoes` the learned failure constraints it consults;
:mod:`.storage` opens storages safely, :mod:`.mirror` runs fast in-memory sim studies,
:mod:`.workers` shares one study between processes and hosts, :mod:`.warmstart` seeds a real
study from a sim one, :mod:`.replay` re-queues another study's configs and :mod:`.finalists`
re-measures the best ones against the baseline.

The names are loaded on first use (PEP 562), so importing one submodule (``tuner.study.attrs``,
which the analysis modules read trial records with) does not import the loop, the engines and
the analysis back again: no import cycle through this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and editors
    from tuner.study.finalists import FinalistsResult, remeasure_study
    from tuner.study.loop import (
        build_engines,
        counted_trials,
        fail_reason,
        load_study,
        open_study,
        run_study,
        search_exhausted,
    )
    from tuner.study.replay import enqueue_configs, parse_trials, trial_configs
    from tuner.study.storage import open_storage, redact
    from tuner.study.workers import budget_status, run_worker, run_workers

_EXPORTS = {
    "FinalistsResult": "finalists",
    "remeasure_study": "finalists",
    "build_engines": "loop",
    "counted_trials": "loop",
    "fail_reason": "loop",
    "load_study": "loop",
    "open_study": "loop",
    "run_study": "loop",
    "search_exhausted": "loop",
    "enqueue_configs": "replay",
    "parse_trials": "replay",
    "trial_configs": "replay",
    "open_storage": "storage",
    "redact": "storage",
    "budget_status": "workers",
    "run_worker": "workers",
    "run_workers": "workers",
}

__all__ = [
    "FinalistsResult",
    "budget_status",
    "build_engines",
    "counted_trials",
    "enqueue_configs",
    "fail_reason",
    "load_study",
    "open_storage",
    "open_study",
    "parse_trials",
    "redact",
    "remeasure_study",
    "run_study",
    "run_worker",
    "run_workers",
    "search_exhausted",
    "trial_configs",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tuner.study' has no attribute {name!r}")
    value = getattr(import_module(f"tuner.study.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
