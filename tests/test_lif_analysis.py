"""mlplab.neuron.analysis and .grid: axes, rates in Hz, the exact ReLU fit, labelled grids."""

# The tutorial names the input current I.
# ruff: noqa: E741

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from mlplab.neuron import (
    RefractoryWarning,
    analytic_rate,
    analytic_rate_hz,
    closed_form_counts,
    distance_to_relu,
    fit_relu,
    grid_axis,
    n_steps,
    rate_hz,
    save_netcdf,
    spike_counts,
    to_table,
    transfer_grid,
)
from mlplab.viz import plot_fi_curves
from tutorial import run_LIF


def brute_force_sse(I: torch.Tensor, r: torch.Tensor, points: int = 20_001) -> float:
    """Oracle: least-squares ReLU residual with the kink on a fine grid over its allowed range."""
    low = (I[0] - (I[-1] - I[0])).item()
    kinks = torch.linspace(low, I[-1].item(), points, dtype=torch.float64)
    X = torch.clamp(I.unsqueeze(0) - kinks.unsqueeze(1), min=0.0)
    sxx, sxr = (X * X).sum(1), X @ r
    sse = (r * r).sum() - torch.where(sxx > 0, sxr**2 / torch.where(sxx > 0, sxx, 1.0), 0.0)
    return sse.min().item()


# --- axes and units ------------------------------------------------------------------------------


def test_grid_axis_linear_log_and_single():
    assert torch.equal(grid_axis(0, 2, 5), torch.tensor([0, 0.5, 1, 1.5, 2], dtype=torch.float64))
    log = grid_axis(1, 100, 3, log=True)
    assert log.tolist() == [1.0, 10.0, 100.0]  # ends pinned exactly
    assert grid_axis(1, 100, 100)[-1].item() == 100.0
    assert grid_axis(5, 5, 1).tolist() == [5.0]
    # The tutorial's currents, torch.linspace(0, 2, 10), are the same float32 values.
    assert torch.equal(grid_axis(0, 2, 10).float(), torch.linspace(0, 2, 10))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1, 2, 0), "num=0"),
        ((2, 1, 3), "must be < stop"),
        ((1, 1, 3), "must be < stop"),
        ((0, 1, 3, True), "log-spaced"),
        ((0, math.inf, 3), "finite"),
    ],
)
def test_grid_axis_refuses(args, match):
    with pytest.raises(ValueError, match=match):
        grid_axis(*args)


@pytest.mark.parametrize(("T", "dt"), [(50, 0.1), (1000, 1), (1, 0.3), (10, 0.7), (2.5, 0.05)])
def test_n_steps_is_the_tutorial_time_grid_length(T, dt):
    assert n_steps(T, dt) == torch.arange(0, T + dt, dt).numel() - 1


def test_rates_in_hz():
    counts = torch.tensor([0, 1, 40])
    assert rate_hz(counts, 1000, 1).tolist() == [0.0, 1.0, 40.0]
    assert rate_hz(counts, 50, 0.1).tolist() == pytest.approx([0.0, 20.0, 800.0])
    # The tutorial's run_LIF(1.5) neuron: 1 / (tau_ref + Rm*Cm*ln(Rm*I / (Rm*I - Vth))) per ms.
    expected = 1000 / (10 + 10 * math.log(1.5 / 0.5))
    assert analytic_rate_hz(1.5, 1.0, 10.0, 10.0, 1.0).item() == pytest.approx(expected, rel=1e-12)
    grid = analytic_rate_hz(torch.linspace(0, 2, 5), torch.tensor([[1.0], [50.0]]), 5.0, 10, 1)
    assert grid.shape == (2, 5) and grid.dtype == torch.float64
    torch.testing.assert_close(
        grid,
        1000
        * analytic_rate(
            torch.linspace(0, 2, 5).double(), torch.tensor([[1.0], [50.0]]).double(), 10.0, 1.0, 5.0
        ),
    )


# --- the ReLU fit --------------------------------------------------------------------------------


@pytest.mark.parametrize("kink", [-1.5, -0.5, 0.0, 0.37, 1.0, 1.5])
@pytest.mark.parametrize("slope", [3.0, -2.0])
def test_exact_relus_have_distance_zero(kink, slope):
    I = torch.linspace(0, 2, 12, dtype=torch.float64)
    r = slope * torch.clamp(I - kink, min=0.0)
    fit = fit_relu(I, r)
    assert fit.distance.item() < 1e-7
    assert fit.slope.item() == pytest.approx(slope, rel=1e-9)
    if kink >= 0:  # below the first current only the line's root is determined: the same kink
        assert fit.kink.item() == pytest.approx(kink, abs=1e-9)
    else:
        assert fit.kink.item() == pytest.approx(kink, rel=1e-9)


