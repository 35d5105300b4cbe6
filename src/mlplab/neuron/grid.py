"""Transfer functions of a grid of LIF neurons as labelled data (an ``xarray.Dataset``).

:func:`transfer_grid` counts the spikes of every (Rm, tau_ref, I) neuron of a grid (the tutorial's
transfer-function widget, over whole axes at once), and returns them with the simulated and
analytic rates, their difference and each f-I curve's distance to its best ReLU, labelled by
coordinates with units, so a notebook can ``ds.sel(Rm=50)`` and plot a slice.
:func:`save_netcdf` writes it compressed, atomically; ``xarray.open_dataset(path)`` reads it back
equal. :func:`to_table` is its tidy table (one row per neuron) as a pandas DataFrame.

Units are the tutorial's: ms, kOhm, uF, V, mA; rates in Hz.
"""

# The tutorial names the input current I.
# ruff: noqa: E741

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from numpy.typing import ArrayLike

from mlplab.neuron import analysis
from mlplab.neuron.lif import (
    METHODS,
    _refractory_steps,
    _serial_kernels,
    closed_form_counts,
    spike_counts,
)

__all__ = ["COUNT_METHODS", "UNITS", "save_netcdf", "to_table", "transfer_grid"]

COUNT_METHODS = ("simulate", "closed_form")
# Units of the coordinates, the variables and the run's parameters (the tutorial's).
UNITS = {
    "Rm": "kOhm",
    "tau_ref": "ms",
    "I": "mA",
    "T": "ms",
    "dt": "ms",
    "Cm": "uF",
    "Vth": "V",
    "rate": "Hz",
}
# The variables over (Rm, tau_ref, I), i.e. the columns of the tidy table.
NEURON_VARIABLES = ("spike_count", "rate", "analytic_rate", "rate_error")
# zlib level of the netCDF variables: level 1 is within 5 % of level 9's size on LIF grids (the
# analytic rates hardly compress at any level) at a fraction of its time.
_COMPRESSION = {"zlib": True, "complevel": 1, "shuffle": True}


def _axis(name: str, values: ArrayLike, minimum: float | None, strict: bool) -> np.ndarray:
    """A 1-D, finite, strictly increasing float64 axis (a single number gives one value)."""
    try:
        axis = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
        axis = axis.astype(np.float64).reshape(-1) if axis.ndim <= 1 else axis
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}={values!r} is invalid: {name} must be a number or a 1-D sequence of numbers"
        ) from None
    if axis.ndim != 1 or axis.size == 0:
        raise ValueError(
            f"{name} has shape {axis.shape}: {name} must be a number or a non-empty 1-D sequence"
        )
    if not np.all(np.isfinite(axis)):
        raise ValueError(f"{name}={axis.tolist()} is invalid: every {name} must be finite")
    if np.any(np.diff(axis) <= 0):
        raise ValueError(f"{name}={axis.tolist()} is invalid: {name} must be strictly increasing")
    if minimum is not None and not bool(np.all(axis > minimum if strict else axis >= minimum)):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name}={axis.tolist()} is invalid: every {name} must be {bound}")
    return axis


