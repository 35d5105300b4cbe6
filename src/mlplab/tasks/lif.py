"""mlplab-lif: the tutorial's leaky integrate-and-fire neuron (Bonus section) as a Hydra task.

Three modes (``mode=``):

- ``trace``: one neuron's membrane voltage over time; by default the tutorial's ``run_LIF(1.5)``.
- ``fi``: transfer (f-I) curves, spike count or rate against I, for each (Rm, tau_ref) pair, with
  the continuous-time analytic rate overlaid in the same units.
- ``sweep``: spike counts over a whole Rm x tau_ref x I grid in one vectorised call, saved as
  ``.npz`` and a tidy CSV, with rate heatmaps and the distance of each f-I curve to its best ReLU
  (the tutorial's Think! question, made measurable).

Start-up time matters (a sweep of the default grid runs in a few seconds), so this module imports
neither Lightning nor torchmetrics, and matplotlib and TensorBoard only when they are needed.
"""

# The tutorial names the input current I.
# ruff: noqa: E741

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from mlplab.io import atomic_write
from mlplab.neuron import analysis

# _serial_kernels: the simulator's single-threaded-kernels context, reused for our own small ops.
from mlplab.neuron.lif import _serial_kernels, closed_form_counts, simulate, spike_counts
from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("mlplab")

MODES = ("trace", "fi", "sweep")
METHODS = ("euler", "exact")
COUNT_METHODS = ("simulate", "closed_form")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
FI_UNITS = ("count", "hz")
# Neurons of one grid: counts, rates, analytic rates and the simulator's state take ~50 bytes
# per neuron at the peak, so 5e7 neurons need ~2.5 GB.
MAX_NEURONS = 50_000_000
# Time steps: the time grid is materialised (float32/64); a trace also stores and draws each step.
MAX_STEPS = 10_000_000
MAX_TRACE_STEPS = 1_000_000
# Curves of one f-I figure (each with its analytic twin); beyond this use mode=sweep.
MAX_FI_CURVES = 12
# Euler is called inaccurate when dt exceeds this fraction of the membrane time constant Rm*Cm.
EULER_ACCURATE_FRACTION = 0.1
# Points of the analytic curves in f-I figures (drawn on a finer grid than the simulated currents).
ANALYTIC_POINTS = 401
# Rows formatted at a time when writing the tidy CSV, and decimals of its analytic rates.
CSV_BLOCK_ROWS = 1 << 19
ANALYTIC_DECIMALS = 6
CSV_COLUMNS = ("Rm", "tau_ref", "I", "count", "rate_hz", "analytic_rate_hz")
# Grid axes: a list (or dict) given for them on the command line is quoted by main().
AXIS_KEYS = ("lif.Rm", "lif.tau_ref", "lif.I", "fi.Rm", "fi.tau_ref")
_AXIS_ALLOWED = (
    "must be a number, a non-empty list of increasing numbers, or {start, stop, num, log}"
)
# The library's own warning for Euler with dt >= Rm*Cm; the task says it once, with the keys.
_LIBRARY_EULER_WARNING = r"method='euler' with dt >= Rm\*Cm"


# ------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class Axis:
    """One checked grid axis: strictly increasing float64 values, drawn on a log scale or not."""

    values: Tensor
    log: bool

    def __len__(self) -> int:
        return self.values.numel()


@dataclass(frozen=True)
class GridSpec:
    """The checked settings of an fi or sweep run (a grid of neurons)."""

    mode: str
    method: str
    counts: str
    dtype: str
    Rm: Axis
    tau_ref: Axis
    I: Axis
    Cm: float
    Vth: float
    T: float
    dt: float
    units: str
    rate_at_I: float | None  # noqa: N815 -- the config key

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.Rm), len(self.tau_ref), len(self.I)

    @property
    def key(self) -> str:
        """Config node of the (Rm, tau_ref) axes: ``fi`` in fi mode, ``lif`` in a sweep."""
        return "fi" if self.mode == "fi" else "lif"


