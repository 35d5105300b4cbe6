"""mlplab-lif: the tutorial's LIF neuron as a Hydra task (trace, f-I curves, grid sweeps)."""

# The tutorial names the input current I.
# ruff: noqa: E741

from __future__ import annotations

import logging
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import read_metrics, run_cli, tensorboard_run
from mlplab.neuron import RefractoryWarning, run_lif, spike_counts, transfer_grid
from mlplab.tasks import common
from mlplab.tasks import lif as lif_task
from mlplab.tasks.common import ConfigError
from mlplab.tasks.lif import (
    _lif_body,
    parse_axis,
    quote_axis_values,
    validate_lif_config,
)
from tutorial import run_LIF

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SWEEP_FIGURES = ("fi_curves", "rate_heatmap", "rate_error_heatmap", "distance_to_relu")


def compose_lif(compose_config, overrides: list[str]):
    """Compose ``lif`` with command-line style overrides (lists of axes quoted as main() does)."""
    return compose_config("lif", quote_axis_values(overrides))


def run_lif_task(compose_config, tmp_path: Path, overrides: list[str]) -> dict:
    """Compose ``lif`` with ``overrides``, run it as a single run, return metrics.json."""
    cfg = compose_lif(compose_config, overrides)
    common.run_task(cfg, _lif_body, output_dir=tmp_path / "run", overrides=[], multirun=False)
    return read_metrics(tmp_path / "run")


def read_grid(run_dir: Path) -> xr.Dataset:
    """The labelled grid a grid run saved, as any reader opens it: xarray.open_dataset."""
    with xr.open_dataset(run_dir / "lif_grid.nc") as ds:
        return ds.load()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


SMALL_SWEEP = ["lif.Rm={start:1,stop:100,num:6,log:true}", "lif.tau_ref=[0,1,5,20,100]"]


# --- config parsing ------------------------------------------------------------------------------


def test_parse_axis_forms():
    assert parse_axis(2.5).values.tolist() == [2.5]
    axis = parse_axis([1, 10, 100])
    assert axis.values.tolist() == [1.0, 10.0, 100.0] and axis.log  # two decades: log scale
    assert not parse_axis([0, 1, 2]).log
    axis = parse_axis({"start": 1, "stop": 1000, "num": 4, "log": True})
    assert axis.values.tolist() == [1.0, 10.0, 100.0, 1000.0] and axis.log
    assert parse_axis({"start": 0, "stop": 2, "num": 5}).values.tolist() == [0, 0.5, 1, 1.5, 2]
    # What main() makes of a list given on the command line: YAML data, not code.
    assert parse_axis("[1, 1e3]").values.tolist() == [1.0, 1000.0]
    assert parse_axis("{start: 1, stop: 3, num: 3}").values.tolist() == [1.0, 2.0, 3.0]
    assert parse_axis("{start:1,stop:3,num:3}").values.tolist() == [1.0, 2.0, 3.0]


def test_quote_axis_values_only_where_hydra_cannot_merge():
    argv = [
        "lif.Rm=[1,10,100]",
        "lif.tau_ref=[1,10],[1,100]",
        "lif.I={start:0,stop:1,num:3}",
        "fi.Rm={start:1,stop:2,num:2}",
        "fi.tau_ref=[1,2]",
        "lif.Cm=5,10",
        "-m",
        "+lif.Rm=[1]",
    ]
    assert quote_axis_values(argv) == [
        "lif.Rm='[1,10,100]'",
        "lif.tau_ref='[1,10]','[1,100]'",  # a sweep over two lists
        "lif.I={start:0,stop:1,num:3}",  # merges into the default dict
        "fi.Rm='{start:1,stop:2,num:2}'",
        "fi.tau_ref=[1,2]",
        "lif.Cm=5,10",
        "-m",
        "+lif.Rm='[1]'",
    ]


# --- trace ---------------------------------------------------------------------------------------


