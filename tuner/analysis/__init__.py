"""What a finished study says: its trials as records, its Pareto front and winner, its export.

:mod:`.pareto` holds the pure math (Pareto masks, hypervolume, the winner policy),
:mod:`.results` turns Optuna trials into :class:`TrialRecord` lists and fronts, and
:mod:`.export` writes a trial as the files its engine takes, with a manifest.
"""

from tuner.analysis.export import ExportResult, export_trial
from tuner.analysis.pareto import hypervolume, pareto_mask, pick_winner, reference_point
from tuner.analysis.results import (
    FrontResult,
    TrialRecord,
    pareto_front,
    study_front,
    trial_records,
    trials_frame,
)

__all__ = [
    "ExportResult",
    "FrontResult",
    "TrialRecord",
    "export_trial",
    "hypervolume",
    "pareto_front",
    "pareto_mask",
    "pick_winner",
    "reference_point",
    "study_front",
    "trial_records",
    "trials_frame",
]
