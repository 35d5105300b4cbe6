"""Benchmark ``mlplab-lif`` end to end: process start, Hydra, the grid, files and figures.

Times real subprocesses of the console script (median of ``--repeats`` runs each):

- ``mlplab-lif mode=sweep``: the tutorial's widget grid, 100 Rm x 100 tau_ref x 50 I = 500,000
  neurons x 1000 Euler steps, with the netCDF grid, four figures and TensorBoard (target < 6 s);
- the same with ``counts=closed_form`` (target < 3 s);
- ``mlplab-lif mode=nope``, which stops at the first config check: the fixed cost of starting
  Python, torch and Hydra, for reference.

The machine's load (other processes) is printed with the table, since it moves every wall time;
the CPU time (user + sys of the run) moves much less with it. The size of each sweep's output
folder (netCDF, PNGs, TensorBoard events, metrics.json) is printed too (target < 5 MB).
``--docs-figure PATH`` also writes a 2x2 montage of the sweep's four figures (docs/lif.png).
``--before REF`` also times the code of git revision REF (its own console entry point, its ``src/``
first on PYTHONPATH), alternating with the working tree run by run, so both see the same machine.

Usage:
    .venv/bin/python scripts/bench_lif_task.py [--repeats 3] [--check] [--before REF]
        [--docs-figure docs/lif.png]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import console_command, export_revision

COMMANDS = {
    "start-up only (`mode=nope`, exits 2)": (["mode=nope"], None),
    "`mlplab-lif mode=sweep`": (["mode=sweep"], 6.0),
    "`mlplab-lif mode=sweep counts=closed_form`": (["mode=sweep", "counts=closed_form"], 3.0),
}
FIGURES = ("fi_curves", "distance_to_relu", "rate_heatmap", "rate_error_heatmap")
# The largest output folder a default sweep may write (MB).
MAX_FOLDER_MB = 5.0


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(
    args: list[str], log_dir: Path, revision: Path | None = None
) -> tuple[float, float, int]:
    """Wall time, CPU time (user + sys) and exit status of one ``mlplab-lif`` run.

    ``revision``: an exported git revision (see ``benchlib``) to run instead of the working tree.
    """
    command, env = console_command("mlplab-lif", revision)
    cpu = children_cpu_s()
    start = time.perf_counter()
    proc = subprocess.run(
        [*command, *args, f"paths.log_dir={log_dir}"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 2):
        sys.stderr.write(proc.stderr)
    return wall, children_cpu_s() - cpu, proc.returncode


def folder_mb(log_dir: Path) -> float:
    """Size of the one run folder under ``log_dir`` (all its files, in MB)."""
    (run_dir,) = (log_dir / "lif" / "runs").iterdir()
    return sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) / 1e6


def write_montage(run_dir: Path, path: Path) -> None:
    """The sweep's four figures in a 2x2 grid, small enough to commit."""
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    fig = Figure(figsize=(12.8, 9.6), layout="constrained")
    for ax, name in zip(fig.subplots(2, 2).flat, FIGURES, strict=True):
        ax.imshow(imread(run_dir / f"{name}.png"))
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70, pil_kwargs={"optimize": True})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (median)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--docs-figure", type=Path, help="write the sweep's 2x2 montage here")
    parser.add_argument("--before", metavar="REF", help="also time git revision REF, alternating")
    args = parser.parse_args()

    load_before = os.getloadavg()
    rows, missed = [], False
    with tempfile.TemporaryDirectory(prefix="bench_lif_task_") as tmp:
        before_rev = export_revision(args.before, Path(tmp) / "before") if args.before else None
        for label, (command, target) in COMMANDS.items():
            walls, cpus, before_walls, before_cpus = [], [], [], []
            size = before_size = None
            for repeat in range(args.repeats):
                if before_rev is not None:
                    out = Path(tmp) / f"before_{len(rows)}_{repeat}"
                    before_wall, before_cpu, _ = time_command(command, out, before_rev)
                    before_walls.append(before_wall)
                    before_cpus.append(before_cpu)
                    if target is not None:
                        before_size = folder_mb(out)
                out = Path(tmp) / f"{len(rows)}_{repeat}"
                wall, cpu, code = time_command(command, out)
                if code != (2 if target is None else 0):
                    print(f"{label}: exit status {code}", file=sys.stderr)
                    return 1
                walls.append(wall)
                cpus.append(cpu)
                if target is not None:
                    size = folder_mb(out)
            median = statistics.median(walls)
            ok = (target is None or median < target) and (size is None or size < MAX_FOLDER_MB)
            missed |= not ok
            before = None
            if before_walls:
                before = (statistics.median(before_walls), statistics.median(before_cpus))
            cpu = statistics.median(cpus)
            rows.append((label, median, min(walls), cpu, target, ok, before, size, before_size))
        if args.docs_figure:
            run_dir = next((Path(tmp) / "1_0" / "lif" / "runs").iterdir())
            write_montage(run_dir, args.docs_figure)
            size_kb = args.docs_figure.stat().st_size / 1024
            print(f"wrote {args.docs_figure} ({size_kb:.0f} KB)\n")
    load_after = os.getloadavg()

    print(
        f"`mlplab-lif` end to end, median of {args.repeats} subprocess runs; "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before and "
        f"{load_after[0]:.2f} after (other processes share the machine)"
    )
    print()
    compare = f" {args.before}: wall, CPU (medians) |" if args.before else ""
    folder = f" folder ({args.before}) |" if args.before else ""
    print(
        f"| command |{compare} wall, median | wall, best | CPU (user+sys), median |{folder} "
        "folder | target |"
    )
    print("|---|" + ("---|---|" if args.before else "") + "---|---|---|---|---|")
    for label, median, best, cpu, target, ok, before, size, before_size in rows:
        goal = "-"
        if target is not None:
            goal = f"< {target:g} s, < {MAX_FOLDER_MB:g} MB {'ok' if ok else '**missed**'}"
        then = f" {before[0]:.2f} s, {before[1]:.2f} s |" if before is not None else ""
        mb = "-" if size is None else f"{size:.1f} MB"
        then_mb = ""
        if args.before:
            then_mb = " - |" if before_size is None else f" {before_size:.1f} MB |"
        print(
            f"| {label} |{then} {median:.2f} s | {best:.2f} s | {cpu:.2f} s |{then_mb} {mb} "
            f"| {goal} |"
        )
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
