"""Generic figures for parameter sweeps: 2-D heatmaps and metric-against-parameter lines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from numpy.typing import ArrayLike

from mlplab.viz._common import new_figure, to_numpy

# Grids up to this many cells per side get their values written in the cells.
MAX_ANNOTATED_SIDE = 10
# Axes with up to this many cells get one tick per cell, labelled with its swept value.
MAX_CELL_TICKS = 12


def plot_heatmap(
    values: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    cbar_label: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    cmap: str | None = None,
    symmetric: bool = False,
    fmt: str = "{:.3g}",
) -> Figure:
    """Draw ``values[i, j]`` at ``(x[j], y[i])`` as a pcolormesh with a colour bar.

    Cells are centred on the given coordinates (edges halfway between neighbours, geometrically
    on a log axis), so uneven sweeps such as widths 8, 16, 64 keep their spacing. NaN cells, e.g.
    failed runs, are left blank. Grids of at most 10 x 10 cells have their values written in.

    Args:
        values: Shape (len(y), len(x)): rows follow y, columns follow x.
        x: Strictly monotonic horizontal coordinates.
        y: Strictly monotonic vertical coordinates.
        xlabel: Horizontal axis label.
        ylabel: Vertical axis label.
        title: Axes title.
        cbar_label: Colour bar label.
        log_x: Log-scale the horizontal axis (x must be > 0).
        log_y: Log-scale the vertical axis (y must be > 0).
        cmap: Colormap name; "viridis", or "RdBu_r" when ``symmetric``.
        symmetric: Centre the colour range on 0, for signed differences such as
            simulated minus analytic.
        fmt: Format of the cell annotations.

    Returns:
        A Figure with the heatmap axes (one QuadMesh) and the colour bar axes.
    """
    values = np.ma.masked_invalid(np.asarray(to_numpy(values), dtype=float))
    x = _check_axis("x", x, log_x)
    y = _check_axis("y", y, log_y)
    if values.shape != (len(y), len(x)):
        raise ValueError(
            f"values has shape {values.shape} but expected (len(y), len(x)) = ({len(y)}, {len(x)})"
        )
    vmin, vmax = _color_range(values, symmetric)
    fig = new_figure(figsize=(6.4, 4.8))
    ax = fig.axes[0]
    mesh = ax.pcolormesh(
        _cell_edges(x, log_x),
        _cell_edges(y, log_y),
        values,
        cmap=cmap or ("RdBu_r" if symmetric else "viridis"),
        vmin=vmin,
        vmax=vmax,
    )
    ax.set_xscale("log" if log_x else "linear")
    ax.set_yscale("log" if log_y else "linear")
    _tick_at_cells(ax.xaxis, x)
    _tick_at_cells(ax.yaxis, y)
    colorbar = fig.colorbar(mesh, ax=ax)
    if cbar_label is not None:
        colorbar.set_label(cbar_label)
    if max(values.shape) <= MAX_ANNOTATED_SIDE:
        _annotate_cells(ax, mesh, values, x, y, fmt)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    return fig


def plot_metric_vs(
    x: ArrayLike,
    series: dict[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
) -> Figure:
    """Plot one line with markers per series against a shared x (NaN values leave gaps).

    Args:
        x: Shared horizontal values, shape (n,).
        series: Label to n values, e.g. test accuracy per width for each depth.
        xlabel: Horizontal axis label.
        ylabel: Vertical axis label.
        title: Axes title.
        log_x: Log-scale the horizontal axis.
        log_y: Log-scale the vertical axis.

    Returns:
        A Figure with one axes holding ``len(series)`` lines and a legend.
    """
    x = to_numpy(x).reshape(-1)
    fig = new_figure()
    ax = fig.axes[0]
    for label, values in series.items():
        values = np.asarray(to_numpy(values), dtype=float).reshape(-1)
        if len(values) != len(x):
            raise ValueError(
                f"series[{label!r}] has {len(values)} values but x has {len(x)}: they must match"
            )
        ax.plot(x, values, "o-", markersize=4, label=label)
    ax.set_xscale("log" if log_x else "linear")
    ax.set_yscale("log" if log_y else "linear")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    if series:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _check_axis(name: str, coords: ArrayLike, log: bool) -> np.ndarray:
    """Return coordinates as a float array, checking they are finite, monotonic and log-safe."""
    coords = np.asarray(to_numpy(coords), dtype=float).reshape(-1)
    if coords.size == 0 or not np.all(np.isfinite(coords)):
        raise ValueError(f"{name} must be a non-empty sequence of finite numbers")
    steps = np.diff(coords)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise ValueError(f"{name}={coords.tolist()} must be strictly increasing or decreasing")
    if log and np.any(coords <= 0):
        raise ValueError(f"{name}={coords.tolist()} must be > 0 on a log axis")
    return coords


def _tick_at_cells(axis: Axis, centres: np.ndarray) -> None:
    """Put one tick per cell when there are few, so a sweep's values read off directly."""
    if len(centres) <= MAX_CELL_TICKS:
        axis.set_ticks(centres, [f"{c:g}" for c in centres])
        axis.set_minor_locator(NullLocator())


def _cell_edges(centres: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges halfway between centres (in log space on a log axis), extended at both ends."""
    c = np.log(centres) if log else centres
    if len(c) == 1:
        # A lone cell gets a unit width (a factor e on a log axis).
        edges = np.array([c[0] - 0.5, c[0] + 0.5])
    else:
        mid = (c[:-1] + c[1:]) / 2
        edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.exp(edges) if log else edges


def _color_range(values: np.ma.MaskedArray, symmetric: bool) -> tuple[float, float]:
    """Colour limits of the finite values; a fixed range when every cell is NaN."""
    if values.count() == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    lo, hi = float(values.min()), float(values.max())
    if symmetric:
        bound = max(abs(lo), abs(hi)) or 1.0
        return -bound, bound
    return lo, hi


def _annotate_cells(
    ax: Axes, mesh: QuadMesh, values: np.ma.MaskedArray, x: np.ndarray, y: np.ndarray, fmt: str
) -> None:
    """Write each finite value in its cell, in black or white for contrast with the cell colour."""
    for i, j in zip(*np.nonzero(~np.ma.getmaskarray(values)), strict=True):
        r, g, b, _ = mesh.cmap(mesh.norm(values[i, j]))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        ax.text(
            x[j],
            y[i],
            fmt.format(values[i, j]),
            ha="center",
            va="center",
            fontsize="small",
            color="white" if dark else "black",
        )