def test_fit_equals_brute_force_and_reproduces_its_residual():
    gen = torch.Generator().manual_seed(0)
    for trial in range(40):
        n = 3 + trial % 9
        I = torch.sort(torch.rand(n, generator=gen, dtype=torch.float64) * 4 - 1).values
        if trial % 2:
            r = torch.randn(n, generator=gen, dtype=torch.float64)
        else:  # f-I-like: zero, then rising
            r = torch.cumsum(torch.rand(n, generator=gen, dtype=torch.float64), 0)
            r = r * (torch.rand(n, generator=gen) > 0.3)
        fit = fit_relu(I, r)
        if not bool(r.any()):
            assert math.isnan(fit.distance.item()) and fit.rms.item() == 0.0
            continue
        sse = fit.rms.item() ** 2 * n
        oracle = brute_force_sse(I, r)
        assert sse <= oracle + 1e-9  # exact: never worse than any kink of the grid
        assert sse == pytest.approx(oracle, rel=1e-3, abs=1e-6)  # and the grid gets close
        low = (I[0] - (I[-1] - I[0])).item()
        assert low - 1e-12 <= fit.kink.item() <= I[-1].item() + 1e-12
        predicted = fit.slope * torch.clamp(I - fit.kink, min=0.0)
        assert ((predicted - r) ** 2).sum().item() == pytest.approx(sse, rel=1e-9, abs=1e-12)
        peak = r.abs().max().item()
        assert fit.distance.item() == pytest.approx(math.sqrt(sse / n) / peak, rel=1e-12)


def test_fit_is_vectorised_over_leading_axes_and_silent_curves_are_nan():
    I = torch.linspace(0, 2, 8, dtype=torch.float64)
    curves = torch.stack([2 * torch.clamp(I - 0.5, min=0), torch.zeros(8), I**2]).reshape(3, 1, 8)
    fit = fit_relu(I, curves)
    assert fit.distance.shape == (3, 1)
    d = fit.distance.reshape(-1)
    assert d[0].item() < 1e-7 and math.isnan(d[1].item()) and 0.01 < d[2].item() < 0.2
    assert math.isnan(fit.kink[1, 0].item()) and fit.slope[1, 0].item() == 0.0
    for row in range(3):  # one curve at a time gives the same answer
        single = distance_to_relu(I, curves[row, 0])
        assert torch.equal(single.isnan(), d[row].isnan())
        if not single.isnan():
            assert single.item() == pytest.approx(d[row].item(), rel=1e-12, abs=1e-15)
    # Large blocks are split internally; the answer does not depend on it.
    many = torch.rand(3000, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(
        distance_to_relu(I, many)[:5].numpy(), distance_to_relu(I, many[:5]).numpy(), rtol=1e-12
    )


def test_fit_relu_refuses_bad_input():
    with pytest.raises(ValueError, match="strictly increasing"):
        fit_relu(torch.tensor([0.0, 0.0, 1.0]), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        fit_relu(torch.tensor([1.0]), torch.zeros(1))
    with pytest.raises(ValueError, match="last axis must have 3"):
        fit_relu(torch.tensor([0.0, 1.0, 2.0]), torch.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        fit_relu(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, math.nan, 1.0]))


def test_think_answer_on_the_continuous_neuron():
    """Rm -> inf and tau_ref -> 0 give a ReLU: rate -> I / (Cm*Vth) above a vanishing threshold."""
    I = torch.linspace(0, 2, 50, dtype=torch.float64)
    Rm = torch.tensor([1.0, 10.0, 100.0, 1e4]).view(-1, 1, 1)
    tau_ref = torch.tensor([0.0, 1.0, 10.0, 100.0]).view(1, -1, 1)
    d = distance_to_relu(I, analytic_rate_hz(I, Rm, tau_ref, 10.0, 1.0))
    assert d[-1, 0].item() < 1e-3  # a near-perfect integrator without refractoriness
    assert d[-1, 0].item() < d[0, -1].item() / 100
    assert bool((d.diff(dim=1) > 0).all())  # longer refractory periods bend every curve more
    # Larger Rm straightens the curves (up to 100; beyond, the refractory bend is all that is left).
    assert bool((d[:3, :2].diff(dim=0) < 0).all())


# --- figure option used by mlplab-lif ------------------------------------------------------------


def test_fi_curves_can_label_the_analytic_curves_once():
    currents = torch.linspace(0, 2, 5)
    curves = {"a": currents, "b": 2 * currents}
    fig = plot_fi_curves(currents, curves, dict(curves), label_each_analytic=False)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "analytic (dashed)"]
    assert len(ax.lines) == 5  # two curves, two dashed twins, one legend proxy without data
    assert len(ax.lines[-1].get_xdata()) == 0


# --- the grid as labelled data -------------------------------------------------------------------

