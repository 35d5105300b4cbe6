"""Tests for the figure functions (mlplab.viz)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.colors import LogNorm, to_rgba
from matplotlib.figure import Figure

from conftest import python_output
from mlplab.approx.relu import approximate_function
from mlplab.neuron import transfer_grid
from mlplab.viz import (
    add_caption,
    figure_to_array,
    figure_to_png,
    fix_layout,
    plot_decision_map,
    plot_fi_curves,
    plot_function_approximation,
    plot_grid_heatmap,
    plot_heatmap,
    plot_lif_trace,
    plot_metric_vs,
    plot_spiral,
    plot_training_loss,
    sample_grid,
)
from mlplab.viz._common import class_colors
from tutorial import run_LIF

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tutorial_sample_grid(M=500, x_max=2.0):
    """The tutorial's grid, as written there (meshgrid's default 'ij' indexing)."""
    ii, jj = torch.meshgrid(
        torch.linspace(-x_max, x_max, M), torch.linspace(-x_max, x_max, M), indexing="ij"
    )
    return torch.cat([ii.unsqueeze(-1), jj.unsqueeze(-1)], dim=-1).view(-1, 2)


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


# --- function approximation -------------------------------------------------------------------


def test_function_approximation_panels():
    x_train = torch.linspace(0, 2 * np.pi, 10).view(-1, 1)
    y_train = torch.sin(x_train)
    y_hat, relu_acts, x = approximate_function(x_train, y_train)
    fig = plot_function_approximation(x, relu_acts, y_hat, torch.sin(x), x_train, y_train, "sin")
    assert isinstance(fig, Figure)
    top, bottom = fig.axes
    assert len(top.lines) == 9
    assert legend_texts(top) == [f"ReLU {i}" for i in range(1, 10)]
    assert top.get_title() == "ReLU Activations - Basis Functions"
    assert (top.get_xlabel(), top.get_ylabel()) == ("x", "Activation")
    assert legend_texts(bottom) == ["truth", "estimated", "training points"]
    np.testing.assert_allclose(bottom.lines[1].get_ydata(), y_hat.numpy())
    np.testing.assert_allclose(bottom.lines[2].get_xdata(), x_train[:, 0].numpy())
    assert bottom.get_title() == "Function Approximation"
    assert fig.get_suptitle() == "sin"


def test_function_approximation_drops_legend_for_many_relus_and_optional_parts():
    x_train = torch.linspace(0, 1, 26)
    y_hat, relu_acts, x = approximate_function(x_train, x_train**2, num_points=100)
    fig = plot_function_approximation(x, relu_acts, y_hat)
    top, bottom = fig.axes
    assert len(top.lines) == 25 and top.get_legend() is None
    assert legend_texts(bottom) == ["estimated"]


def test_function_approximation_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="relu_acts has shape"):
        plot_function_approximation(np.arange(5), np.zeros((3, 4)), np.zeros(5))


# --- spiral and decision map ------------------------------------------------------------------


def test_plot_spiral_scatter_coloured_by_class():
    X = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.5], [0.2, -0.3]])
    y = torch.tensor([0.0, 1.0, 2.0, 1.0])  # the tutorial's labels are floats
    fig = plot_spiral(X, y, title="Spiral")
    (ax,) = fig.axes
    (points,) = ax.collections
    np.testing.assert_array_equal(points.get_offsets(), X.numpy())
    np.testing.assert_array_equal(points.get_array(), [0, 1, 2, 1])
    cmap, norm = class_colors(3)
    # Colours are mapped from the labels at draw time; class 1 gets the shared class-1 colour.
    np.testing.assert_allclose(points.to_rgba(points.get_array())[1], cmap(norm(1)))
    assert ax.get_aspect() == 1.0
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("$x_1$", "$x_2$", "Spiral")
    assert legend_texts(ax) == ["class 0", "class 1", "class 2"]


def test_plot_spiral_rejects_bad_input():
    with pytest.raises(ValueError, match=r"X has shape \(3,\)"):
        plot_spiral(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="y has 2 labels"):
        plot_spiral(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="y must hold integer class labels"):
        plot_spiral(np.zeros((2, 2)), np.array([0.5, 1.0]))


def test_sample_grid_is_the_tutorials_grid():
    grid = sample_grid(7, 1.5)
    torch.testing.assert_close(grid, tutorial_sample_grid(7, 1.5), rtol=0, atol=0)
    g = torch.linspace(-1.5, 1.5, 7)
    torch.testing.assert_close(grid[2 * 7 + 5], torch.stack([g[2], g[5]]))  # row i*M+j = (g_i, g_j)
    assert sample_grid().shape == (500 * 500, 2)


@pytest.mark.parametrize(("M", "x_max", "match"), [(1, 2.0, "M=1"), (10, 0.0, "x_max=0.0")])
def test_sample_grid_rejects_bad_arguments(M, x_max, match):
    with pytest.raises(ValueError, match=match):
        sample_grid(M, x_max)


def test_decision_map_puts_x1_horizontal_and_x2_vertical():
    M, x_max = 40, 2.0
    grid = sample_grid(M, x_max)
    # Class 1 where x1 > 0, class 2 where x1 <= 0 and x2 > 0, class 0 elsewhere.
    labels = torch.where(grid[:, 0] > 0, 1, torch.where(grid[:, 1] > 0, 2, 0))
    X_test = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    fig = plot_decision_map(labels, X_test, torch.tensor([1, 2]), M=M, x_max=x_max, title="acc")
    (ax,) = fig.axes
    (image,) = ax.images
    array = np.asarray(image.get_array())
    assert image.origin == "lower"
    # Columns follow x1, rows follow x2 (row 0 at the bottom): right half is class 1.
    assert (array[:, M // 2 :] == 1).all()
    assert (array[M // 2 :, : M // 2] == 2).all() and (array[: M // 2, : M // 2] == 0).all()
    # Pixel centres sit on the grid points: half a grid step beyond x_max on each side.
    edge = x_max + x_max / (M - 1)
    np.testing.assert_allclose(image.get_extent(), [-edge, edge, -edge, edge])
    assert ax.get_title() == "acc"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("$x_1$", "$x_2$")


def test_decision_map_rendered_colours_follow_data_coordinates():
    M = 60
    labels = (sample_grid(M)[:, 0] > 0).long()  # class 1 on the right
    fig = plot_decision_map(labels, np.array([[0.0, 1.9]]), np.array([0]), M=M)
    rgb = figure_to_array(fig).astype(int)
    ax = fig.axes[0]
    cmap, norm = class_colors(2)

    def pixel(x1, x2):
        col, row_from_bottom = ax.transData.transform((x1, x2))
        return rgb[rgb.shape[0] - 1 - int(row_from_bottom), int(col)]

    def blended(k):  # the map is drawn at alpha 0.5 over a white axes
        return np.round((np.array(cmap(norm(k))[:3]) * 0.5 + 0.5) * 255)

    assert np.abs(pixel(1.2, -0.7) - blended(1)).max() <= 3
    assert np.abs(pixel(-1.2, -0.7) - blended(0)).max() <= 3


def test_decision_map_overlays_test_points_in_one_scatter():
    X_test = torch.randn(300, 2)
    y_test = torch.randint(0, 4, (300,))
    logits = torch.randn(20 * 20, 4)  # logits are reduced with argmax
    fig = plot_decision_map(logits, X_test, y_test, M=20)
    ax = fig.axes[0]
    np.testing.assert_array_equal(
        np.asarray(ax.images[0].get_array()), logits.argmax(1).view(20, 20).T.numpy()
    )
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(points.get_offsets(), X_test.numpy())
    np.testing.assert_array_equal(points.get_array(), y_test.numpy())
    cmap, norm = class_colors(4)
    colours = points.to_rgba(points.get_array())
    np.testing.assert_allclose(colours, cmap(norm(y_test.numpy())))
    np.testing.assert_array_equal(points.get_edgecolors(), [to_rgba("black")])


def test_decision_map_rejects_wrong_grid_size():
    with pytest.raises(ValueError, match=r"M=10 needs M\*M=100"):
        plot_decision_map(torch.zeros(99), torch.zeros(1, 2), torch.zeros(1), M=10)


def test_full_size_decision_map_renders_quickly():
    grid = sample_grid()
    labels = (grid.norm(dim=1) > 1).long()
    start = time.perf_counter()
    rgb = figure_to_array(plot_decision_map(labels, torch.randn(800, 2), torch.zeros(800), M=500))
    assert time.perf_counter() - start < 5.0
    assert rgb.shape[2] == 3


# --- training, LIF, sweeps --------------------------------------------------------------------


def test_training_loss_single_and_with_epoch_means():
    losses = np.linspace(2.0, 0.1, 100)
    (ax,) = plot_training_loss(losses, title="Loss").axes
    assert len(ax.lines) == 1 and ax.get_legend() is None
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("Step", "Training loss", "Loss")
    fig = plot_training_loss(torch.tensor(losses), xlabel="Batch", extra=[1.5, 1.0, 0.5, 0.2])
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xlabel() == "Batch"
    # Four epochs of 25 steps: means sit at each epoch's centre.
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [12.0, 37.0, 62.0, 87.0])
    assert legend_texts(ax) == ["per step", "epoch mean"]
    with pytest.raises(ValueError, match="extra_x has 2 values but extra has 3"):
        plot_training_loss(losses, extra=[1, 2, 3], extra_x=[0, 1])


def test_training_loss_steps_are_ticked_at_whole_steps():
    (ax,) = plot_training_loss([1.38, 1.37, 1.37, 1.33]).axes
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_lif_trace_marks_the_tutorials_spikes():
    time_, Vm = run_LIF(1.5)
    n_spikes = int(torch.sum(Vm > 1))  # the tutorial's spike count
    assert n_spikes > 0
    (ax,) = plot_lif_trace(time_, Vm, Vth=1.0).axes
    trace, threshold = ax.lines
    np.testing.assert_allclose(trace.get_ydata(), Vm.numpy())
    assert threshold.get_linestyle() == "--" and set(threshold.get_ydata()) == {1.0}
    (spikes,) = ax.collections
    assert len(spikes.get_offsets()) == n_spikes
    np.testing.assert_allclose(spikes.get_offsets()[:, 0], time_[Vm > 1].numpy())
    assert ax.get_title() == "LIF Neuron Output"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Time (ms)", "Membrane Potential (V)")
    assert legend_texts(ax) == ["threshold $V_{th}$=1 V", f"spikes ({n_spikes})"]


def test_lif_trace_several_traces():
    time_, Vm1 = run_LIF(1.5)
    _, Vm2 = run_LIF(3.0)
    (ax,) = plot_lif_trace(time_, torch.stack([Vm1, Vm2]), labels=["I=1.5", "I=3"]).axes
    assert len(ax.lines) == 3
    assert len(ax.collections[0].get_offsets()) == int((Vm1 > 1).sum() + (Vm2 > 1).sum())
    assert legend_texts(ax)[:2] == ["I=1.5", "I=3"]
    with pytest.raises(ValueError, match="Vm has shape"):
        plot_lif_trace(time_[:-1], Vm1)


def test_fi_curves_analytic_dashed_in_same_colour():
    currents = torch.linspace(0, 2, 10)
    curves = {"Rm=1": currents * 20, "Rm=10": currents * 30}
    analytic = {"Rm=1": currents * 21, "Rm=10": currents * 29}
    fig = plot_fi_curves(currents, curves, analytic=analytic, title="f-I")
    (ax,) = fig.axes
    assert len(ax.lines) == 4
    sim1, sim10, ana1, ana10 = ax.lines
    assert to_rgba(sim1.get_color()) == to_rgba(ana1.get_color()) != to_rgba(sim10.get_color())
    assert to_rgba(sim10.get_color()) == to_rgba(ana10.get_color())
    assert ana1.get_linestyle() == "--" and sim1.get_linestyle() == "-"
    assert legend_texts(ax) == ["Rm=1", "Rm=10", "Rm=1 (analytic)", "Rm=10 (analytic)"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("I (mA)", "Spike count", "f-I")
    # Analytic curves on a finer grid, and no analytic curves at all.
    fine = torch.linspace(0, 2, 200)
    fig = plot_fi_curves(currents, curves, {"Rm=1": fine * 21}, I_analytic=fine)
    assert len(fig.axes[0].lines[2].get_xdata()) == 200
    assert len(plot_fi_curves(currents, curves).axes[0].lines) == 2
    with pytest.raises(ValueError, match=r"curves\['bad'\] has 3 values but there are 10"):
        plot_fi_curves(currents, {"bad": [1, 2, 3]})


def test_heatmap_mesh_nan_cells_and_annotations():
    values = np.arange(12, dtype=float).reshape(3, 4)
    values[1, 2] = np.nan
    x, y = [8, 16, 32, 64], [1, 2, 3]
    fig = plot_heatmap(values, x, y, "width", "depth", title="acc", cbar_label="%", log_x=True)
    ax, cbar_ax = fig.axes
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    data = mesh.get_array()
    assert np.ma.getmaskarray(data).reshape(3, 4)[1, 2]  # the NaN cell is masked: drawn blank
    assert np.ma.getmaskarray(data).sum() == 1
    assert mesh.get_clim() == (0.0, 11.0)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 11 and "11" in texts and "nan" not in texts
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert list(ax.get_xticks()) == x
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("width", "depth", "acc")
    assert cbar_ax.get_ylabel() == "%"
    # On a log axis the cell edges lie halfway between centres in log space.
    coords = mesh.get_coordinates()
    np.testing.assert_allclose(
        coords[0, :, 0], [8 / 2**0.5, 8 * 2**0.5, 16 * 2**0.5, 32 * 2**0.5, 64 * 2**0.5]
    )
    np.testing.assert_allclose(coords[:, 0, 1], [0.5, 1.5, 2.5, 3.5])


def cell_edges(fig: Figure) -> tuple[np.ndarray, np.ndarray]:
    """The heatmap's column edges and row edges, in data coordinates."""
    (mesh,) = [c for c in fig.axes[0].collections if isinstance(c, QuadMesh)]
    coords = mesh.get_coordinates()
    return coords[0, :, 0], coords[:, 0, 1]


