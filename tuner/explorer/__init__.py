"""The Pareto Explorer: pick axes, filter trials, move SLOs and watch the front and winner change.

:mod:`.model` is its state and logic without widgets (tested without a browser); :mod:`.widgets`
puts ipywidgets and plotly on it for Jupyter.
"""

from tuner.explorer.model import DEFAULT_AXES, FILTERS, SLIDER_METRICS, ExplorerModel
from tuner.explorer.widgets import Explorer, explore

__all__ = ["DEFAULT_AXES", "FILTERS", "SLIDER_METRICS", "Explorer", "ExplorerModel", "explore"]
