"""``hydra/launcher=stacked``: train a sweep's jobs of one network shape as one stacked run.

Hydra finds this module through the ``hydra_plugins`` namespace package. It imports only Hydra
at module level (every Hydra run scans its plugins); mlplab, torch and Lightning are imported
when a sweep is launched.

The launcher takes every job's config as the sweeper composed it (:class:`RememberingConfigLoader`;
each job is composed once), builds each ``mlplab-train`` job's datamodule and model as its single
run would, groups the jobs that differ only in seed and optimizer settings
(:func:`mlplab.tasks.stacked.stack_key`),
trains each group of two or more as one stack in this process, and writes every job's folder
through Hydra's own ``run_job`` (``.hydra/``, the job's log, Hydra's callbacks, ``metrics.json``).
Jobs it cannot stack run one after another, exactly as the basic launcher runs them.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules without entering them
# in sys.modules, where dataclasses look string annotations up.
import copy
import functools
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    """``hydra/launcher=stacked`` options (``hydra.launcher.<name>=...``)."""

    _target_: str = "hydra_plugins.mlplab_stacked_launcher.stacked_launcher.StackedLauncher"
    # Members per stack at most; a larger group is cut into stacks of this size (null: no limit).
    max_members: Optional[int] = None  # noqa: UP045 (OmegaConf reads Optional, not X | None)
    # torch threads while a stack trains (null: OMP_NUM_THREADS where it runs, else 1, as every
    # job of a multirun; on cores other processes share, a second thread waits for the slower
    # one in every kernel). Each job's own steps (test, records) run with the threads Hydra's
    # torch_threads callback gives them.
    num_threads: Optional[int] = None  # noqa: UP045
    # Members per forward chunk (null: automatic: about 256 KiB of activations per chunk on a
    # CPU, whose cache then holds them between kernels; all members at once on a GPU).
    chunk_size: Optional[int] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="mlplab"
)


class RememberingConfigLoader(ConfigLoader):
    """Hydra's config loader, remembering the job configs a sweeper composes to validate them.

    A sweeper composes every job of a batch before it launches it (``Sweeper.
    validate_batch_is_legal``: "this repeats work the launcher will do, but as the launcher may
    be performing this in a different process/machine..."). This launcher runs its jobs in the
    same process, so it takes those very configs (:meth:`take`) instead of composing each job a
    second time: a composition of the tutorial's config costs about 0.3 s of CPU, more than a
    stacked member's whole training. The sweeper gets a copy; everything else is delegated.
    """

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.composed: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> Any:
        config = self.loader.load_sweep_config(master_config, sweep_overrides)
        self.composed[(id(master_config), tuple(sweep_overrides))] = config
        return copy.deepcopy(config)

    def take(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> DictConfig:
        """The job's config as the sweeper composed it (forgotten here), else composed now."""
        key = (id(master_config), tuple(sweep_overrides))
        config = self.composed.pop(key, None)
        if config is None:
            return self.loader.load_sweep_config(master_config, list(sweep_overrides))
        return config

    def forget(self) -> None:
        """Drop the configs no launch took."""
        self.composed.clear()

    def load_configuration(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> Any:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)


@dataclass
class _Job:
    num: int
    overrides: Sequence[str]
    config: DictConfig
    member: Any = None  # mlplab.tasks.stacked.Member, once resolved
    key: Optional[str] = None  # noqa: UP045
    reason: Optional[str] = None  # noqa: UP045


class StackedLauncher(Launcher):
    """Hydra launcher that trains groups of compatible ``mlplab-train`` jobs as one stack."""

    def __init__(
        self,
        max_members: int | None = None,
        num_threads: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("max_members", max_members),
            ("num_threads", num_threads),
            ("chunk_size", chunk_size),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(
                    f"hydra.launcher.{name}={value!r} is invalid: it must be null or an "
                    "integer >= 1"
                )
        self.max_members = max_members
        self.num_threads = num_threads
        self.chunk_size = chunk_size
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        # The sweeper shares this context (it built the launcher with it) and validates each
        # batch through its loader before launching it: remember what it composes.
        if not isinstance(hydra_context.config_loader, RememberingConfigLoader):
            hydra_context.config_loader = RememberingConfigLoader(hydra_context.config_loader)
        self.hydra_context = hydra_context
        self.task_function = task_function

    # --- planning ------------------------------------------------------------------------------

    def _resolve(self, job: _Job) -> None:
        """The job's output folder and resolved task config, as run_job will see them."""
        from mlplab.tasks import stacked

        config = job.config
        HydraConfig.instance().set_config(config)  # what run_job does, for ${hydra:...}
        sweep_dir = str(OmegaConf.select(config, "hydra.sweep.dir"))
        subdir = str(OmegaConf.select(config, "hydra.sweep.subdir"))
        output_dir = os.path.abspath(os.path.join(sweep_dir, subdir))
        # run_job sets the same value again when the job runs.
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = output_dir
        HydraConfig.instance().set_config(config)
        # The task config as run_job hands it to the task: everything but the hydra node.
        task = {
            key: OmegaConf.to_container(config[key], resolve=True)
            if OmegaConf.is_config(config[key])
            else config[key]
            for key in config
            if key != "hydra"
        }
        resolved = OmegaConf.create(task)
        job.member = stacked.Member(job.num, resolved, Path(output_dir))
        job.reason = stacked.why_not_stackable(resolved)
        if job.reason is None:
            # Built once, here: the stack trains these very objects.
            job.reason = stacked.build_member(job.member)
        if job.reason is None:
            job.key = stacked.stack_key(resolved, Path(output_dir))

    def _plan(self, jobs: list[_Job], sweep_dir: Path) -> list[list[_Job]]:
        """Units of work in job order: a list of one job runs alone, a longer one is a stack."""
        try:
            for job in jobs:
                try:
                    self._resolve(job)
                except Exception as err:  # left to the job itself, which records it
                    job.reason = f"its config does not resolve ({type(err).__name__})"
        finally:
            HydraConfig.instance().set_config(self.config)
        groups: dict[str, list[_Job]] = {}
        for job in jobs:
            if job.key is not None:
                groups.setdefault(job.key, []).append(job)
        size = self.max_members or len(jobs)
        stacks: list[list[_Job]] = []
        for group in groups.values():
            for start in range(0, len(group), size):
                stacks.extend(self._resume_split(group[start : start + size], sweep_dir))
        first_of = {id(stack[0]): stack for stack in stacks}
        in_stack = {id(job) for stack in stacks for job in stack}
        units = []
        for job in jobs:
            if id(job) in first_of:
                units.append(first_of[id(job)])
            elif id(job) not in in_stack:
                units.append([job])
                if job.reason is not None:
                    log.info("\t#%d runs alone: %s", job.num, job.reason)
        return units

    @staticmethod
    def _resume_split(chunk: list[_Job], sweep_dir: Path) -> list[list[_Job]]:
        """With ``ckpt_path=last``: a stack's own checkpoint resumes it; without one, jobs that
        have their own ``last.ckpt`` resume alone and the others start a new stack."""
        from mlplab.tasks import stacked

        members = [job.member for job in chunk]
        if stacked.group_checkpoint(stacked.group_dir(sweep_dir, members)).is_file():
            return [chunk]
        alone = [job for job in chunk if stacked.own_checkpoint(job.member) is not None]
        for job in alone:
            job.key, job.reason = None, "it resumes from its own last.ckpt"
        rest = [job for job in chunk if job.key is not None]
        units = [[job] for job in alone]
        if len(rest) > 1:
            units.append(rest)
        elif rest:
            rest[0].key, rest[0].reason = None, "no other job stacks with it"
            units.append(rest)
        return units

    # --- running -------------------------------------------------------------------------------

    def _run_job(self, job: _Job, task_function: TaskFunction) -> JobReturn:
        assert self.hydra_context is not None and self.config is not None
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=task_function,
            config=job.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _run_stack(self, stack: list[_Job], sweep_dir: Path) -> list[JobReturn]:
        import torch

        from mlplab.tasks import common, stacked

        members = [job.member for job in stack]
        directory = stacked.group_dir(sweep_dir, members)
        log.info(
            "Stacking %d jobs (%s) in %s",
            len(stack),
            " ".join(f"#{job.num}" for job in stack),
            directory,
        )
        threads = self.num_threads or int(os.environ.get("OMP_NUM_THREADS") or 1)
        torch.set_num_threads(threads)
        started = time.perf_counter()
        try:
            results = stacked.train_group(members, directory, chunk_size=self.chunk_size)
        except stacked.Interrupted as stop:
            # As a single run stopped by a signal: one line, the command last, the exit status a
            # shell gives a process the signal ended. The stack's last.ckpt holds its last epoch.
            command = common.sweep_resume_command("train", sweep_dir, sys.argv[1:])
            line = f"mlplab-train: sweep {stop}; resume with: {command}"
            print(line, file=sys.stderr, flush=True)
            raise SystemExit(stop.exit_code) from stop
        trained = time.perf_counter()
        returns = []
        for job, result in zip(stack, results, strict=True):
            log.info("\t#%d : %s", job.num, " ".join(filter_overrides(job.overrides)))
            finish = functools.partial(stacked.finish_member, result=result)
            returns.append(self._run_job(job, finish))
        log.info(
            "Stack of %d jobs on %d torch thread(s): built and trained in %.1f s, job folders "
            "written in %.1f s",
            len(stack),
            threads,
            trained - started,
            time.perf_counter() - trained,
        )
        return returns

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None
        assert self.config is not None
        assert self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, stacked where they can be")
        jobs = []
        started = time.perf_counter()
        loader = self.hydra_context.config_loader
        remembered = len(loader.composed) if isinstance(loader, RememberingConfigLoader) else 0
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            if isinstance(loader, RememberingConfigLoader):
                config = loader.take(self.config, overrides)
            else:
                config = loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = num
                config.hydra.job.num = num
            jobs.append(_Job(num, overrides, config))
        if isinstance(loader, RememberingConfigLoader):
            remembered -= len(loader.composed)
            loader.forget()
        returns: dict[int, JobReturn] = {}
        composed = time.perf_counter()
        units = self._plan(jobs, sweep_dir.absolute())
        log.info(
            "Composed %d jobs in %.1f s (%d as the sweeper composed them to validate them), "
            "built and grouped them in %.1f s: %d stacks, %d jobs alone",
            len(jobs),
            composed - started,
            remembered,
            time.perf_counter() - composed,
            sum(len(u) > 1 for u in units),
            sum(len(u) == 1 for u in units),
        )
        for unit in units:
            if len(unit) == 1:
                job = unit[0]
                log.info("\t#%d : %s", job.num, " ".join(filter_overrides(job.overrides)))
                returns[job.num] = self._run_job(job, self.task_function)
                continue
            for job, ret in zip(unit, self._run_stack(unit, sweep_dir.absolute()), strict=True):
                returns[job.num] = ret
        return [returns[job.num] for job in jobs]