@dataclass(frozen=True)
class TraceSpec:
    """The checked settings of a trace run (one neuron, the tutorial's run_LIF parameters)."""

    method: str
    dtype: str
    I: float
    T: float
    dt: float
    tau_ref: float
    Rm: float
    Cm: float
    Vth: float
    V_spike: float


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_axis(value: Any, minimum: float | None = None, strict: bool = True) -> Axis:
    """Read a grid axis: a number, a list of increasing numbers or ``{start, stop, num, log}``.

    A string holding a list or a dict (what ``main`` makes of ``lif.Rm=[1,10,100]`` on the command
    line) is read as YAML data; nothing is evaluated.

    Args:
        value: The config value.
        minimum: Lower bound of every value (None: any finite number).
        strict: The bound is exclusive (``> minimum``) rather than inclusive.

    Raises:
        ValueError: Saying what is allowed.
    """
    if isinstance(value, str):
        value = _parse_text(value)
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if _is_number(value):
        values, log_scale = [value], False
    elif isinstance(value, list | tuple):
        values = list(value)
        if not values:
            raise ValueError(f"{_AXIS_ALLOWED}; the list is empty")
        if not all(_is_number(v) for v in values):
            raise ValueError(f"{_AXIS_ALLOWED}; every list item must be a number")
        if not all(b > a for a, b in itertools.pairwise(values)):
            raise ValueError(f"{_AXIS_ALLOWED}; the list must be strictly increasing")
        # Lists spanning two decades or more are drawn on a log scale, like log-spaced ranges.
        log_scale = min(values) > 0 and max(values) / min(values) >= 100
    elif isinstance(value, dict):
        values, log_scale = _range_values(value)
    else:
        raise ValueError(_AXIS_ALLOWED)
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{_AXIS_ALLOWED}; every value must be finite")
    if minimum is not None:
        ok = tensor > minimum if strict else tensor >= minimum
        if not bool(ok.all()):
            first = tensor[~ok][0].item()
            raise ValueError(
                f"every value must be {'>' if strict else '>='} {minimum:g} ({first:g} is not)"
            )
    return Axis(tensor, log_scale)


