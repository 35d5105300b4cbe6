"""mlplab-lif: the tutorial's leaky integrate-and-fire neuron (Bonus section) as a Hydra task.

Three modes (``mode=``):

- ``trace``: one neuron's membrane voltage over time; by default the tutorial's ``run_LIF(1.5)``.
- ``fi``: transfer (f-I) curves, spike count or rate against I, for each (Rm, tau_ref) pair, with
  the continuous-time analytic rate overlaid in the same units.
- ``sweep``: spike counts over a whole Rm x tau_ref x I grid in one vectorised call, saved as a
  labelled netCDF file (``xarray.open_dataset`` reads it; a tidy CSV too with ``save_csv=true``),
  with rate heatmaps and the distance of each f-I curve to its best ReLU (the tutorial's Think!
  question, made measurable).

Start-up time matters (a sweep of the default grid runs in a few seconds), so this module imports
neither Lightning nor torchmetrics, and matplotlib, xarray and TensorBoard only when they are
needed.
"""

# The tutorial names the input current I.
# ruff: noqa: E741

from __future__ import annotations

import contextlib
import importlib
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
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from mlplab.io import atomic_write
from mlplab.neuron import analysis
from mlplab.neuron.lif import RefractoryWarning, held_refractory_ms, simulate
from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError

