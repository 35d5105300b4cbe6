"""Generic figures for parameter sweeps: 2-D heatmaps (one or several panels on one colour
scale), metric-against-parameter lines (error bars, reference lines, fitted power laws), and
metric-against-parameter scatter panels for searches that are not grids (Optuna's trials)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.cm import ScalarMappable
from matplotlib.collections import QuadMesh
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator
from numpy.typing import ArrayLike

from mlplab.viz._common import new_figure, to_numpy

# Grids up to this many cells per side get their values written in the cells.
MAX_ANNOTATED_SIDE = 10
# A cell label may take this fraction of its cell's width (the rest is margin); a character of
# a number is about this many ems wide.
_LABEL_FILL = 0.75
_CHAR_WIDTH = 0.6
# Axes with up to this many cells get one tick per cell, labelled with its swept value.
MAX_CELL_TICKS = 12
# Legends with more entries than this go beside the axes rather than over the lines.
MAX_LEGEND_INSIDE = 4
# Coordinates whose steps agree to this relative tolerance are evenly spaced: their cells are
# drawn at their values (0.1% of a cell is invisible); others get equal cells, ticked by value.
_EVEN_RTOL = 1e-3


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

    On an axis whose coordinates are evenly spaced (evenly in log on a log axis, e.g. widths 8,
    16, 32, 64), cells are centred on the coordinates, edges halfway between neighbours. On any
    other axis (e.g. tau_ref 1, 2, 50, 100 ms), spacing by value would squeeze some cells into
    slivers: there every value gets a cell of the same size, in order, with a tick labelled by
    the value (on a linear axis whatever ``log_x``/``log_y`` say). NaN cells, e.g. failed runs,
    are left blank. Grids of at most 10 x 10 cells have their values written in, when the
    longest value fits its cell with a margin (else none is: numbers that run together mislead).

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

    Raises:
        ValueError: If ``values`` is not of shape (len(y), len(x)), or a coordinate list is
            empty, not finite, not strictly monotonic, or <= 0 on a log axis.
    """
    x = _check_axis("x", x, log_x)
    y = _check_axis("y", y, log_y)
    values = _grid("values", values, x, y)
    vmin, vmax = _color_range(values, symmetric)
    fig = new_figure(figsize=(6.4, 4.8))
    ax = fig.axes[0]
    cmap = cmap or ("RdBu_r" if symmetric else "viridis")
    even_x, even_y = _evenly_spaced(x, log_x), _evenly_spaced(y, log_y)
    mesh = _draw_cells(
        ax,
        values,
        x if even_x else _cell_ranks(x),
        y if even_y else _cell_ranks(y),
        log_x and even_x,
        log_y and even_y,
        fmt,
        Normalize(vmin, vmax),
        cmap,
    )
    if not even_x:
        _tick_ranks_by_value(ax.xaxis, x)
    if not even_y:
        _tick_ranks_by_value(ax.yaxis, y)
    colorbar = fig.colorbar(mesh, ax=ax)
    if cbar_label is not None:
        colorbar.set_label(cbar_label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    return fig


def _grid(name: str, values: ArrayLike, x: np.ndarray, y: np.ndarray) -> np.ma.MaskedArray:
    """``values`` as floats with NaN masked; ValueError unless of shape (len(y), len(x))."""
    grid = np.ma.masked_invalid(np.asarray(to_numpy(values), dtype=float))
    if grid.shape != (len(y), len(x)):
        raise ValueError(
            f"{name} has shape {grid.shape} but expected (len(y), len(x)) = ({len(y)}, {len(x)})"
        )
    return grid


def _draw_cells(
    ax: Axes,
    grid: np.ma.MaskedArray,
    x: np.ndarray,
    y: np.ndarray,
    log_x: bool,
    log_y: bool,
    fmt: str,
    norm: Normalize,
    cmap: str,
) -> QuadMesh:
    """One heatmap panel: cells centred on (x, y), ticks at the cells, small grids annotated."""
    mesh = ax.pcolormesh(_cell_edges(x, log_x), _cell_edges(y, log_y), grid, cmap=cmap, norm=norm)
    ax.set_xscale("log" if log_x else "linear")
    ax.set_yscale("log" if log_y else "linear")
    _tick_at_cells(ax.xaxis, x)
    _tick_at_cells(ax.yaxis, y)
    if max(grid.shape) <= MAX_ANNOTATED_SIDE and _labels_fit(ax, grid, fmt):
        _annotate_cells(ax, mesh, grid, x, y, fmt)
    return mesh


def _labels_fit(ax: Axes, values: np.ma.MaskedArray, fmt: str) -> bool:
    """Whether the longest cell label fits its cell's width with a margin on either side.

    Judged from the axes' width before layout (constrained layout only narrows it, hence the
    margin): labels wider than their cells run into their neighbours (``0.03070.035``) and,
    in the first column, into the axis's tick marks, where ``0.0595`` reads as ``-0.0595``.
    """
    shown = values.compressed()
    if shown.size == 0:
        return True
    longest = max(len(fmt.format(v)) for v in shown)
    font_pt = FontProperties(size="small").get_size_in_points()
    label_pt = longest * _CHAR_WIDTH * font_pt  # digits are about 0.6 em wide
    cell_pt = ax.get_position().width * ax.figure.get_figwidth() * 72 / values.shape[1]
    return label_pt <= _LABEL_FILL * cell_pt


def plot_heatmaps(
    panels: dict[str, ArrayLike],
    x: ArrayLike,
    y: ArrayLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    cbar_label: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    cmap: str = "viridis",
    fmt: str = "{:.3g}",
    ncols: int = 3,
) -> Figure:
    """Draw several heatmaps on one colour scale: one panel per entry, one colour bar.

    Every panel shares the same :class:`~matplotlib.colors.Normalize` (the range of all finite
    values of all panels), so equal colours mean equal values across panels. Ticks, NaN cells
    and annotations are as in :func:`plot_heatmap`; cells are always centred on the coordinates,
    evenly spaced or not (unlike :func:`plot_heatmap`, no equal cells for uneven ones).

    Args:
        panels: Panel title to values of shape (len(y), len(x)), e.g. accuracy per (depth,
            width) for each activation.
        x, y, xlabel, ylabel, log_x, log_y, cmap, fmt: As in :func:`plot_heatmap`.
        title: Figure title (above all panels).
        cbar_label: Label of the one colour bar.
        ncols: Panels per row.

    Returns:
        A Figure with ``len(panels)`` heatmap axes (one QuadMesh each) and one colour bar axes.

    Raises:
        ValueError: for no panels, a panel of the wrong shape, or bad coordinates.
    """
    if not panels:
        raise ValueError("panels is empty: give at least one heatmap")
    x = _check_axis("x", x, log_x)
    y = _check_axis("y", y, log_y)
    grids = {name: _grid(f"panels[{name!r}]", values, x, y) for name, values in panels.items()}
    vmin, vmax = _color_range(np.ma.concatenate([g.ravel() for g in grids.values()]), False)
    norm = Normalize(vmin=vmin, vmax=vmax)
    ncols = min(ncols, len(grids))
    nrows = -(-len(grids) // ncols)
    fig = Figure(figsize=(0.8 + 3.6 * ncols, 0.9 + 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax in axes[len(grids) :]:
        ax.set_visible(False)
    for ax, (name, grid) in zip(axes, grids.items(), strict=False):
        _draw_cells(ax, grid, x, y, log_x, log_y, fmt, norm, cmap)
        ax.set_title(name, fontsize="medium")
    for ax in axes[: len(grids)]:
        if ax.get_subplotspec().is_last_row() or len(grids) <= ncols:
            ax.set_xlabel(xlabel)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[: len(grids)]))
    if cbar_label is not None:
        colorbar.set_label(cbar_label)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def plot_metric_vs(
    x: ArrayLike,
    series: dict[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    errors: dict[str, Sequence[float]] | None = None,
    hlines: dict[str, float] | None = None,
    fit_slope: bool = False,
) -> Figure:
    """Plot one line with markers per series against a shared x (NaN values leave gaps).

    Up to 12 x values are ticked at the values themselves (so a sweep's settings read off
    directly, on log axes too); beyond that, integer x values get integer ticks only.

    Args:
        x: Shared horizontal values, shape (n,), e.g. the swept widths.
        series: Label to n values, e.g. test accuracy per width for each depth.
        xlabel: Horizontal axis label, with units.
        ylabel: Vertical axis label, with units.
        title: Axes title.
        log_x: Log-scale the horizontal axis.
        log_y: Log-scale the vertical axis.
        errors: Label to n error-bar half-heights (e.g. standard deviations over seeds; NaN:
            no bar).
        hlines: Label to a y value drawn as a dashed grey reference line (e.g. chance level).
        fit_slope: Fit ``log10(y) = a + b log10(x)`` by least squares to each series' finite
            positive points and draw it dashed, the slope ``b`` in the legend (a power law
            ``y ~ x^b``); for log-log plots.

    Returns:
        A Figure with one axes holding the lines and a legend.

    Raises:
        ValueError: when a series or its errors do not have one value per x.
    """
    x = np.asarray(to_numpy(x), dtype=float).reshape(-1)
    fig = new_figure()
    ax = fig.axes[0]
    for name, values in series.items():
        values = _values(f"series[{name!r}]", values, len(x))
        spread = None if errors is None or name not in errors else errors[name]
        if spread is None:
            (line,) = ax.plot(x, values, "o-", markersize=4, label=name)
        else:
            spread = _values(f"errors[{name!r}]", spread, len(x))
            bars = ax.errorbar(x, values, yerr=spread, fmt="o-", markersize=4, capsize=3)
            bars.set_label(name)
            line = bars.lines[0]
        if fit_slope:
            _draw_fit(ax, x, values, line.get_color(), name if len(series) > 1 else "fit")
    hlines = hlines or {}
    for name, value in hlines.items():
        ax.axhline(value, color="0.4", linestyle=":", linewidth=1.2, label=name)
    ax.set_xscale("log" if log_x else "linear")
    ax.set_yscale("log" if log_y else "linear")
    _tick_at_values(ax.xaxis, x)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title or "", fontsize="medium")
    # The series (and their fits) in order, reference lines last.
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] in hlines)
    place: dict = {}
    if len(labels) > MAX_LEGEND_INSIDE:  # beside the axes, where it hides no line
        fig.set_size_inches(8.4, 4.8)
        place = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    if labels:
        ax.legend(
            [handles[i] for i in order], [labels[i] for i in order], fontsize="small", **place
        )
    ax.grid(True, which="both", alpha=0.3)
    return fig


