"""The Optuna study: open or resume it, run trials, share it between workers, replay and re-measure.

:mod:`.loop` is the tuning loop (ask -> veto -> validate -> measure -> tell); :mod:`.search`
turns engine spaces into suggestions and samplers, :mod:`.strategy` is the default strategy
(``sampler: auto``) and :mod:`.vetoes` the learned failure constraints it consults;
:mod:`.storage` opens storages safely, :mod:`.mirror` runs fast in-memory sim studies,
:mod:`.workers` shares one study between processes and hosts, :mod:`.warmstart` seeds a real
study from a sim one, :mod:`.replay` re-queues another study's configs and :mod:`.finalists`
re-measures the best ones against the baseline.
"""

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
