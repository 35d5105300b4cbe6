"""The tutorial's training-loss plot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from mlplab.viz._common import new_figure, to_numpy


def plot_training_loss(
    losses: ArrayLike,
    xlabel: str = "Step",
    ylabel: str = "Training loss",
    title: str | None = None,
    extra: ArrayLike | None = None,
    extra_x: ArrayLike | None = None,
    label: str = "per step",
    extra_label: str = "epoch mean",
) -> Figure:
    """Plot a loss curve against step, optionally with a second, coarser series on top.

    Args:
        losses: One loss per step (the tutorial records one per batch).
        xlabel: Horizontal axis label.
        ylabel: Vertical axis label.
        title: Axes title.
        extra: A second series, e.g. the mean loss of each epoch, drawn with markers.
        extra_x: Step positions of ``extra``; by default the centre of each of ``len(extra)``
            equal shares of the steps, which is where a per-epoch mean belongs.
        label: Legend label of ``losses`` (a legend is drawn only when ``extra`` is given).
        extra_label: Legend label of ``extra``.

    Returns:
        A Figure with one axes: one line, or two when ``extra`` is given.
    """
    losses = to_numpy(losses).reshape(-1)
    fig = new_figure()
    ax = fig.axes[0]
    ax.plot(np.arange(len(losses)), losses, linewidth=1, label=label)
    if extra is not None:
        extra = to_numpy(extra).reshape(-1)
        x = _extra_positions(len(losses), len(extra)) if extra_x is None else to_numpy(extra_x)
        if len(x) != len(extra):
            raise ValueError(
                f"extra_x has {len(x)} values but extra has {len(extra)}: they must match"
            )
        ax.plot(x, extra, "o-", linewidth=2, markersize=4, label=extra_label)
        ax.legend()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    # Steps are counted: never tick between two of them (a 4-step run was ticked at 0.5).
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _extra_positions(n_steps: int, n_extra: int) -> Sequence[float]:
    """Centres of ``n_extra`` equal shares of ``n_steps`` steps numbered from 0."""
    share = n_steps / max(n_extra, 1)
    return (np.arange(n_extra) + 0.5) * share - 0.5