def tick_labels(axis) -> dict[float, str]:
    """Tick position -> label text of the drawn labels of ``axis`` (empty ones left out)."""
    axis.get_figure(root=True).canvas.draw()
    labels = axis.get_ticklabels()
    return {t.get_position()[axis.axis_name == "y"]: t.get_text() for t in labels if t.get_text()}


def test_heatmap_uneven_coordinates_get_equal_cells_ticked_by_value():
    values = np.arange(12, dtype=float).reshape(4, 3)
    # Rows 1, 2, 50, 100 (linear): by value, rows 1 and 2 would be slivers. Columns 8, 16, 64 on
    # a log axis: ratios 2 and 4, not even in log either.
    fig = plot_heatmap(values, [8, 16, 64], [1, 2, 50, 100], "width", "tau_ref (ms)", log_x=True)
    ax = fig.axes[0]
    columns, rows = cell_edges(fig)
    np.testing.assert_array_equal(rows, [-0.5, 0.5, 1.5, 2.5, 3.5])  # one unit per value
    np.testing.assert_array_equal(columns, [-0.5, 0.5, 1.5, 2.5])
    assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "linear")
    assert tick_labels(ax.yaxis) == {0: "1", 1: "2", 2: "50", 3: "100"}
    assert tick_labels(ax.xaxis) == {0: "8", 1: "16", 2: "64"}
    # Annotations sit in their cells: the value at (tau_ref=50, width=64) in row 2, column 2.
    (text,) = [t for t in ax.texts if t.get_text() == "8"]
    assert text.get_position() == (2, 2)
    # Decreasing coordinates keep the axis increasing upward: the last value is at the bottom.
    fig = plot_heatmap(values, [1, 2, 3], [100, 50, 2, 1], "x", "y")
    assert tick_labels(fig.axes[0].yaxis) == {3: "100", 2: "50", 1: "2", 0: "1"}
    np.testing.assert_array_equal(cell_edges(fig)[0], [0.5, 1.5, 2.5, 3.5])  # even: by value


