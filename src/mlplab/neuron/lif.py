"""Leaky integrate-and-fire neurons: the tutorial's ``run_LIF``, vectorised over parameter grids.

The model is the tutorial's discrete-time LIF neuron (Bonus section of W1D3 Tutorial 1). Each
update step, a neuron that is not refractory moves its membrane voltage by Euler's method,
``V <- V + dt/Cm * (-V/Rm + I)``, or (``method="exact"``) by the exact solution of the membrane
equation over one step, ``V <- V_inf + (V - V_inf) * exp(-dt/(Rm*Cm))`` with ``V_inf = I*Rm``.
When ``V >= Vth`` after an update the neuron spikes: the spike is counted, drawn as
``V + V_spike`` in traces, and ``V`` is reset to 0 and held there for ``floor(tau_ref/dt)`` steps;
the next update starts from 0.

Time grid and refractory steps follow the tutorial:

- ``time = torch.arange(0, T + dt, dt)``; step 0 is the initial state (V = 0) and steps
  ``1 .. len(time) - 1`` are updates, so ``T=1000, dt=1`` gives 1000 updates.
- The tutorial holds a neuron while ``t <= t_spike + tau_ref``, i.e. for ``floor(tau_ref/dt)``
  steps. We compute that number once per neuron in float64, rounding ``tau_ref/dt`` to the nearest
  integer first when it is within a relative 1e-6 of one, so decimal inputs give the intended
  count (``0.7/0.1`` is 6.999999999999999 in binary floating point; we hold for 7 steps).
- The tutorial compares on a float32 time grid. For integer ``dt`` (the widget: ``dt=1``) the grid
  is exact and its hold is exactly ``floor(tau_ref/dt)`` steps, so our counts equal its
  ``torch.sum(Vm > Vth)`` whenever ``tau_ref >= dt``. For ``dt=0.1`` its float32 sums
  ``t + tau_ref`` round either way, so when ``tau_ref/dt`` is an integer the tutorial holds for
  that many steps after some spikes and one fewer after others (``tau_ref=10, dt=0.1``: 100 or
  99). We hold for the same number every time. Its defaults (``run_LIF(1.5)``) happen to hold 100
  steps at both spikes, so ``run_lif(1.5)`` reproduces its trace.
- ``tau_ref < dt``: the tutorial continues from ``V + V_spike`` on the next step and then spikes
  at every step (it runs away). We reset to 0 and continue from there (zero refractory steps).
- A neuron fires at most once per step, and a refractory period that is not a whole number of
  steps is rounded down, so with ``dt=1`` ms ``tau_ref=0.999`` saturates at twice the rate of
  ``tau_ref=1``, and ``tau_ref=0.25`` at 1000 Hz where the continuous neuron reaches 2212 Hz
  (``I=50, Rm=1``). :func:`simulate` and :func:`closed_form_counts` emit a
  :class:`RefractoryWarning` when some ``tau_ref/dt`` is not whole (``tau_ref=0`` is whole: no
  hold), naming the values and a ``dt`` that divides them.

Euler updates use the tutorial's own float operations in its order (``V/Rm``, ``I - ...``,
``* (1/Cm)``, ``* dt``, ``V + ...``), so float32 voltages are bit-for-bit the tutorial's.

Because the voltage after a reset is exactly 0, every inter-spike interval is the same: the
``n_th`` steps from 0 to threshold plus the refractory steps. :func:`closed_form_counts` uses that
to count spikes without simulating, and falls back to iterating, with the simulator's own
arithmetic, the few neurons whose threshold step the closed form cannot decide within rounding
error, and the neurons in Euler's overshooting regime (``dt >= Rm*Cm``), so it equals
:func:`spike_counts` exactly.

Euler is inaccurate for ``dt >= Rm*Cm`` (the voltage overshoots ``V_inf``) and diverges for
``dt >= 2*Rm*Cm`` (even sub-threshold currents spike); :func:`simulate` and
:func:`closed_form_counts` run it as specified but emit a ``RuntimeWarning`` naming
``method='exact'``. A run that overflows to inf there gives meaningless counts.
"""

# The tutorial names the input current I; the public API keeps its names.
# ruff: noqa: E741

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "METHODS",
    "LIFResult",
    "RefractoryWarning",
    "analytic_rate",
    "closed_form_counts",
    "held_refractory_ms",
    "run_lif",
    "simulate",
    "spike_counts",
]

METHODS = ("euler", "exact")
_DTYPES = (torch.float32, torch.float64)
# Integers up to 2**bits are exact in each dtype (step counters are kept as floats).
_MANTISSA_BITS = {torch.float32: 24, torch.float64: 53}
# Neurons per chunk. A chunk is stepped through all time steps by one worker thread: large chunks
# keep Python's per-op dispatch small next to the work (measured in scripts/bench_lif.py).
_CHUNK = 1 << 18
# Grids smaller than this per extra worker run in the calling thread.
_MIN_PER_WORKER = 1 << 15
_THREADS_LOCK = threading.Lock()
# tau_ref/dt within this relative distance of an integer counts as that integer (decimal inputs).
_REFRACTORY_RTOL = 1e-6
# A RefractoryWarning suggests dt/k for the smallest k up to this that makes every tau_ref whole.
_MAX_DT_DIVISOR = 100
# The RefractoryWarning names at most this many offending tau_ref values (one line).
_MAX_NAMED_VALUES = 5

