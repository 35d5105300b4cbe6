"""Spiral data and decision maps, drawn with x1 horizontal and x2 vertical."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike

from mlplab.viz._common import class_colors, class_labels, new_figure, to_numpy


def plot_spiral(X: ArrayLike, y: ArrayLike, title: str | None = None) -> Figure:
    """Scatter 2-D points coloured by class, with equal aspect (the tutorial's spiral plot).

    Args:
        X: Points, shape (n, 2); column 0 is x1 (horizontal), column 1 is x2 (vertical).
        y: Integer class labels, shape (n,) (float tensors holding integers are accepted).
        title: Axes title.

    Returns:
        A Figure with one axes holding one scatter collection and a class legend.
    """
    X = _check_points("X", X)
    labels = class_labels("y", y)
    _check_same_length("X", X, "y", labels)
    fig = new_figure(figsize=(5.6, 5.6))
    ax = fig.axes[0]
    _scatter_classes(ax, X, labels, _num_classes(labels), size=8)
    ax.set_aspect("equal")
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title=title or "")
    return fig


def sample_grid(M: int = 500, x_max: float = 2.0) -> torch.Tensor:
    """The tutorial's M x M grid of points covering [-x_max, x_max]^2, shape (M*M, 2).

    The point order is the tutorial's (``torch.meshgrid`` with 'ij' indexing): with
    ``g = torch.linspace(-x_max, x_max, M)``, row ``i * M + j`` is ``(g[i], g[j])``, so x1 varies
    slowest. ``plot_decision_map`` expects predictions in this order.

    Args:
        M: Points per axis.
        x_max: Half-width of the square.

    Returns:
        Float32 tensor of shape (M*M, 2), columns (x1, x2).
    """
    _check_grid(M, x_max)
    g = torch.linspace(-x_max, x_max, M)
    ii, jj = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([ii, jj], dim=-1).view(-1, 2)


def plot_decision_map(
    predict_grid_labels: ArrayLike,
    X_test: ArrayLike,
    y_test: ArrayLike,
    M: int = 500,
    x_max: float = 2.0,
    title: str | None = None,
) -> Figure:
    """Draw the predicted class over the plane with the test points on top.

    The tutorial's ``imshow`` of the 'ij' grid puts x1 on the vertical axis, upside down; here the
    map is transposed and drawn with ``origin='lower'``, so x1 is horizontal and x2 vertical, the
    same as in ``plot_spiral``. Each pixel is centred on its grid point. The tutorial's loop that
    paints test points into the map is replaced by one scatter coloured by the true class (black
    edges), so a point whose colour differs from the map under it is misclassified.

    Args:
        predict_grid_labels: Predicted class of each ``sample_grid(M, x_max)`` point in that order,
            shape (M*M,); logits of shape (M*M, K) are also accepted and reduced with argmax.
        X_test: Test points, shape (n, 2).
        y_test: True classes of the test points, shape (n,).
        M: Points per axis of the grid.
        x_max: Half-width of the grid.
        title: Axes title, e.g. the test accuracy.

    Returns:
        A Figure with one axes holding the map (an AxesImage, array indexed [x2, x1]) and one
        scatter collection.
    """
    _check_grid(M, x_max)
    grid_labels = to_numpy(predict_grid_labels)
    if grid_labels.ndim == 2:
        grid_labels = grid_labels.argmax(axis=1)
    grid_labels = class_labels("predict_grid_labels", grid_labels)
    if grid_labels.size != M * M:
        raise ValueError(
            f"predict_grid_labels has {grid_labels.size} entries but M={M} needs M*M={M * M}: "
            "pass one prediction per sample_grid(M, x_max) point"
        )
    X_test = _check_points("X_test", X_test)
    test_labels = class_labels("y_test", y_test)
    _check_same_length("X_test", X_test, "y_test", test_labels)
    n_classes = _num_classes(np.concatenate([grid_labels, test_labels]))
    cmap, norm = class_colors(n_classes)
    # sample_grid is 'ij' ordered (rows index x1); transpose so rows index x2, as imshow draws rows.
    image = grid_labels.reshape(M, M).T
    # Half a grid step beyond x_max, so each pixel is centred on its grid point.
    edge = x_max + x_max / (M - 1)
    fig = new_figure(figsize=(5.6, 5.6))
    ax = fig.axes[0]
    ax.imshow(
        image,
        origin="lower",
        extent=(-edge, edge, -edge, edge),
        cmap=cmap,
        norm=norm,
        interpolation="nearest",
        alpha=0.5,
    )
    _scatter_classes(ax, X_test, test_labels, n_classes, size=10, edgecolors="black")
    ax.set(xlim=(-edge, edge), ylim=(-edge, edge), xlabel="$x_1$", ylabel="$x_2$")
    ax.set_title(title or "")
    return fig


def _scatter_classes(
    ax: Axes, X: np.ndarray, labels: np.ndarray, n_classes: int, size: float, **kwargs
) -> None:
    """One scatter of all points coloured by class, with a legend of the classes present."""
    cmap, norm = class_colors(n_classes)
    points = ax.scatter(
        X[:, 0], X[:, 1], c=labels, cmap=cmap, norm=norm, s=size, linewidths=0.3, **kwargs
    )
    # Handles built per class present, so the legend stays exact for any number of classes.
    handles = [
        Line2D([], [], marker="o", linestyle="", color=points.cmap(norm(k)), label=f"class {k}")
        for k in np.unique(labels)
    ]
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize="small")


def _num_classes(labels: np.ndarray) -> int:
    return int(labels.max()) + 1 if labels.size else 1


def _check_points(name: str, X: ArrayLike) -> np.ndarray:
    X = to_numpy(X)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"{name} has shape {X.shape}: {name} must have shape (n, 2)")
    return X


def _check_same_length(name: str, X: np.ndarray, label_name: str, labels: np.ndarray) -> None:
    if len(X) != len(labels):
        raise ValueError(
            f"{name} has {len(X)} points but {label_name} has {len(labels)} labels: they must match"
        )


def _check_grid(M: int, x_max: float) -> None:
    if isinstance(M, bool) or not isinstance(M, int) or M < 2:
        raise ValueError(f"M={M!r} is invalid: M must be an integer >= 2")
    if not (math.isfinite(x_max) and x_max > 0):
        raise ValueError(f"x_max={x_max!r} is invalid: x_max must be a finite number > 0")