def test_heatmap_many_uneven_values_label_every_few_cells_in_order():
    fib = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987]
    fig = plot_heatmap(np.ones((2, len(fib))), fib, [1, 2], "Rm (kOhm)", "y")
    columns, _ = cell_edges(fig)
    np.testing.assert_array_equal(np.diff(columns), np.ones(len(fib)))
    labels = tick_labels(fig.axes[0].xaxis)
    assert 3 <= len(labels) <= 12
    assert all(labels[rank] == f"{fib[int(rank)]}" for rank in labels)


def test_heatmap_evenly_spaced_coordinates_stay_at_their_values():
    # linspace's steps differ in the last bits; geomspace's on a log axis too: still even.
    x, y = np.linspace(1, 100, 30), np.geomspace(1, 1000, 13)
    fig = plot_heatmap(np.ones((13, 30)), x, y, "Rm (kOhm)", "tau_ref (ms)", log_y=True)
    columns, rows = cell_edges(fig)
    np.testing.assert_allclose(columns[1:-1], (x[:-1] + x[1:]) / 2)
    np.testing.assert_allclose(rows[1:-1], np.sqrt(y[:-1] * y[1:]))
    assert fig.axes[0].get_yscale() == "log"


def test_heatmap_large_grid_symmetric_and_all_nan():
    values = np.linspace(-2, 1, 121).reshape(11, 11)
    fig = plot_heatmap(values, np.arange(11), np.arange(11), "Rm", "tau_ref", symmetric=True)
    ax = fig.axes[0]
    assert len(ax.texts) == 0  # no annotations above 10 x 10
    assert ax.collections[0].get_clim() == (-2.0, 2.0)
    fig = plot_heatmap(np.full((2, 2), np.nan), [1, 2], [1, 2], "a", "b")
    assert len(fig.axes[0].texts) == 0


