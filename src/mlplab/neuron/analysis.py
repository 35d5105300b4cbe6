"""Reading LIF parameter grids: grid axes, rates in Hz, and how close an f-I curve is to a ReLU.

Units follow the tutorial: time in msec, so :func:`mlplab.neuron.lif.analytic_rate` is in spikes
per msec and a spike count over ``n_steps * dt`` msec is ``1000 * count / (n_steps * dt)`` Hz.

The tutorial's Think! question asks what happens at infinite membrane resistance and small
refractory time. :func:`distance_to_relu` makes the answer measurable: it fits each transfer
(f-I) curve with its best ReLU, ``r(I) ~ a * max(0, I - b)``, by least squares over both ``a``
and ``b``, and reports the RMS residual relative to the curve's maximum. With ``Rm -> inf`` the
neuron integrates without leak and fires at ``I / (Cm*Vth + tau_ref*I)``, which is ``I/(Cm*Vth)``
(a ReLU) as ``tau_ref -> 0``; the distance falls along both directions.
"""

# The tutorial names the input current I.
# ruff: noqa: E741

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mlplab.neuron.lif import _serial_kernels, analytic_rate

__all__ = [
    "MS_PER_S",
    "ReluFit",
    "analytic_rate_hz",
    "distance_to_relu",
    "fit_relu",
    "grid_axis",
    "n_steps",
    "rate_hz",
]

MS_PER_S = 1000.0
# Curves per block in fit_relu: a block holds a few (curves, n_currents) float64 temporaries.
_FIT_BLOCK_ELEMENTS = 1 << 21