def _parse_text(text: str) -> Any:
    """A list or dict written in Hydra's command-line grammar (``[1,1e3]``, ``{start:1,...}``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    stripped = text.strip()
    if not stripped.startswith(("[", "{")):
        raise ValueError(_AXIS_ALLOWED)
    try:
        override = OverridesParser.create().parse_override(f"axis={stripped}")
        if override.is_sweep_override():
            raise ValueError("a sweep")
        return override.value()
    except Exception as err:  # the grammar's parse errors of all kinds
        raise ValueError(f"{_AXIS_ALLOWED}; {stripped!r} is not a list or dict") from err


def _range_values(node: dict) -> tuple[list[float], bool]:
    """The values of ``{start, stop, num, log}`` (log optional, false by default)."""
    unknown = sorted(set(map(str, node)) - {"start", "stop", "num", "log"})
    if unknown:
        raise ValueError(f"{_AXIS_ALLOWED}; unknown key {unknown[0]!r}")
    missing = [k for k in ("start", "stop", "num") if k not in node]
    if missing:
        raise ValueError(f"{_AXIS_ALLOWED}; {missing[0]!r} is missing")
    start, stop, num, log_scale = node["start"], node["stop"], node["num"], node.get("log", False)
    if not (_is_number(start) and _is_number(stop)):
        raise ValueError("start and stop must be numbers")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an integer >= 1 (got {num!r})")
    if not isinstance(log_scale, bool):
        raise ValueError(f"log must be true or false (got {log_scale!r})")
    if num > MAX_NEURONS:
        raise ValueError(f"num must be <= {MAX_NEURONS} (got {num})")
    if start > stop:
        raise ValueError(f"start={start!r} must be <= stop={stop!r}")
    if num > 1 and start == stop:
        raise ValueError(f"start must be < stop when num > 1 (both are {start!r})")
    if log_scale and start <= 0:
        raise ValueError(f"a log-spaced axis needs start > 0 (got start={start!r})")
    return analysis.grid_axis(float(start), float(stop), num, log_scale).tolist(), log_scale


def _check_axis(cfg: DictConfig, key: str, minimum: float | None, strict: bool = True) -> Axis:
    return common.check_with(cfg, key, lambda v: parse_axis(v, minimum, strict))


def _check_time(cfg: DictConfig, prefix: str, max_steps: int) -> tuple[float, float]:
    """``<prefix>.T`` and ``<prefix>.dt``: positive, dt <= T, and not too many steps."""
    T = common.check_float(cfg, f"{prefix}.T", low=0.0, low_open=True)
    dt = common.check_float(cfg, f"{prefix}.dt", low=0.0, low_open=True)
    if dt > T:
        raise ConfigError(
            f"{prefix}.dt", common.get(cfg, f"{prefix}.dt"), f"must be <= {prefix}.T={T:g}"
        )
    steps = analysis.n_steps(T, dt)
    if steps > max_steps:
        raise ConfigError(
            f"{prefix}.dt",
            common.get(cfg, f"{prefix}.dt"),
            f"{prefix}.T/{prefix}.dt gives {steps} time steps; at most {max_steps} are allowed",
        )
    return T, dt


def validate_lif_config(cfg: DictConfig) -> GridSpec | TraceSpec:
    """Check every value the chosen mode uses before any work starts (ConfigError names the key)."""
    mode = common.check_choice(cfg, "mode", MODES)
    method = common.check_choice(cfg, "method", METHODS)
    dtype = common.check_choice(cfg, "dtype", DTYPES)
    if mode == "trace":
        return _validate_trace(cfg, method, dtype)
    counts = common.check_choice(cfg, "counts", COUNT_METHODS)
    node = "fi" if mode == "fi" else "lif"
    Rm = _check_axis(cfg, f"{node}.Rm", 0.0)
    tau_ref = _check_axis(cfg, f"{node}.tau_ref", 0.0, strict=False)
    I = _check_axis(cfg, "lif.I", None)
    if len(I) < 2:
        raise ConfigError(
            "lif.I", common.get(cfg, "lif.I"), "must hold at least 2 currents (an f-I curve)"
        )
    Cm = common.check_float(cfg, "lif.Cm", low=0.0, low_open=True)
    Vth = common.check_float(cfg, "lif.Vth", low=0.0, low_open=True)
    T, dt = _check_time(cfg, "lif", MAX_STEPS)
    neurons = len(Rm) * len(tau_ref) * len(I)
    if neurons > MAX_NEURONS:
        raise ConfigError(
            node,
            f"{len(Rm)} Rm x {len(tau_ref)} tau_ref x {len(I)} I",
            f"the grid has {neurons} neurons; at most {MAX_NEURONS} fit in memory",
        )
    units, rate_at_I = "hz", None
    if mode == "fi":
        units = common.check_choice(cfg, "fi.units", FI_UNITS)
        curves = len(Rm) * len(tau_ref)
        if curves > MAX_FI_CURVES:
            raise ConfigError(
                "fi.Rm",
                common.get(cfg, "fi.Rm"),
                f"fi.Rm x fi.tau_ref gives {curves} curves; at most {MAX_FI_CURVES} are drawn "
                "(use mode=sweep for grids)",
            )
    else:
        low, high = I.values[0].item(), I.values[-1].item()
        rate_at_I = common.check_float(cfg, "rate_at_I", low=low, high=high, optional=True)
    return GridSpec(mode, method, counts, dtype, Rm, tau_ref, I, Cm, Vth, T, dt, units, rate_at_I)


def _validate_trace(cfg: DictConfig, method: str, dtype: str) -> TraceSpec:
    I = common.check_float(cfg, "trace.I")
    T, dt = _check_time(cfg, "trace", MAX_TRACE_STEPS)
    tau_ref = common.check_float(cfg, "trace.tau_ref", low=0.0)
    Rm = common.check_float(cfg, "trace.Rm", low=0.0, low_open=True)
    Cm = common.check_float(cfg, "trace.Cm", low=0.0, low_open=True)
    Vth = common.check_float(cfg, "trace.Vth", low=0.0, low_open=True)
    # Spikes are found in the trace as Vm >= Vth, which needs the drawn spike to point up.
    V_spike = common.check_float(cfg, "trace.V_spike", low=0.0)
    return TraceSpec(method, dtype, I, T, dt, tau_ref, Rm, Cm, Vth, V_spike)


# ------------------------------------------------------------------------------ time step check


def check_time_step(
    prefix: str, dt: float, Rm: float, Cm: float, method: str, rm_key: str | None = None
) -> str | None:
    """Warn (one line) when Euler's dt is not small against the membrane time constant Rm*Cm.

    Euler overshoots the steady state for dt >= Rm*Cm and diverges for dt >= 2*Rm*Cm; below
    that it is accurate only for dt << Rm*Cm. The exact method has no such limit.

    Args:
        prefix: Config node of dt and Cm (``lif`` or ``trace``), for the message.
        dt: Time step.
        Rm: The smallest membrane resistance of the run.
        Cm: Membrane capacitance.
        method: ``euler`` or ``exact``.
        rm_key: Config key of Rm when it is not ``<prefix>.Rm`` (``fi.Rm``).

    Returns:
        The warning logged, or None.
    """
    tau_m = Rm * Cm
    if method != "euler" or dt <= EULER_ACCURATE_FRACTION * tau_m:
        return None
    if dt >= 2 * tau_m:
        what = "unstable (dt >= 2*Rm*Cm: even sub-threshold currents spike)"
    elif dt >= tau_m:
        what = "overshooting the steady state (dt >= Rm*Cm)"
    else:
        what = f"inaccurate (dt > {EULER_ACCURATE_FRACTION:g}*Rm*Cm)"
    rm_name = rm_key or f"{prefix}.Rm"
    smallest = "" if prefix == "trace" else "smallest "
    message = (
        f"{prefix}.dt={dt:g} ms is not small against the membrane time constant "
        f"Rm*Cm={tau_m:g} ms ({smallest}{rm_name}={Rm:g}, {prefix}.Cm={Cm:g}): Euler's method "
        f"is {what}; use method=exact or {prefix}.dt <= {EULER_ACCURATE_FRACTION * tau_m:g}"
    )
    log.warning(message)
    return message


@contextlib.contextmanager
def _library_warning_said() -> Iterator[None]:
    """Silence the library's RuntimeWarning for dt >= Rm*Cm: check_time_step said it already."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LIBRARY_EULER_WARNING, category=RuntimeWarning)
        yield