@pytest.mark.parametrize(
    ("values", "x", "y", "kwargs", "match"),
    [
        (np.zeros((2, 3)), [1, 2], [1, 2], {}, r"values has shape \(2, 3\)"),
        (np.zeros((2, 2)), [1, 1], [1, 2], {}, r"x=\[1.0, 1.0\] must be strictly"),
        (np.zeros((2, 2)), [0, 1], [1, 2], {"log_x": True}, "must be > 0 on a log axis"),
        (np.zeros((2, 2)), [1, 2], [1, np.nan], {}, "y must be a non-empty sequence"),
    ],
)
def test_heatmap_rejects_bad_input(values, x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_heatmap(values, x, y, "x", "y", **kwargs)


def test_metric_vs_one_line_per_series():
    N = [8, 16, 32, 64]
    series = {"depth 1": [0.1, 0.03, 0.007, 0.002], "depth 2": [0.2, 0.05, np.nan, 0.003]}
    fig = plot_metric_vs(N, series, "N", "max error", title="err", log_x=True, log_y=True)
    (ax,) = fig.axes
    assert len(ax.lines) == 2 and ax.lines[0].get_marker() == "o"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), series["depth 1"])
    assert legend_texts(ax) == ["depth 1", "depth 2"]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("N", "max error", "err")
    with pytest.raises(ValueError, match=r"series\['x'\] has 1 values but x has 4"):
        plot_metric_vs(N, {"x": [1.0]}, "N", "e")


