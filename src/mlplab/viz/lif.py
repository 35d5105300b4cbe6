"""Figures of the leaky integrate-and-fire neuron: voltage traces, f-I curves, grid heatmaps.

Units are the tutorial's (ms, kOhm, uF, V, mA; rates in Hz) and appear in every label.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter
from numpy.typing import ArrayLike

from mlplab.viz._common import fix_layout, new_figure, to_numpy
from mlplab.viz.sweep import plot_heatmap

# Caption text: characters per line at fontsize "small" across a 6.4 inch figure, and the
# height one line takes (inches).
_CAPTION_CHARS = 92
_CAPTION_LINE_IN = 0.17
# A log colour bar carries 3 to 13 labelled ticks: at 1, 2, 3, 5 x 10^k on wide ranges, thinned
# to these multipliers as the range grows (13: 1 to 1000 at 1, 2, 3, 5 x 10^k).
_LOG_TICK_SUBS = ((1.0, 2.0, 3.0, 5.0), (1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))
_MIN_CBAR_TICKS = 3
_MAX_CBAR_TICKS = 13


def plot_lif_trace(
    time: ArrayLike,
    Vm: ArrayLike,
    Vth: float = 1.0,
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """Plot membrane voltage against time with the threshold dashed and spikes marked.

    A spike step is one where ``Vm >= Vth``: below threshold the trace is always under ``Vth``,
    and on a spike step the tutorial's ``run_LIF`` adds ``V_spike`` on top, so this marks the same
    steps its ``torch.sum(Vm > Vth)`` counts when ``V_spike > 0``.

    Args:
        time: Time points (ms), shape (T,).
        Vm: Membrane voltage (V), shape (T,) or (n, T) for n traces.
        Vth: Spike threshold (V).
        title: Axes title; the tutorial's "LIF Neuron Output" when None.
        labels: Legend label of each trace when Vm holds several.

    Returns:
        A Figure with one axes: one line per trace, the threshold line and one spike scatter.
    """
    time = to_numpy(time).reshape(-1)
    Vm = np.atleast_2d(to_numpy(Vm))
    if Vm.ndim != 2 or Vm.shape[1] != len(time):
        raise ValueError(
            f"Vm has shape {Vm.shape} but time has {len(time)} points: "
            f"expected ({len(time)},) or (n, {len(time)})"
        )
    if labels is not None and len(labels) != len(Vm):
        raise ValueError(f"labels has {len(labels)} entries but Vm has {len(Vm)} traces")
    fig = new_figure(figsize=(7.2, 4.0))
    ax = fig.axes[0]
    for i, trace in enumerate(Vm):
        ax.plot(time, trace, linewidth=1, label=None if labels is None else labels[i])
    ax.axhline(
        Vth, color="gray", linestyle="--", linewidth=1, label=f"threshold $V_{{th}}$={Vth:g} V"
    )
    spikes = Vm >= Vth
    times = np.broadcast_to(time, Vm.shape)[spikes]
    ax.scatter(
        times,
        Vm[spikes],
        marker="v",
        color="red",
        s=20,
        zorder=3,
        label=f"spikes ({int(spikes.sum())})",
    )
    ax.set(xlabel="Time (ms)", ylabel="Membrane Potential (V)", title=title or "LIF Neuron Output")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def plot_fi_curves(
    I: ArrayLike,  # noqa: E741 -- the tutorial's name for the input current
    curves: dict[str, ArrayLike],
    analytic: dict[str, ArrayLike] | None = None,
    ylabel: str = "Spike count",
    title: str | None = None,
    xlabel: str = "I (mA)",
    I_analytic: ArrayLike | None = None,
    label_each_analytic: bool = True,
) -> Figure:
    """Plot transfer (f-I) curves, one line per label, analytic ones dashed in the same colour.

    Args:
        I: Input currents, shape (n,).
        curves: Simulated spike count (or rate) per current for each label, each of shape (n,).
        analytic: Closed-form curves per label; a label also in ``curves`` reuses its colour.
        ylabel: Vertical axis label.
        title: Axes title; the tutorial's "LIF Neuron: Transfer Function" when None.
        xlabel: Horizontal axis label.
        I_analytic: Currents of the analytic curves when they use a finer grid; ``I`` by default.
        label_each_analytic: One legend entry per analytic curve; when False, a single
            "analytic" entry stands for all the dashed lines (keeps the legend short).

    Returns:
        A Figure with one axes: ``len(curves) + len(analytic)`` lines.
    """
    currents = to_numpy(I).reshape(-1)
    currents_analytic = currents if I_analytic is None else to_numpy(I_analytic).reshape(-1)
    analytic = analytic or {}
    fig = new_figure()
    ax = fig.axes[0]
    colors: dict[str, str] = {}
    for label, values in curves.items():
        values = _check_curve("curves", label, values, currents)
        (line,) = ax.plot(currents, values, "o-", markersize=3, label=label)
        colors[label] = line.get_color()
    for label, values in analytic.items():
        values = _check_curve("analytic", label, values, currents_analytic)
        legend = f"{label} (analytic)" if label_each_analytic else "_nolegend_"
        ax.plot(currents_analytic, values, "--", color=colors.get(label), label=legend)
    if analytic and not label_each_analytic:
        ax.plot([], [], "--", color="gray", label="analytic (dashed)")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "LIF Neuron: Transfer Function")
    if curves or analytic:
        ax.legend(fontsize="small")
    return fig


def _check_curve(name: str, label: str, values: ArrayLike, currents: np.ndarray) -> np.ndarray:
    values = to_numpy(values).reshape(-1)
    if len(values) != len(currents):
        raise ValueError(
            f"{name}[{label!r}] has {len(values)} values but there are {len(currents)} currents"
        )
    return values


def _label(name: str, attrs: dict[str, Any]) -> str:
    """``name (units)`` from an xarray variable's attributes (``long_name`` names it if given)."""
    units = attrs.get("units")
    text = str(attrs.get("long_name", name))
    return f"{text} ({units})" if units not in (None, "", "1") else text