def transfer_grid(
    I: ArrayLike,
    Rm: ArrayLike,
    tau_ref: ArrayLike,
    *,
    T: float = 1000.0,
    dt: float = 1.0,
    Cm: float = 10.0,
    Vth: float = 1.0,
    method: str = "euler",
    counts: str = "simulate",
    dtype: torch.dtype = torch.float32,
) -> xr.Dataset:
    """Spike counts, rates and distance to a ReLU of every neuron of a Rm x tau_ref x I grid.

    The counts are the tutorial's ``torch.sum(Vm > Vth)`` over ``T`` (see
    :func:`~mlplab.neuron.lif.spike_counts`; ``counts="closed_form"`` gives the same numbers from
    :func:`~mlplab.neuron.lif.closed_form_counts` without time stepping). The analytic rate is the
    continuous-time LIF's ``1/(tau_ref + Rm*Cm*ln(Rm*I/(Rm*I - Vth)))`` (Dayan & Abbott,
    Theoretical Neuroscience, ch. 5.4, with a refractory period), 0 where ``Rm*I <= Vth``. The
    distance to a ReLU is :func:`~mlplab.neuron.analysis.fit_relu`'s relative RMS residual of each
    simulated f-I curve.

    Args:
        I: Input currents (mA), shape (n_I,), strictly increasing, at least 2 (an f-I curve).
        Rm: Membrane resistances (kOhm), shape (n_Rm,) or a number, strictly increasing, > 0.
        tau_ref: Refractory periods (ms), shape (n_tau,) or a number, strictly increasing, >= 0.
            Held for ``floor(tau_ref/dt)`` whole steps: see the RefractoryWarning.
        T: Total time to simulate (ms, > 0).
        dt: Time step (ms, > 0).
        Cm: Membrane capacitance (uF, > 0).
        Vth: Spike threshold (V, > 0).
        method: ``"euler"`` (the tutorial's update) or ``"exact"``.
        counts: ``"simulate"`` or ``"closed_form"`` (identical counts).
        dtype: Arithmetic of the simulation, ``torch.float32`` (the tutorial's) or float64.

    Returns:
        A Dataset with dimension coordinates ``Rm``, ``tau_ref``, ``I`` (units in their
        ``units`` attributes), the coordinate ``refractory_steps`` (along tau_ref, the whole steps
        held), the variables

        - ``spike_count`` (Rm, tau_ref, I), int64: spikes in the ``steps * dt`` ms simulated;
        - ``rate`` (Rm, tau_ref, I), float64 Hz: ``spike_count`` per simulated second;
        - ``analytic_rate`` (Rm, tau_ref, I), float32 Hz: the continuous-time rate;
        - ``rate_error`` (Rm, tau_ref, I), float32 Hz: ``rate - analytic_rate`` (in float64, then
          rounded; float32 keeps 7 digits, far below the simulated rates' step of 1000/T Hz, and
          halves the saved file);
        - ``distance_to_relu``, ``relu_slope`` (Hz/mA), ``relu_kink`` (mA), all (Rm, tau_ref):
          the best ReLU fit of each f-I curve (NaN for a silent curve);

        and the run's parameters ``T``, ``dt``, ``Cm``, ``Vth``, ``method``, ``counts``,
        ``dtype``, ``steps`` as attributes (``parameter_units`` gives their units).

    Raises:
        ValueError: If an axis or parameter is invalid (the message names it and what is allowed).

    Warns:
        RefractoryWarning: When some ``tau_ref/dt`` is not a whole number of steps.
        RuntimeWarning: For ``method="euler"`` with ``dt >= Rm*Cm``.
    """
    if counts not in COUNT_METHODS:
        allowed = ", ".join(repr(c) for c in COUNT_METHODS)
        raise ValueError(f"counts={counts!r} is invalid: counts must be one of {allowed}")
    if method not in METHODS:  # named here too: the attributes below record it
        allowed = ", ".join(repr(m) for m in METHODS)
        raise ValueError(f"method={method!r} is invalid: method must be one of {allowed}")
    I_axis = _axis("I", I, None, strict=True)
    if I_axis.size < 2:
        raise ValueError(f"I={I_axis.tolist()} is invalid: I must hold at least 2 currents")
    Rm_axis = _axis("Rm", Rm, 0.0, strict=True)
    tau_axis = _axis("tau_ref", tau_ref, 0.0, strict=False)
    I_t, Rm_t, tau_t = (torch.from_numpy(a) for a in (I_axis, Rm_axis, tau_axis))
    count = spike_counts if counts == "simulate" else closed_form_counts
    n = count(
        I_t.view(1, 1, -1),
        Rm_t.view(-1, 1, 1),
        tau_t.view(1, -1, 1),
        T=T,
        dt=dt,
        Cm=Cm,
        Vth=Vth,
        method=method,
        dtype=dtype,
    )
    steps = analysis.n_steps(T, dt)
    with _serial_kernels():
        rate = analysis.rate_hz(n, T, dt)
        analytic = analysis.analytic_rate_hz(
            I_t.view(1, 1, -1), Rm_t.view(-1, 1, 1), tau_t.view(1, -1, 1), Cm, Vth
        ).expand(n.shape)
        error = (rate - analytic).to(torch.float32)
        fit = analysis.fit_relu(I_t, rate)
        held = _refractory_steps(tau_t, float(dt), steps)

    neuron = ("Rm", "tau_ref", "I")
    curve = ("Rm", "tau_ref")
    hz = UNITS["rate"]
    data = {
        "spike_count": (neuron, n.numpy(), {"long_name": f"spike count in {steps * dt:g} ms"}),
        "rate": (neuron, rate.numpy(), {"long_name": "simulated firing rate", "units": hz}),
        "analytic_rate": (
            neuron,
            analytic.to(torch.float32).numpy(),
            {"long_name": "continuous-time (analytic) firing rate", "units": hz},
        ),
        "rate_error": (
            neuron,
            error.numpy(),
            {"long_name": "simulated minus analytic firing rate", "units": hz},
        ),
        "distance_to_relu": (
            curve,
            fit.distance.numpy(),
            {"long_name": "RMS residual of the best ReLU fit / max rate", "units": "1"},
        ),
        "relu_slope": (
            curve,
            fit.slope.numpy(),
            {"long_name": "slope of the best ReLU fit", "units": f"{hz}/{UNITS['I']}"},
        ),
        "relu_kink": (
            curve,
            fit.kink.numpy(),
            {"long_name": "kink of the best ReLU fit", "units": UNITS["I"]},
        ),
    }
    coords = {
        "Rm": ("Rm", Rm_axis, {"long_name": "membrane resistance", "units": UNITS["Rm"]}),
        "tau_ref": (
            "tau_ref",
            tau_axis,
            {"long_name": "refractory period", "units": UNITS["tau_ref"]},
        ),
        "I": ("I", I_axis, {"long_name": "input current", "units": UNITS["I"]}),
        "refractory_steps": (
            "tau_ref",
            held.numpy(),
            {"long_name": "whole time steps held at reset after a spike", "units": "1"},
        ),
    }
    attrs = {
        "title": "LIF neuron transfer functions (NMA W1D3 Tutorial 1, Bonus)",
        "T": float(T),
        "dt": float(dt),
        "Cm": float(Cm),
        "Vth": float(Vth),
        "method": method,
        "counts": counts,
        "dtype": str(dtype).removeprefix("torch."),
        "steps": steps,
        "parameter_units": ", ".join(f"{k}: {UNITS[k]}" for k in ("T", "dt", "Cm", "Vth")),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def save_netcdf(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as a zlib-compressed netCDF-4 file, atomically (temporary file, then rename).

    ``xarray.open_dataset(path)`` reads it back equal, attributes included. The default sweep's
    grid (100 x 100 x 50 neurons) takes about 2.8 MB. Written by netCDF-C (the netCDF4 package),
    which releases the GIL while it compresses.

    Args:
        ds: A Dataset such as :func:`transfer_grid`'s.
        path: Destination file (``.nc``); its folder is created if missing.

    Returns:
        The destination path.
    """
    encoding = {name: dict(_COMPRESSION) for name in ds.data_vars}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Like mlplab.io.atomic_write, but netCDF-C writes to a file name, not to a Python handle.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_table(ds: xr.Dataset) -> pd.DataFrame:
    """The tidy table of a grid: one row per neuron, Rm slowest and I fastest.

    Columns ``Rm``, ``tau_ref``, ``I``, then ``spike_count``, ``rate``, ``analytic_rate`` and
    ``rate_error`` (those of ``ds`` present); units as in the Dataset's attributes.
    """
    names = [name for name in NEURON_VARIABLES if name in ds.data_vars]
    return ds[names].reset_coords(drop=True).to_dataframe().reset_index()