# --- output -----------------------------------------------------------------------------------


def test_figure_to_png_writes_atomically(tmp_path):
    fig = plot_training_loss([3.0, 2.0, 1.0])
    path = tmp_path / "sub" / "loss.png"
    png = figure_to_png(fig, path)
    data = path.read_bytes()
    assert data == png and data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (640, 480)  # 6.4 x 4.8 inches at dpi 100
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]


def test_figure_to_png_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    fig = plot_training_loss([3.0, 2.0, 1.0])

    def broken_savefig(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        figure_to_png(fig, tmp_path / "loss.png")
    assert list(tmp_path.iterdir()) == []


def test_figure_to_array_is_rgb_uint8():
    fig = plot_metric_vs([1, 2], {"a": [1.0, 2.0]}, "x", "y")
    rgb = figure_to_array(fig)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    assert rgb.min() < 100 and rgb.max() == 255  # dark lines on a white background


def test_viz_does_not_touch_pyplot():
    code = (
        "import sys, mlplab.viz as v; v.figure_to_array(v.plot_training_loss([1.0, 0.5]));"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    assert python_output(code) == "False"


# --- LIF grids: units from the Dataset, log colour scale, captions ----------------------------


@pytest.fixture(scope="module")
def lif_grid():
    """A small grid with silent neurons (Rm*I <= Vth) at I=0.5 mA."""
    return transfer_grid(
        torch.linspace(0, 2, 5), [0.75, 1.0, 4.0, 10.0], [1.0, 10.0, 100.0], counts="closed_form"
    )


def test_grid_heatmap_labels_carry_units_and_rates_use_a_log_scale(lif_grid):
    rate = lif_grid.rate.sel(I=2.0).transpose("tau_ref", "Rm")
    fig = plot_grid_heatmap(rate, title="Firing rate at I=2 mA", log_color=True)
    ax, cbar_ax = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Rm (kOhm)", "tau_ref (ms)")
    assert cbar_ax.get_ylabel() == "simulated firing rate (Hz)"
    (mesh,) = ax.collections
    # Cells follow (tau_ref, Rm); the colour scale is logarithmic over the rates.
    np.testing.assert_array_equal(mesh.get_array(), rate.values)
    assert isinstance(mesh.norm, LogNorm)
    assert (mesh.norm.vmin, mesh.norm.vmax) == (rate.values.min(), rate.values.max())
    assert rate.values.max() / rate.values.min() > 5  # tau_ref sets a decade of rates
    assert len(fig.texts) == 0  # nothing silent at 2 mA: no caption

    # At 0.5 mA, Rm <= 2 kOhm is silent: those cells are grey, and a caption says so.
    silent = lif_grid.rate.sel(I=0.5).transpose("tau_ref", "Rm")
    assert (silent.values == 0).any() and (silent.values > 0).any()
    fig = plot_grid_heatmap(silent, title="at 0.5 mA", log_color=True)
    (mesh,) = fig.axes[0].collections
    assert mesh.norm.vmin == silent.values[silent.values > 0].min()
    assert to_rgba(mesh.cmap.get_bad()) == to_rgba("lightgrey")
    (caption,) = fig.texts
    assert caption.get_text() == "Grey cells: 0 Hz (off the log colour scale)."
    with pytest.raises(ValueError, match="log_color needs at least one value > 0"):
        plot_grid_heatmap(lif_grid.rate.sel(I=0.0).T, title="silent", log_color=True)
    with pytest.raises(ValueError, match="expected a 2-D DataArray"):
        plot_grid_heatmap(lif_grid.rate, title="3-D")


def rates(lo: float, hi: float, n: int = 6):
    """An n x n (tau_ref, Rm) grid of rates (Hz) spread geometrically from lo to hi."""
    values = np.geomspace(lo, hi, n * n).reshape(n, n)
    coords = {
        "tau_ref": ("tau_ref", np.arange(1.0, n + 1), {"units": "ms"}),
        "Rm": ("Rm", np.arange(1.0, n + 1), {"units": "kOhm"}),
    }
    attrs = {"units": "Hz", "long_name": "simulated firing rate"}
    return xr.DataArray(values, dims=("tau_ref", "Rm"), coords=coords, name="rate", attrs=attrs)


def colorbar_labels(fig: Figure, lo: float, hi: float, tmp_path) -> dict[float, str]:
    """The labelled colour bar ticks inside [lo, hi] of the saved figure: value -> text."""
    figure_to_png(fig, tmp_path / f"rate_{lo:g}_{hi:g}.png")  # a draw computes the labels
    labels = fig.axes[1].yaxis.get_majorticklabels()
    inside = [t for t in labels if lo * (1 - 1e-9) <= t.get_position()[1] <= hi * (1 + 1e-9)]
    return {t.get_position()[1]: t.get_text() for t in inside if t.get_text()}


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        # Narrow ranges hold fewer than three of 1, 2, 3, 5 x 10^k: round numbers in between.
        (40.0, 60.0, {40: "40", 45: "45", 50: "50", 55: "55", 60: "60"}),
        (95.0, 105.0, {96: "96", 98: "98", 100: "100", 102: "102", 104: "104"}),
        (1.0, 1.05, {1: "1", 1.01: "1.01", 1.02: "1.02", 1.03: "1.03", 1.04: "1.04", 1.05: "1.05"}),
        # A few decades: 1, 2, 3, 5 x 10^k.
        (4.0, 250.0, {5: "5", 10: "10", 20: "20", 30: "30", 50: "50", 100: "100", 200: "200"}),
        # Many decades: thinned to 1, 3 x 10^k, then powers of ten, never 1e+06.
        (
            0.5,
            1e6,
            {v: f"{v:.0f}" for v in [1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6]},
        ),
        (1e-3, 1e6, {v: np.format_float_positional(v, trim="-") for v in 10.0 ** np.arange(-3, 7)}),
    ],
)
def test_log_colour_bar_has_three_plain_labelled_ticks_in_range(lo, hi, expected, tmp_path):
    fig = plot_grid_heatmap(rates(lo, hi), title=f"{lo:g} to {hi:g} Hz", log_color=True)
    labels = colorbar_labels(fig, lo, hi, tmp_path)
    assert len(labels) >= 3
    assert list(labels.values()) == list(expected.values())
    np.testing.assert_allclose(list(labels), list(expected))


