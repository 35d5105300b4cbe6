"""Tests of mlplab.neuron.lif against the tutorial's own run_LIF and against each other."""

# The tutorial names the input current I.
# ruff: noqa: E741

import math
import warnings

import pytest
import torch

from mlplab.neuron.lif import (
    LIFResult,
    RefractoryWarning,
    analytic_rate,
    closed_form_counts,
    run_lif,
    simulate,
    spike_counts,
)
from tutorial import run_LIF

# For tests whose tau_ref is off the dt grid on purpose (the tutorial's widget sliders, random
# grids): both sides count the same rounded-down model, and the warning is tested below.
OFF_GRID = pytest.mark.filterwarnings("ignore::mlplab.neuron.lif.RefractoryWarning")


def tutorial_counts(Rm, tau_ref, Is):
    """The tutorial's plot_IF_curve counts: torch.sum(Vm > Vth) per current, T=1000, dt=1."""
    return torch.stack(
        [torch.sum(run_LIF(I, T=1000, dt=1, Vth=1, Rm=Rm, tau_ref=tau_ref)[1] > 1) for I in Is]
    )


def grid(n_rm, n_tau, n_i, rm=(1.0, 100.0), tau=(1.0, 100.0), current=(0.0, 2.0)):
    """Rm x tau_ref x I grid as broadcastable tensors, like the benchmark's."""
    return (
        torch.linspace(*current, n_i).view(1, 1, -1),
        torch.linspace(*rm, n_rm).view(-1, 1, 1),
        torch.linspace(*tau, n_tau).view(1, -1, 1),
    )


# ------------------------------------------------------------------------------ tutorial match


@OFF_GRID
@pytest.mark.parametrize(
    ("I", "kwargs"),
    [
        (1.5, {}),  # the tutorial's own example, run_LIF(1.5)
        (3.0, {"tau_ref": 2.05, "Rm": 2.0}),
        (1.2, {"T": 200, "dt": 1, "tau_ref": 5}),
    ],
)
def test_run_lif_trace_equals_tutorial(I, kwargs):
    time, Vm = run_lif(I, **kwargs)
    time_ref, Vm_ref = run_LIF(I, **kwargs)
    assert time.shape == time_ref.shape
    assert torch.allclose(time, time_ref.to(time.dtype), rtol=0, atol=0)
    assert torch.allclose(Vm, Vm_ref, rtol=0, atol=1e-7)
    spikes = (Vm > 1).nonzero().flatten()
    assert spikes.tolist() == (Vm_ref > 1).nonzero().flatten().tolist()
    assert spikes.numel() >= 2  # the comparison covers refractory periods


def test_run_lif_default_trace_numbers():
    time, Vm = run_lif(1.5)
    assert time.numel() == 501 and math.isclose(time[-1].item(), 50.0)
    # V_n = 1.5 (1 - 0.99**n) first reaches 1 at n = 110; then 100 steps at reset; again at 320.
    assert (Vm > 1).nonzero().flatten().tolist() == [110, 320]
    assert math.isclose(Vm[110].item(), 1.5 * (1 - 0.99**110) + 0.5, rel_tol=1e-5)
    assert torch.count_nonzero(Vm[111:211]) == 0 and Vm[211] > 0


@OFF_GRID
@pytest.mark.parametrize(
    ("Rm", "tau_ref"),
    [(1.0, 1.0), (1.0, 10.0), (5.0, 3.0), (12.5, 40.0), (37.3, 12.3), (100.0, 1.0), (100.0, 100.0)],
)
def test_counts_equal_tutorial_transfer_function(Rm, tau_ref):
    Is = torch.linspace(0, 2, 10)
    expected = tutorial_counts(Rm, tau_ref, Is)
    counts = spike_counts(Is, Rm, tau_ref, T=1000, dt=1, Vth=1)
    assert counts.dtype == torch.int64
    assert counts.tolist() == expected.tolist()


def test_counts_tutorial_defaults_by_hand():
    # Rm=1, tau_ref=10, I=2: V_n = 2 (1 - 0.9**n) crosses 1 at n=7, period 7 + 10 steps.
    counts = spike_counts(torch.linspace(0, 2, 10), 1.0, 10.0)
    assert counts[-1].item() == 1 + (1000 - 7) // 17
    assert counts[:5].tolist() == [0, 0, 0, 0, 0]  # Rm*I <= Vth never fires


