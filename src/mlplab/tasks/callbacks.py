"""Hydra callbacks (registered under ``hydra.callbacks`` in conf/hydra/default.yaml).

Hydra instantiates them in every run, so this module imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("mlplab")


class SweepSummary(Callback):
    """At the end of a multirun, print one line on how its jobs went; fail if any did not.

    Each job's ``metrics.json`` is read from the sweep folder, so the line is the same whichever
    launcher ran the jobs (in this process, in joblib workers or as submitit jobs)::

        mlplab: 8 of 9 jobs ok in outputs/train/multiruns/<...>; failed: job 3 (model.width=0: ...)

    Args:
        fail_on_error: Exit with status 1 when a job failed or left no ``metrics.json``, so
            scripts and CI notice; a failed job never stops the other jobs of the sweep.
    """

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlplab.report import OK, load_sweep, one_line_summary

        if os.environ.get("LOCAL_RANK", "0") != "0":
            return  # a DDP rank Lightning started by re-running the command: rank 0 reports

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            jobs = load_sweep(sweep_dir)
        except ValueError as err:  # no job folder at all: nothing ran
            print(f"mlplab: no jobs in {sweep_dir}: {err}", file=sys.stderr, flush=True)
            jobs = None
        failed = jobs is None or bool((jobs["status"] != OK).any())
        if jobs is not None:
            line = one_line_summary(jobs, sweep_dir)
            print(line, file=sys.stderr if failed else sys.stdout, flush=True)
        if failed and self.fail_on_error:
            # SystemExit passes through Hydra (which only catches Exception) to the shell.
            raise SystemExit(1)


class TorchThreads(Callback):
    """Give each job of a multirun a fixed number of torch threads (single runs are left alone).

    This MLP is too small to gain from more than one thread, and threads of jobs that share
    cores spin against each other: on 2 busy cores, a tutorial fit took 1.4 s with 1 thread
    and 90 s with 2. joblib workers already get ``OMP_NUM_THREADS = cores // n_jobs``; this
    gives jobs of the basic and submitit launchers the same.

    Args:
        num_threads: Threads per job; None: ``OMP_NUM_THREADS`` where the job runs (as set by
            joblib, or by the slurm launcher's setup to ``cpus_per_task``), else 1.
    """

    def __init__(self, num_threads: int | None = None) -> None:
        self.num_threads = num_threads

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        mode = OmegaConf.select(config, "hydra.mode")
        if getattr(mode, "name", mode) != "MULTIRUN":
            return
        threads = self.num_threads or int(os.environ.get("OMP_NUM_THREADS") or 1)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for a torch imported later
        torch = sys.modules.get("torch")
        if torch is not None:  # already imported (by the task's module): set it directly
            torch.set_num_threads(threads)
        log.info("torch threads in this job: %d", threads)
