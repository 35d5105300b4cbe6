"""mlplab.neuron.analysis: grid axes, rates in Hz, and the exact least-squares ReLU fit."""

# The tutorial names the input current I.
# ruff: noqa: E741

import math

import numpy as np
import pytest
import torch

from mlplab.neuron import (
    analytic_rate,
    analytic_rate_hz,
    distance_to_relu,
    fit_relu,
    grid_axis,
    n_steps,
    rate_hz,
)
from mlplab.viz import plot_fi_curves


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