# ---------------------------------------------------------------------------- closed form


@OFF_GRID
@pytest.mark.parametrize("method", ["euler", "exact"])
def test_closed_form_equals_simulation_dt1(method):
    I, Rm, tau = grid(30, 30, 20)
    simulated = spike_counts(I, Rm, tau, T=1000, dt=1, method=method, dtype=torch.float64)
    closed = closed_form_counts(I, Rm, tau, T=1000, dt=1, method=method)
    assert closed.shape == (30, 30, 20)
    assert torch.equal(closed, simulated)
    assert simulated.sum() > 10_000  # a grid that actually fires


@OFF_GRID
@pytest.mark.parametrize("method", ["euler", "exact"])
def test_closed_form_equals_simulation_dt01(method):
    I, Rm, tau = grid(8, 8, 12, rm=(0.5, 20.0), tau=(0.0, 3.0), current=(0.0, 4.0))
    simulated = spike_counts(I, Rm, tau, T=100, dt=0.1, method=method, dtype=torch.float64)
    closed = closed_form_counts(I, Rm, tau, T=100, dt=0.1, method=method)
    assert torch.equal(closed, simulated)
    assert simulated.max() >= 30


@pytest.mark.parametrize("method", ["euler", "exact"])
def test_closed_form_equals_simulation_at_threshold(method):
    # Rm*I == Vth exactly: the continuous voltage never reaches threshold, a float one may.
    Rm = torch.tensor([1.0, 2.0, 4.0, 0.5, 8.0]).view(-1, 1)
    I = torch.tensor([1.0, 0.5, 0.25, 2.0, 0.125]).view(-1, 1) * torch.tensor([1.0, 1 + 1e-12])
    for dtype in (torch.float64, torch.float32):
        simulated = spike_counts(I, Rm, 3.0, T=3000, dt=1, method=method, dtype=dtype)
        closed = closed_form_counts(I, Rm, 3.0, T=3000, dt=1, method=method, dtype=dtype)
        assert torch.equal(closed, simulated)


@OFF_GRID
def test_closed_form_float32_equals_float32_simulation():
    I, Rm, tau = grid(12, 6, 15)
    simulated = spike_counts(I, Rm, tau)
    assert torch.equal(closed_form_counts(I, Rm, tau, dtype=torch.float32), simulated)


def test_closed_form_euler_overshoot_regime_falls_back_and_warns():
    # dt >= Rm*Cm: Euler overshoots (a <= 0) and for dt >= 2 Rm Cm diverges.
    I = torch.linspace(-0.5, 20.0, 9).view(1, -1)
    Rm = torch.tensor([0.02, 0.05, 0.1, 0.15, 0.5]).view(-1, 1)  # Rm*Cm = 0.2 .. 5, dt = 1
    with pytest.warns(RuntimeWarning, match="method='exact'"):
        simulated = spike_counts(I, Rm, 2.0, T=200, dt=1, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="dt >= Rm\\*Cm"):
        closed = closed_form_counts(I, Rm, 2.0, T=200, dt=1)
    assert torch.equal(closed, simulated)
    # Diverging Euler (Rm*Cm = 0.2, a = -4) fires for every current although Rm*I <= 0.4 < Vth:
    # the warning is deserved.
    assert (simulated[0] > 0).all()


def test_no_warning_in_stable_regime():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spike_counts(torch.linspace(0, 2, 5), 1.0, 1.0, T=50)
        closed_form_counts(torch.linspace(0, 2, 5), 1.0, 1.0, T=50)


# ------------------------------------------------------------------------ refractory period


@OFF_GRID
def test_tau_ref_below_dt_resets_instead_of_running_away():
    _, Vm_ref = run_LIF(1.5, T=1000, dt=1, tau_ref=0.5)
    runaway = torch.sum(Vm_ref > 1).item()
    assert runaway > 900  # the tutorial spikes on (nearly) every step once it first fires
    result = simulate(1.5, 1.0, 0.5, T=1000, dt=1, record=[0])
    trace = result.traces[0]
    assert torch.isfinite(trace).all()
    assert trace.max().item() <= 1.0 + 0.15 + 0.5  # at most one Euler step above Vth, plus spike
    # V_n = 1.5 (1 - 0.9**n) crosses 1 at n = 11; no refractory steps: a spike every 11 steps.
    assert result.counts.item() == 1000 // 11
    assert result.counts.item() <= 1000


