"""Benchmark: the 27-job architecture sweep with Hydra's basic launcher and with joblib.

Run: .venv/bin/python scripts/bench_sweep.py [--quick] [--launchers basic joblib]

The sweep is `mlplab-train -m experiment=tutorial sweep=arch` (widths 8, 32, 128 x depths 1, 2, 3
x ReLU(), Tanh(), LeakyReLU(0.1)), with the default logger (TensorBoard), callbacks (checkpoint
every epoch, progress bar, model summary) and figures: what a user runs. Each launcher runs it
once, as a real process, in a temporary folder. --quick runs 4 jobs of 5 epochs instead, to
check the script; its numbers are not the benchmark.

Reported per launcher:
  * total wall time of the process, and the speed-up over the basic launcher;
  * mean fit time (``fit_time_s`` in each job's metrics.json);
  * per-job wall time of the basic launcher, which runs jobs one after another: the time
    between one job's metrics.json and the next (Hydra's per-job set-up, data, model, fit,
    test, figures, TensorBoard), and the overhead beyond the fit = per-job wall - fit time.
    The first job is left out: it also pays the sweep's set-up and first-use imports.
Targets: joblib at least 1.6x faster than basic on 2 cores; basic per-job overhead under 1 s.
Both launchers run torch on 1 thread per job on 2 cores (joblib through OMP_NUM_THREADS, the
basic launcher through the TorchThreads Hydra callback), so the comparison is like for like.
Run it on a quiet machine: other processes on the cores change the numbers several-fold.
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
FULL = ["experiment=tutorial", "sweep=arch"]
QUICK = [
    "experiment=tutorial",
    "sweep=arch",
    "model.width=8,32",
    "model.depth=1",
    "model.activation=ReLU(),Tanh()",
    "trainer.max_epochs=5",
]


def run_sweep(launcher: str, overrides: list[str], log_dir: Path) -> dict[str, float]:
    """Run one multirun; return its timings (seconds)."""
    cmd = [
        str(BIN / "mlplab-train"),
        "-m",
        *overrides,
        f"hydra/launcher={launcher}",
        f"paths.log_dir={log_dir}",
    ]
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    total = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 jobs of 5 epochs, to check")
    parser.add_argument("--launchers", nargs="+", default=["basic", "joblib"])
    args = parser.parse_args()
    overrides = QUICK if args.quick else FULL
    results = {}
    load = os.getloadavg()[0]  # before our own jobs: what else is using the cores
    for launcher in args.launchers:
        with tempfile.TemporaryDirectory(prefix=f"bench_sweep_{launcher}_") as tmp:
            results[launcher] = run_sweep(launcher, overrides, Path(tmp))
    base = results.get("basic", next(iter(results.values())))["total"]
    print(f"\n### mlplab-train -m {' '.join(overrides)}\n")
    quiet = "quiet" if load < 0.5 else "NOT quiet: other processes skew these numbers"
    print(
        f"{os.cpu_count()} CPU cores; 1-minute load average before the runs {load:.1f} ({quiet})\n"
    )
    print(
        "| launcher | jobs | total wall (s) | speed-up | mean fit (s) | mean task body (s) "
        "| per-job wall, sequential (s) | per-job overhead beyond fit (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for launcher, r in results.items():
        sequential = launcher == "basic"
        wall = f"{r['job_wall']:.2f}" if sequential else "-"
        overhead = f"{r['overhead']:.2f}" if sequential else "-"
        print(
            f"| {launcher} | {r['jobs']:.0f} | {r['total']:.1f} | {base / r['total']:.2f}x "
            f"| {r['fit']:.2f} | {r['body']:.2f} | {wall} | {overhead} |"
        )
    if "basic" in results and "joblib" in results:
        speedup = results["basic"]["total"] / results["joblib"]["total"]
        print(
            f"\njoblib speed-up {speedup:.2f}x (target >= 1.6x on 2 cores); basic per-job "
            f"overhead beyond fit {results['basic']['overhead']:.2f} s (target < 1 s)"
        )


if __name__ == "__main__":
    main()
