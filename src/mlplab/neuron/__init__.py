"""The leaky integrate-and-fire neuron of the tutorial's bonus section.

``lif`` simulates grids of neurons (and counts their spikes in closed form); ``analysis`` reads
the grids: axes, rates in Hz, and the distance of each transfer curve to its best ReLU; ``grid``
returns a whole Rm x tau_ref x I grid as a labelled ``xarray.Dataset`` and saves it as netCDF.

``grid``'s names are imported on first use: xarray and pandas take longer to import than the
rest of the package, and a single trace does not need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mlplab.neuron.analysis import (
    ReluFit,
    analytic_rate_hz,
    distance_to_relu,
    fit_relu,
    grid_axis,
    n_steps,
    rate_hz,
)
from mlplab.neuron.lif import (
    LIFResult,
    RefractoryWarning,
    analytic_rate,
    closed_form_counts,
    run_lif,
    simulate,
    spike_counts,
)

if TYPE_CHECKING:
    from mlplab.neuron.grid import save_netcdf, to_table, transfer_grid

_LAZY = {"save_netcdf", "to_table", "transfer_grid"}

__all__ = [
    "LIFResult",
    "RefractoryWarning",
    "ReluFit",
    "analytic_rate",
    "analytic_rate_hz",
    "closed_form_counts",
    "distance_to_relu",
    "fit_relu",
    "grid_axis",
    "n_steps",
    "rate_hz",
    "run_lif",
    "save_netcdf",
    "simulate",
    "spike_counts",
    "to_table",
    "transfer_grid",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("mlplab.neuron.grid"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