Param = float | Tensor | np.ndarray


class RefractoryWarning(RuntimeWarning):
    """``tau_ref`` is not a whole number of time steps ``dt`` (it may be shorter than ``dt``).

    The model holds a neuron at reset for ``floor(tau_ref/dt)`` whole steps after a spike and fires
    at most once per step, so such a refractory period is rounded down (to 0 steps when
    ``tau_ref < dt``): with ``dt=1`` ms, ``tau_ref=0.999`` and ``tau_ref=1`` differ by a factor of
    two in the saturated rate. Choose a ``dt`` that divides every ``tau_ref``.
    """


@dataclass(frozen=True)
class LIFResult:
    """Outcome of :func:`simulate`.

    Attributes:
        counts: Spike count per neuron, int64, shape = broadcast shape of the parameters.
        time: The time grid ``torch.arange(0, T + dt, dt)`` (length ``n_steps + 1``).
        traces: Membrane voltage of the recorded neurons, shape ``(n_recorded, n_steps + 1)``, with
            ``V + V_spike`` on spike steps as in the tutorial; None when nothing was recorded.
        recorded: Flat (row-major) indices of the recorded neurons, one per row of ``traces``.
    """

    counts: Tensor
    time: Tensor
    traces: Tensor | None = None
    recorded: Tensor | None = None


@dataclass(frozen=True)
class _Operands:
    """Per-neuron constants of one update step, in the simulation dtype.

    Each is a Python float when it is shared by all neurons (cheaper scalar ops), else a flat
    contiguous tensor over all neurons. Both the simulator and the closed form's fallback step with
    these exact values, which is what makes their counts identical.
    """

    method: str
    I: Tensor
    Rm: float | Tensor
    c: float | Tensor  # 1/Cm, rounded once like the tutorial's Python 1/Cm
    dt: float
    a: float | Tensor  # exact method: V <- V*a + b
    b: float | Tensor
    Vth: float | Tensor

    def take(self, index: slice | Tensor) -> _Operands:
        """Return the operands of a subset of neurons (a slice or flat indices)."""

        def pick(x: float | Tensor) -> float | Tensor:
            return x[index] if isinstance(x, Tensor) else x

        return replace(
            self,
            I=pick(self.I),
            Rm=pick(self.Rm),
            c=pick(self.c),
            a=pick(self.a),
            b=pick(self.b),
            Vth=pick(self.Vth),
        )


@dataclass(frozen=True)
class _Setup:
    shape: torch.Size
    n_steps: int
    time: Tensor
    ops: _Operands
    refractory: float | Tensor  # refractory steps per neuron, in the bookkeeping dtype
    refractory_steps: Tensor  # the same as int64, full flat (used by the closed form)
    euler_overshoots: bool  # Euler with a = 1 - dt/(Rm*Cm) <= 0 for some neuron
    refractory_note: str | None  # the RefractoryWarning's message, None when tau_ref/dt is whole


# ----------------------------------------------------------------------------------- validation


def _check_number(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise ValueError."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a single number > 0, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is invalid: {name} must be a number > 0") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name}={value!r} is invalid: {name} must be > 0")
    return number


def _check_method(method: str) -> str:
    if method not in METHODS:
        allowed = ", ".join(repr(m) for m in METHODS)
        raise ValueError(f"method={method!r} is invalid: method must be one of {allowed}")
    return method


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(
            f"dtype={dtype!r} is invalid: dtype must be torch.float32 or torch.float64"
        )
    return dtype