# --------------------------------------------------------------------------------- the work


@dataclass(frozen=True)
class GridResult:
    """Counts and rates of a grid, shape (len(Rm), len(tau_ref), len(I)), and its ReLU fits."""

    counts: Tensor
    rate_hz: Tensor
    analytic_rate_hz: Tensor
    fit: analysis.ReluFit
    steps: int
    sim_time_s: float


def run_grid(spec: GridSpec) -> GridResult:
    """Count the spikes of every neuron of the grid in one vectorised call, then the rates."""
    I = spec.I.values.view(1, 1, -1)
    Rm = spec.Rm.values.view(-1, 1, 1)
    tau_ref = spec.tau_ref.values.view(1, -1, 1)
    count = spike_counts if spec.counts == "simulate" else closed_form_counts
    started = time.perf_counter()
    with _library_warning_said():
        counts = count(
            I,
            Rm,
            tau_ref,
            T=spec.T,
            dt=spec.dt,
            Cm=spec.Cm,
            Vth=spec.Vth,
            method=spec.method,
            dtype=DTYPES[spec.dtype],
        )
    sim_time = time.perf_counter() - started
    with _serial_kernels():
        rate = analysis.rate_hz(counts, spec.T, spec.dt)
        analytic = analysis.analytic_rate_hz(I, Rm, tau_ref, spec.Cm, spec.Vth)
        fit = analysis.fit_relu(spec.I.values, rate)
    return GridResult(counts, rate, analytic, fit, analysis.n_steps(spec.T, spec.dt), sim_time)


def grid_metrics(spec: GridSpec, result: GridResult) -> dict[str, float]:
    """Flat ``lif/*`` numbers of a grid run (for metrics.json, TensorBoard and mlplab-report)."""
    error = (result.rate_hz - result.analytic_rate_hz).abs()
    distance = result.fit.distance
    finite = distance[~torch.isnan(distance)]

    def stat(fn: Any) -> float:
        return fn(finite).item() if finite.numel() else math.nan

    metrics = {
        "lif/neurons": result.counts.numel(),
        "lif/curves": distance.numel(),
        "lif/steps": result.steps,
        "lif/max_count": int(result.counts.max()),
        "lif/mean_rate_hz": result.rate_hz.mean().item(),
        "lif/max_rate_hz": result.rate_hz.max().item(),
        "lif/max_abs_rate_error_hz": error.max().item(),
        "lif/mean_abs_rate_error_hz": error.mean().item(),
        "lif/distance_to_relu_min": stat(torch.min),
        "lif/distance_to_relu_median": stat(lambda t: t.median()),
        "lif/distance_to_relu_max": stat(torch.max),
        "lif/silent_curves": int(torch.isnan(distance).sum()),
        "lif/sim_time_s": round(result.sim_time_s, 4),
    }
    if spec.mode == "sweep":
        metrics["lif/rate_at_I"] = spec.I.values[_rate_index(spec)].item()
    return metrics


def _rate_index(spec: GridSpec) -> int:
    """Index of the grid current nearest ``rate_at_I`` (the largest current when it is null)."""
    if spec.rate_at_I is None:
        return len(spec.I) - 1
    return int((spec.I.values - spec.rate_at_I).abs().argmin())


@dataclass(frozen=True)
class TraceResult:
    time: Tensor
    Vm: Tensor
    count: int
    steps: int


def run_trace(spec: TraceSpec) -> TraceResult:
    """One neuron's voltage trace (``run_lif`` for method=euler, float32)."""
    with _library_warning_said():
        result = simulate(
            spec.I,
            spec.Rm,
            spec.tau_ref,
            T=spec.T,
            dt=spec.dt,
            Cm=spec.Cm,
            Vth=spec.Vth,
            V_spike=spec.V_spike,
            method=spec.method,
            record=[0],
            dtype=DTYPES[spec.dtype],
        )
    return TraceResult(
        result.time, result.traces[0], int(result.counts.item()), len(result.time) - 1
    )


def trace_metrics(spec: TraceSpec, result: TraceResult) -> dict[str, float]:
    """Spike count, first spike time (NaN, written as null, when there is none) and rates."""
    spikes = (result.Vm >= spec.Vth).nonzero()
    first = result.time[spikes[0, 0]].item() if spikes.numel() else math.nan
    duration_ms = result.steps * spec.dt
    analytic = analysis.analytic_rate_hz(spec.I, spec.Rm, spec.tau_ref, spec.Cm, spec.Vth)
    return {
        "lif/spike_count": result.count,
        "lif/first_spike_ms": first,
        "lif/rate_hz": result.count * analysis.MS_PER_S / duration_ms,
        "lif/analytic_rate_hz": analytic.item(),
        "lif/steps": result.steps,
    }


