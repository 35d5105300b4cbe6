"""Figures of the leaky integrate-and-fire neuron: voltage traces and f-I curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from mlplab.viz._common import new_figure, to_numpy


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
        time: Time points (msec), shape (T,).
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
        Vth, color="gray", linestyle="--", linewidth=1, label=f"threshold $V_{{th}}$={Vth:g}"
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
    ax.set(
        xlabel="Time (msec)", ylabel="Membrane Potential (V)", title=title or "LIF Neuron Output"
    )
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
