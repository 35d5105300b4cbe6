"""Benchmark mlplab.neuron.lif on the tutorial's transfer-function grid, and the tutorial's loop.

The grid is the issue's acceptance grid: 100 Rm x 100 tau_ref (linspace 1..100) x 50 currents
(linspace 0..2), T=1000, dt=1, float32, Euler: 5e8 neuron-steps. ``spike_counts`` runs in a fresh
subprocess so that its peak-RSS increase (``ru_maxrss`` after minus before) is its own. The
"before" column is the tutorial's ``run_LIF`` Python loop, timed on a few neurons of the same grid
and extrapolated.

Usage:
    .venv/bin/python scripts/bench_lif.py [--threads 2] [--repeats 3] [--check]
"""

# The tutorial names the input current I.
# ruff: noqa: E741

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mlplab.neuron.lif import closed_form_counts, spike_counts

# The tutorial's run_LIF, verbatim, lives once: in the tests' oracle module.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tutorial import run_LIF

N_RM, N_TAU, N_I = 100, 100, 50
T, DT = 1000.0, 1.0
TARGET_SIM_S, TARGET_RSS_MB, TARGET_CLOSED_S = 3.0, 300.0, 0.1


def make_grid() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(I, Rm, tau_ref) as broadcastable float32 tensors of the acceptance grid."""
    I = torch.linspace(0, 2, N_I).view(1, 1, -1)
    Rm = torch.linspace(1, 100, N_RM).view(-1, 1, 1)
    tau_ref = torch.linspace(1, 100, N_TAU).view(1, -1, 1)
    return I, Rm, tau_ref


def max_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def child(threads: int, repeats: int) -> None:
    """Measure spike_counts and closed_form_counts in this fresh process; print JSON."""
    torch.set_num_threads(threads)
    I, Rm, tau_ref = make_grid()
    # Warm up kernels and thread pools on a small grid, so the timing is the simulation's.
    spike_counts(I[..., :2], Rm[:40], tau_ref, T=20, dt=DT)
    closed_form_counts(I[..., :2], Rm[:40], tau_ref, T=20, dt=DT)
    rss_before = max_rss_mb()
    sim_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        counts = spike_counts(I, Rm, tau_ref, T=T, dt=DT)
        sim_times.append(time.perf_counter() - start)
    rss_increase = max_rss_mb() - rss_before

    closed_times = []
    for _ in range(max(5, repeats)):
        start = time.perf_counter()
        closed = closed_form_counts(I, Rm, tau_ref, T=T, dt=DT)
        closed_times.append(time.perf_counter() - start)
    counts64 = spike_counts(I, Rm, tau_ref, T=T, dt=DT, dtype=torch.float64)
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "neurons": counts.numel(),
                "sim_best_s": min(sim_times),
                "sim_median_s": statistics.median(sim_times),
                "rss_increase_mb": rss_increase,
                "closed_best_s": min(closed_times),
                "closed_median_s": statistics.median(closed_times),
                "closed_vs_float64_mismatches": int((closed != counts64).sum()),
                "closed_vs_float32_mismatches": int((closed != counts).sum()),
                "total_spikes": int(counts.sum()),
                "sample_counts": counts[::11, ::13, ::7].reshape(-1).tolist(),
            }
        )
    )


def tutorial_loop(n_neurons: int) -> dict[str, float]:
    """Time the tutorial's loop on neurons spread over the grid; check our counts on them."""
    I, Rm, tau_ref = make_grid()
    picks = [(k * 37 % N_RM, k * 53 % N_TAU, (k * 7 + 30) % N_I) for k in range(n_neurons)]
    ours = spike_counts(I, Rm, tau_ref, T=T, dt=DT)
    start = time.perf_counter()
    theirs = []
    for i, j, k in picks:
        _, Vm = run_LIF(I[0, 0, k], T=T, dt=DT, Vth=1, Rm=Rm[i, 0, 0], tau_ref=tau_ref[0, j, 0])
        theirs.append(int(torch.sum(Vm > 1)))
    wall = time.perf_counter() - start
    agree = all(ours[i, j, k].item() == c for (i, j, k), c in zip(picks, theirs, strict=True))
    return {"wall_s": wall, "neuron_steps": n_neurons * T / DT, "agree": agree}