def _as_float64(name: str, value: Param) -> Tensor:
    """Convert a parameter to a float64 tensor, naming it when that is impossible."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name}={value!r} is invalid: {name} must be a number or a tensor of numbers"
        ) from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} has dtype {tensor.dtype}: {name} must be real numbers")
    return tensor.to(torch.float64)


def _check_elements(name: str, values: Tensor, ok: Tensor, rule: str) -> None:
    """Raise ValueError naming the first element of ``values`` where ``ok`` is False."""
    bad = ~ok
    if bool(bad.any()):
        first = values.reshape(-1)[bad.reshape(-1)][0].item()
        if values.numel() == 1:
            raise ValueError(f"{name}={first!r} is invalid: {name} must be {rule}")
        raise ValueError(
            f"{name} contains {first!r}, which is invalid: every element of {name} must be {rule}"
        )


def _positive(name: str, value: Param) -> Tensor:
    tensor = _as_float64(name, value)
    # `> 0` is False for NaN, so NaN is rejected too.
    _check_elements(name, tensor, tensor > 0, "> 0")
    return tensor


# ------------------------------------------------------------------------------------- set-up


def _time_grid(T: float, dt: float, dtype: torch.dtype) -> Tensor:
    # The tutorial's grid: arange's length is computed from the float64 endpoints, so the number
    # of steps does not depend on dtype.
    return torch.arange(0, T + dt, dt, dtype=dtype)


def _is_whole(q: Tensor) -> Tensor:
    """``q`` is an integer, up to a relative 1e-6 (``0.7/0.1`` is 6.999999999999999: 7)."""
    return (q - torch.round(q)).abs() <= _REFRACTORY_RTOL * torch.clamp(q.abs(), min=1.0)


def _refractory_steps(tau_ref: Tensor, dt: float, n_steps: int) -> Tensor:
    """Whole time steps held at reset after a spike: floor(tau_ref/dt), robust to decimals.

    Capped at ``n_steps + 1`` ("never again within the run"), which also keeps the step counters
    exact in float32 and an infinite tau_ref finite.
    """
    q = torch.clamp(tau_ref / dt, max=float(n_steps + 1))
    return torch.where(_is_whole(q), torch.round(q), torch.floor(q)).to(torch.int64)


def held_refractory_ms(tau_ref: float, dt: float, n_steps: int) -> float | None:
    """The refractory period a simulation of ``n_steps`` steps of ``dt`` holds for ``tau_ref``.

    Args:
        tau_ref: Refractory period (ms).
        dt: Time step (ms).
        n_steps: Update steps of the run (:func:`mlplab.neuron.analysis.n_steps`).

    Returns:
        ``floor(tau_ref/dt) * dt`` in ms (0.0 for tau_ref=0.5, dt=1) when that differs from
        ``tau_ref``; None when the model holds ``tau_ref`` itself (a whole number of steps, or
        longer than the run, where rounding changes nothing), as for the RefractoryWarning.
    """
    q = torch.tensor([tau_ref / dt], dtype=torch.float64)
    if q.item() > n_steps or bool(_is_whole(q).item()):
        return None
    return int(_refractory_steps(q * dt, dt, n_steps).item()) * dt


def _refractory_note(tau_ref: Tensor, dt: float, n_steps: int) -> str | None:
    """The :class:`RefractoryWarning` message when some tau_ref is not a whole number of steps.

    Values that hold beyond the end of the run (``tau_ref/dt > n_steps``, inf included) are
    exempt: rounding them changes nothing. ``tau_ref = 0`` is a whole number (0 steps).

    Returns:
        One line: which values, what the model does with them, which ``dt`` to use; None when
        every tau_ref is a whole number of steps.
    """
    q = tau_ref / dt
    bad = torch.unique(tau_ref[(q <= n_steps) & ~_is_whole(q)])  # sorted; NaN-free (checked)
    if bad.numel() == 0:
        return None
    short = int((bad < dt).sum())
    example = bad[0].item()
    held = int(_refractory_steps(bad[:1], dt, n_steps).item())
    if bad.numel() == 1:
        kind = "shorter than the time step" if short else "not a whole number of time steps"
        subject = f"tau_ref={example:g} ms is {kind} dt={dt:g} ms"
    else:
        shorter = f"; {short} shorter than dt" if short else ""
        subject = (
            f"{bad.numel()} tau_ref values are not whole numbers of time steps dt={dt:g} ms "
            f"({_some_values(bad.tolist())}{shorter})"
        )
    steps = f"{held} step" + ("" if held == 1 else "s")
    message = (
        f"{subject}: the model rounds the refractory period down to whole steps "
        f"(tau_ref={example:g} ms holds {steps} = {held * dt:g} ms) and fires at most once per "
        f"step (at most {1000 / dt:g} Hz), which moves rates near saturation; use a dt that "
        f"divides {'tau_ref' if bad.numel() == 1 else 'every tau_ref'}"
    )
    # Suggest the largest dt/k that divides every value and is written exactly in a few digits.
    finer = next(
        (
            dt / k
            for k in range(2, _MAX_DT_DIVISOR + 1)
            if float(f"{dt / k:g}") == dt / k and bool(_is_whole(bad * k / dt).all())
        ),
        None,
    )
    return message + (f", e.g. dt={finer:g} ms" if finer is not None else "")


def _some_values(values: list[float], most: int = _MAX_NAMED_VALUES) -> str:
    """``values`` (ms, sorted) as ``"0.25, 1.5 ms"``, the first ``most`` then ``"and N more"``."""
    named = ", ".join(f"{v:g}" for v in values[:most]) + " ms"
    rest = len(values) - most
    return named + (f" and {rest} more" if rest > 0 else "")


def _flat(x: Tensor, shape: torch.Size, dtype: torch.dtype) -> float | Tensor:
    """A Python float when ``x`` has one element, else a flat contiguous tensor of ``shape``."""
    x = x.to(dtype)
    if x.numel() == 1:
        return x.item()  # exactly representable in dtype, so scalar ops see the same value
    return x.expand(shape).reshape(-1).contiguous()


def _setup(
    I: Param,
    Rm: Param,
    tau_ref: Param,
    Cm: Param,
    Vth: Param,
    T: float,
    dt: float,
    method: str,
    dtype: torch.dtype,
    membrane_only: bool = False,
) -> _Setup:
    """Validate the parameters and precompute everything one update step needs.

    With ``membrane_only`` the neuron grid is the broadcast of the membrane parameters alone (the
    steps to threshold do not depend on tau_ref) and ``refractory_steps`` keeps tau_ref's shape.
    """
    dt = _check_number("dt", dt)
    T = _check_number("T", T)
    method = _check_method(method)
    dtype = _check_dtype(dtype)
    I64 = _as_float64("I", I)
    _check_elements("I", I64, torch.isfinite(I64), "finite")
    Rm64 = _positive("Rm", Rm)
    Cm64 = _positive("Cm", Cm)
    # Reset is at 0, so a threshold at or below 0 would fire on every step.
    Vth64 = _positive("Vth", Vth)
    tau64 = _as_float64("tau_ref", tau_ref)
    _check_elements("tau_ref", tau64, tau64 >= 0, ">= 0")

    # numpy's broadcast_shapes: torch's imports sympy on first use (~0.3 s of start-up).
    shape = torch.Size(np.broadcast_shapes(I64.shape, Rm64.shape, Cm64.shape, Vth64.shape))
    if not membrane_only:
        shape = torch.Size(np.broadcast_shapes(shape, tau64.shape))
    time = _time_grid(T, dt, dtype)
    n_steps = time.numel() - 1

    # Rounded to dtype once, like the tutorial's float32 tensor ops see its Python numbers.
    I_d, Rm_d, Cm_d = I64.to(dtype), Rm64.to(dtype), Cm64.to(dtype)
    c = (1.0 / Cm_d.to(torch.float64)).to(dtype)
    dt_d = torch.tensor(dt, dtype=dtype).item()
    if method == "exact":
        x = dt / (Rm_d.to(torch.float64) * Cm_d.to(torch.float64))
        a = torch.exp(-x)
        # -expm1 keeps 1 - a accurate when dt << Rm*Cm.
        b = -torch.expm1(-x) * I_d.to(torch.float64) * Rm_d.to(torch.float64)
        a_op, b_op = _flat(a, shape, dtype), _flat(b, shape, dtype)
    else:
        a_op = b_op = 0.0
    # a = 1 - dt/(Rm*Cm) <= 0  <=>  dt/Cm >= Rm, in the simulator's own rounded numbers; checked
    # on the unexpanded parameters.
    slope = dt_d * c.to(torch.float64) / Rm_d.to(torch.float64)
    overshoots = method == "euler" and bool((slope >= 1).any())
    ops = _Operands(
        method=method,
        I=I_d.expand(shape).reshape(-1).contiguous(),
        Rm=_flat(Rm_d, shape, dtype),
        c=_flat(c, shape, dtype),
        dt=dt_d,
        a=a_op,
        b=b_op,
        Vth=_flat(Vth64, shape, dtype),
    )
    r = _refractory_steps(tau64, dt, n_steps)
    return _Setup(
        shape=shape,
        n_steps=n_steps,
        time=time,
        ops=ops,
        refractory=0.0 if membrane_only else _flat(r, shape, _count_dtype(n_steps, dtype)),
        refractory_steps=r if membrane_only else r.expand(shape).reshape(-1),
        euler_overshoots=overshoots,
        refractory_note=_refractory_note(tau64, dt, n_steps),
    )


def _count_dtype(n_steps: int, dtype: torch.dtype) -> torch.dtype:
    """The float dtype for step counters: dtype itself while it holds n_steps + 2 exactly."""
    return dtype if n_steps + 2 < 2 ** _MANTISSA_BITS[dtype] else torch.float64


def _warn_about(setup: _Setup, stacklevel: int = 3) -> None:
    """Warn about Euler's overshoot and a refractory period that is not whole steps."""
    if setup.refractory_note is not None:
        warnings.warn(setup.refractory_note, RefractoryWarning, stacklevel=stacklevel)
    if setup.euler_overshoots:
        warnings.warn(
            "method='euler' with dt >= Rm*Cm for some neurons: Euler's step overshoots the "
            "steady state (and diverges for dt >= 2*Rm*Cm, where even sub-threshold currents "
            "spike); use method='exact' for those parameters",
            RuntimeWarning,
            stacklevel=stacklevel,
        )