def test_trace_is_the_tutorial_run_LIF_of_1_5(compose_config, tmp_path):
    record = run_lif_task(compose_config, tmp_path, ["mode=trace"])
    assert record["status"] == "ok" and record["task"] == "lif"
    run_dir = tmp_path / "run"
    time_ref, Vm_ref = run_LIF(1.5)
    table = np.loadtxt(run_dir / "trace.csv", delimiter=",", skiprows=1, dtype=np.float32)
    np.testing.assert_array_equal(table[:, 0], time_ref.numpy())
    np.testing.assert_array_equal(table[:, 1], Vm_ref.numpy())  # bit for bit, float32
    np.testing.assert_array_equal(table[:, 1], run_lif(1.5)[1].numpy())
    metrics = record["metrics"]
    # The tutorial's plot: two spikes in 50 ms, the first 11 ms in (110 Euler steps of 0.1 ms).
    spikes = Vm_ref > 1
    assert metrics["lif/spike_count"] == int(spikes.sum()) == 2
    assert metrics["lif/first_spike_ms"] == pytest.approx(time_ref[spikes][0].item()) == 11.0
    assert metrics["lif/rate_hz"] == pytest.approx(2 / 50e-3)
    assert metrics["lif/analytic_rate_hz"] == pytest.approx(1000 / (10 + 10 * math.log(3)))
    assert metrics["lif/steps"] == 500
    assert (run_dir / "trace.png").read_bytes().startswith(PNG_SIGNATURE)
    acc = EventAccumulator(str(tensorboard_run(run_dir)), size_guidance={"images": 0})
    acc.Reload()
    (event,) = acc.Scalars("lif/spike_count")
    assert event.value == 2
    (image,) = acc.Images("figures/trace")
    assert image.encoded_image_string == (run_dir / "trace.png").read_bytes()
    assert set(acc.PluginTagToContent("hparams")) >= {"_hparams_/session_start_info"}


def test_trace_without_spikes_has_null_first_spike(compose_config, tmp_path):
    record = run_lif_task(compose_config, tmp_path, ["mode=trace", "trace.I=0.5", "logger=none"])
    assert record["metrics"]["lif/spike_count"] == 0
    assert record["metrics"]["lif/first_spike_ms"] is None  # NaN is written as null
    assert record["metrics"]["lif/analytic_rate_hz"] == 0.0
    assert not (tmp_path / "run" / "tensorboard").exists()


# --- f-I curves ----------------------------------------------------------------------------------