def test_refractory_steps_follow_tau_over_dt_for_decimal_inputs():
    # 0.7 / 0.1 = 6.999999999999999 in binary; the hold is the intended 7 steps.
    result = simulate(5.0, 1.0, 0.7, T=20, dt=0.1, record=[0])
    trace = result.traces[0]
    first = int((trace > 1).nonzero()[0])
    held = trace[first + 1 :]
    assert torch.count_nonzero(held[:7]) == 0
    assert held[7] > 0


def test_tutorial_float_grid_jitters_where_tau_over_dt_is_whole():
    # Documented difference: on its float32 grid, tau_ref=2, dt=0.1 holds the tutorial for 20
    # steps after some spikes and 19 after others; we always hold 20.
    _, Vm_ref = run_LIF(3.0, T=50, dt=0.1, tau_ref=2.0, Rm=2.0)
    _, Vm = run_lif(3.0, T=50, dt=0.1, tau_ref=2.0, Rm=2.0)

    def zeros_after(trace):
        spikes = (trace > 1).nonzero().flatten().tolist()
        return {int((trace[s + 1 :] != 0).nonzero()[0]) for s in spikes[:-1]}

    assert zeros_after(Vm_ref) == {19, 20}
    assert zeros_after(Vm) == {20}


def test_issue_example_tau_ref_below_dt_warns_and_saturates_at_one_spike_per_step():
    # I=50, Rm=1: the continuous neuron fires at 1/(0.25 + 10 ln(50/49)) per ms = 2212 Hz.
    analytic_hz = 1000 / (0.25 + 10 * math.log(50 / 49))
    assert analytic_rate(50.0, 1.0, 10.0, 1.0, 0.25).item() * 1000 == pytest.approx(analytic_hz)
    with pytest.warns(RefractoryWarning) as record:
        counts = spike_counts(50.0, 1.0, 0.25, T=1000, dt=1, method="exact")
    assert counts.item() == 1000  # a spike on every step: at most one per step
    (warning,) = record
    assert warning.filename == __file__  # points at the caller's line
    assert str(warning.message) == (
        "tau_ref=0.25 ms is shorter than the time step dt=1 ms: the model rounds the refractory "
        "period down to whole steps (tau_ref=0.25 ms holds 0 steps = 0 ms) and fires at most "
        "once per step (at most 1000 Hz), which moves rates near saturation; use a dt that "
        "divides tau_ref, e.g. dt=0.25 ms"
    )
    # The suggested dt: no warning; held 1 step, 1 step to threshold: a spike every 0.5 ms.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RefractoryWarning)
        assert spike_counts(50.0, 1.0, 0.25, T=1000, dt=0.25, method="exact").item() == 2000


def test_tau_ref_just_below_a_step_halves_the_saturated_rate_and_warns():
    # 0.999 holds 0 steps, 1.0 holds 1: twice the spikes at saturation.
    with pytest.warns(RefractoryWarning, match=r"^tau_ref=0\.999 ms is shorter than the time"):
        counts = spike_counts(50.0, 1.0, torch.tensor([0.999, 1.0]), T=1000, dt=1)
    assert counts.tolist() == [1000, 500]


@pytest.mark.parametrize(
    ("tau_ref", "dt", "start"),
    [
        (1.5, 1.0, "tau_ref=1.5 ms is not a whole number of time steps dt=1 ms"),
        (0.75, 0.1, "tau_ref=0.75 ms is not a whole number of time steps dt=0.1 ms"),
        (
            [0.5, 1.0, 2.5, 3.0],
            1.0,
            "2 tau_ref values are not whole numbers of time steps dt=1 ms (0.5, 2.5 ms; 1 shorter "
            "than dt): the model rounds",
        ),
        (
            [0.2, 0.5, 3.0],
            1.0,
            "2 tau_ref values are not whole numbers of time steps dt=1 ms (0.2, 0.5 ms; 2 shorter "
            "than dt): the model rounds",
        ),
    ],
)
def test_refractory_warning_for_non_multiples_from_every_entry_point(tau_ref, dt, start):
    tau = torch.tensor(tau_ref, dtype=torch.float64).view(-1, 1)
    for count in (spike_counts, closed_form_counts):
        with pytest.warns(RefractoryWarning) as record:
            count(torch.linspace(0, 3, 4), 1.0, tau, T=20, dt=dt)
        (warning,) = record
        assert str(warning.message).startswith(start)
        assert warning.filename == __file__
    if tau.numel() == 1:
        with pytest.warns(RefractoryWarning, match="whole number of time steps"):
            run_lif(3.0, T=20, dt=dt, tau_ref=tau_ref)


