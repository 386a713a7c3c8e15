"""The simulator against real GPUs: real points, fitted profiles, and fidelity reports.

:mod:`.points` reads real measurements (and how they were measured) as calibration data,
:mod:`.calibrate` fits the sim's efficiency constants to them, :mod:`.holdout` makes the
held-out predictions (by config, by workload shape, across GPUs), :mod:`.fidelity` scores them
(with :mod:`.stats`' math and :mod:`.targets`' judgement) and :mod:`.report` renders a report
for people.
"""

from tuner.calibration.calibrate import Calibration, calibrate, write_profile
from tuner.calibration.fidelity import FidelityReport, fidelity_report
from tuner.calibration.points import RealPoint, load_points
from tuner.calibration.report import plot_predicted_vs_measured, report_markdown

__all__ = [
    "Calibration",
    "FidelityReport",
    "RealPoint",
    "calibrate",
    "fidelity_report",
    "load_points",
    "plot_predicted_vs_measured",
    "report_markdown",
    "write_profile",
]