# ----------------------------------------------------------------------------------- outputs


def save_grid(spec: GridSpec, result: GridResult, output_dir: Path) -> None:
    """Write ``lif_grid.npz`` (arrays + axes + settings) and the tidy ``lif_grid.csv``.

    The CSV has one row per neuron, Rm slowest and I fastest (the arrays' C order); axes, counts
    and rates are written exactly (shortest round-trip decimals), analytic rates rounded to 1e-6 Hz.
    """
    arrays = {
        "Rm": spec.Rm.values.numpy(),
        "tau_ref": spec.tau_ref.values.numpy(),
        "I": spec.I.values.numpy(),
        "counts": result.counts.numpy(),
        "rate_hz": result.rate_hz.numpy(),
        "analytic_rate_hz": result.analytic_rate_hz.numpy(),
        "distance_to_relu": result.fit.distance.numpy(),
        "relu_slope": result.fit.slope.numpy(),
        "relu_kink": result.fit.kink.numpy(),
        "Cm": np.float64(spec.Cm),
        "Vth": np.float64(spec.Vth),
        "T": np.float64(spec.T),
        "dt": np.float64(spec.dt),
        "steps": np.int64(result.steps),
        "method": np.str_(spec.method),
        "dtype": np.str_(spec.dtype),
    }
    atomic_write(output_dir / "lif_grid.npz", lambda handle: np.savez(handle, **arrays))
    atomic_write(output_dir / "lif_grid.csv", lambda handle: _write_csv(handle, spec, result))


