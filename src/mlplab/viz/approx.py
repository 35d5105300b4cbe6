"""The tutorial's figure for Coding Exercise 1: ReLU basis functions and the approximation."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from mlplab.viz._common import new_figure, to_numpy

# Above this many ReLUs a legend would hide the curves it labels.
MAX_LEGEND_RELUS = 20


def plot_function_approximation(
    x: ArrayLike,
    relu_acts: ArrayLike,
    y_hat: ArrayLike,
    y_true: ArrayLike | None = None,
    x_train: ArrayLike | None = None,
    y_train: ArrayLike | None = None,
    title: str | None = None,
) -> Figure:
    """Plot the ReLU basis functions (top) and the function approximation (bottom).

    Args:
        x: Evaluation grid, shape (M,).
        relu_acts: ReLU activations on the grid, shape (K, M).
        y_hat: Weighted sum of the activations, shape (M,).
        y_true: The true function on the grid, shape (M,), drawn as "truth" when given.
        x_train: Training inputs, shape (N,) or (N, 1), marked on the bottom panel with ``y_train``.
        y_train: Training targets matching ``x_train``.
        title: Figure title.

    Returns:
        A Figure with two axes; the top one has a "ReLU i" legend only when K <= 20.
    """
    x = to_numpy(x).reshape(-1)
    relu_acts = np.atleast_2d(to_numpy(relu_acts))
    y_hat = to_numpy(y_hat).reshape(-1)
    if relu_acts.shape[1] != len(x) or len(y_hat) != len(x):
        raise ValueError(
            f"relu_acts has shape {relu_acts.shape} and y_hat {y_hat.shape} but x has "
            f"{len(x)} points: expected (K, {len(x)}) and ({len(x)},)"
        )
    fig = new_figure(figsize=(6.4, 7.2), nrows=2)
    _plot_basis(fig.axes[0], x, relu_acts)
    ax = fig.axes[1]
    if y_true is not None:
        ax.plot(x, to_numpy(y_true).reshape(-1), label="truth")
    ax.plot(x, y_hat, label="estimated")
    if x_train is not None and y_train is not None:
        ax.plot(
            to_numpy(x_train).reshape(-1),
            to_numpy(y_train).reshape(-1),
            "o",
            color="black",
            markersize=4,
            label="training points",
        )
    ax.set(xlabel="x", ylabel="y(x)", title="Function Approximation")
    ax.legend()
    if title is not None:
        fig.suptitle(title)
    return fig


def _plot_basis(ax, x: np.ndarray, relu_acts: np.ndarray) -> None:
    """Draw one line per ReLU on ``ax``."""
    ax.plot(x, relu_acts.T)
    ax.set(xlabel="x", ylabel="Activation", title="ReLU Activations - Basis Functions")
    n_relus = relu_acts.shape[0]
    if 0 < n_relus <= MAX_LEGEND_RELUS:
        ax.legend([f"ReLU {i + 1}" for i in range(n_relus)], ncol=2, fontsize="small")
