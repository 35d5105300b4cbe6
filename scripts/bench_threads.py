"""Benchmark: one or all intra-op threads for a training step, by network size, idle and contended.

Run: .venv/bin/python scripts/bench_threads.py [--steps 300] [--repeats 3]

For MLPs of growing width (1 and 2 hidden layers, minibatches of 128 spiral-sized inputs), time
Adam steps in this process with 1 thread and with every core, once with the machine otherwise
idle and once while one busy process competes for the CPU. ``threads=auto`` uses one thread below
``mlplab.tasks.runtime.PARALLEL_MIN_PARAMS`` parameters and every core above: this table is
where that number comes from.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from mlplab.models.mlp import MLP
from mlplab.tasks.runtime import PARALLEL_MIN_PARAMS, count_parameters


@contextlib.contextmanager
def busy_process(active: bool) -> Iterator[None]:
    """One other process spinning on the CPU while the block runs (when ``active``)."""
    if not active:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def step_time(hidden: list[int], threads: int, steps: int) -> float:
    """Mean time of one Adam step (ms) of an MLP with ``hidden`` units."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = MLP("ReLU()", 2, hidden, 4)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(128, 2), torch.randint(0, 4, (128,))
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(20):  # warm-up
        optimizer.zero_grad()
        loss_fn(net(x), y).backward()
        optimizer.step()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(net(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    shapes = [[128], [512], [1024], [256, 256], [512, 512], [1024, 1024], [2048, 2048]]
    print(f"\n### Adam step time (ms), minibatch 128, {cores} cores ('all' threads); auto uses")
    print(f"1 thread below {PARALLEL_MIN_PARAMS:,} parameters\n")
    print("| hidden units | parameters | idle, 1 thread | idle, all | busy, 1 thread | busy, all |")
    print("|---|---:|---:|---:|---:|---:|")
    for hidden in shapes:
        cells = []
        for busy, threads in ((False, 1), (False, cores), (True, 1), (True, cores)):
            with busy_process(busy):
                times = [step_time(hidden, threads, args.steps) for _ in range(args.repeats)]
            cells.append(statistics.median(times))
        params = count_parameters(MLP("ReLU()", 2, hidden, 4))
        print(
            f"| {hidden} | {params:,} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[2]:.3f} | "
            f"{cells[3]:.3f} |"
        )


if __name__ == "__main__":
    main()