def test_refractory_warning_names_several_values_sorted_then_how_many_more():
    # Eight off-grid values, given unsorted with repeats and whole ones mixed in: the first five
    # by size are named, then how many more, and the rest of the message is as for one value.
    tau = torch.tensor([7.5, 1.0, 0.25, 3.5, 0.25, 2.5, 6.5, 2.0, 1.5, 5.5, 4.5]).double()
    with pytest.warns(RefractoryWarning) as record:
        spike_counts(torch.linspace(0, 3, 4), 1.0, tau.view(-1, 1), T=20, dt=1.0)
    (warning,) = record
    assert str(warning.message) == (
        "8 tau_ref values are not whole numbers of time steps dt=1 ms (0.25, 1.5, 2.5, 3.5, 4.5 "
        "ms and 3 more; 1 shorter than dt): the model rounds the refractory period down to whole "
        "steps (tau_ref=0.25 ms holds 0 steps = 0 ms) and fires at most once per step (at most "
        "1000 Hz), which moves rates near saturation; use a dt that divides every tau_ref, "
        "e.g. dt=0.25 ms"
    )
    # Exactly five: all named, nothing "more".
    with pytest.warns(RefractoryWarning, match=r"\(1\.5, 2\.5, 3\.5, 4\.5, 5\.5 ms\): the"):
        spike_counts(1.0, 1.0, torch.tensor([1.5, 2.5, 3.5, 4.5, 5.5]), T=20, dt=1.0)


@pytest.mark.parametrize(
    ("tau_ref", "dt"),
    [
        ([0.0, 1.0, 2.0, 100.0], 1.0),  # 0 is whole (no hold)
        ([0.7, 10.0, 2.0], 0.1),  # 0.7/0.1 = 6.999999999999999: 7 steps
        ([1.0, 1e9, math.inf], 1.0),  # holds beyond the run end it either way
        ([0.25, 0.5], 0.25),
    ],
)
def test_no_refractory_warning_for_whole_steps(tau_ref, dt):
    tau = torch.tensor(tau_ref, dtype=torch.float64).view(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RefractoryWarning)
        simulated = spike_counts(torch.linspace(0, 3, 4), 1.0, tau, T=20, dt=dt)
        closed = closed_form_counts(torch.linspace(0, 3, 4), 1.0, tau, T=20, dt=dt)
        simulate(3.0, 1.0, tau, T=20, dt=dt, record=[0])
        run_lif(3.0, T=20, dt=dt, tau_ref=tau_ref[0])
    assert torch.equal(simulated, closed)


def test_refractory_hold_in_the_trace_matches_tau_ref():
    result = simulate(2.0, 1.0, 10.0, T=100, dt=1, record=[0])
    trace = result.traces[0]
    spikes = (trace > 1).nonzero().flatten().tolist()
    assert spikes[:3] == [7, 24, 41]  # 7 steps to threshold + 10 held
    assert torch.count_nonzero(trace[8:18]) == 0 and trace[18] > 0


# ------------------------------------------------------------------------------- analytic


def test_analytic_rate_hand_computed():
    # Rm*I = 2, Vth = 1: t* = Rm Cm ln 2.
    rate = analytic_rate(2.0, 1.0, 10.0, 1.0, 10.0)
    assert math.isclose(rate.item(), 1 / (10 + 10 * math.log(2)), rel_tol=1e-6)
    # Rm*I = 3, Vth = 1, Rm*Cm = 50: t* = 50 ln 1.5.
    rate = analytic_rate(torch.tensor(0.6, dtype=torch.float64), 5.0, 10.0, 1.0, 2.0)
    assert rate.dtype == torch.float64
    assert math.isclose(rate.item(), 1 / (2 + 50 * math.log(1.5)), rel_tol=1e-12)
    # tau_ref = 0: rate = 1 / (Rm Cm ln(Rm I / (Rm I - Vth))).
    rate = analytic_rate(4.0, 1.0, 1.0, 2.0, 0.0)
    assert math.isclose(rate.item(), 1 / math.log(2), rel_tol=1e-6)


