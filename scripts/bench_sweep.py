"""Benchmark: sweeps with Hydra's basic launcher, joblib and mlplab's stacked launcher.

Run:
    .venv/bin/python scripts/bench_sweep.py                      # seeds: 16 and 64, 3 launchers
    .venv/bin/python scripts/bench_sweep.py --seeds 16 --launchers basic stacked stacked:2
    .venv/bin/python scripts/bench_sweep.py --arch               # the 27-job architecture grid
    .venv/bin/python scripts/bench_sweep.py --memory 16 256      # peak memory of stacked runs
    .venv/bin/python scripts/bench_sweep.py --quick              # 4 seeds, 5 epochs: a check

Seeds (default): ``mlplab-train -m experiment=tutorial figures=false seed=range(1, N+1)`` for
each N of ``--seeds`` (16 and 64), run with every launcher of ``--launchers`` (basic, joblib,
stacked) side by side, each sweep a real process in a temporary folder (``stacked:2``: the
stacked launcher with 2 torch threads); the table gives total wall time and the speed-up over
the basic launcher. Targets: stacked at least 5x faster than
basic for 16 seeds and at least 10x for 64 seeds.

Arch (``--arch``): ``mlplab-train -m experiment=tutorial sweep=arch`` (widths 8, 32, 128 x depths
1, 2, 3 x ReLU(), Tanh(), LeakyReLU(0.1)), with figures, as before. Targets: joblib at least 1.6x
faster than basic on 2 cores; basic per-job overhead under 1 s.

Reported per sweep: total wall time of the process, speed-up over the basic launcher, CPU time
(user + system of the process and of the workers it waited for: far less sensitive to other
processes than wall time), peak resident memory of the process (the launcher's own; joblib's
workers are separate processes), mean fit time (``fit_time_s`` in each job's metrics.json: for a
stacked job, its whole stack's fit), and for the basic launcher, which runs jobs one after
another, the mean per-job wall time and the overhead beyond the fit (the first job left out: it
pays the sweep's set-up).

Every launcher runs torch on 1 thread per job (joblib through OMP_NUM_THREADS, the basic
launcher through the TorchThreads Hydra callback, a stack through hydra.launcher.num_threads'
default). The 1-minute load average is printed before and after each sweep: run it on a quiet
machine; other processes on the cores change the numbers several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARCH = ["experiment=tutorial", "sweep=arch"]
ARCH_QUICK = [
    "experiment=tutorial",
    "sweep=arch",
    "model.width=8,32",
    "model.depth=1",
    "model.activation=ReLU(),Tanh()",
    "trainer.max_epochs=5",
]
# Terminal output (progress bars) is not part of what is measured: it goes to a pipe here.
SEEDS = ["experiment=tutorial", "figures=false"]


def seed_sweep(n: int) -> list[str]:
    """The overrides of an n-seed sweep of the tutorial."""
    return [*SEEDS, f"seed=range(1,{n + 1})"]


def launcher_overrides(launcher: str) -> list[str]:
    """``stacked:2`` is the stacked launcher with 2 torch threads; other names as they are."""
    name, _, threads = launcher.partition(":")
    return [f"hydra/launcher={name}", *([f"hydra.launcher.num_threads={threads}"] * bool(threads))]


def run_sweep(launcher: str, overrides: list[str], log_dir: Path) -> dict[str, float]:
    """Run one multirun as a real process; return its timings (seconds) and peak memory."""
    cmd = [
        str(BIN / "mlplab-train"),
        "-m",
        *overrides,
        *launcher_overrides(launcher),
        f"paths.log_dir={log_dir}",
    ]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        total = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            out.seek(0)
            tail = out.read().decode(errors="replace")[-3000:]
            sys.exit(f"{' '.join(cmd)} failed ({process.returncode}):\n{tail}")
    (sweep_dir,) = (log_dir / "train" / "multiruns").iterdir()
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    records = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    bad = [job.name for job, rec in zip(jobs, records, strict=True) if rec["status"] != "ok"]
    if bad:
        sys.exit(f"{launcher}: jobs {bad} failed; see {sweep_dir}")
    fits = [rec["metrics"]["fit_time_s"] for rec in records]
    ends = [(job / "metrics.json").stat().st_mtime for job in jobs]
    # Consecutive completions: the whole cost of each job after the first (basic launcher).
    walls = [b - a for a, b in pairwise(ends)]
    overheads = [wall - fit for wall, fit in zip(walls, fits[1:], strict=True)]
    return {
        "jobs": len(jobs),
        "total": total,
        "fit": statistics.fmean(fits),
        "job_wall": statistics.fmean(walls) if walls else float("nan"),
        "overhead": statistics.fmean(overheads) if overheads else float("nan"),
        "body": statistics.fmean(rec["wall_time_s"] for rec in records),
        "peak_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        # CPU time of the process and the children it waited for (joblib's workers): far less
        # sensitive than wall time to other processes on the machine.
        "cpu": usage.ru_utime + usage.ru_stime,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "test_acc": statistics.fmean(rec["metrics"]["test/acc"] for rec in records),
    }


def run_all(launchers: list[str], overrides: list[str]) -> dict[str, dict[str, float]]:
    results = {}
    for launcher in launchers:
        with tempfile.TemporaryDirectory(prefix=f"bench_sweep_{launcher.replace(':', '')}_") as tmp:
            results[launcher] = run_sweep(launcher, overrides, Path(tmp))
        print(f"  {launcher}: {results[launcher]['total']:.1f} s", file=sys.stderr, flush=True)
    return results


def print_table(title: str, results: dict[str, dict[str, float]]) -> None:
    base = results.get("basic", next(iter(results.values())))["total"]
    print(f"\n### {title}\n")
    print(
        "| launcher | jobs | total wall (s) | speed-up | CPU time (s) | peak memory (MB) "
        "| mean fit (s) | per-job wall, sequential (s) | per-job overhead beyond fit (s) "
        "| load before/after |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for launcher, r in results.items():
        sequential = launcher == "basic"
        wall = f"{r['job_wall']:.2f}" if sequential else "-"
        overhead = f"{r['overhead']:.2f}" if sequential else "-"
        print(
            f"| {launcher} | {r['jobs']:.0f} | {r['total']:.1f} | {base / r['total']:.2f}x "
            f"| {r['cpu']:.1f} | {r['peak_mb']:.0f} | {r['fit']:.2f} | {wall} | {overhead} "
            f"| {r['load_before']:.1f} / {r['load_after']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--launchers", nargs="+", default=None)
    parser.add_argument("--arch", action="store_true", help="the 27-job architecture grid")
    parser.add_argument(
        "--memory", type=int, nargs="+", help="peak memory of stacked runs of these many seeds"
    )
    parser.add_argument("--quick", action="store_true", help="4 seeds of 5 epochs, to check")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; 1-minute load average {os.getloadavg()[0]:.1f} at start")
    if args.memory:
        results = {}
        for n in args.memory:
            with tempfile.TemporaryDirectory(prefix="bench_sweep_memory_") as tmp:
                results[f"stacked, {n} seeds"] = run_sweep("stacked", seed_sweep(n), Path(tmp))
        print_table("peak memory of stacked sweeps (experiment=tutorial figures=false)", results)
        return
    if args.arch:
        launchers = args.launchers or ["basic", "joblib"]
        overrides = ARCH_QUICK if args.quick else ARCH
        results = run_all(launchers, overrides)
        print_table(f"mlplab-train -m {' '.join(overrides)}", results)
        if "basic" in results and "joblib" in results:
            speedup = results["basic"]["total"] / results["joblib"]["total"]
            print(
                f"\njoblib speed-up {speedup:.2f}x (target >= 1.6x on 2 cores); basic per-job "
                f"overhead beyond fit {results['basic']['overhead']:.2f} s (target < 1 s)"
            )
        return
    launchers = args.launchers or ["basic", "joblib", "stacked"]
    seeds = [4] if args.quick else args.seeds
    for n in seeds:
        overrides = seed_sweep(n) + (["trainer.max_epochs=5"] if args.quick else [])
        results = run_all(launchers, overrides)
        print_table(f"mlplab-train -m {' '.join(overrides)}", results)
        if "basic" in results and "stacked" in results:
            speedup = results["basic"]["total"] / results["stacked"]["total"]
            target = 5 if n <= 16 else 10
            print(f"\nstacked speed-up over basic, {n} seeds: {speedup:.1f}x (target >= {target}x)")


if __name__ == "__main__":
    main()