# The tutorial's widget: T=1000 ms, dt=1 ms, Vth=1 V, I = linspace(0, 2, 10) mA.
WIDGET_I = torch.linspace(0, 2, 10)


def test_transfer_grid_is_labelled_and_selects_like_spike_counts():
    Rm, tau_ref = [1.0, 10.0, 50.0], [1.0, 5.0, 20.0, 100.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # whole steps, stable Euler: nothing to warn about
        ds = transfer_grid(WIDGET_I, Rm, tau_ref)
    assert dict(ds.sizes) == {"Rm": 3, "tau_ref": 4, "I": 10}
    assert ds.spike_count.dims == ("Rm", "tau_ref", "I")
    assert ds.distance_to_relu.dims == ("Rm", "tau_ref")
    units = {name: ds[name].attrs["units"] for name in ("Rm", "tau_ref", "I", "rate")}
    assert units == {"Rm": "kOhm", "tau_ref": "ms", "I": "mA", "rate": "Hz"}
    assert ds.analytic_rate.attrs["units"] == ds.rate_error.attrs["units"] == "Hz"
    assert {k: ds.attrs[k] for k in ("T", "dt", "Cm", "Vth", "method", "counts", "steps")} == {
        "T": 1000.0,
        "dt": 1.0,
        "Cm": 10.0,
        "Vth": 1.0,
        "method": "euler",
        "counts": "simulate",
        "steps": 1000,
    }
    assert ds.attrs["parameter_units"] == "T: ms, dt: ms, Cm: uF, Vth: V"
    assert ds.refractory_steps.values.tolist() == [1, 5, 20, 100]

    # Selecting by coordinate gives spike_counts at that point, and the tutorial's own counts.
    point = ds.spike_count.sel(Rm=50, tau_ref=5)
    assert point.values.tolist() == spike_counts(WIDGET_I, 50.0, 5.0).tolist()
    oracle = [int(torch.sum(run_LIF(I, T=1000, dt=1, Rm=50, tau_ref=5)[1] > 1)) for I in WIDGET_I]
    assert point.values.tolist() == oracle
    assert max(oracle) > 50

    # Rates in Hz from the counts over 1000 ms; the analytic rate and the difference in float32.
    np.testing.assert_array_equal(ds.rate.values, ds.spike_count.values * 1.0)
    I, R, tau = (torch.tensor(v, dtype=torch.float64) for v in (WIDGET_I.tolist(), Rm, tau_ref))
    analytic = analytic_rate_hz(I.view(1, 1, -1), R.view(-1, 1, 1), tau.view(1, -1, 1), 10, 1)
    assert ds.analytic_rate.dtype == ds.rate_error.dtype == np.float32
    np.testing.assert_array_equal(ds.analytic_rate.values, analytic.numpy().astype(np.float32))
    expected = (torch.from_numpy(ds.rate.values) - analytic).numpy().astype(np.float32)
    np.testing.assert_array_equal(ds.rate_error.values, expected)
    # A point by hand: Rm=1, tau_ref=1, I=2: 1000/(1 + 10 ln 2) Hz.
    assert ds.analytic_rate.sel(Rm=1, tau_ref=1, I=2.0).item() == pytest.approx(
        1000 / (1 + 10 * math.log(2)), rel=1e-7
    )
    fit = fit_relu(WIDGET_I, torch.from_numpy(ds.rate.values))
    np.testing.assert_array_equal(ds.distance_to_relu.values, fit.distance.numpy())
    np.testing.assert_array_equal(ds.relu_slope.values, fit.slope.numpy())
    np.testing.assert_array_equal(ds.relu_kink.values, fit.kink.numpy())


def test_transfer_grid_closed_form_equals_simulation_and_warns_off_grid():
    I, Rm, tau_ref = grid_axis(0, 3, 12), grid_axis(0.5, 40, 5, log=True), [0.0, 0.3, 2.0]
    kwargs = {"T": 100, "dt": 0.2, "method": "exact", "dtype": torch.float64}
    with pytest.warns(RefractoryWarning, match="^tau_ref=0.3 ms is not a whole number"):
        simulated = transfer_grid(I, Rm, tau_ref, counts="simulate", **kwargs)
    with pytest.warns(RefractoryWarning):
        closed = transfer_grid(I, Rm, tau_ref, counts="closed_form", **kwargs)
    xr.testing.assert_identical(simulated.drop_attrs(), closed.drop_attrs())
    assert simulated.refractory_steps.values.tolist() == [0, 1, 10]  # 0.3 ms held 1 step
    with pytest.warns(RefractoryWarning):
        expected = closed_form_counts(
            I.view(1, 1, -1), Rm.view(-1, 1, 1), torch.tensor(tau_ref).view(1, -1, 1), **kwargs
        )
    np.testing.assert_array_equal(closed.spike_count.values, expected.numpy())


def test_saved_netcdf_opens_with_xarray_equal_to_the_grid(tmp_path):
    ds = transfer_grid(WIDGET_I, [1.0, 10.0], [1.0, 2.0], counts="closed_form")
    path = save_netcdf(ds, tmp_path / "out" / "lif_grid.nc")
    assert sorted(p.name for p in path.parent.iterdir()) == ["lif_grid.nc"]  # no temporary left
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), ds)  # values, dtypes, coordinates, attributes
        assert back.spike_count.sel(Rm=10, tau_ref=2).values.tolist() == (
            spike_counts(WIDGET_I, 10.0, 2.0).tolist()
        )


