"""Shared helpers for the figure functions: array conversion, new figures, class colours."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure


def to_numpy(values: Any) -> np.ndarray:
    """Return a tensor, array or sequence as a numpy array (tensors detached and moved to CPU)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def new_figure(figsize: tuple[float, float] = (6.4, 4.8), nrows: int = 1) -> Figure:
    """A Figure with constrained layout and ``nrows`` stacked axes, built without pyplot.

    Nothing is registered with pyplot's figure manager, so the figure is freed by the garbage
    collector once the caller drops it; no ``close`` is needed.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    fig.subplots(nrows, 1)
    return fig


def fix_layout(fig: Figure) -> Figure:
    """Keep every axes where it is now: take the figure's layout engine away, and return it.

    ``fig.set_layout_engine("none")`` leaves a placeholder engine behind, and while a figure has
    any engine ``savefig`` draws it once more before rendering (to run the layout): a third of
    the render time of a heatmap, for the same pixels. ``set_layout_engine(None)`` removes the
    engine unless the rc settings ask for automatic layout, so they are pinned off here (a
    user's matplotlibrc with ``figure.autolayout: True`` would otherwise bring one back).
    """
    with rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    return fig


def class_labels(name: str, values: Any) -> np.ndarray:
    """Return class labels as a 1-D int array, rejecting negative or non-integer values."""
    labels = to_numpy(values).reshape(-1)
    if labels.size and (not np.all(np.isfinite(labels)) or np.any(labels != np.rint(labels))):
        raise ValueError(f"{name} must hold integer class labels")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} has a negative class label {labels.min()}: labels start at 0")
    return labels


def class_colors(n_classes: int) -> tuple[ListedColormap, BoundaryNorm]:
    """A discrete colormap and norm mapping class k to one fixed colour, the same in every plot."""
    n_classes = max(n_classes, 1)
    if n_classes <= 10:
        colors = list(colormaps["tab10"].colors[:n_classes])
    else:
        colors = list(colormaps["turbo"](np.linspace(0, 1, n_classes)))
    # Boundaries at half-integers put each integer label in the middle of its own colour bin.
    norm = BoundaryNorm(np.arange(n_classes + 1) - 0.5, n_classes)
    return ListedColormap(colors), norm