def _write_csv(handle: Any, spec: GridSpec, result: GridResult) -> None:
    n_rm, n_tau, n_i = spec.shape
    handle.write((",".join(CSV_COLUMNS) + "\n").encode())
    total = n_rm * n_tau * n_i
    # The columns Rm, tau_ref, I, count and rate_hz hold few distinct values: each is formatted
    # once and gathered; only the analytic rates need per-row formatting (vectorised).
    rm_text = _exact_text(spec.Rm.values.numpy())
    tau_text = _exact_text(spec.tau_ref.values.numpy())
    i_text = _exact_text(spec.I.values.numpy())
    counts = result.counts.reshape(-1).numpy()
    max_count = int(counts.max()) if counts.size else 0
    count_values = np.arange(max_count + 1)
    count_text = _exact_text(count_values)
    rate_text = _exact_text(
        analysis.rate_hz(torch.from_numpy(count_values), spec.T, spec.dt).numpy()
    )
    analytic = result.analytic_rate_hz.reshape(-1).numpy()
    for start in range(0, total, CSV_BLOCK_ROWS):
        rows = np.arange(start, min(start + CSV_BLOCK_ROWS, total))
        i_idx = rows % n_i
        tau_idx = (rows // n_i) % n_tau
        rm_idx = rows // (n_i * n_tau)
        block_counts = counts[rows]
        columns = [
            rm_text[rm_idx],
            tau_text[tau_idx],
            i_text[i_idx],
            count_text[block_counts],
            rate_text[block_counts],
            _fixed_text(analytic[rows], ANALYTIC_DECIMALS),
        ]
        handle.write(_join_rows(columns))


def _exact_text(values: np.ndarray) -> np.ndarray:
    """Shortest round-trip text of each value (``repr``), as a NUL-padded bytes array."""
    if values.dtype.kind in "iu":
        return np.array([str(int(v)).encode() for v in values], dtype=bytes)
    return np.array([_float_text(float(v)).encode() for v in values], dtype=bytes)


def _float_text(value: float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _fixed_text(values: np.ndarray, decimals: int) -> np.ndarray:
    """Values rounded to ``decimals`` decimals as text, NUL-padded bytes, without a Python loop.

    Trailing zeros of the fraction are dropped (``12.5``, ``0``); non-finite or huge values fall
    back to ``repr``.
    """
    scale = 10**decimals
    if values.size == 0 or not np.all(np.isfinite(values)) or np.abs(values).max() * scale >= 2**62:
        return np.array(
            [_float_text(round(float(v), decimals)).encode() for v in values], dtype=bytes
        )
    q = np.rint(np.abs(values) * scale).astype(np.int64)
    whole, frac = np.divmod(q, scale)
    n_whole = max(1, len(str(int(whole.max()))))
    powers = 10 ** np.arange(n_whole - 1, -1, -1, dtype=np.int64)
    whole_digits = (whole[:, None] // powers) % 10
    # Leading zeros are padding (NUL), except the units digit.
    significant = np.cumsum(whole_digits, axis=1) > 0
    significant[:, -1] = True
    frac_digits = (frac[:, None] // (10 ** np.arange(decimals - 1, -1, -1, dtype=np.int64))) % 10
    # Trailing zeros of the fraction: digit j is one when frac is a multiple of 10**(decimals - j).
    trailing = np.empty(frac_digits.shape, dtype=bool)
    for j in range(decimals):
        trailing[:, j] = frac % (10 ** (decimals - j)) == 0
    has_frac = ~trailing[:, 0]
    out = np.zeros((len(values), 1 + n_whole + 1 + decimals), dtype=np.uint8)
    out[:, 0] = np.where((values < 0) & (q > 0), ord("-"), 0)
    out[:, 1 : 1 + n_whole] = np.where(significant, whole_digits + ord("0"), 0)
    out[:, 1 + n_whole] = np.where(has_frac, ord("."), 0)
    out[:, 2 + n_whole :] = np.where(trailing, 0, frac_digits + ord("0"))
    return out.view(f"S{out.shape[1]}").reshape(-1)


def _join_rows(columns: Sequence[np.ndarray]) -> bytes:
    """CSV lines of NUL-padded text columns: lay them out in one byte matrix, drop the padding."""
    n = len(columns[0])
    widths = [c.dtype.itemsize for c in columns]
    matrix = np.zeros((n, sum(widths) + len(columns)), dtype=np.uint8)
    at = 0
    for column, width in zip(columns, widths, strict=True):
        matrix[:, at : at + width] = column.view(np.uint8).reshape(n, width)
        matrix[:, at + width] = ord(",")
        at += width + 1
    matrix[:, -1] = ord("\n")
    flat = matrix.reshape(-1)
    return flat[flat != 0].tobytes()


def save_trace(result: TraceResult, output_dir: Path) -> None:
    """Write ``trace.csv``: time (msec) and membrane voltage (V) at each time point."""
    # numpy's str of a float32 is its shortest round-trip text (0.1, not 0.100000001).
    time_text = map(str, result.time.numpy())
    vm_text = map(str, result.Vm.numpy())

    def write(handle: Any) -> None:
        handle.write(b"time_ms,Vm\n")
        lines = (f"{t},{v}\n" for t, v in zip(time_text, vm_text, strict=True))
        handle.write("".join(lines).encode())

    atomic_write(output_dir / "trace.csv", write)


# ----------------------------------------------------------------------------------- figures


def _label(Rm: float, tau_ref: float) -> str:
    return f"Rm={Rm:g}, tau_ref={tau_ref:g}"


def fi_figure(
    spec: GridSpec, result: GridResult, pairs: Sequence[tuple[int, int]], units: str
) -> Figure:
    """f-I curves of the given (Rm index, tau_ref index) pairs, analytic curves dashed."""
    from mlplab.viz import plot_fi_curves

    I = spec.I.values
    I_fine = torch.linspace(I[0].item(), I[-1].item(), ANALYTIC_POINTS, dtype=torch.float64)
    duration_ms = result.steps * spec.dt
    to_units = duration_ms / analysis.MS_PER_S if units == "count" else 1.0
    curves, analytic = {}, {}
    for r, t in pairs:
        Rm, tau_ref = spec.Rm.values[r].item(), spec.tau_ref.values[t].item()
        label = _label(Rm, tau_ref)
        if units == "count":
            curves[label] = result.counts[r, t]
        else:
            curves[label] = result.rate_hz[r, t]
        analytic[label] = (
            analysis.analytic_rate_hz(I_fine, Rm, tau_ref, spec.Cm, spec.Vth) * to_units
        )
    what = "Spike count" if units == "count" else "Firing rate (Hz)"
    title = (
        f"LIF transfer function: Cm={spec.Cm:g}, Vth={spec.Vth:g}, T={spec.T:g} ms, "
        f"dt={spec.dt:g} ms, {spec.method}"
    )
    ylabel = f"{what} in {duration_ms:g} ms" if units == "count" else what
    return plot_fi_curves(
        I,
        curves,
        analytic,
        ylabel=ylabel,
        title=title,
        I_analytic=I_fine,
        label_each_analytic=False,
    )


def corner_pairs(spec: GridSpec) -> list[tuple[int, int]]:
    """The (Rm, tau_ref) grid corners: the Think! question's extremes, without repeats."""
    rms = sorted({0, len(spec.Rm) - 1})
    taus = sorted({0, len(spec.tau_ref) - 1})
    return [(r, t) for r in rms for t in taus]


def sweep_figures(spec: GridSpec, result: GridResult) -> dict[str, Figure]:
    """f-I curves at the grid corners; rate, rate error and distance-to-ReLU heatmaps."""
    from mlplab.viz import plot_heatmap

    k = _rate_index(spec)
    at_I = spec.I.values[k].item()
    axes = {
        "x": spec.Rm.values,
        "y": spec.tau_ref.values,
        "xlabel": "Rm (kOhm)",
        "ylabel": "tau_ref (msec)",
        "log_x": spec.Rm.log,
        "log_y": spec.tau_ref.log,
    }
    # Heatmaps are (tau_ref, Rm): Rm on the horizontal axis.
    rate = result.rate_hz[:, :, k].T
    error = (result.rate_hz[:, :, k] - result.analytic_rate_hz[:, :, k]).T
    return {
        "fi_curves": fi_figure(spec, result, corner_pairs(spec), "hz"),
        "rate_heatmap": plot_heatmap(
            rate, title=f"Firing rate at I={at_I:g} ({spec.method})", cbar_label="Hz", **axes
        ),
        "rate_error_heatmap": plot_heatmap(
            error,
            title=f"Simulated minus analytic rate at I={at_I:g} ({spec.method}, dt={spec.dt:g})",
            cbar_label="Hz",
            symmetric=True,
            **axes,
        ),
        "distance_to_relu": plot_heatmap(
            result.fit.distance.T,
            title="Distance of each f-I curve to its best ReLU (RMS / max rate)",
            cbar_label="relative RMS residual",
            cmap="magma",
            **axes,
        ),
    }


def trace_figure(spec: TraceSpec, result: TraceResult) -> Figure:
    from mlplab.viz import plot_lif_trace

    title = (
        f"LIF Neuron Output: I={spec.I:g}, Rm={spec.Rm:g}, Cm={spec.Cm:g}, "
        f"tau_ref={spec.tau_ref:g} ({result.count} spikes)"
    )
    return plot_lif_trace(result.time, result.Vm, Vth=spec.Vth, title=title)


def save_figures(
    figures: dict[str, Figure], output_dir: Path, fixed_layout: bool = False
) -> dict[str, bytes]:
    """Render each figure once to PNG, write ``<name>.png`` atomically, return the PNG bytes.

    ``fixed_layout`` keeps matplotlib's default margins instead of constrained layout, which is
    about half of each render; the grid figures (one axes, one colour bar) fit those margins.
    """
    from mlplab.viz.io import figure_to_png

    pngs = {}
    for name, fig in figures.items():
        if fixed_layout:
            fig.set_layout_engine("none")
        pngs[name] = figure_to_png(fig, output_dir / f"{name}.png")
    return pngs


# ---------------------------------------------------------------------------------- logging


def hparams_of(spec: GridSpec | TraceSpec) -> dict[str, Any]:
    """The hyper-parameters shown in TensorBoard's HPARAMS tab (scalars only)."""
    if isinstance(spec, TraceSpec):
        return {"mode": "trace", **{k: v for k, v in vars(spec).items()}}
    hparams: dict[str, Any] = {
        "mode": spec.mode,
        "method": spec.method,
        "counts": spec.counts,
        "dtype": spec.dtype,
    }
    for name in ("Rm", "tau_ref", "I"):
        values = getattr(spec, name).values
        hparams[f"{name}_min"] = values[0].item()
        hparams[f"{name}_max"] = values[-1].item()
        hparams[f"{name}_num"] = values.numel()
    hparams.update({"Cm": spec.Cm, "Vth": spec.Vth, "T": spec.T, "dt": spec.dt})
    return hparams


def _log_run(
    cfg: DictConfig,
    metrics: dict[str, float],
    hparams: dict[str, Any],
    pngs: dict[str, bytes],
) -> None:
    """Send metrics, figures and hparams to the configured logger.

    ``logger=tensorboard`` is written with torch's SummaryWriter directly, in the folder
    Lightning's TensorBoardLogger would use: importing Lightning would double this task's run
    time. Other loggers are built through Lightning as in the other tasks.
    """
    node = cfg.get("logger")
    if not node or "_target_" not in node:
        return
    if str(node._target_).rsplit(".", 1)[-1] == "TensorBoardLogger":
        _log_tensorboard(node, metrics, hparams, pngs)
        return
    from mlplab.tasks.runtime import build_logger, log_hparams

    logger = build_logger(node)
    logger.log_metrics(metrics, step=0)
    log_hparams(logger, hparams, metrics)
    logger.save()


def _tensorboard_dir(node: DictConfig) -> Path:
    """``save_dir/name/version`` like Lightning's TensorBoardLogger (version_N when null)."""
    root = Path(str(node.get("save_dir"))) / str(node.get("name") or "")
    version = node.get("version")
    if version is None:
        existing = (
            [p for p in root.glob("version_*") if p.name[8:].isdigit()] if root.exists() else []
        )
        version = f"version_{max((int(p.name[8:]) for p in existing), default=-1) + 1}"
    elif isinstance(version, int):
        version = f"version_{version}"
    return root / str(version)


def _log_tensorboard(
    node: DictConfig, metrics: dict[str, float], hparams: dict[str, Any], pngs: dict[str, bytes]
) -> None:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    log_dir = _tensorboard_dir(node)
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, value in metrics.items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(key, value, 0)
        file_writer = writer._get_file_writer()
        for name, png in pngs.items():  # the PNG already written, as is: no second render
            file_writer.add_summary(common.png_summary(f"figures/{name}", png), 0)
        columns = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        for summary in hparams_summary(hparams, columns):
            file_writer.add_summary(summary)
    finally:
        writer.close()
    OmegaConf.save(OmegaConf.create(hparams), log_dir / "hparams.yaml")


# -------------------------------------------------------------------------------- the task


def _lif_body(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    spec = validate_lif_config(cfg)
    common.settle_gc()
    if isinstance(spec, TraceSpec):
        return _trace_run(cfg, spec, output_dir)
    return _grid_run(cfg, spec, output_dir)


def _trace_run(cfg: DictConfig, spec: TraceSpec, output_dir: Path) -> dict[str, float]:
    check_time_step("trace", spec.dt, spec.Rm, spec.Cm, spec.method)
    result = run_trace(spec)
    metrics = trace_metrics(spec, result)
    print(
        f"I={spec.I:g}, Rm={spec.Rm:g}, Cm={spec.Cm:g}, tau_ref={spec.tau_ref:g}, "
        f"T={spec.T:g} ms: {result.count} spikes, first at {metrics['lif/first_spike_ms']:g} ms, "
        f"{metrics['lif/rate_hz']:.4g} Hz (analytic {metrics['lif/analytic_rate_hz']:.4g} Hz)"
    )
    save_trace(result, output_dir)
    pngs = save_figures({"trace": trace_figure(spec, result)}, output_dir)
    _log_run(cfg, metrics, hparams_of(spec), pngs)
    return metrics


def _grid_run(cfg: DictConfig, spec: GridSpec, output_dir: Path) -> dict[str, float]:
    check_time_step(
        "lif", spec.dt, spec.Rm.values[0].item(), spec.Cm, spec.method, rm_key=f"{spec.key}.Rm"
    )
    result = run_grid(spec)
    with _serial_kernels():
        metrics = grid_metrics(spec, result)
    n_rm, n_tau, n_i = spec.shape
    print(
        f"{n_rm} Rm x {n_tau} tau_ref x {n_i} I = {metrics['lif/neurons']} neurons, "
        f"{result.steps} steps ({spec.counts}, {spec.method}, {spec.dtype}) in "
        f"{result.sim_time_s:.3g} s; max |simulated - analytic| "
        f"{metrics['lif/max_abs_rate_error_hz']:.4g} Hz; distance to ReLU "
        f"{metrics['lif/distance_to_relu_min']:.3g}..{metrics['lif/distance_to_relu_max']:.3g}"
    )
    # The npz and CSV (numpy work, mostly without the GIL) are written on a second thread while
    # matplotlib renders the figures: on two cores most of their time hides behind the figures.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlplab-lif-outputs") as pool:
        saved = pool.submit(save_grid, spec, result, output_dir)
        if spec.mode == "fi":
            pairs = [(r, t) for r in range(n_rm) for t in range(n_tau)]
            figures = {"fi_curves": fi_figure(spec, result, pairs, spec.units)}
        else:
            figures = sweep_figures(spec, result)
        pngs = save_figures(figures, output_dir, fixed_layout=True)
        saved.result()  # re-raises a failed write here
    _log_run(cfg, metrics, hparams_of(spec), pngs)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="lif")
def _hydra_main(cfg: DictConfig) -> float | None:
    return common.run_task(cfg, _lif_body)


def quote_axis_values(argv: Sequence[str], conf_file: Path = CONF_DIR / "lif.yaml") -> list[str]:
    """Quote list (or dict) values of grid axes whose default is a dict (or list).

    Hydra merges an override into the default value and cannot merge a list into a dict, so
    ``lif.Rm=[1,10,100]`` would fail against ``lif.Rm: {start, stop, num, log}``. Quoted, the
    value replaces the default as a string, which :func:`parse_axis` reads back as a list.
    Sweeps (``lif.Rm=[1,10],[1,100]``) are quoted item by item.
    """
    defaults = OmegaConf.load(conf_file)
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        name = key.lstrip("+")
        if not sep or arg.startswith("-") or name not in AXIS_KEYS or "(" in value:
            quoted.append(arg)
            continue
        default = OmegaConf.select(defaults, name)
        clash = "[" if isinstance(default, DictConfig) else "{"
        parts = [
            f"'{part}'" if part.lstrip().startswith(clash) else part
            for part in common.split_top_level(value)
        ]
        quoted.append(f"{key}={','.join(parts)}")
    return quoted


def main() -> None:
    """Console script ``mlplab-lif``."""
    sys.argv[1:] = quote_axis_values(sys.argv[1:])
    common.console_main(_hydra_main, "lif")


if __name__ == "__main__":
    from mlplab.tasks.cli import run_main

    run_main(main)