def test_fi_counts_equal_the_tutorial_widget(compose_config, tmp_path):
    # plot_IF_curve: T=1000, dt=1, Vth=1, Is=linspace(0, 2, 10), counts torch.sum(Vm > Vth).
    overrides = [
        "mode=fi",
        "fi.Rm=[1,50]",
        "fi.tau_ref=[1,5,10]",
        "lif.I={start:0,stop:2,num:10}",
        "logger=none",
    ]
    record = run_lif_task(compose_config, tmp_path, overrides)
    assert record["status"] == "ok"
    ds = read_grid(tmp_path / "run")
    assert ds.spike_count.shape == (2, 3, 10)
    Is = torch.linspace(0, 2, 10)
    for Rm, tau_ref in [(1, 1), (1, 10), (50, 5)]:
        oracle = [
            int(torch.sum(run_LIF(I, T=1000, dt=1, Vth=1, Rm=Rm, tau_ref=tau_ref)[1] > 1))
            for I in Is
        ]
        # Selected by coordinate, as a reader of the file would.
        assert ds.spike_count.sel(Rm=Rm, tau_ref=tau_ref).values.tolist() == oracle
    metrics = record["metrics"]
    assert metrics["lif/neurons"] == 60 and metrics["lif/curves"] == 6
    assert metrics["lif/max_count"] == ds.spike_count.max()
    assert (tmp_path / "run" / "fi_curves.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not (tmp_path / "run" / "lif_grid.csv").exists()  # only with save_csv=true


def test_fi_figure_overlays_analytic_curves_in_count_units(compose_config, tmp_path):
    from mlplab.tasks.lif import fi_figure, run_grid

    cfg = compose_lif(compose_config, ["mode=fi", "fi.Rm=[1,100]", "fi.tau_ref=2"])
    spec = validate_lif_config(cfg)
    result = run_grid(spec)
    (ax,) = fi_figure(spec, result, [(0, 0), (1, 0)], "count").axes
    simulated, _, analytic, _, _ = ax.lines
    np.testing.assert_array_equal(simulated.get_ydata(), result.data.spike_count[0, 0].values)
    # Analytic rate (per ms) times the 1000 simulated ms: a spike count.
    x = analytic.get_xdata()
    expected = [1000 / (2 + 10 * math.log(i / (i - 1))) if i > 1 else 0.0 for i in x]
    np.testing.assert_allclose(analytic.get_ydata(), expected, rtol=1e-9)
    assert ax.get_ylabel() == "Spike count in 1000 ms"
    assert (ax.get_xlabel(), ax.get_title()) == (
        "I (mA)",
        "LIF transfer function\n(Cm=10 uF, Vth=1 V, T=1000 ms, dt=1 ms, euler)",
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["Rm=1 kOhm, tau_ref=2 ms", "Rm=100 kOhm, tau_ref=2 ms", "analytic (dashed)"]


def test_fi_legend_says_what_refractory_period_the_simulation_held(compose_config, tmp_path):
    # dt = 1 ms holds whole steps: 0.5 ms holds none (the curve saturates at 1000 Hz while the
    # dashed analytic curve uses 0.5 ms); 2.5 ms holds 2; 2 ms is itself.
    from mlplab.tasks.lif import fi_figure, run_grid

    cfg = compose_lif(compose_config, ["mode=fi", "fi.Rm=[1]", "fi.tau_ref=[0.5,2,2.5]"])
    spec = validate_lif_config(cfg)
    result = run_grid(spec)  # the task logs the RefractoryWarning as one line
    (ax,) = fi_figure(spec, result, [(0, 0), (0, 1), (0, 2)], "rate").axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "Rm=1 kOhm, tau_ref=0.5 ms (held 0 ms)",
        "Rm=1 kOhm, tau_ref=2 ms",
        "Rm=1 kOhm, tau_ref=2.5 ms (held 2 ms)",
        "analytic (dashed)",
    ]


# --- sweeps --------------------------------------------------------------------------------------


def test_closed_form_and_simulated_sweeps_agree_exactly(compose_config, tmp_path):
    base = [*SMALL_SWEEP, "lif.I={start:0,stop:2,num:20}", "dtype=float64", "logger=none"]
    counts = {}
    for how in ("simulate", "closed_form"):
        record = run_lif_task(compose_config, tmp_path / how, [*base, f"counts={how}"])
        assert record["status"] == "ok"
        counts[how] = read_grid(tmp_path / how / "run").spike_count.values
    assert counts["simulate"].shape == (6, 5, 20)
    np.testing.assert_array_equal(counts["simulate"], counts["closed_form"])
    assert counts["simulate"].max() > 100  # tau_ref=0 neurons fire fast: not a trivial grid


def test_exact_simulation_matches_analytic_rate_and_files_agree(compose_config, tmp_path):
    overrides = [
        *SMALL_SWEEP,
        "lif.I={start:0,stop:2,num:12}",
        "method=exact",
        "lif.dt=0.1",
        "rate_at_I=1.1",
        "save_csv=true",
    ]
    record = run_lif_task(compose_config, tmp_path, overrides)
    assert record["status"] == "ok"
    run_dir = tmp_path / "run"
    ds = read_grid(run_dir)
    Rm, tau_ref, I = ds.Rm.values, ds.tau_ref.values, ds.I.values
    assert Rm.tolist() == pytest.approx([1, 2.5119, 6.3096, 15.849, 39.811, 100], rel=1e-4)
    assert tau_ref.tolist() == [0, 1, 5, 20, 100]
    assert ds.attrs["steps"] == 10_000 and ds.attrs["method"] == "exact"
    assert (ds.attrs["T"], ds.attrs["dt"], ds.attrs["Cm"], ds.attrs["Vth"]) == (1000, 0.1, 10, 1)

    # The file is the grid the library computes for these settings, exactly.
    expected = transfer_grid(I, Rm, tau_ref, T=1000, dt=0.1, method="exact")
    xr.testing.assert_identical(ds, expected)

    # Simulated (exact integration, dt = 0.1 ms) against the continuous-time rate.
    counts, rate, analytic = ds.spike_count.values, ds.rate.values, ds.analytic_rate.values
    np.testing.assert_array_equal(rate, counts / 1.0)  # 1000 ms: Hz = count
    drive = Rm[:, None, None] * I[None, None, :] * np.ones((1, 5, 1))
    supra = drive > 1
    assert supra.sum() > 100
    error = np.abs(rate - analytic)
    assert np.all(error[supra] <= 0.02 * analytic[supra] + 1.0), error[supra].max()
    assert np.all(rate[~supra] == 0) and np.all(analytic[~supra] == 0)

    # The tidy CSV (save_csv=true): one row per neuron, Rm slowest, I fastest, same numbers.
    table = pd.read_csv(run_dir / "lif_grid.csv")
    assert list(table.columns) == [
        "Rm",
        "tau_ref",
        "I",
        "spike_count",
        "rate",
        "analytic_rate",
        "rate_error",
    ]
    grid = np.meshgrid(Rm, tau_ref, I, indexing="ij")
    for name, values in zip(("Rm", "tau_ref", "I"), grid, strict=True):
        np.testing.assert_array_equal(table[name], values.reshape(-1))
    np.testing.assert_array_equal(table["spike_count"], counts.reshape(-1))
    np.testing.assert_array_equal(table["rate"], rate.reshape(-1))
    # float32 columns are written as their shortest round-trip text: exact as float32.
    for name in ("analytic_rate", "rate_error"):
        column = table[name].to_numpy(dtype=np.float32)
        np.testing.assert_array_equal(column, ds[name].values.reshape(-1))

    # ... and the same numbers as metrics.json.
    metrics = record["metrics"]
    assert all(isinstance(v, int | float) for v in metrics.values())  # flat, for mlplab-report
    assert metrics["lif/neurons"] == counts.size == 360
    assert metrics["lif/steps"] == 10_000
    assert metrics["lif/mean_rate_hz"] == pytest.approx(rate.mean(), rel=1e-12)
    assert metrics["lif/max_rate_hz"] == rate.max()
    assert metrics["lif/max_abs_rate_error_hz"] == pytest.approx(
        np.abs(ds.rate_error.values).max(), rel=1e-12
    )
    assert metrics["lif/max_abs_rate_error_hz"] == pytest.approx(error.max(), rel=1e-6)
    assert metrics["lif/distance_to_relu_min"] == pytest.approx(
        np.nanmin(ds.distance_to_relu.values), rel=1e-12
    )
    assert metrics["lif/rate_at_I"] == pytest.approx(I[np.argmin(np.abs(I - 1.1))])
    for name in SWEEP_FIGURES:
        assert (run_dir / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE), name

    acc = EventAccumulator(str(tensorboard_run(run_dir)), size_guidance={"images": 0})
    acc.Reload()
    for key in ("lif/max_abs_rate_error_hz", "lif/neurons", "lif/distance_to_relu_max"):
        (event,) = acc.Scalars(key)
        assert event.value == pytest.approx(metrics[key], rel=1e-6)
    assert sorted(acc.Tags()["images"]) == sorted(f"figures/{n}" for n in SWEEP_FIGURES)
    assert (tensorboard_run(run_dir) / "hparams.yaml").read_text().startswith("mode: sweep")


def test_default_sweep_folder_is_under_5_mb_and_selects_like_spike_counts(compose_config, tmp_path):
    # The default grid (100 Rm x 100 tau_ref x 50 I, T=1000 ms, dt=1 ms) with every default
    # output: netCDF, four figures, TensorBoard events, metrics.json.
    record = run_lif_task(compose_config, tmp_path, ["counts=closed_form"])
    assert record["status"] == "ok" and record["metrics"]["lif/neurons"] == 500_000
    run_dir = tmp_path / "run"
    assert folder_bytes(run_dir) < 5_000_000, folder_bytes(run_dir)
    assert not list(run_dir.glob("*.csv")) and not list(run_dir.glob("*.npz"))
    ds = read_grid(run_dir)
    assert dict(ds.sizes) == {"Rm": 100, "tau_ref": 100, "I": 50}
    # Select Rm=50 by coordinate: the counts spike_counts gives for that point (float32, Euler).
    I = torch.tensor(ds.I.values)
    for tau_ref in (1.0, 37.0, 100.0):
        selected = ds.spike_count.sel(Rm=50, tau_ref=tau_ref).values
        np.testing.assert_array_equal(selected, spike_counts(I, 50.0, tau_ref).numpy())


def test_distance_to_relu_falls_as_Rm_grows_and_tau_ref_shrinks(compose_config, tmp_path):
    """The tutorial's Think! question: infinite Rm and small tau_ref make the neuron a ReLU."""
    overrides = [
        "lif.Rm={start:1,stop:100,num:8,log:true}",
        "lif.tau_ref={start:1,stop:100,num:8,log:true}",
        "method=exact",
        "lif.dt=0.1",
        "counts=closed_form",
        "logger=none",
    ]
    record = run_lif_task(compose_config, tmp_path, overrides)
    d = read_grid(tmp_path / "run").distance_to_relu.values  # (Rm, tau_ref)
    assert d.shape == (8, 8) and not np.isnan(d).any()
    # The extreme corners: large Rm, short refractory period against the opposite.
    assert d[-1, 0] < d[0, -1] / 5
    # Along tau_ref every curve bends more; along Rm the curves straighten on average.
    assert np.all(np.diff(d, axis=1) > 0)
    rm_means = d.mean(axis=1)
    assert rm_means[-1] < rm_means[0]
    assert np.corrcoef(np.arange(8), rm_means)[0, 1] < -0.9
    assert (np.diff(d, axis=0) < 0).mean() > 0.75
    assert record["metrics"]["lif/distance_to_relu_min"] == pytest.approx(d.min())


def test_coarse_euler_step_warns_once_naming_the_values(compose_config, tmp_path, caplog):
    overrides = ["lif.Cm=0.4", "lif.Rm=[1,2]", "lif.tau_ref=1", "counts=closed_form"]
    with caplog.at_level(logging.WARNING, logger="mlplab"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the library's own would fail here
        record = run_lif_task(compose_config, tmp_path, [*overrides, "logger=none"])
    assert record["status"] == "ok"
    (message,) = [r.getMessage() for r in caplog.records if r.name == "mlplab"]
    assert message.startswith(
        "lif.dt=1 ms is not small against the membrane time constant Rm*Cm=0.4 ms "
        "(smallest lif.Rm=1, lif.Cm=0.4): Euler's method is unstable"
    )
    assert message.endswith("use method=exact or lif.dt <= 0.04")
    caplog.clear()
    run_lif_task(compose_config, tmp_path, [*overrides, "method=exact", "logger=none"])
    assert not [r for r in caplog.records if r.name == "mlplab"]


def test_sweep_figures_have_units_a_log_rate_scale_and_the_stripes_caption(compose_config):
    from matplotlib.colors import LogNorm

    from mlplab.tasks.lif import run_grid, sweep_figures

    cfg = compose_lif(compose_config, ["lif.Rm.num=4", "lif.tau_ref.num=5", "lif.I.num=9"])
    spec = validate_lif_config(cfg)
    figures = sweep_figures(spec, run_grid(spec))
    assert sorted(figures) == sorted(SWEEP_FIGURES)
    rate_ax, rate_bar = figures["rate_heatmap"].axes
    assert rate_ax.get_title() == (
        "Firing rate at I=2 mA\n(Cm=10 uF, Vth=1 V, euler, dt=1 ms, T=1000 ms)"
    )
    assert isinstance(rate_ax.collections[0].norm, LogNorm)
    assert rate_bar.get_ylabel() == "simulated firing rate (Hz)"
    for name in ("rate_heatmap", "rate_error_heatmap", "distance_to_relu"):
        ax = figures[name].axes[0]
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("Rm (kOhm)", "tau_ref (ms)"), name
    assert figures["rate_error_heatmap"].axes[1].get_ylabel().endswith("(Hz)")
    distance_title = figures["distance_to_relu"].axes[0].get_title()
    assert distance_title.endswith("(Cm=10 uF, Vth=1 V, euler, dt=1 ms, T=1000 ms)")
    (caption,) = figures["distance_to_relu"].texts
    assert (
        caption.get_text()
        .replace("\n", " ")
        .startswith(
            "Stripes along tau_ref: each curve counts whole spikes in T=1000 ms (at most 10 at "
            "tau_ref=100 ms)"
        )
    )
    fi_ax = figures["fi_curves"].axes[0]
    assert fi_ax.get_title().startswith("LIF transfer function\n(Cm=10 uF, Vth=1 V, T=1000 ms")
    assert all(" kOhm, tau_ref=" in t.get_text() for t in fi_ax.get_legend().get_texts()[:-1])


def test_an_uneven_tau_ref_list_draws_equal_rows_ticked_by_value(compose_config):
    from matplotlib.collections import QuadMesh

    from mlplab.tasks.lif import run_grid, sweep_figures

    # As on the command line: lif.tau_ref=[1,2,50,100] (the README's list form).
    overrides = ["lif.Rm.num=4", "lif.tau_ref=[1,2,50,100]", "lif.I.num=9", "counts=closed_form"]
    spec = validate_lif_config(compose_lif(compose_config, overrides))
    figures = sweep_figures(spec, run_grid(spec))
    for name in ("rate_heatmap", "rate_error_heatmap", "distance_to_relu"):
        fig = figures[name]
        ax = fig.axes[0]
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        rows, columns = mesh.get_coordinates()[:, 0, 1], mesh.get_coordinates()[0, :, 0]
        np.testing.assert_array_equal(np.diff(rows), [1, 1, 1, 1])  # equal rows, none a sliver
        fig.canvas.draw()
        labels = [(t.get_position()[1], t.get_text()) for t in ax.get_yticklabels()]
        assert labels == [(0, "1"), (1, "2"), (2, "50"), (3, "100")], name
        assert ax.get_ylabel() == "tau_ref (ms)"
        # Rm = 1, 34, 67, 100 (the default's form, 4 values) is even: cells at their values.
        np.testing.assert_allclose(columns, [-15.5, 17.5, 50.5, 83.5, 116.5])


def test_refractory_warning_is_one_log_line_naming_the_keys(compose_config, tmp_path, caplog):
    overrides = ["lif.Rm=[1,10]", "lif.tau_ref=[0.5,1,2]", "lif.I.num=5", "logger=none"]
    with caplog.at_level(logging.WARNING, logger="mlplab"), warnings.catch_warnings():
        warnings.simplefilter("error", RefractoryWarning)  # the library's own would fail here
        record = run_lif_task(compose_config, tmp_path, [*overrides, "counts=closed_form"])
    assert record["status"] == "ok"
    (message,) = [r.getMessage() for r in caplog.records if r.name == "mlplab"]
    assert message.startswith(
        "lif.tau_ref and lif.dt: tau_ref=0.5 ms is shorter than the time step dt=1 ms: the model "
        "rounds the refractory period down to whole steps (tau_ref=0.5 ms holds 0 steps = 0 ms) "
        "and fires at most once per step"
    )
    assert message.endswith("use a dt that divides tau_ref, e.g. dt=0.5 ms")
    assert "\n" not in message
    # The figure says it too: the distance map's caption.
    from mlplab.tasks.lif import run_grid, stripes_caption

    spec = validate_lif_config(compose_lif(compose_config, overrides))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_grid(spec)
    assert "tau_ref is also not a whole number of steps of dt=1 ms" in stripes_caption(spec, result)

    # A multiple of dt: nothing said, and no such sentence in the caption.
    caplog.clear()
    whole = ["lif.Rm=[1,10]", "lif.tau_ref=[0.5,1,2]", "lif.dt=0.5", "lif.I.num=5", "logger=none"]
    with caplog.at_level(logging.WARNING, logger="mlplab"):
        assert run_lif_task(compose_config, tmp_path / "whole", whole)["status"] == "ok"
    assert not [r for r in caplog.records if r.name == "mlplab"]
    spec = validate_lif_config(compose_lif(compose_config, whole))
    assert "not a whole number" not in stripes_caption(spec, run_grid(spec))

    # In a trace, with the trace's keys.
    caplog.clear()
    trace = ["mode=trace", "trace.tau_ref=10.05", "logger=none"]
    with caplog.at_level(logging.WARNING, logger="mlplab"):
        assert run_lif_task(compose_config, tmp_path / "trace", trace)["status"] == "ok"
    (message,) = [r.getMessage() for r in caplog.records if r.name == "mlplab"]
    assert message.startswith(
        "trace.tau_ref and trace.dt: tau_ref=10.05 ms is not a whole number of time steps dt=0.1 ms"
    )


# --- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key", "shown"),
    [
        (["mode=movie"], "mode", "'movie'"),
        (["method=rk4"], "method", "'rk4'"),
        (["counts=guess"], "counts", "'guess'"),
        (["dtype=float16"], "dtype", "'float16'"),
        (["lif.Rm=0"], "lif.Rm", "0"),
        (["lif.Rm='[1,-5]'"], "lif.Rm", "'[1,-5]'"),
        (["lif.Rm='[]'"], "lif.Rm", "'[]'"),
        (["lif.Rm='[10,1]'"], "lif.Rm", "'[10,1]'"),
        (["lif.Rm=abc"], "lif.Rm", "'abc'"),
        (["lif.Rm.num=0"], "lif.Rm", "{'start': 1, 'stop': 100, 'num': 0, 'log': False}"),
        (["lif.Rm.start=200"], "lif.Rm", "{'start': 200, 'stop': 100, 'num': 100, 'log': False}"),
        (["lif.Rm.start=0", "lif.Rm.log=true"], "lif.Rm", "{'start': 0, 'stop': 100,"),
        (["lif.Rm.num=2.5"], "lif.Rm", "{'start': 1, 'stop': 100, 'num': 2.5,"),
        (["lif.tau_ref=-1"], "lif.tau_ref", "-1"),
        (["lif.I='[0,nan]'"], "lif.I", "'[0,nan]'"),
        (["lif.I=1"], "lif.I", "1"),
        (["lif.Cm=0"], "lif.Cm", "0"),
        (["lif.Cm=ten"], "lif.Cm", "'ten'"),
        (["lif.Vth=-1"], "lif.Vth", "-1"),
        (["lif.dt=0"], "lif.dt", "0"),
        (["lif.T=-5"], "lif.T", "-5"),
        (["lif.dt=2000"], "lif.dt", "2000"),
        (["lif.T=1e9"], "lif.dt", "1"),
        (["lif.Rm.num=1001", "lif.tau_ref.num=1000"], "lif", "'1001 Rm x 1000 tau_ref x 50 I'"),
        (["rate_at_I=3"], "rate_at_I", "3"),
        (["save_csv=maybe"], "save_csv", "'maybe'"),
        (["mode=fi", "fi.units=khz"], "fi.units", "'khz'"),
        (["mode=fi", "fi.Rm={start:1,stop:10,num:10}"], "fi.Rm", "'{start:1,stop:10,num:10}'"),
        (["mode=trace", "trace.dt=-0.1"], "trace.dt", "-0.1"),
        (["mode=trace", "trace.Rm=0"], "trace.Rm", "0"),
        (["mode=trace", "trace.tau_ref=-2"], "trace.tau_ref", "-2"),
        (["mode=trace", "trace.V_spike=-0.5"], "trace.V_spike", "-0.5"),
    ],
)
def test_bad_values_fail_before_work_naming_the_key(
    compose_config, tmp_path, capsys, overrides, key, shown
):
    cfg = compose_lif(compose_config, overrides)
    with pytest.raises(ConfigError) as err:
        validate_lif_config(cfg)
    assert err.value.key == key
    with pytest.raises(SystemExit) as exit_info:
        common.run_task(cfg, _lif_body, output_dir=tmp_path / "run", overrides=[], multirun=False)
    assert exit_info.value.code == 2
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "failed" and record["error_type"] == "ConfigError"
    assert record["error"].startswith(f"{key}={shown}")
    assert " is invalid: " in record["error"]
    assert record["metrics"] == {}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json"]
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"mlplab-lif: error: {key}=")


