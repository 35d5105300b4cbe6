"""Hydra's submitit launchers, with a failed job recorded as failed by every party.

Hydra's submitit plugin runs each job through Hydra's ``run_job``, which catches what the task
raises into a FAILED ``JobReturn`` and hands that back as the job's *result*: submitit logs "Job
completed successfully" and SLURM accounts the job COMPLETED. mlplab's launchers differ in two
places, everything else is the plugin's own:

- In the job (:meth:`_FailedJobsRecorded.__call__`): the task raises when it fails (as every
  failed mlplab multirun job does), so Hydra records the job FAILED (callbacks' ``on_job_end``
  see it), and then the job raises again once Hydra is done: submitit stores the error as the
  job's outcome and the process exits non-zero, which SLURM accounts FAILED.
- In the sweep's process (:meth:`_FailedJobsRecorded.launch`): every job is waited for, failed
  or not, and each failed job is named in one line. The plugin's own ``launch`` would raise at
  the first job that raised, leaving the others unwatched and the sweep without its summary.

To the sweeper, a failed job comes back as a FAILED ``JobReturn`` holding submitit's error.
mlplab's sweepers (``mlplab_grid``, the default, and ``mlplab_optuna``) go on with the other
jobs; Hydra's own basic sweeper would stop the multirun after the batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class _FailedJobsRecorded(submitit_launcher.BaseSubmititLauncher):
    """The plugin's launcher, with failed jobs recorded as failed (see the module docstring)."""

    # submitit's name of the executor ("local", "slurm").
    cluster = "abstract"

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        """Run one job in its own process (submitit calls this there); raise when it failed.

        Raises:
            Exception: the task's own, after Hydra recorded the job FAILED.
        """
        ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        if ret.status is JobStatus.FAILED:
            _ = ret.return_value  # raises the task's exception (Hydra's own way to re-raise it)
        return ret

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Submit the jobs as one submitit array, wait for all of them, name the failed ones.

        As the plugin's ``launch`` (the same executor, parameters and log lines), but a failed
        job (it raised, or the scheduler ended it: cancelled, out of time or memory) is waited
        for like the others, logged as one line, and comes back as a FAILED JobReturn.
        """
        import submitit

        assert self.config is not None
        assert len(job_overrides) > 0
        executor = submitit.AutoExecutor(cluster=self.cluster, **self._init_params())
        executor.update_parameters(**self._job_params())
        log.info(f"Submitit '{self.cluster}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            state = Singleton.get_state()
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        return [
            _job_return(job, list(overrides), idx)
            for idx, (job, overrides) in enumerate(
                zip(jobs, job_overrides, strict=True), start=initial_job_idx
            )
        ]

    def _init_params(self) -> dict[str, Any]:
        """The executor's own arguments: its folder and ``max_num_timeout`` (as the plugin)."""
        params = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            params[f"{self.cluster}_max_num_timeout"] = self.params["max_num_timeout"]
        return params

    def _job_params(self) -> dict[str, Any]:
        """The jobs' resources, executor-specific ones prefixed for submitit (as the plugin)."""
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        return {
            key if key in shared else f"{self.cluster}_{key}": value
            for key, value in self.params.items()
            if key not in ("submitit_folder", "max_num_timeout")
        }


def _job_return(job: Any, overrides: list[str], idx: int) -> JobReturn:
    """The JobReturn of a finished submitit job; a failed one logged as one line.

    Args:
        job: A ``submitit.Job``; this waits until it is done.
        overrides: The job's overrides.
        idx: The job's number in the sweep.
    """
    _wait(job)
    error = job.exception()  # None when the job returned its JobReturn
    if error is None:
        return job.result()
    text = " ".join(filter_overrides(overrides)) or "no overrides"
    if job.paths.result_pickle.exists():  # the job raised: the task's error is in its log
        how = "failed"
    else:  # no outcome at all: the scheduler (or a signal) ended the process
        how = f"ended without a result (submitit state {job.state})"
    log.error(f"job #{idx} ({text}) {how}; see {job.paths.stderr}")
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    ret.return_value = error  # what reading the return value raises, as for any failed job
    return ret


def _wait(job: Any, every_s: float = 10.0) -> None:
    """Wait until the job is done, asking the scheduler at least every ``every_s`` seconds.

    A job's result file is looked for every second; a job that ends without one (cancelled,
    out of time) shows only in the scheduler's records, which submitit's SLURM watcher reads
    less and less often as the jobs age (up to every 5 minutes).
    """
    last = time.monotonic()
    while not job.done():
        time.sleep(1.0)
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            if job.done(force_check=True):
                return


class LocalLauncher(_FailedJobsRecorded, submitit_launcher.LocalLauncher):
    """``hydra/launcher=local``: jobs as local processes (submitit's local executor)."""

    cluster = "local"


class SlurmLauncher(_FailedJobsRecorded, submitit_launcher.SlurmLauncher):
    """``hydra/launcher=slurm``: jobs as tasks of a SLURM job array."""

    cluster = "slurm"