def test_grid_heatmap_of_a_dimensionless_variable_and_a_signed_one(lif_grid):
    fig = plot_grid_heatmap(lif_grid.distance_to_relu.T, title="d")
    assert fig.axes[1].get_ylabel() == "RMS residual of the best ReLU fit / max rate"  # units 1
    fig = plot_grid_heatmap(lif_grid.rate_error.sel(I=2.0).T, title="e", symmetric=True)
    (mesh,) = fig.axes[0].collections
    assert mesh.norm.vmin == -mesh.norm.vmax
    assert fig.axes[1].get_ylabel() == "simulated minus analytic firing rate (Hz)"


def draws_per_save(fig: Figure, tmp_path) -> tuple[int, bytes]:
    """How many times saving ``fig`` as PNG draws it (matplotlib's draw_event), and the PNG."""
    draws = []
    fig.canvas.mpl_connect("draw_event", draws.append)
    png = figure_to_png(fig, tmp_path / "figure.png")
    return len(draws), png


def test_fix_layout_keeps_the_axes_and_the_pixels_and_saves_with_one_draw(lif_grid, tmp_path):
    rate = lif_grid.rate.sel(I=2.0).T
    placeholder = plot_grid_heatmap(rate, title="r", log_color=True)
    placeholder.set_layout_engine("none")  # matplotlib's own "none": a placeholder engine
    fixed = plot_grid_heatmap(rate, title="r", log_color=True)
    # A user's matplotlibrc asking for automatic layout does not bring an engine back.
    with rc_context({"figure.autolayout": True}):
        assert fix_layout(fixed) is fixed
    assert fixed.get_layout_engine() is None
    assert [ax.get_position().bounds for ax in fixed.axes] == [
        ax.get_position().bounds for ax in placeholder.axes
    ]
    draws_before, png_before = draws_per_save(placeholder, tmp_path)
    draws_after, png_after = draws_per_save(fixed, tmp_path)
    assert (draws_before, draws_after) == (2, 1)
    assert png_after == png_before