def grid_axis(start: float, stop: float, num: int, log: bool = False) -> Tensor:
    """``num`` values from ``start`` to ``stop`` (both included), evenly or geometrically spaced.

    Args:
        start: First value.
        stop: Last value (>= start; > start when num > 1).
        num: Number of values (>= 1; 1 gives ``[start]``).
        log: Geometric spacing (start must be > 0).

    Returns:
        A float64 tensor of shape (num,), strictly increasing.

    Raises:
        ValueError: If the values cannot form such an axis.
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num={num!r} is invalid: num must be an integer >= 1")
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ValueError("start and stop must be finite numbers")
    if num > 1 and not start < stop:
        raise ValueError(f"start={start!r} must be < stop={stop!r} when num > 1")
    if log and start <= 0:
        raise ValueError(f"start={start!r} must be > 0 for a log-spaced axis")
    if num == 1:
        return torch.tensor([float(start)], dtype=torch.float64)
    if log:
        values = torch.logspace(math.log10(start), math.log10(stop), num, dtype=torch.float64)
    else:
        values = torch.linspace(start, stop, num, dtype=torch.float64)
    # Pin the ends exactly (logspace rounds them), so a grid contains the values a user wrote.
    values[0], values[-1] = float(start), float(stop)
    return values


def n_steps(T: float, dt: float) -> int:
    """Update steps of the tutorial's time grid ``torch.arange(0, T + dt, dt)``: its length - 1.

    Computed like arange computes its length (in double precision), without building the grid.
    """
    if not (T > 0 and dt > 0):
        raise ValueError(f"T={T!r} and dt={dt!r} must be > 0")
    return math.ceil((T + dt) / dt) - 1


def rate_hz(counts: Tensor, T: float, dt: float) -> Tensor:
    """Spike counts over the simulated ``n_steps(T, dt) * dt`` msec as rates in Hz (float64)."""
    duration_ms = n_steps(T, dt) * dt
    return counts.to(torch.float64) * (MS_PER_S / duration_ms)


def analytic_rate_hz(
    I: Tensor | float, Rm: Tensor | float, tau_ref: Tensor | float, Cm: float, Vth: float
) -> Tensor:
    """The continuous-time LIF rate of :func:`~mlplab.neuron.lif.analytic_rate` in Hz (float64).

    Args:
        I: Input current (broadcastable).
        Rm: Membrane resistance (> 0, broadcastable).
        tau_ref: Refractory period in msec (>= 0, broadcastable).
        Cm: Membrane capacitance (> 0).
        Vth: Spike threshold (> 0).
    """
    as64 = [torch.as_tensor(x, dtype=torch.float64) for x in (I, Rm, Cm, Vth, tau_ref)]
    return analytic_rate(*as64) * MS_PER_S


@dataclass(frozen=True)
class ReluFit:
    """Least-squares ReLU fit ``r(I) ~ slope * max(0, I - kink)`` of each curve (leading shape).

    Attributes:
        slope: ``a`` of the best fit (0 for a curve that is identically 0).
        kink: ``b`` of the best fit, in ``[I[0] - (I[-1] - I[0]), I[-1]]``; below ``I[0]``
            when a straight line fits best; NaN for a curve that is identically 0.
        rms: Root-mean-square residual of the best fit over the sampled currents.
        distance: ``rms / max|r|``; NaN for a curve that is identically 0 (silent neuron: there
            is no shape to compare, so it is neither close to nor far from a ReLU).
    """

    slope: Tensor
    kink: Tensor
    rms: Tensor
    distance: Tensor


def fit_relu(I: Tensor, rates: Tensor) -> ReluFit:
    """Fit every curve ``rates[..., :]`` sampled at currents ``I`` with its best ReLU.

    The kink may lie anywhere from one current range left of ``I[0]`` up to ``I[-1]``: without a
    bound, a kink far to the left with a tiny slope would pass any constant off as a ReLU. The fit
    is exact (no grid over the kink). For a kink ``b`` the points with ``I > b`` are
    fitted by a line through ``(b, 0)`` and the others by 0, so the squared residual is the
    sum over inactive points plus a linear least-squares residual. Two kinds of candidates cover
    every ``b``: kinks at a sampled current (slope in closed form), and kinks strictly between two
    neighbouring currents (or below the first), where the active set is fixed and the best line
    is the ordinary affine fit of the active points, valid when its root lies in that interval
    (otherwise the optimum over that interval sits at one of its ends, a candidate of the first
    kind). The best candidate is the global least-squares fit.

    Args:
        I: Sampled currents, shape (n,), strictly increasing, n >= 2.
        rates: Curves of shape (..., n), e.g. rates over a (Rm, tau_ref) grid.

    Returns:
        A :class:`ReluFit` whose tensors have the leading shape ``rates.shape[:-1]`` (float64).

    Raises:
        ValueError: If ``I`` is not strictly increasing with at least 2 values, or shapes differ.
    """
    I = torch.as_tensor(I, dtype=torch.float64).reshape(-1)
    rates = torch.as_tensor(rates, dtype=torch.float64)
    n = I.numel()
    if n < 2 or not bool((I[1:] > I[:-1]).all()):
        raise ValueError("I must hold at least 2 strictly increasing currents")
    if rates.shape[-1:] != (n,):
        raise ValueError(
            f"rates has shape {tuple(rates.shape)}: its last axis must have {n} values"
        )
    if not bool(torch.isfinite(rates).all()):
        raise ValueError("rates must be finite")
    lead = rates.shape[:-1]
    flat = rates.reshape(-1, n)
    block = max(1, _FIT_BLOCK_ELEMENTS // n)
    # Many small elementwise ops: single-threaded kernels, like the simulator (OpenMP barriers in
    # every op cost more than they save here, and far more on a busy machine).
    with _serial_kernels():
        parts = [_fit_block(I, flat[i : i + block]) for i in range(0, flat.shape[0], block)]
    if parts:
        slope, kink, sse = (torch.cat(p) for p in zip(*parts, strict=True))
    else:
        slope = kink = sse = flat.new_empty(0)
    rms = torch.sqrt(sse / n)
    peak = flat.abs().amax(dim=1) if flat.shape[0] else flat.new_empty(0)
    silent = peak == 0
    distance = torch.where(silent, torch.nan, rms / torch.where(silent, 1.0, peak))
    kink = torch.where(silent, torch.nan, kink)
    return ReluFit(*(t.reshape(lead) for t in (slope, kink, rms, distance)))


def distance_to_relu(I: Tensor, rates: Tensor) -> Tensor:
    """RMS residual of each curve's best ReLU fit relative to the curve's maximum (see fit_relu).

    0 for a curve that is exactly a ReLU on the sampled currents; NaN for a curve that is
    identically 0.
    """
    return fit_relu(I, rates).distance


def _fit_block(I: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Best (slope, kink, squared residual) of each row of ``r`` (m, n): see :func:`fit_relu`."""
    n = I.numel()
    # Centre the currents: the fits do not change, and the sums below lose no precision to a
    # large common offset (e.g. currents 1000..1002).
    shift = I.mean()
    x = I - shift
    total = (r * r).sum(dim=1, keepdim=True)  # (m, 1)

    # Kinks at the lowest allowed kink and at each sampled current x_k: active points i > k,
    # regressor (x_i - x_k).
    lowest = x[0] - (x[-1] - x[0])
    kinks_at = torch.cat([lowest.reshape(1), x])
    relu = torch.clamp(x.unsqueeze(0) - kinks_at.unsqueeze(1), min=0.0)  # (k, i)
    sxx = (relu * relu).sum(dim=1)  # (k,)
    sxr = r @ relu.T  # (m, k)
    has = sxx > 0
    safe_sxx = torch.where(has, sxx, 1.0)
    slope_at = torch.where(has, sxr / safe_sxx, 0.0)
    sse_at = total - torch.where(has, sxr * sxr / safe_sxx, 0.0)
    kink_at = (kinks_at + shift).expand_as(sse_at)

    # Kinks strictly inside (x_{k-1}, x_k) for k = 0..n-1 (x_{-1} = the lowest kink): active
    # points i >= k.
    active = (torch.arange(n).unsqueeze(0) >= torch.arange(n).unsqueeze(1)).to(r.dtype)  # (k, i)
    count = active.sum(dim=1)  # (k,) = n - k
    s_x = active @ x
    s_xx = active @ (x * x)
    s_r = r @ active.T  # (m, k)
    s_xr = (r * x) @ active.T
    s_rr = (r * r) @ active.T
    xx_c = s_xx - s_x * s_x / count  # centred sums of the affine fit
    xr_c = s_xr - s_x * s_r / count
    rr_c = s_rr - s_r * s_r / count
    two = xx_c > 0  # at least two distinct active currents
    safe_xx = torch.where(two, xx_c, 1.0)
    line_slope = xr_c / safe_xx
    intercept = (s_r - line_slope * s_x) / count
    nonzero = line_slope != 0
    root = -intercept / torch.where(nonzero, line_slope, 1.0)
    lower = torch.cat([lowest.reshape(1), x[:-1]])
    inside = two & nonzero & (root > lower) & (root < x)
    sse_line = (total - s_rr) + rr_c - torch.where(two, xr_c * xr_c / safe_xx, 0.0)
    # One active point (k = n-1): a line through (b, 0) and (x_k, r_k) for any b in the interval
    # fits it exactly; take the midpoint.
    single = count == 1
    mid = (lower[-1] + x[-1]) / 2
    sse_line = torch.where(single, total - s_rr, sse_line)
    root = torch.where(single, mid, root)
    line_slope = torch.where(single, s_r / (x[-1] - mid), line_slope)
    valid = inside | single
    sse_line = torch.where(valid, sse_line, torch.inf)

    sse = torch.cat([sse_at, sse_line], dim=1)
    slopes = torch.cat([slope_at, line_slope], dim=1)
    kinks = torch.cat([kink_at, (root + shift).expand_as(sse_line)], dim=1)
    best = sse.argmin(dim=1, keepdim=True)
    best_sse = sse.gather(1, best).squeeze(1)
    # Cancellation leaves a perfect fit a few ulps of the total off 0 (either side).
    tiny = best_sse <= 64 * torch.finfo(r.dtype).eps * total.squeeze(1)
    best_sse = torch.where(tiny, 0.0, best_sse)
    return slopes.gather(1, best).squeeze(1), kinks.gather(1, best).squeeze(1), best_sse
