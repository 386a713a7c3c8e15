"""servetune's tuner: study specs, the Optuna loop, Pareto analysis and export.

The CLI and the notebooks are thin layers over these functions.
"""

from tuner.analysis.export import ExportResult, export_trial
from tuner.analysis.results import (
    FrontResult,
    TrialRecord,
    pareto_front,
    study_front,
    trial_records,
    trials_frame,
)
from tuner.spec import StudySpec, load_spec, parse_spec
from tuner.study.loop import load_study, open_study, run_study

__all__ = [
    "ExportResult",
    "FrontResult",
    "StudySpec",
    "TrialRecord",
    "export_trial",
    "load_spec",
    "load_study",
    "open_study",
    "pareto_front",
    "parse_spec",
    "run_study",
    "study_front",
    "trial_records",
    "trials_frame",
]