def plot_metric_scatter(
    params: dict[str, ArrayLike],
    y: ArrayLike,
    ylabel: str,
    title: str | None = None,
    log_x: Sequence[str] = (),
    best: int | None = None,
    best_label: str = "best",
    hlines: dict[str, float] | None = None,
    ncols: int = 3,
) -> Figure:
    """One scatter panel per parameter: the metric of every job against that parameter's value.

    For searches whose jobs do not form a grid (an Optuna study's trials sample continuous
    values), where lines over "the swept values" would join unrelated points. All panels share
    the vertical axis. A parameter of strings (activations) is drawn at evenly spaced positions
    ticked with its values, in order of first appearance.

    Args:
        params: Horizontal axis label (with units) to the n jobs' values of that parameter,
            shape (n,): numbers, or strings for a categorical parameter; NaN or None: not set.
        y: The n jobs' metric, shape (n,).
        ylabel: Vertical axis label, with units.
        title: Figure title (above all panels).
        log_x: Labels (keys of ``params``) of the panels drawn on a log horizontal axis; their
            values must be > 0.
        best: Index of the job marked as the best (a ring and a legend entry), or None.
        best_label: Legend text of the best job's mark.
        hlines: Label to a y value drawn as a dotted grey line in every panel (chance level).
        ncols: Panels per row.

    Returns:
        A Figure with ``len(params)`` axes.

    Raises:
        ValueError: no parameters, a parameter without one value per job, a log axis with
            values <= 0, or ``best`` out of range.
    """
    if not params:
        raise ValueError("params is empty: give at least one parameter")
    y = np.asarray(to_numpy(y), dtype=float).reshape(-1)
    if best is not None and not 0 <= best < len(y):
        raise ValueError(f"best={best} is out of range for {len(y)} jobs")
    ncols = min(ncols, len(params))
    nrows = -(-len(params) // ncols)
    fig = Figure(figsize=(0.8 + 3.6 * ncols, 1.2 + 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    hlines = hlines or {}
    for ax, (name, values) in zip(axes, params.items(), strict=False):
        x = _scatter_positions(ax, name, values, len(y), name in log_x)
        ax.scatter(x, y, s=18, alpha=0.75, label="jobs")
        if best is not None:
            ax.scatter(
                x[best], y[best], s=110, facecolors="none", edgecolors="C3", linewidths=1.8,
                label=best_label, zorder=3,
            )  # fmt: skip
        for text, value in hlines.items():
            ax.axhline(value, color="0.4", linestyle=":", linewidth=1.2, label=text)
        ax.set_xlabel(name)
        ax.grid(True, alpha=0.3)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def _scatter_positions(ax: Axes, name: str, values: ArrayLike, n: int, log: bool) -> np.ndarray:
    """Horizontal positions of one panel's points; strings become ticked categories."""
    raw = np.asarray(to_numpy(values), dtype=object).reshape(-1)
    if len(raw) != n:
        raise ValueError(f"params[{name!r}] has {len(raw)} values but y has {n}: they must match")
    if any(isinstance(v, str) for v in raw):
        categories = list(dict.fromkeys(v for v in raw if isinstance(v, str)))
        index = {c: i for i, c in enumerate(categories)}
        ax.set_xticks(range(len(categories)), categories)
        ax.set_xlim(-0.5, len(categories) - 0.5)
        return np.array([index.get(v, np.nan) if isinstance(v, str) else np.nan for v in raw])
    x = np.array([np.nan if v is None else v for v in raw], dtype=float)
    if log:
        if np.any(x[np.isfinite(x)] <= 0):
            raise ValueError(f"params[{name!r}] has values <= 0: they cannot be on a log axis")
        ax.set_xscale("log")
    if np.all(x[np.isfinite(x)] == np.round(x[np.isfinite(x)])):
        _tick_at_values(ax.xaxis, x)  # widths, depths: ticks at the values tried, or integers
    return x


def fitted_slope(x: ArrayLike, y: ArrayLike) -> tuple[float, float] | None:
    """Least-squares line through ``(log10 x, log10 y)`` of the finite positive points.

    Returns:
        ``(slope, intercept)``, so that ``y ~ 10**intercept * x**slope``; None with fewer than
        two such points.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if np.unique(x[keep]).size < 2:
        return None
    slope, intercept = np.polyfit(np.log10(x[keep]), np.log10(y[keep]), 1)
    return float(slope), float(intercept)


def _draw_fit(ax: Axes, x: np.ndarray, y: np.ndarray, color: str, name: str) -> None:
    fit = fitted_slope(x, y)
    if fit is None:
        return
    slope, intercept = fit
    keep = np.isfinite(y) & (x > 0) & (y > 0)
    ends = np.array([x[keep].min(), x[keep].max()])
    # A true minus sign (U+2212), as typeset, not a hyphen.
    text = f"{name}: slope " + f"{slope:.2f}".replace("-", "\u2212")
    ax.plot(ends, 10**intercept * ends**slope, "--", color=color, linewidth=1, label=text)


def _values(name: str, values: Sequence[float], n: int) -> np.ndarray:
    values = np.asarray(to_numpy(values), dtype=float).reshape(-1)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values but x has {n}: they must match")
    return values


def _tick_at_values(axis: Axis, values: np.ndarray) -> None:
    """Ticks at the swept values when there are few; else integer ticks for integer values."""
    finite = np.unique(values[np.isfinite(values)])
    if 0 < len(finite) <= MAX_CELL_TICKS:
        axis.set_ticks(finite, [f"{v:g}" for v in finite])
        axis.set_minor_locator(NullLocator())
    elif np.all(finite == np.round(finite)):
        axis.set_major_locator(MaxNLocator(integer=True))


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


def _evenly_spaced(coords: np.ndarray, log: bool) -> bool:
    """Whether the steps between coordinates are equal (ratios, on a log axis), to 0.1%."""
    steps = np.diff(np.log(coords) if log else coords)
    return steps.size < 2 or bool(np.allclose(steps, steps[0], rtol=_EVEN_RTOL, atol=0.0))


def _cell_ranks(coords: np.ndarray) -> np.ndarray:
    """Equal-size cell positions 0, 1, ..., in the coordinates' order along the axis."""
    ranks = np.arange(len(coords), dtype=float)
    return ranks if coords[-1] > coords[0] else ranks[::-1]


def _tick_ranks_by_value(axis: Axis, coords: np.ndarray) -> None:
    """Label equal-size cells at :func:`_cell_ranks` by their coordinate values.

    Every cell is ticked when there are few; beyond :data:`MAX_CELL_TICKS`, every few cells, so
    the labels do not overlap (the cells stay in order, so the values in between are implied).
    """
    ranks = _cell_ranks(coords)
    if len(coords) <= MAX_CELL_TICKS:
        axis.set_ticks(ranks, [f"{c:g}" for c in coords])
    else:
        in_rank_order = coords if coords[-1] > coords[0] else coords[::-1]
        axis.set_major_locator(MaxNLocator(nbins=MAX_CELL_TICKS, integer=True))
        axis.set_major_formatter(FuncFormatter(lambda r, _: _rank_label(in_rank_order, r)))
    axis.set_minor_locator(NullLocator())


def _rank_label(in_rank_order: np.ndarray, rank: float) -> str:
    """The value of the cell at ``rank`` (``""`` off the cells or between two)."""
    i = round(float(rank))
    return f"{in_rank_order[i]:g}" if abs(rank - i) < 1e-9 and 0 <= i < len(in_rank_order) else ""


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