def test_a_failed_grid_write_on_the_writer_thread_fails_the_run(
    compose_config, tmp_path, monkeypatch, capsys
):
    # The netCDF file (and CSV) are written on a second thread while the figures render; its
    # error must reach the run (exit 1, metrics.json says failed), not vanish with the thread.
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lif_task, "save_grid", disk_full)
    cfg = compose_lif(compose_config, [*SMALL_SWEEP, "lif.I.num=5", "logger=none"])
    with pytest.raises(SystemExit) as exit_info:
        common.run_task(cfg, _lif_body, output_dir=tmp_path / "run", overrides=[], multirun=False)
    assert exit_info.value.code == 1
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("mlplab-lif: error: ") and "No space left" in line


# --- real console scripts ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_trace_and_fi_runs(tmp_path):
    proc = run_cli("lif", f"paths.log_dir={tmp_path}", "mode=trace", "trace.I=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "lif" / "runs").iterdir()
    record = read_metrics(run_dir)
    _, Vm_ref = run_LIF(3)
    assert record["metrics"]["lif/spike_count"] == int(torch.sum(Vm_ref > 1))
    assert (run_dir / "trace.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "I=3 mA, Rm=1 kOhm, Cm=10 uF, tau_ref=10 ms, T=50 ms:" in proc.stdout

    # A list on the command line replaces the default {start, stop, num, log} of lif.I.
    proc = run_cli(
        "lif",
        f"paths.log_dir={tmp_path / 'fi'}",
        "mode=fi",
        "fi.Rm=[1,50]",
        "fi.tau_ref=5",
        "lif.I=[0.5,1.5,2]",
        "logger=none",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "fi" / "lif" / "runs").iterdir()
    record = read_metrics(run_dir)
    assert record["overrides"][-2] == "lif.I='[0.5,1.5,2]'"
    ds = read_grid(run_dir)
    assert ds.I.values.tolist() == [0.5, 1.5, 2.0]
    for Rm in (1, 50):
        oracle = [
            int(torch.sum(run_LIF(I, T=1000, dt=1, Rm=Rm, tau_ref=5)[1] > 1))
            for I in (0.5, 1.5, 2.0)
        ]
        assert ds.spike_count.sel(Rm=Rm, tau_ref=5).values.tolist() == oracle
    assert (run_dir / "fi_curves.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_multirun_over_capacitance(tmp_path):
    proc = run_cli(
        "lif",
        "-m",
        "lif.Cm=5,10",
        "mode=sweep",
        f"paths.log_dir={tmp_path}",
        "lif.Rm.num=5",
        "lif.tau_ref=[1,10,100]",
        "lif.I.num=20",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (sweep_dir,) = (tmp_path / "lif" / "multiruns").iterdir()
    records = [read_metrics(sweep_dir / str(job)) for job in range(2)]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert [r["overrides"][0] for r in records] == ["lif.Cm=5", "lif.Cm=10"]
    for job, record in enumerate(records):
        assert record["metrics"]["lif/neurons"] == 5 * 3 * 20
        for name in SWEEP_FIGURES:
            assert (sweep_dir / str(job) / f"{name}.png").exists()
    # A smaller capacitance charges faster: more spikes.
    assert records[0]["metrics"]["lif/mean_rate_hz"] > records[1]["metrics"]["lif/mean_rate_hz"]
    # dt=1 against Rm*Cm=5 ms is coarse for Euler: said once, for that job only.
    output = proc.stdout + proc.stderr
    assert output.count("is not small against the membrane time constant") == 1
    assert "Rm*Cm=5 ms" in output


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_bad_value_exits_2_with_one_line(tmp_path):
    proc = run_cli("lif", f"paths.log_dir={tmp_path}", "lif.Rm=[0,1]", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mlplab-lif: error: lif.Rm='[0,1]' is invalid: every value must be > 0 (0 is not)"
    ]


# Libraries a sweep's outputs use (figures, the labelled grid, TensorBoard) and Lightning's.
_OUTPUT_LIBRARIES = ("matplotlib", "xarray", "pandas", "torch.utils.tensorboard")
_LIGHTNING = ("pytorch_lightning", "lightning_fabric", "torchmetrics")


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_sweep_imports_no_lightning_and_its_libraries_before_the_collector_runs(tmp_path):
    # The console script's own path in a fresh interpreter. The collector is off through
    # start-up; by its first collection the output libraries are imported (and were frozen with
    # start-up, not scanned while they were built), and nothing imported Lightning.
    code = f"""
import gc, sys
from mlplab.tasks.cli import lif
first = []
def note(phase, info):
    if phase == "start" and not first:
        first.append([m for m in {_OUTPUT_LIBRARIES!r} if m in sys.modules])
sys.argv = ["mlplab-lif", "mode=sweep", "counts=closed_form", *{SMALL_SWEEP!r},
            "paths.log_dir={tmp_path}"]
gc.callbacks.append(note)  # lif() turns the collector off first thing
lif()
print(first)
print([m for m in {_LIGHTNING!r} if m in sys.modules])
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    *_, at_first_collection, lightning = proc.stdout.strip().splitlines()
    assert at_first_collection == repr([list(_OUTPUT_LIBRARIES)])
    assert lightning == "[]"
    (run_dir,) = (tmp_path / "lif" / "runs").iterdir()
    assert read_metrics(run_dir)["status"] == "ok"