def test_tidy_table_has_one_row_per_neuron():
    ds = transfer_grid(WIDGET_I, [1.0, 10.0], [1.0, 2.0, 3.0])
    table = to_table(ds)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == [
        "Rm",
        "tau_ref",
        "I",
        "spike_count",
        "rate",
        "analytic_rate",
        "rate_error",
    ]
    assert len(table) == 2 * 3 * 10
    Rm, tau, I = np.meshgrid([1.0, 10.0], [1.0, 2.0, 3.0], WIDGET_I.double(), indexing="ij")
    np.testing.assert_array_equal(table["Rm"], Rm.reshape(-1))  # Rm slowest, I fastest
    np.testing.assert_array_equal(table["tau_ref"], tau.reshape(-1))
    np.testing.assert_array_equal(table["I"], I.reshape(-1))
    np.testing.assert_array_equal(table["spike_count"], ds.spike_count.values.reshape(-1))
    np.testing.assert_array_equal(table["analytic_rate"], ds.analytic_rate.values.reshape(-1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"counts": "guess"}, "counts='guess' is invalid: counts must be one of"),
        ({"method": "rk4"}, "method='rk4' is invalid: method must be one of"),
        ({"I": [1.0]}, "I=[1.0] is invalid: I must hold at least 2 currents"),
        ({"I": [0.0, 2.0, 1.0]}, "I=[0.0, 2.0, 1.0] is invalid: I must be strictly increasing"),
        ({"Rm": [0.0, 1.0]}, "Rm=[0.0, 1.0] is invalid: every Rm must be > 0"),
        ({"tau_ref": [-1.0]}, "tau_ref=[-1.0] is invalid: every tau_ref must be >= 0"),
        (
            {"tau_ref": [1.0, math.nan]},
            "tau_ref=[1.0, nan] is invalid: every tau_ref must be finite",
        ),
        ({"Rm": [[1.0, 2.0]]}, "Rm has shape (1, 2): Rm must be a number or a non-empty 1-D"),
        ({"Rm": "big"}, "Rm='big' is invalid: Rm must be a number or a 1-D sequence"),
        ({"dt": 0}, "dt=0 is invalid: dt must be > 0"),
    ],
)
def test_transfer_grid_refuses_bad_input_naming_it(kwargs, message):
    args = {"I": [0.0, 1.0, 2.0], "Rm": 1.0, "tau_ref": 1.0, **kwargs}
    with pytest.raises(ValueError) as err:
        transfer_grid(args.pop("I"), args.pop("Rm"), args.pop("tau_ref"), **args)
    assert str(err.value).startswith(message)


def test_a_failed_netcdf_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    ds = transfer_grid(WIDGET_I, 1.0, 1.0)
    path = save_netcdf(ds, tmp_path / "lif_grid.nc")
    before = path.read_bytes()

    def half_written(self, target, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\x89HDF\r\n\x1a\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_netcdf(ds, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lif_grid.nc"]
    assert path.read_bytes() == before


def test_distance_map_stripes_come_from_whole_spike_counts():
    """The stripes along tau_ref that mlplab-lif's caption explains, measured on the default axes.

    With tau_ref a whole number of steps, rounding tau_ref plays no part: the stripes come from
    counting whole spikes in T (about 10 at tau_ref = 100 ms for T = 1000 ms). The analytic rates
    give a smooth map, and a 100 times longer T fades the stripes.
    """
    I, Rm, tau_ref = grid_axis(0, 2, 50), grid_axis(1, 100, 10), grid_axis(1, 100, 100)

    def stripes(d: np.ndarray) -> float:
        """Mean |second difference| along tau_ref over its long half (few spikes per curve)."""
        return float(np.abs(np.diff(d[:, 40:], n=2, axis=1)).mean())

    def simulated(T: float) -> float:
        return stripes(transfer_grid(I, Rm, tau_ref, T=T, counts="closed_form").distance_to_relu)

    rates = analytic_rate_hz(I, Rm.view(-1, 1, 1), tau_ref.view(1, -1, 1), 10.0, 1.0)
    smooth = stripes(distance_to_relu(I, rates).numpy())
    short, long = simulated(1000.0), simulated(100_000.0)
    assert short > 100 * smooth
    assert long < short / 10