def other_cpu_load(interval: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over ``interval`` seconds (Linux /proc/stat), before we start."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = snapshot()
        time.sleep(interval)
        busy1, total1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(1, total1 - total0)


def fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.3g} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed spike_counts runs")
    parser.add_argument("--tutorial-neurons", type=int, default=10, help="neurons for the loop")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.threads, args.repeats)
        return 0

    load = other_cpu_load()
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    torch.set_num_threads(args.threads)
    loop = tutorial_loop(args.tutorial_neurons)

    grid_steps = N_RM * N_TAU * N_I * T / DT
    loop_rate = loop["neuron_steps"] / loop["wall_s"]
    sim_rate = grid_steps / m["sim_best_s"]
    ok_sim = m["sim_best_s"] < TARGET_SIM_S
    ok_rss = m["rss_increase_mb"] < TARGET_RSS_MB
    ok_closed = m["closed_best_s"] < TARGET_CLOSED_S
    agree = m["closed_vs_float64_mismatches"] == 0

    print(
        f"grid: {N_RM} Rm x {N_TAU} tau_ref x {N_I} I = {m['neurons']:,} neurons x "
        f"{int(T / DT)} steps = {grid_steps:.1e} neuron-steps (T={T:g}, dt={DT:g}, float32, "
        f"euler); torch {torch.__version__}, {m['threads']} threads, {os.cpu_count()} CPUs"
    )
    print()
    print("| | tutorial `run_LIF` loop (before) | `spike_counts` (after) | `closed_form_counts` |")
    print("|---|---|---|---|")
    print(
        f"| measured on | {args.tutorial_neurons} neurons of the grid | full grid "
        f"(best of {args.repeats}) | full grid (best of {max(5, args.repeats)}) |"
    )
    print(
        f"| wall time | {fmt_s(loop['wall_s'])} | {m['sim_best_s']:.2f} s "
        f"(median {m['sim_median_s']:.2f} s) | {m['closed_best_s'] * 1e3:.0f} ms "
        f"(median {m['closed_median_s'] * 1e3:.0f} ms) |"
    )
    print(
        f"| full grid, extrapolated | {fmt_s(grid_steps / loop_rate)} | "
        f"{m['sim_best_s']:.2f} s | {m['closed_best_s'] * 1e3:.0f} ms |"
    )
    print(
        f"| neuron-steps/s | {loop_rate:.2e} | {sim_rate:.2e} ({sim_rate / loop_rate:,.0f}x) | "
        "no stepping |"
    )
    print(f"| peak RSS increase | - | {m['rss_increase_mb']:.0f} MB | - |")
    print(
        f"| counts agree | with `spike_counts` on all {args.tutorial_neurons}: "
        f"{'yes' if loop['agree'] else 'NO'} | - | with `spike_counts(dtype=float64)`: "
        f"{'yes' if agree else 'NO'} ({m['closed_vs_float64_mismatches']} of "
        f"{m['neurons']:,} differ; vs float32: "
        f"{m['closed_vs_float32_mismatches']}) |"
    )
    print()
    print(
        f"targets: spike_counts < {TARGET_SIM_S:g} s: {'ok' if ok_sim else 'MISSED'}; "
        f"RSS increase < {TARGET_RSS_MB:g} MB: {'ok' if ok_rss else 'MISSED'}; "
        f"closed_form_counts < {TARGET_CLOSED_S:g} s: {'ok' if ok_closed else 'MISSED'}; "
        f"closed form == float64 simulation: {'ok' if agree else 'MISSED'}"
    )
    if load is not None and load > 0.1:
        print(f"note: the CPUs were {load:.0%} busy before the run; other processes skew timings")
    all_ok = ok_sim and ok_rss and ok_closed and agree and loop["agree"]
    return 0 if all_ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