# --------------------------------------------------------------------------------- simulation


def _advance(V: Tensor, tmp: Tensor, ops: _Operands) -> None:
    """One membrane update of all neurons in place (shared by simulator and closed-form fallback).

    Only single-rounding elementwise ops are used, so a neuron's value does not depend on where it
    sits in a tensor or how the tensor is split into SIMD lanes and threads.
    """
    if ops.method == "euler":
        # The tutorial's operations, in its order: V + ((1/Cm) * (-V/Rm + I)) * dt.
        torch.div(V, ops.Rm, out=tmp)
        torch.sub(ops.I, tmp, out=tmp)
        tmp.mul_(ops.c)
        if ops.dt != 1.0:  # multiplying by 1 is exact; skip the pass
            tmp.mul_(ops.dt)
        V.add_(tmp)
    else:
        V.mul_(ops.a).add_(ops.b)


def _simulate_chunk(
    ops: _Operands,
    refractory: float | Tensor,
    n_steps: int,
    V_spike: float,
    rec_local: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Step one chunk of neurons through all time steps; return spike counts and its traces."""
    m = ops.I.numel()
    dtype = ops.I.dtype
    cdtype = _count_dtype(n_steps, dtype)
    V = torch.zeros(m, dtype=dtype)
    tmp = torch.empty_like(V)
    # Masks are 0/1 floats, not bools: comparisons into float outputs and multiplications by
    # them are vectorised, while masked_fill_/where on bool masks are several times slower.
    active = torch.empty(m, dtype=cdtype)
    keep = torch.empty(m, dtype=dtype)  # 1 where no spike this step, 0 where V crossed Vth
    # Steps since the last spike; starts large enough that every neuron is active at step 1.
    since = torch.full((m,), float(n_steps + 1), dtype=cdtype)
    kept = torch.zeros(m, dtype=cdtype)  # steps without a spike; spikes = n_steps - kept
    # With no refractory steps anywhere (tau_ref < dt) every neuron is always active.
    holds = not (isinstance(refractory, float) and refractory == 0.0)
    trace = None
    if rec_local is not None:
        trace = torch.zeros(n_steps + 1, rec_local.numel(), dtype=dtype)
        v_buf = torch.empty(rec_local.numel(), dtype=dtype)
        k_buf = torch.empty_like(v_buf)

    for i in range(1, n_steps + 1):
        _advance(V, tmp, ops)
        if holds:
            torch.ge(since, refractory, out=active)
            V.mul_(active)  # refractory neurons stay at reset (their V was 0)
        torch.lt(V, ops.Vth, out=keep)
        if trace is not None:
            torch.index_select(V, 0, rec_local, out=v_buf)
            torch.index_select(keep, 0, rec_local, out=k_buf)
            # V + V_spike on spike steps, V otherwise (both sums exact as in the tutorial).
            torch.add(v_buf, k_buf.mul_(-V_spike).add_(V_spike), out=trace[i])
        V.mul_(keep)  # reset to 0 after a spike
        kept.add_(keep)
        if holds:
            torch.addcmul(keep, since, keep, out=since)  # (since + 1), or 0 on a spike

    counts = n_steps - kept.to(torch.int64)
    return counts, (None if trace is None else trace.T)


@contextlib.contextmanager
def _serial_kernels() -> Iterator[int]:
    """Run this thread's torch kernels single-threaded; yield the caller's thread count.

    Our work is thousands of small elementwise ops. Splitting each over OpenMP threads puts a
    barrier in every op, and when another process holds a core each barrier waits for the OS
    scheduler (measured on 2 cores: 0.4 s idle, 4-25 s next to another busy process). Instead we
    parallelise over chunks of neurons with one worker thread per core (see _run_chunks), which is
    as fast when the machine is idle and degrades gracefully when it is shared.
    """
    n_threads = torch.get_num_threads()
    if n_threads == 1:
        yield 1
        return
    with _THREADS_LOCK:
        # OpenMP's thread count is per calling thread, so other threads keep theirs.
        torch.set_num_threads(1)
    try:
        yield n_threads
    finally:
        with _THREADS_LOCK:
            # Also puts back the process-wide pool that set_num_threads resizes (pthreadpool).
            torch.set_num_threads(n_threads)


def _run_chunks(run: Callable[[tuple[int, int]], None], numel: int, n_threads: int) -> None:
    """Call ``run((start, stop))`` on chunks covering ``range(numel)`` on up to n_threads threads.

    Each worker runs single-threaded kernels on its own chunks; torch releases the GIL inside
    ops, so the workers overlap.
    """
    workers = max(1, min(n_threads, numel // _MIN_PER_WORKER))
    n_chunks = max(1, math.ceil(numel / _CHUNK))
    n_chunks = math.ceil(n_chunks / workers) * workers  # equal shares per worker
    size = max(1, math.ceil(numel / n_chunks))
    bounds = [(start, min(start + size, numel)) for start in range(0, numel, size)]
    if workers == 1:
        for chunk in bounds:
            run(chunk)
        return

    def in_worker(chunk: tuple[int, int]) -> None:
        if torch.get_num_threads() != 1:
            with _THREADS_LOCK:
                torch.set_num_threads(1)
        run(chunk)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lif") as pool:
        list(pool.map(in_worker, bounds))


def _record_indices(
    record: Tensor | Sequence[int] | int | None, shape: torch.Size
) -> Tensor | None:
    """Flat row-major indices of the neurons to trace (a boolean mask or flat indices)."""
    if record is None:
        return None
    numel = math.prod(shape)
    rec = torch.as_tensor(record)
    if rec.dtype == torch.bool:
        try:
            mask = rec.expand(shape)
        except RuntimeError:
            raise ValueError(
                f"record mask of shape {tuple(rec.shape)} is invalid: it must "
                f"broadcast to the neuron grid {tuple(shape)}"
            ) from None
        return mask.reshape(-1).nonzero().squeeze(1)
    if rec.is_floating_point() or rec.is_complex():
        raise ValueError(
            f"record has dtype {rec.dtype}: record must be a boolean mask or integer flat indices"
        )
    idx = rec.reshape(-1).to(torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
        raise ValueError(
            f"record contains indices outside [0, {numel}): record must index the "
            f"{numel} neurons of the flattened grid {tuple(shape)}"
        )
    return idx


def simulate(
    I: Param,
    Rm: Param,
    tau_ref: Param,
    *,
    T: float = 1000.0,
    dt: float = 1.0,
    Cm: Param = 10.0,
    Vth: Param = 1.0,
    V_spike: float = 0.5,
    method: str = "euler",
    record: Tensor | Sequence[int] | int | None = None,
    dtype: torch.dtype = torch.float32,
) -> LIFResult:
    """Simulate a grid of LIF neurons, all stepped together, one tensor step per time step.

    Units are the tutorial's (ms, kOhm, uF, mA, V); any consistent set works.

    Args:
        I: Input current per neuron (mA, broadcastable).
        Rm: Membrane resistance (kOhm, > 0, broadcastable).
        tau_ref: Refractory period (ms, >= 0, broadcastable); held for ``floor(tau_ref/dt)``
            whole steps.
        T: Total time to simulate (ms, > 0).
        dt: Time step (ms, > 0).
        Cm: Membrane capacitance (uF, > 0, broadcastable).
        Vth: Spike threshold (V, > 0, broadcastable).
        V_spike: Height added to the voltage on spike steps in traces (V, drawing only).
        method: ``"euler"`` (the tutorial's update) or ``"exact"`` (exact integration per step).
        record: Neurons to trace: a boolean mask broadcastable to the grid, or flat indices.
            Only these neurons' voltages are stored.
        dtype: ``torch.float32`` (the tutorial's) or ``torch.float64``.

    Returns:
        An :class:`LIFResult` with counts of the broadcast shape of the parameters.

    Raises:
        ValueError: If a parameter is out of range (the message names it).

    Warns:
        RefractoryWarning: When some ``tau_ref/dt`` is not a whole number (rounded down; at most
            one spike per step).
        RuntimeWarning: For ``method="euler"`` with ``dt >= Rm*Cm`` (Euler overshoots).
    """
    return _simulate(I, Rm, tau_ref, T, dt, Cm, Vth, V_spike, method, record, dtype)


def _simulate(
    I: Param,
    Rm: Param,
    tau_ref: Param,
    T: float,
    dt: float,
    Cm: Param,
    Vth: Param,
    V_spike: float,
    method: str,
    record: Tensor | Sequence[int] | int | None,
    dtype: torch.dtype,
    stacklevel: int = 4,
) -> LIFResult:
    """:func:`simulate`; ``stacklevel`` points warnings at the public caller's line."""
    with _serial_kernels() as n_threads:
        setup = _setup(I, Rm, tau_ref, Cm, Vth, T, dt, method, dtype)
        _warn_about(setup, stacklevel=stacklevel)
        rec = _record_indices(record, setup.shape)
        return _simulate_setup(setup, rec, float(V_spike), n_threads)


def _simulate_setup(setup: _Setup, rec: Tensor | None, V_spike: float, n_threads: int) -> LIFResult:
    """Step the neurons of a validated set-up, chunk by chunk."""
    numel = setup.ops.I.numel()
    counts = torch.empty(numel, dtype=torch.int64)
    traces = None
    if rec is not None:
        traces = torch.empty(rec.numel(), setup.n_steps + 1, dtype=setup.ops.I.dtype)

    def run(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        rows = local = None
        if rec is not None:
            rows = ((rec >= start) & (rec < stop)).nonzero().squeeze(1)
            local = rec[rows] - start if rows.numel() else None
        r = setup.refractory
        chunk_counts, chunk_traces = _simulate_chunk(
            setup.ops.take(slice(start, stop)),
            r[start:stop] if isinstance(r, Tensor) else r,
            setup.n_steps,
            V_spike,
            local,
        )
        counts[start:stop] = chunk_counts  # chunks are disjoint, so threads never collide
        if chunk_traces is not None:
            traces[rows] = chunk_traces

    _run_chunks(run, numel, n_threads)
    return LIFResult(
        counts=counts.reshape(setup.shape), time=setup.time, traces=traces, recorded=rec
    )


def spike_counts(
    I: Param,
    Rm: Param,
    tau_ref: Param,
    *,
    T: float = 1000.0,
    dt: float = 1.0,
    Cm: Param = 10.0,
    Vth: Param = 1.0,
    V_spike: float = 0.5,
    method: str = "euler",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Spike count of every neuron of a parameter grid (:func:`simulate` without traces).

    Args:
        I: Input current per neuron (mA, broadcastable).
        Rm: Membrane resistance (kOhm, > 0, broadcastable).
        tau_ref: Refractory period (ms, >= 0, broadcastable).
        T: Total time to simulate (ms, > 0).
        dt: Time step (ms, > 0).
        Cm: Membrane capacitance (uF, > 0, broadcastable).
        Vth: Spike threshold (V, > 0, broadcastable).
        V_spike: Spike height (V, does not affect counts).
        method: ``"euler"`` or ``"exact"``.
        dtype: ``torch.float32`` or ``torch.float64``.

    Returns:
        int64 counts of the broadcast shape of the parameters.

    Raises:
        ValueError: If a parameter is out of range (the message names it).

    Warns:
        RefractoryWarning: When some ``tau_ref/dt`` is not a whole number (rounded down; at most
            one spike per step).
        RuntimeWarning: For ``method="euler"`` with ``dt >= Rm*Cm`` (Euler overshoots).
    """
    return _simulate(I, Rm, tau_ref, T, dt, Cm, Vth, V_spike, method, None, dtype).counts


def run_lif(
    I: float | Tensor,
    T: float = 50,
    dt: float = 0.1,
    tau_ref: float = 10,
    Rm: float = 1,
    Cm: float = 10,
    Vth: float = 1,
    V_spike: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Simulate one LIF neuron like the tutorial's ``run_LIF`` (float32, Euler).

    Args:
        I: Input current (one number).
        T: Total time to simulate (ms).
        dt: Time step (ms).
        tau_ref: Refractory period (ms).
        Rm: Membrane resistance (kOhm).
        Cm: Membrane capacitance (uF).
        Vth: Spike threshold (V).
        V_spike: Height added to the voltage on spike steps (V).

    Returns:
        ``(time, Vm)``: the time grid and the membrane voltage at each time point.
    """
    for name, value in (("I", I), ("tau_ref", tau_ref), ("Rm", Rm), ("Cm", Cm), ("Vth", Vth)):
        if torch.as_tensor(value).numel() != 1:
            raise ValueError(
                f"{name} has {torch.as_tensor(value).numel()} elements: run_lif "
                "simulates one neuron; use simulate() for a grid"
            )
    result = _simulate(I, Rm, tau_ref, T, dt, Cm, Vth, V_spike, "euler", [0], torch.float32)
    return result.time, result.traces[0]


# -------------------------------------------------------------------------------- closed form


def _first_crossings(ops: _Operands, n_steps: int) -> Tensor:
    """Iterate neurons from V = 0 with the simulator's arithmetic; return each first spike step.

    Neurons that do not reach threshold within ``n_steps`` get ``n_steps + 1``.
    """
    m = ops.I.numel()
    V = torch.zeros(m, dtype=ops.I.dtype)
    tmp = torch.empty_like(V)
    first = torch.full((m,), n_steps + 1, dtype=torch.int64)
    pending = torch.ones(m, dtype=torch.bool)
    for k in range(1, n_steps + 1):
        _advance(V, tmp, ops)
        # The simulator's own test (not V >= Vth), so NaN behaves identically.
        hit = torch.lt(V, ops.Vth).logical_not_().logical_and_(pending)
        first.masked_fill_(hit, k)
        pending.logical_and_(hit.logical_not_())
        if k % 64 == 0 and not bool(pending.any()):
            break
    return first


def _as64(x: float | Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _steps_to_threshold(ops: _Operands, n_steps: int) -> Tensor:
    """Steps from reset (V = 0) to the first spike, ``n_steps + 1`` if none within the run.

    The update is affine, V <- a*V + b, so V_n = V_inf * (1 - a**n) for 0 < a < 1 and the first
    n with V_n >= Vth follows from logarithms. Rounding in the simulator (and in the logarithms)
    can move V_n across Vth when it is within a tiny margin of it; those neurons, and those with
    a <= 0 or a >= 1 (Euler overshoot/divergence, or a step below float resolution), are iterated
    with the simulator's arithmetic instead, so the result is exactly the simulator's.
    """
    numel = ops.I.numel()
    dtype = ops.I.dtype
    I64 = ops.I.to(torch.float64)
    if ops.method == "euler":
        # The simulator's real-number map with its rounded constants.
        step = _as64(ops.c) * ops.dt / _as64(ops.Rm)
        a = 1.0 - step
        b = _as64(ops.c) * ops.dt * I64
    else:
        a = _as64(ops.a)
        b = _as64(ops.b) * torch.ones_like(I64)
    a = a.expand(numel)
    Vth = _as64(ops.Vth).expand(numel)
    one_minus_a = 1.0 - a
    stable = (a > 0) & (a < 1)
    safe_1ma = torch.where(stable, one_minus_a, torch.ones_like(a))
    safe_a = torch.where(stable, a, torch.full_like(a, 0.5))
    V_inf = b / safe_1ma
    log_a = torch.log(safe_a)

    reaches = stable & (V_inf > Vth)
    ratio = torch.where(reaches, Vth / V_inf, torch.zeros_like(V_inf))
    n_real = torch.log1p(-ratio) / log_a  # both logs < 0 where reaches
    never = float(n_steps + 1)
    n_est = torch.where(reaches, torch.ceil(n_real), torch.full_like(n_real, never))
    n_est = torch.nan_to_num(n_est, nan=never, posinf=never).clamp_(1.0, never)

    # Bound on the simulator's rounding error up to step n_est: each step adds a few ulps of
    # |V| + |b| (|V| < Vth before a crossing, <= |V_inf| when V_inf < 0), damped by a per step,
    # so they sum over at most min(n, 1/(1-a)) steps. The second term bounds the float64
    # evaluation below. Generous on purpose: an undecided neuron is merely iterated.
    eps = torch.finfo(dtype).eps
    eps64 = torch.finfo(torch.float64).eps
    horizon = torch.minimum(n_est.clamp(max=float(n_steps)), 1.0 / safe_1ma)
    magnitude = Vth + torch.clamp(-V_inf, min=0.0) + b.abs()
    tol = 16 * eps * magnitude * (horizon + 1) + 8 * eps64 * (n_steps + 2) * (V_inf.abs() + Vth)

    def v_at(n: Tensor) -> Tensor:
        return -V_inf * torch.expm1(n * log_a)

    below_before = (n_est <= 1) | (v_at(n_est - 1) <= Vth - tol)
    above_at = (n_est >= never) | (v_at(n_est) >= Vth + tol)
    decided = stable & below_before & above_at & torch.isfinite(V_inf)

    n_th = n_est.to(torch.int64)
    undecided = (~decided).nonzero().squeeze(1)
    if undecided.numel():
        n_th[undecided] = _first_crossings(ops.take(undecided), n_steps)
    return n_th


def closed_form_counts(
    I: Param,
    Rm: Param,
    tau_ref: Param,
    *,
    T: float = 1000.0,
    dt: float = 1.0,
    Cm: Param = 10.0,
    Vth: Param = 1.0,
    method: str = "euler",
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Spike counts of the discrete-time model without simulating every step.

    After each reset the neuron needs the same ``n_th`` steps to reach threshold, then is held for
    ``r = floor(tau_ref/dt)`` steps, so spikes fall on steps ``n_th + k*(n_th + r)``. ``n_th`` comes
    from the geometric solution ``V_n = V_inf*(1 - a**n)``; neurons it cannot decide within
    rounding error, and Euler's ``dt >= Rm*Cm`` regime, are iterated with the simulator's
    arithmetic, so the result equals ``spike_counts(..., dtype=dtype)`` exactly.

    Args:
        I: Input current per neuron (mA, broadcastable).
        Rm: Membrane resistance (kOhm, > 0, broadcastable).
        tau_ref: Refractory period (ms, >= 0, broadcastable).
        T: Total time to simulate (ms, > 0).
        dt: Time step (ms, > 0).
        Cm: Membrane capacitance (uF, > 0, broadcastable).
        Vth: Spike threshold (V, > 0, broadcastable).
        method: ``"euler"`` or ``"exact"``.
        dtype: Arithmetic of the simulation being reproduced (float64 by default).

    Returns:
        int64 counts of the broadcast shape of the parameters.

    Raises:
        ValueError: If a parameter is out of range (the message names it).

    Warns:
        RefractoryWarning: When some ``tau_ref/dt`` is not a whole number (rounded down; at most
            one spike per step).
        RuntimeWarning: For ``method="euler"`` with ``dt >= Rm*Cm`` (Euler overshoots).
    """
    with _serial_kernels() as n_threads:
        # The steps to threshold depend on the membrane parameters only, so they are computed on
        # their (usually much smaller) grid and broadcast against tau_ref at the end.
        setup = _setup(I, Rm, tau_ref, Cm, Vth, T, dt, method, dtype, membrane_only=True)
        _warn_about(setup)
        n_th = _steps_to_threshold_chunked(setup, n_threads).reshape(setup.shape)
        n_steps = setup.n_steps
        period = n_th + setup.refractory_steps
        fires = n_th <= n_steps
        return torch.where(fires, 1 + (n_steps - n_th).clamp_(min=0) // period, 0)


def _steps_to_threshold_chunked(setup: _Setup, n_threads: int) -> Tensor:
    """:func:`_steps_to_threshold` of every neuron of a set-up, chunk by chunk."""
    numel = setup.ops.I.numel()
    n_th = torch.empty(numel, dtype=torch.int64)

    def run(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        n_th[start:stop] = _steps_to_threshold(setup.ops.take(slice(start, stop)), setup.n_steps)

    # Chunked like the simulator, for the same reason: many small ops, robust to a busy machine.
    _run_chunks(run, numel, n_threads)
    return n_th


# ---------------------------------------------------------------------------------- analytic


def analytic_rate(I: Param, Rm: Param, Cm: Param, Vth: Param, tau_ref: Param) -> Tensor:
    """Firing rate of the continuous-time LIF neuron.

    ``1 / (tau_ref + Rm*Cm*ln(Rm*I / (Rm*I - Vth)))`` where ``Rm*I > Vth``, else 0, in spikes per
    unit of time of ``tau_ref`` (per ms for ms).

    Args:
        I: Input current (broadcastable).
        Rm: Membrane resistance (> 0).
        Cm: Membrane capacitance (> 0).
        Vth: Spike threshold (> 0).
        tau_ref: Refractory period (>= 0).

    Returns:
        Rates of the broadcast shape, in the promoted floating dtype of the inputs.
    """
    I64 = _as_float64("I", I)
    Rm64, Cm64, Vth64 = _positive("Rm", Rm), _positive("Cm", Cm), _positive("Vth", Vth)
    tau64 = _as_float64("tau_ref", tau_ref)
    _check_elements("tau_ref", tau64, tau64 >= 0, ">= 0")
    out_dtype = torch.as_tensor(I).dtype
    for x in (Rm, Cm, Vth, tau_ref):
        out_dtype = torch.promote_types(out_dtype, torch.as_tensor(x).dtype)
    if not out_dtype.is_floating_point:
        out_dtype = torch.get_default_dtype()

    drive = Rm64 * I64  # V_inf
    fires = drive > Vth64
    # Sub-threshold entries get a harmless stand-in so log/division never see <= 0.
    safe = torch.where(fires, drive, 2 * Vth64)
    time_to_threshold = Rm64 * Cm64 * torch.log(safe / (safe - Vth64))
    rate = torch.where(fires, 1.0 / (tau64 + time_to_threshold), torch.zeros_like(drive))
    return rate.to(out_dtype)
