"""Console scripts ``mlplab-<task>``: each task starts with Python's garbage collector deferred.

Starting a task imports torch, Lightning, Hydra and matplotlib: some 400,000 objects that live
until the process ends. The cyclic collector rescans every one of them each time the heap has
grown by a quarter (0.7 s of ``mlplab-train`` start-up), and takes them apart one by one when the
interpreter exits (1 s more). So a console script turns the collector off before it imports its
task; the task freezes what start-up built and turns the collector back on when its own work
begins (:func:`mlplab.tasks.common.settle_gc`), and at exit what is left is frozen too, so the
interpreter leaves it to the operating system. The trade: start-up's own garbage (about 13,000
objects in reference cycles) is frozen with the rest, once per process, instead of collected,
which would cost 0.4 s; in a multirun of Hydra's basic launcher the first job's trainer and
model are frozen too and outlive that job (later jobs are collected as usual). Only this
module's imports run before the collector is off, hence it imports nothing else at module level.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Callable


def run_main(main: Callable[[], object]) -> None:
    """Call a task's ``main()`` with the collector off until the task settles it; freeze at exit.

    ``python -m mlplab.tasks.<task>`` comes here too, after the task module's own imports (Hydra),
    in time for the heavy ones (Lightning is imported inside the task).
    """
    gc.disable()
    try:
        main()
    finally:
        # Files are closed and flushed by now; freezing only skips the exit-time collection.
        gc.freeze()


def run(task: str) -> None:
    """Run the ``main()`` of ``mlplab.tasks.<task>`` with the collector off until work begins."""
    gc.disable()  # before the task module's imports too
    run_main(importlib.import_module(f"mlplab.tasks.{task}").main)


def train() -> None:
    """``mlplab-train``."""
    run("train")


def evaluate() -> None:
    """``mlplab-eval``."""
    run("eval")


def approx() -> None:
    """``mlplab-approx``."""
    run("approx")


def lif() -> None:
    """``mlplab-lif``."""
    run("lif")


def report() -> None:
    """``mlplab-report``."""
    run("report")