def test_a_captioned_heatmap_has_no_layout_engine_and_saves_with_one_draw(lif_grid, tmp_path):
    fig = plot_grid_heatmap(lif_grid.distance_to_relu.T, title="d", caption="Stripes: why.")
    assert fig.get_layout_engine() is None
    draws, png = draws_per_save(fig, tmp_path)
    assert draws == 1 and png.startswith(PNG_SIGNATURE)


def test_caption_adds_a_band_under_the_axes_without_resizing_them(lif_grid, tmp_path):
    fig = plot_grid_heatmap(lif_grid.distance_to_relu.T, title="d")
    fig.set_layout_engine("none")
    height = fig.get_size_inches()[1]
    before = [ax.get_position().bounds for ax in fig.axes]
    caption = "Stripes along tau_ref: " + "word " * 40
    add_caption(fig, caption)
    (text,) = fig.texts
    assert text.get_text().replace("\n", " ") == caption.strip()
    lines = text.get_text().count("\n") + 1
    assert lines == 3
    new_height = fig.get_size_inches()[1]
    assert new_height > height
    for (x0, y0, w, h), ax in zip(before, fig.axes, strict=True):
        nx0, ny0, nw, nh = ax.get_position().bounds
        # Same size in inches, same horizontal place, moved up by the band.
        assert (nx0, nw) == (x0, w)
        assert nh * new_height == pytest.approx(h * height)
        assert ny0 * new_height == pytest.approx(y0 * height + (new_height - height))
    # The text sits in the band, under the lowest axes.
    assert text.get_position()[1] < min(ax.get_position().y0 for ax in fig.axes)
    assert figure_to_png(fig, tmp_path / "captioned.png").startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("columns", "scale", "written"),
    [(3, 90.0, True), (10, 90.0, True), (10, 0.0307, False), (4, 0.0307, True)],
)
def test_heatmap_writes_cell_values_only_where_they_fit_their_cells(columns, scale, written):
    # 10 columns of 0.0307-like values ran together ("0.03070.035") and touched the y axis.
    rng = np.random.default_rng(0)
    values = scale * (1 + 0.2 * rng.random((3, columns)))
    fig = plot_heatmap(values, np.arange(columns) + 1.0, [1.0, 2.0, 3.0], "x (mm)", "y (ms)")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = fig.axes[0]
    texts = ax.texts
    assert len(texts) == (values.size if written else 0)
    renderer = canvas.get_renderer()
    cell_px = ax.get_window_extent(renderer).width / columns
    for text in texts:  # each label inside its cell, with a margin
        assert text.get_window_extent(renderer).width < 0.9 * cell_px
