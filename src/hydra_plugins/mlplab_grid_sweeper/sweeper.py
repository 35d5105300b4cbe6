"""The sweeper: the grid of Hydra's basic sweeper, batch after batch, whatever a job's outcome.

Hydra's basic sweeper reads every job's return value after a batch, which raises the first
FAILED job's error: the later batches never run and neither do the ``on_multirun_end``
callbacks. This sweeper builds the same grid in the same order (so job numbers, folders and
``override_dirname`` are the basic sweeper's), launches every batch, logs one line per failed
job, and returns. Only Hydra's public plugin API is used (``Sweeper``,
``Plugins.instantiate_launcher``, ``Launcher.launch``, ``OverridesParser``, ``JobReturn``), so
any launcher runs the jobs: basic, joblib, submitit, stacked.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.mlplab_optuna_sweeper.search_space import params_lines

log = logging.getLogger(__name__)


class LaunchingSweeper(Sweeper):
    """What mlplab's sweepers share: the composed config, Hydra's context, the configured
    launcher (built in :meth:`setup`), and ``multirun.yaml`` in the sweep folder."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep the composed config and build the configured launcher."""
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def save_multirun_config(self) -> Path:
        """Write ``multirun.yaml`` into the sweep folder, as Hydra's sweepers do (mlplab-report
        reads the grid, the optimized metric and the study's direction from it); the folder."""
        assert self.config is not None  # kept by setup
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        return sweep_dir


class GridSweeper(LaunchingSweeper):
    """Run the cartesian product of the sweeps, in batches; a failed job stops nothing.

    Args:
        max_batch_size: Jobs launched at once; None or -1: the whole grid in one batch.
        params: Sweeps kept in the config, key -> value in Hydra's override grammar; a key the
            command line also sets takes the command line's value, in the config's place.
    """

    def __init__(
        self, max_batch_size: int | None = None, params: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.max_batch_size = max_batch_size
        self.params = params

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Launch every job of the grid; ``arguments`` are the command line's task overrides.

        Each batch is composed (``validate_batch_is_legal``) before it is launched, so a config
        error stops the sweep before that batch's jobs run, as in the basic sweeper.

        Returns:
            The job returns of each batch, in order; failed jobs' among them (status FAILED).

        Raises:
            HydraException: ``max_batch_size`` is not null, -1 or an integer >= 1, or an
                override the grid cannot expand (``interval(...)``), before any job runs; a
                batch whose configs do not compose, before that batch runs.
        """
        assert self.config is not None and self.hydra_context is not None
        assert self.launcher is not None  # built by setup
        size = batch_size(self.max_batch_size)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*params_lines(self.params), *arguments])
        batches = split_batches(grid(overrides), size)
        self.save_multirun_config()
        returns: list[Sequence[JobReturn]] = []
        job = 0
        for batch in batches:
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=job)
            for number, ret in enumerate(results, start=job):
                if ret.status is not JobStatus.COMPLETED:
                    log.error("job #%d (%s) failed; the sweep goes on", number, _settings(ret))
            job += len(batch)
            returns.append(results)
        return returns


def batch_size(max_batch_size: object) -> int | None:
    """``hydra.sweeper.max_batch_size`` checked: None (or -1, as for the basic sweeper) for the
    whole grid at once, else an integer >= 1.

    Raises:
        HydraException: any other value, in one line naming it.
    """
    if max_batch_size is None or max_batch_size == -1:
        return None
    if (
        isinstance(max_batch_size, bool)
        or not isinstance(max_batch_size, int)
        or max_batch_size < 1
    ):
        raise HydraException(
            f"hydra.sweeper.max_batch_size={max_batch_size!r} is invalid: must be null, -1 or an "
            "integer >= 1"
        )
    return max_batch_size


def grid(overrides: Sequence[Override]) -> list[list[str]]:
    """The jobs' overrides: the cartesian product of the sweeps, in the basic sweeper's order.

    A later override of a key takes the place of an earlier one (the command line's value of a
    key in ``params``), in the earlier one's position; the last key varies fastest.

    Raises:
        HydraException: a sweep that is not a list of values (``interval(...)``), naming it.
    """
    by_key: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            by_key[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            by_key[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise HydraException(
                f"{override.input_line} is invalid: the grid sweeper takes lists of values "
                "(a,b), range(...) or choice(...); search intervals with hparams_search=optuna"
            )
    return [list(job) for job in itertools.product(*by_key.values())]


def split_batches(jobs: list[list[str]], size: int | None) -> list[list[list[str]]]:
    """``jobs`` in consecutive batches of ``size`` (None: one batch of all)."""
    size = size or max(len(jobs), 1)
    return [jobs[start : start + size] for start in range(0, len(jobs), size)]


def _settings(ret: JobReturn) -> str:
    """A failed job's overrides as a log line shows them, and its folder when known."""
    text = " ".join(filter_overrides(ret.overrides or [])) or "no overrides"
    folder = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    return f"{text}; see {folder}" if folder else text