def test_analytic_rate_zero_below_threshold_without_nan_or_warnings():
    I = torch.tensor([-1.0, 0.0, 0.5, 1.0, 1.0 + 1e-6, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rate = analytic_rate(I.view(-1, 1), torch.tensor([1.0, 2.0]), 10.0, 1.0, 10.0)
    assert rate.shape == (6, 2)
    assert torch.isfinite(rate).all()
    assert rate[:4, 0].tolist() == [0.0, 0.0, 0.0, 0.0]  # Rm*I <= Vth, including equality
    assert rate[4:, 0].gt(0).all()
    assert rate[:3, 1].tolist() == [0.0, 0.0, 0.0]  # Rm=2 fires from I > 0.5
    assert rate[3:, 1].gt(0).all()


def test_exact_simulation_matches_analytic_rate():
    Rm = torch.tensor([1.0, 2.0, 5.0]).view(-1, 1, 1)
    tau = torch.tensor([10.0, 20.0]).view(1, -1, 1)
    scale = torch.tensor([1.05, 1.2, 1.5, 2.0, 3.0, 5.0]).view(1, 1, -1)
    I = scale / Rm  # suprathreshold: Rm*I = 1.05 .. 5 Vth
    counts = spike_counts(I, Rm, tau, T=1000, dt=0.1, method="exact")
    simulated_hz = counts.double() / 1000 * 1000  # counts per ms -> Hz
    analytic_hz = analytic_rate(I.double(), Rm.double(), 10.0, 1.0, tau.double()) * 1000
    assert analytic_hz.min() > 5
    assert ((simulated_hz - analytic_hz).abs() <= 0.02 * analytic_hz + 1.0).all()


# ---------------------------------------------------------------------------- traces / shapes


@OFF_GRID
def test_traces_only_for_recorded_neurons():
    I, Rm, tau = grid(4, 5, 6)
    mask = torch.zeros(4, 5, 6, dtype=torch.bool)
    mask[0, 0, 5] = mask[3, 4, 5] = mask[2, 1, 3] = True
    result = simulate(I, Rm, tau, T=100, dt=1, record=mask)
    assert isinstance(result, LIFResult)
    assert result.counts.shape == (4, 5, 6)
    assert result.time.shape == (101,)
    assert result.traces.shape == (3, 101)
    assert result.recorded.tolist() == [5, 69, 119]  # row-major order of the mask
    for row, (i, j, k) in enumerate([(0, 0, 5), (2, 1, 3), (3, 4, 5)]):
        _, Vm = run_lif(I[0, 0, k], T=100, dt=1, tau_ref=tau[0, j, 0], Rm=Rm[i, 0, 0])
        assert torch.equal(result.traces[row], Vm)
        assert result.counts[i, j, k].item() == int((Vm > 1).sum())


def test_traces_by_flat_index_and_none():
    I, Rm, tau = grid(3, 3, 4)
    result = simulate(I, Rm, tau, T=50, dt=1, record=[7, 0, 7])
    assert result.traces.shape == (3, 51)
    assert torch.equal(result.traces[0], result.traces[2])
    assert simulate(I, Rm, tau, T=50, dt=1).traces is None


@OFF_GRID
def test_large_grid_chunks_agree_with_small_grid():
    # Bigger than one worker's minimum, so the grid is split over chunks (and threads).
    I, Rm, tau = grid(40, 40, 50)
    counts = spike_counts(I, Rm, tau, T=60, dt=1)
    part = spike_counts(I[..., 10:13], Rm[5:8], tau[:, 20:23], T=60, dt=1)
    assert counts.shape == (40, 40, 50)
    assert torch.equal(counts[5:8, 20:23, 10:13], part)
    assert torch.equal(counts, closed_form_counts(I, Rm, tau, T=60, dt=1, dtype=torch.float32))
    # Traces of neurons in different chunks come back in the order asked for.
    picks = [79_999, 0, 45_123]
    result = simulate(I, Rm, tau, T=60, dt=1, record=picks)
    assert torch.equal(result.counts, counts)
    for row, flat in enumerate(picks):
        i, j, k = flat // 2000, flat // 50 % 40, flat % 50
        _, Vm = run_lif(I[0, 0, k], T=60, dt=1, tau_ref=tau[0, j, 0], Rm=Rm[i, 0, 0])
        assert torch.equal(result.traces[row], Vm)


def test_spike_counts_equal_simulate_counts_and_broadcast():
    counts = spike_counts(torch.tensor([1.2, 1.8]), torch.tensor([[1.0], [3.0]]), 4.0, T=200)
    assert counts.shape == (2, 2)
    full = simulate(torch.tensor([1.2, 1.8]), torch.tensor([[1.0], [3.0]]), 4.0, T=200).counts
    assert torch.equal(counts, full)
    per_cm = spike_counts(1.5, 1.0, 4.0, T=200, Cm=torch.tensor([5.0, 10.0, 20.0]))
    assert per_cm.tolist() == [
        spike_counts(1.5, 1.0, 4.0, T=200, Cm=c).item() for c in (5.0, 10.0, 20.0)
    ]
    assert per_cm[0] > per_cm[1] > per_cm[2]  # a faster membrane fires more


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dt": -1.0}, "dt"),
        ({"dt": 0}, "dt"),
        ({"T": 0}, "T"),
        ({"T": -5.0}, "T"),
        ({"Cm": 0.0}, "Cm"),
        ({"Cm": torch.tensor([10.0, -1.0])}, "Cm"),
        ({"Rm": 0.0}, "Rm"),
        ({"Rm": torch.tensor([1.0, -1.0])}, "Rm"),
        ({"Rm": float("nan")}, "Rm"),
        ({"tau_ref": -1.0}, "tau_ref"),
        ({"tau_ref": torch.tensor([[1.0], [-0.5]])}, "tau_ref"),
        ({"method": "rk4"}, "method"),
        ({"Vth": 0.0}, "Vth"),
        ({"I": float("inf")}, "I"),
        ({"dtype": torch.float16}, "dtype"),
    ],
)
@pytest.mark.parametrize("function", [simulate, spike_counts, closed_form_counts])
def test_bad_parameters_raise_value_error_naming_them(function, kwargs, name):
    args = {"I": 1.5, "Rm": 1.0, "tau_ref": 2.0, "T": 10.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        function(args.pop("I"), args.pop("Rm"), args.pop("tau_ref"), **args)


def test_error_messages_say_what_is_allowed():
    with pytest.raises(ValueError, match=r"^dt=-1\.0 is invalid: dt must be > 0$"):
        spike_counts(1.5, 1.0, 2.0, dt=-1.0)
    with pytest.raises(ValueError, match="method must be one of 'euler', 'exact'"):
        closed_form_counts(1.5, 1.0, 2.0, method="rk4")
    with pytest.raises(ValueError, match=r"Rm contains -1\.0.*must be > 0"):
        spike_counts(1.5, torch.tensor([1.0, -1.0]), 2.0)
    with pytest.raises(ValueError, match=r"tau_ref=-1\.0 is invalid: tau_ref must be >= 0"):
        simulate(1.5, 1.0, -1.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"dt": 0.0}, "dt"), ({"Rm": -2.0}, "Rm"), ({"tau_ref": -1}, "tau_ref"), ({"Cm": 0}, "Cm")],
)
def test_run_lif_and_analytic_rate_validate(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        run_lif(1.5, **kwargs)
    rate_args = {"I": 1.5, "Rm": 1.0, "Cm": 10.0, "Vth": 1.0, "tau_ref": 2.0}
    if name in rate_args:
        rate_args.update(kwargs)
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            analytic_rate(**rate_args)


def test_bad_record_raises():
    with pytest.raises(ValueError, match="record"):
        simulate(torch.ones(3), 1.0, 1.0, T=10, record=[3])
    with pytest.raises(ValueError, match="record"):
        simulate(torch.ones(3), 1.0, 1.0, T=10, record=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="one neuron"):
        run_lif(torch.ones(2))