if TYPE_CHECKING:
    import xarray as xr
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
# A grid run's files: the labelled grid (netCDF) and, with save_csv=true, its tidy table.
GRID_FILE = "lif_grid.nc"
CSV_FILE = "lif_grid.csv"
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
    save_csv: bool

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
    save_csv = common.check_bool(cfg, "save_csv")
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
    return GridSpec(
        mode, method, counts, dtype, Rm, tau_ref, I, Cm, Vth, T, dt, units, rate_at_I, save_csv
    )


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
def _library_warnings(tau_key: str, dt_key: str) -> Iterator[list[str]]:
    """The library's warnings as the task says them: one log line each, naming the config keys.

    A RefractoryWarning (tau_ref not a whole number of steps) is logged as one line prefixed
    with the keys and collected into the yielded list; the RuntimeWarning for Euler with
    dt >= Rm*Cm is dropped (check_time_step said it, with the keys); others pass through.
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RefractoryWarning)
        warnings.filterwarnings("ignore", message=_LIBRARY_EULER_WARNING, category=RuntimeWarning)
        yield notes
    for warning in caught:
        if issubclass(warning.category, RefractoryWarning):
            notes.append(f"{tau_key} and {dt_key}: {warning.message}")
            log.warning(notes[-1])
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


# --------------------------------------------------------------------------------- the work


@dataclass(frozen=True)
class GridResult:
    """A grid run's labelled data (see :func:`mlplab.neuron.transfer_grid`) and how it was made.

    Attributes:
        data: Dataset over (Rm, tau_ref, I): counts, rates, their difference, ReLU fits.
        grid_time_s: Wall time of the grid (counts, rates and fits), in seconds.
        refractory_note: The RefractoryWarning logged for this grid, None when tau_ref was whole.
    """

    data: xr.Dataset
    grid_time_s: float
    refractory_note: str | None = None


def run_grid(spec: GridSpec) -> GridResult:
    """Count the spikes of every neuron of the grid in one vectorised call, then the rates."""
    from mlplab.neuron.grid import transfer_grid

    started = time.perf_counter()
    with _library_warnings(f"{spec.key}.tau_ref", "lif.dt") as notes:
        data = transfer_grid(
            spec.I.values,
            spec.Rm.values,
            spec.tau_ref.values,
            T=spec.T,
            dt=spec.dt,
            Cm=spec.Cm,
            Vth=spec.Vth,
            method=spec.method,
            counts=spec.counts,
            dtype=DTYPES[spec.dtype],
        )
    grid_time = time.perf_counter() - started
    return GridResult(data, grid_time, notes[0] if notes else None)


def grid_metrics(spec: GridSpec, result: GridResult) -> dict[str, float]:
    """Flat ``lif/*`` numbers of a grid run (for metrics.json, TensorBoard and mlplab-report)."""
    ds = result.data
    error = torch.from_numpy(ds.rate_error.values).abs().to(torch.float64)
    rate = torch.from_numpy(ds.rate.values)
    distance = torch.from_numpy(ds.distance_to_relu.values)
    finite = distance[~torch.isnan(distance)]

    def stat(fn: Any) -> float:
        return fn(finite).item() if finite.numel() else math.nan

    metrics = {
        "lif/neurons": int(ds.spike_count.size),
        "lif/curves": distance.numel(),
        "lif/steps": int(ds.attrs["steps"]),
        "lif/max_count": int(ds.spike_count.max()),
        "lif/mean_rate_hz": rate.mean().item(),
        "lif/max_rate_hz": rate.max().item(),
        "lif/max_abs_rate_error_hz": error.max().item(),
        "lif/mean_abs_rate_error_hz": error.mean().item(),
        "lif/distance_to_relu_min": stat(torch.min),
        "lif/distance_to_relu_median": stat(lambda t: t.median()),
        "lif/distance_to_relu_max": stat(torch.max),
        "lif/silent_curves": int(torch.isnan(distance).sum()),
        "lif/grid_time_s": round(result.grid_time_s, 4),
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
    with _library_warnings("trace.tau_ref", "trace.dt"):
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
    """Write ``lif_grid.nc`` (the labelled grid, netCDF-4) and, with save_csv, ``lif_grid.csv``.

    ``xarray.open_dataset("lif_grid.nc")`` gives back :attr:`GridResult.data`. The CSV is its tidy
    table (one row per neuron, Rm slowest and I fastest) written by pandas, every number exact.
    """
    from mlplab.neuron.grid import save_netcdf, to_table

    save_netcdf(result.data, output_dir / GRID_FILE)
    if spec.save_csv:
        table = to_table(result.data)
        atomic_write(
            output_dir / CSV_FILE, lambda handle: table.to_csv(handle, index=False), mode="w"
        )


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


def _label(Rm: float, tau_ref: float, held_ms: float | None = None) -> str:
    """``Rm=1 kOhm, tau_ref=2 ms``; with ``held_ms`` (a tau_ref the simulation rounded down to
    whole steps), ``tau_ref=0.5 ms (held 0 ms)``, so the gap to the dashed analytic curve, which
    uses tau_ref itself, is explained in the legend."""
    held = "" if held_ms is None else f" (held {held_ms:g} ms)"
    return f"Rm={Rm:g} kOhm, tau_ref={tau_ref:g} ms{held}"


def fi_figure(
    spec: GridSpec, result: GridResult, pairs: Sequence[tuple[int, int]], units: str
) -> Figure:
    """f-I curves of the given (Rm index, tau_ref index) pairs, analytic curves dashed."""
    from mlplab.viz import plot_fi_curves

    ds = result.data
    I = spec.I.values
    I_fine = torch.linspace(I[0].item(), I[-1].item(), ANALYTIC_POINTS, dtype=torch.float64)
    duration_ms = int(ds.attrs["steps"]) * spec.dt
    to_units = duration_ms / analysis.MS_PER_S if units == "count" else 1.0
    simulated = ds.spike_count if units == "count" else ds.rate
    curves, analytic = {}, {}
    n_steps = int(ds.attrs["steps"])
    for r, t in pairs:
        Rm, tau_ref = spec.Rm.values[r].item(), spec.tau_ref.values[t].item()
        label = _label(Rm, tau_ref, held_refractory_ms(tau_ref, spec.dt, n_steps))
        curves[label] = simulated.values[r, t]
        analytic[label] = (
            analysis.analytic_rate_hz(I_fine, Rm, tau_ref, spec.Cm, spec.Vth) * to_units
        )
    what = "Spike count" if units == "count" else "Firing rate (Hz)"
    title = (
        f"LIF transfer function\n(Cm={spec.Cm:g} uF, Vth={spec.Vth:g} V, T={spec.T:g} ms, "
        f"dt={spec.dt:g} ms, {spec.method})"
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


def stripes_caption(spec: GridSpec, result: GridResult) -> str:
    """Why the distance-to-ReLU map has stripes along tau_ref (measured, see the README).

    A simulated f-I curve counts whole spikes in T: where a neuron fires few times in T, the
    curve is a staircase, and where its steps fall among the sampled currents changes from one
    tau_ref to the next. The analytic rates give a smooth map; rounding tau_ref down to whole
    steps (when it is not a multiple of dt) adds stripes of its own.
    """
    few = int(result.data.spike_count.isel(tau_ref=-1).max())
    tau_max = spec.tau_ref.values[-1].item()
    text = (
        f"Stripes along tau_ref: each curve counts whole spikes in T={spec.T:g} ms (at most "
        f"{few} at tau_ref={tau_max:g} ms), a staircase whose steps fall differently on the "
        f"{len(spec.I)} sampled currents from one tau_ref to the next; the analytic rates give a "
        "smooth map, and a longer T fades the stripes."
    )
    if result.refractory_note is not None:
        text += (
            f" Here tau_ref is also not a whole number of steps of dt={spec.dt:g} ms and is "
            "rounded down, which adds stripes of its own."
        )
    return text


def sweep_figures(spec: GridSpec, result: GridResult) -> dict[str, Figure]:
    """f-I curves at the grid corners; rate, rate error and distance-to-ReLU heatmaps."""
    from mlplab.viz.lif import plot_grid_heatmap

    ds = result.data
    k = _rate_index(spec)
    at_I = spec.I.values[k].item()
    # Every neuron setting the grid does not vary, so that a sweep's figures tell themselves apart.
    settings = (
        f"Cm={spec.Cm:g} uF, Vth={spec.Vth:g} V, {spec.method}, dt={spec.dt:g} ms, T={spec.T:g} ms"
    )
    scales = {"log_x": spec.Rm.log, "log_y": spec.tau_ref.log}
    # Heatmaps are (tau_ref, Rm): Rm on the horizontal axis.
    rate = ds.rate.isel(I=k).transpose("tau_ref", "Rm")
    error = ds.rate_error.isel(I=k).transpose("tau_ref", "Rm")
    figures = {"fi_curves": fi_figure(spec, result, corner_pairs(spec), "hz")}
    if bool((rate > 0).any()):
        # Rates span a decade or more (tau_ref sets the ceiling): a log colour scale shows it.
        figures["rate_heatmap"] = plot_grid_heatmap(
            rate, title=f"Firing rate at I={at_I:g} mA\n({settings})", log_color=True, **scales
        )
    else:
        figures["rate_heatmap"] = plot_grid_heatmap(
            rate, title=f"Firing rate at I={at_I:g} mA: silent\n({settings})", **scales
        )
    figures["rate_error_heatmap"] = plot_grid_heatmap(
        error,
        title=f"Simulated minus analytic rate at I={at_I:g} mA\n({settings})",
        symmetric=True,
        **scales,
    )
    figures["distance_to_relu"] = plot_grid_heatmap(
        ds.distance_to_relu.transpose("tau_ref", "Rm"),
        title=(f"Distance of each f-I curve to its best ReLU\n({settings})"),
        cmap="magma",
        caption=stripes_caption(spec, result),
        **scales,
    )
    return figures


def trace_figure(spec: TraceSpec, result: TraceResult) -> Figure:
    from mlplab.viz import plot_lif_trace

    title = (
        f"LIF Neuron Output ({result.count} spikes)\nI={spec.I:g} mA, Rm={spec.Rm:g} kOhm, "
        f"Cm={spec.Cm:g} uF, tau_ref={spec.tau_ref:g} ms, dt={spec.dt:g} ms, {spec.method}"
    )
    return plot_lif_trace(result.time, result.Vm, Vth=spec.Vth, title=title)


def save_figures(
    figures: dict[str, Figure], output_dir: Path, fixed_layout: bool = False
) -> dict[str, bytes]:
    """Render each figure once to PNG, write ``<name>.png`` atomically, return the PNG bytes.

    ``fixed_layout`` keeps matplotlib's default margins instead of constrained layout, which is
    about half of each render; the grid figures (one axes, one colour bar) fit those margins.
    Without a layout engine ``savefig`` draws each figure once, not twice (see ``fix_layout``).
    """
    from mlplab.viz import fix_layout
    from mlplab.viz.io import figure_to_png

    pngs = {}
    for name, fig in figures.items():
        if fixed_layout:
            fix_layout(fig)
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
    from mlplab.tasks.dashboard import with_overrides

    node = cfg.get("logger")
    if not node or "_target_" not in node:
        return
    if _is_tensorboard(node):
        # The job's overrides are columns too; the task's own names win where both name one.
        _log_tensorboard(node, metrics, with_overrides(hparams, cfg), pngs)
        return
    from mlplab.tasks.runtime import build_logger, log_hparams

    logger = build_logger(node)
    logger.log_metrics(metrics, step=0)
    log_hparams(logger, hparams, cfg)
    logger.save()


def _is_tensorboard(node: Any) -> bool:
    """The logger config builds Lightning's TensorBoardLogger (written here without Lightning)."""
    if not node or "_target_" not in node:
        return False
    return str(node._target_).rsplit(".", 1)[-1] == "TensorBoardLogger"


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

    from mlplab.tasks.dashboard import hparams_summaries, write_summaries

    log_dir = _tensorboard_dir(node)
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, value in metrics.items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(key, value, 0)
    finally:
        writer.close()
    # The PNGs already written, as they are (no second render), and the HPARAMS entry, whose
    # metric columns are the scalars above (see mlplab.tasks.dashboard).
    summaries = [(common.png_summary(f"figures/{name}", png), 0) for name, png in pngs.items()]
    group = str(log_dir.absolute())
    summaries += [(summary, 0) for summary in hparams_summaries(hparams, group)]
    write_summaries(log_dir, summaries)
    OmegaConf.save(OmegaConf.create(hparams), log_dir / "hparams.yaml")


# -------------------------------------------------------------------------------- the task


def _import_outputs(spec: GridSpec | TraceSpec, cfg: DictConfig) -> None:
    """Import the libraries this run's outputs use, before the garbage collector is back on.

    matplotlib (figures), xarray with pandas (a grid) and TensorBoard's writer build some 160,000
    objects that live as long as the process. Imported while the collector is still off (see
    :mod:`mlplab.tasks.cli`), they are frozen with the rest of start-up by ``settle_gc``; imported
    after it, the collector scans them again and again while they are built, for almost nothing
    to collect (0.5 s of a closed-form sweep's 6 s of CPU). A refused value imports none of
    them, a trace no xarray.
    """
    modules = ["mlplab.viz.lif"]
    if isinstance(spec, GridSpec):
        modules.append("mlplab.neuron.grid")
    if _is_tensorboard(cfg.get("logger")):
        modules.append("torch.utils.tensorboard")
    for name in modules:
        importlib.import_module(name)


def _lif_body(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    spec = validate_lif_config(cfg)
    _import_outputs(spec, cfg)
    common.settle_gc()
    if isinstance(spec, TraceSpec):
        return _trace_run(cfg, spec, output_dir)
    return _grid_run(cfg, spec, output_dir)


def _trace_run(cfg: DictConfig, spec: TraceSpec, output_dir: Path) -> dict[str, float]:
    check_time_step("trace", spec.dt, spec.Rm, spec.Cm, spec.method)
    result = run_trace(spec)
    metrics = trace_metrics(spec, result)
    print(
        f"I={spec.I:g} mA, Rm={spec.Rm:g} kOhm, Cm={spec.Cm:g} uF, tau_ref={spec.tau_ref:g} ms, "
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
    metrics = grid_metrics(spec, result)
    n_rm, n_tau, n_i = spec.shape
    print(
        f"{n_rm} Rm x {n_tau} tau_ref x {n_i} I = {metrics['lif/neurons']} neurons, "
        f"{metrics['lif/steps']} steps ({spec.counts}, {spec.method}, {spec.dtype}) in "
        f"{result.grid_time_s:.3g} s; max |simulated - analytic| "
        f"{metrics['lif/max_abs_rate_error_hz']:.4g} Hz; distance to ReLU "
        f"{metrics['lif/distance_to_relu_min']:.3g}..{metrics['lif/distance_to_relu_max']:.3g}"
    )
    # The netCDF file (zlib in netCDF-C, without the GIL) and the CSV if asked are written on a
    # second thread while matplotlib renders the figures: on two cores they hide behind them.
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