def plot_grid_heatmap(
    data: Any,
    title: str,
    log_color: bool = False,
    symmetric: bool = False,
    cmap: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    caption: str | None = None,
) -> Figure:
    """Draw a 2-D slice of a LIF grid, e.g. ``ds.rate.sel(I=2).T``, with units from its labels.

    The axis labels are the coordinate names with their ``units`` attribute ("Rm (kOhm)"), the
    colour bar label the variable's ``long_name`` and ``units``, so a unit is never missing.

    Args:
        data: An ``xarray.DataArray`` of shape (n_y, n_x) whose two dimensions have coordinates
            (rows follow the first, e.g. tau_ref; columns the second, e.g. Rm).
        title: Axes title (give the settings and their units).
        log_color: Logarithmic colour scale over the positive values (for rates, which span
            decades); cells <= 0 (silent neurons) are drawn light grey, as a caption says.
        symmetric: Diverging colour map centred on 0 (for signed differences).
        cmap: Colour map name (viridis, or RdBu_r when symmetric, by default).
        log_x: Log-scale the horizontal axis (when its coordinates are evenly spaced in log;
            an uneven list gets equal cells ticked by value, as in :func:`plot_heatmap`).
        log_y: Log-scale the vertical axis (likewise).
        caption: A note printed under the axes (wrapped). A captioned figure has fixed margins,
            taller by the caption's lines, instead of constrained layout.

    Returns:
        A Figure with the heatmap axes and its colour bar axes.

    Raises:
        ValueError: If ``data`` is not 2-D, or ``log_color`` finds no positive value.
    """
    if getattr(data, "ndim", None) != 2:
        raise ValueError(
            f"data has {getattr(data, 'ndim', '?')} dimensions: expected a 2-D DataArray"
        )
    y_name, x_name = data.dims
    x, y = data[x_name], data[y_name]
    values = np.asarray(data.values, dtype=float)
    fig = plot_heatmap(
        values,
        x=x.values,
        y=y.values,
        xlabel=_label(x_name, {"units": x.attrs.get("units")}),
        ylabel=_label(y_name, {"units": y.attrs.get("units")}),
        title=title,
        cbar_label=_label(str(data.name), data.attrs),
        log_x=log_x,
        log_y=log_y,
        cmap=cmap,
        symmetric=symmetric,
    )
    if log_color:
        _log_colors(fig, values, cmap or "viridis")
        if bool(np.any(values <= 0)):
            units = data.attrs.get("units", "")
            zero = f"Grey cells: 0 {units}".rstrip() + " (off the log colour scale)."
            caption = f"{caption} {zero}" if caption else zero
    if caption:
        add_caption(fig, caption)
    return fig


