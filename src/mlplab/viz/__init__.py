"""Matplotlib figures for mlplab: each function returns a ``matplotlib.figure.Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, never through pyplot, so nothing
global is touched, no GUI backend is needed (rendering uses Agg), and a figure is freed by the
garbage collector once dropped; there is nothing to close. Functions never show or save: callers
save with ``figure_to_png`` or log ``figure_to_array`` to TensorBoard.

Orientation: 2-D input plots put x1 (column 0) on the horizontal axis and x2 on the vertical.
"""

from mlplab.viz._common import fix_layout
from mlplab.viz.approx import plot_function_approximation
from mlplab.viz.io import figure_to_array, figure_to_png
from mlplab.viz.lif import add_caption, plot_fi_curves, plot_grid_heatmap, plot_lif_trace
from mlplab.viz.spiral import plot_decision_map, plot_spiral, sample_grid
from mlplab.viz.sweep import (
    fitted_slope,
    plot_heatmap,
    plot_heatmaps,
    plot_metric_scatter,
    plot_metric_vs,
)
from mlplab.viz.training import plot_training_loss

__all__ = [
    "add_caption",
    "figure_to_array",
    "figure_to_png",
    "fitted_slope",
    "fix_layout",
    "plot_decision_map",
    "plot_fi_curves",
    "plot_function_approximation",
    "plot_grid_heatmap",
    "plot_heatmap",
    "plot_heatmaps",
    "plot_lif_trace",
    "plot_metric_scatter",
    "plot_metric_vs",
    "plot_spiral",
    "plot_training_loss",
    "sample_grid",
]
