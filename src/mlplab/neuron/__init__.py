"""The leaky integrate-and-fire neuron of the tutorial's bonus section.

``lif`` simulates grids of neurons (and counts their spikes in closed form); ``analysis`` reads
the grids: axes, rates in Hz, and the distance of each transfer curve to its best ReLU.
"""

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
    analytic_rate,
    closed_form_counts,
    run_lif,
    simulate,
    spike_counts,
)

__all__ = [
    "LIFResult",
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
    "simulate",
    "spike_counts",
]