def _log_colors(fig: Figure, values: np.ndarray, cmap: str) -> None:
    """Put a heatmap's mesh on a log colour scale, its colour bar labelled in plain numbers.

    The labelled ticks are those of :func:`log_colorbar_ticks` over the positive values' range.
    """
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        raise ValueError("log_color needs at least one value > 0")
    ax, cbar_ax = fig.axes[0], fig.axes[1]
    (mesh,) = ax.collections
    lo, hi = float(positive.min()), float(positive.max())
    hi = hi if hi > lo else lo * 10
    mesh.set_cmap(colormaps[cmap].with_extremes(bad="lightgrey"))
    # <= 0 is invalid on a log scale: those cells are masked, i.e. drawn in the "bad" colour.
    mesh.set_norm(LogNorm(vmin=lo, vmax=hi))
    cbar_ax.yaxis.set_major_locator(FixedLocator(log_colorbar_ticks(lo, hi)))
    cbar_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
    cbar_ax.yaxis.set_minor_formatter(NullFormatter())


def log_colorbar_ticks(lo: float, hi: float) -> np.ndarray:
    """Labelled ticks, inside ``[lo, hi]``, of a log colour scale from ``lo`` to ``hi``.

    The densest of 1, 2, 3, 5 x 10^k, then 1, 2, 5, then 1, 3, then 1 x 10^k (every few decades
    over very many) that gives between 3 and 13 ticks; a range too narrow for 3 of them (40 to
    60 Hz holds only 50) gets 3 to 7 evenly spaced round numbers instead (40, 45, ..., 60).

    Args:
        lo: Lower end of the colour scale, > 0.
        hi: Upper end, > lo.

    Returns:
        Increasing tick values, shape (n,) with 3 <= n <= 13.

    Raises:
        ValueError: Unless 0 < lo < hi (both finite).
    """
    if not (0 < lo < hi < np.inf):
        raise ValueError(f"a log colour scale needs 0 < lo < hi, got lo={lo:g}, hi={hi:g}")
    decades = 10.0 ** np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
    for subs in _LOG_TICK_SUBS:
        ticks = _inside(np.outer(decades, subs).ravel(), lo, hi)
        if _MIN_CBAR_TICKS <= ticks.size <= _MAX_CBAR_TICKS:
            return ticks
    if ticks.size > _MAX_CBAR_TICKS:  # powers of ten over more than 13 decades: every few
        return ticks[:: -(-ticks.size // _MAX_CBAR_TICKS)]
    # Fewer than 3 nice values of any kind: a narrow range, where log and linear look alike.
    linear = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10], min_n_ticks=_MIN_CBAR_TICKS)
    return _inside(linear.tick_values(lo, hi), lo, hi)


def _inside(ticks: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The ticks within [lo, hi], allowing for rounding at the ends (a tick at lo stays)."""
    return ticks[(ticks >= lo * (1 - 1e-9)) & (ticks <= hi * (1 + 1e-9))]


def plain_number(value: float) -> str:
    """``value`` to 6 significant digits without exponent: 1000000, 0.002, 42.5, 0.3."""
    return np.format_float_positional(value, precision=6, unique=False, fractional=False, trim="-")


def add_caption(fig: Figure, caption: str) -> None:
    """Print ``caption`` (wrapped) in a band added under the figure's axes.

    The figure grows by the band's height and switches to fixed margins, so every axes keeps its
    size and place relative to the others (constrained layout would not leave room for the band).
    """
    text = textwrap.fill(caption, _CAPTION_CHARS)
    band = 0.15 + _CAPTION_LINE_IN * (text.count("\n") + 1)  # inches
    width, height = fig.get_size_inches()
    fix_layout(fig)
    fig.set_size_inches(width, height + band)
    shrink = height / (height + band)
    bottom = 1 - shrink
    for ax in fig.axes:
        x0, y0, w, h = ax.get_position().bounds
        ax.set_position((x0, bottom + y0 * shrink, w, h * shrink))
    fig.text(0.02, bottom - 0.05 / (height + band), text, fontsize="small", va="top", ha="left")
