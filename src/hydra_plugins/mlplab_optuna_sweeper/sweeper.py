"""The sweeper: Optuna asks for a batch of trials, Hydra's launcher runs them as jobs, Optuna is
told each job's value, or that it failed; then the next batch.

Only Hydra's public plugin API is used (``Sweeper``, ``Plugins.instantiate_launcher``,
``Launcher.launch``, ``JobReturn``, ``OverridesParser``), so any launcher runs the trials:
basic, joblib, submitit, or a plugin of one's own.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.mlplab_grid_sweeper.sweeper import LaunchingSweeper
from hydra_plugins.mlplab_optuna_sweeper.search_space import SearchSpace, params_lines, search_space

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")
RESULTS_FILE = "optimization_results.yaml"


def invalid(key: str, value: object, allowed: str) -> HydraException:
    """``hydra.sweeper.<key>=<value> is invalid: <allowed>``, raised before any trial runs."""
    return HydraException(f"hydra.sweeper.{key}={value!r} is invalid: {allowed}")


class OptunaSweeper(LaunchingSweeper):
    """Search ``params`` with an Optuna study, each trial a job of the configured launcher.

    Args:
        sampler: Config of an Optuna sampler (``_target_`` and its arguments).
        direction: ``minimize`` or ``maximize`` the value each job returns.
        study_name: The study's name in ``storage``; the same name and storage resume it.
        storage: An Optuna storage URL (``sqlite:///path.db``); None keeps the study in memory.
        n_trials: Trials this command runs (a resumed study adds them to its earlier ones).
        n_jobs: Trials asked for at once and launched together (parallel with joblib).
        max_failure_rate: The search stops after a batch in which a larger fraction failed.
        params: Search space, key -> override value in Hydra's grammar (see search_space).
        check_config: Dotted path of ``f(config)``, called before the first trial; its
            ``ValueError`` (one line) stops the search before any job runs.
    """

    def __init__(
        self,
        sampler: DictConfig,
        direction: str,
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None = None,
        check_config: str | None = None,
    ) -> None:
        super().__init__()
        self.sampler, self.direction = sampler, direction
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params, self.check_config = params, check_config

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Run ``n_trials`` trials; ``arguments`` are the command line's task overrides.

        Everything that can be checked is checked before the first job: these settings, the
        search space, ``check_config``, the storage.

        Returns:
            The job returns of each batch, in order.

        Raises:
            HydraException: one line naming the setting at fault, before any job runs.
        """
        self._check_settings()
        space = search_space([*params_lines(self.params), *arguments])
        if not space.distributions:
            allowed = "nothing to search: give a choice(...), range(...) or interval(...)"
            raise invalid("params", self.params, allowed)
        self._check_config()
        study = open_study(self.study_name, self.storage, self.direction, self.sampler)
        log.info(
            "Optuna study %r (%s, %d trials so far), sampler %s, %s",
            study.study_name,
            self.storage or "in memory",
            len(study.get_trials(deepcopy=False)),
            type(study.sampler).__name__,
            self.direction,
        )
        sweep_dir = self.save_multirun_config()
        batches = self._run_trials(study, space)
        write_results(study, sweep_dir / RESULTS_FILE)
        if self.storage:
            log.info("dashboard of the study: optuna-dashboard %s", self.storage)
        return batches

    def _check_settings(self) -> None:
        if self.direction not in DIRECTIONS:
            raise invalid("direction", self.direction, f"must be one of {', '.join(DIRECTIONS)}")
        for key in ("n_trials", "n_jobs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise invalid(key, value, "must be an integer >= 1")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise invalid("max_failure_rate", self.max_failure_rate, "must be in [0, 1]")

    def _check_config(self) -> None:
        """Call ``check_config`` on the composed config: a ValueError stops the search."""
        if not self.check_config:
            return
        from hydra.utils import get_method

        try:
            check = get_method(self.check_config)
        except Exception as err:
            raise invalid(
                "check_config", self.check_config, f"cannot be imported ({err})"
            ) from None
        try:
            check(self.config)
        except ValueError as err:
            raise HydraException(" ".join(str(err).split())) from None

    def _run_trials(self, study: optuna.Study, space: SearchSpace) -> list[Sequence[JobReturn]]:
        """Ask, launch, tell, batch after batch, until ``n_trials`` ran or too many failed."""
        from optuna.trial import TrialState

        batches: list[Sequence[JobReturn]] = []
        job = 0
        while job < self.n_trials:
            size = min(self.n_jobs, self.n_trials - job)
            trials = [study.ask(space.distributions) for _ in range(size)]
            overrides = [space.overrides(trial.params) for trial in trials]
            try:
                self.validate_batch_is_legal(overrides)
                assert self.launcher is not None  # built by setup
                returns = self.launcher.launch(overrides, initial_job_idx=job)
            except BaseException:
                # Not left RUNNING in the storage for ever: a resumed study counts them failed.
                for trial in trials:
                    _tell_study(study, trial, state=TrialState.FAIL)
                raise
            outcomes = []
            for trial, ret in zip(trials, returns, strict=True):
                outcomes.append(tell(study, trial, ret, job))
                job += 1
            batches.append(returns)
            failed = sum(not outcome.completed for outcome in outcomes)
            if failed > self.max_failure_rate * len(trials):
                log.error(
                    "%d of the last %d trials failed, more than max_failure_rate=%s allows: the "
                    "search stops after %d of %d trials",
                    failed,
                    len(trials),
                    self.max_failure_rate,
                    job,
                    self.n_trials,
                )
                break
            if any(outcome.sampler_done for outcome in outcomes):
                log.info("the sampler has tried its whole search space: the search stops")
                break
        return batches


def readable(value: object) -> str:
    """A value for a log line: floats to 6 significant digits (``0.00123457``), others as str.

    The study and ``optimization_results.yaml`` keep every digit; a log line read by a person
    does not need the 17 that a sampled learning rate has.
    """
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def job_problem(ret: JobReturn) -> str | None:
    """Why a job's result cannot be the trial's value; None when it can (a finite number)."""
    if ret.status != JobStatus.COMPLETED:
        return "the job raised an error (see its log in its output folder)"
    value = ret.return_value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"the job returned {value!r}, not a number (the run reports no such metric)"
    if not math.isfinite(value):
        return f"the job returned {value} (diverged)"
    return None


class Told(NamedTuple):
    """How a trial ended: ``completed`` (else failed); ``sampler_done`` when the sampler (grid,
    brute force) has now tried every point of its space."""

    completed: bool
    sampler_done: bool


def tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn, job: int) -> Told:
    """Tell the study how ``trial``'s job (number ``job``) went: its value, or FAIL.

    The job number and output folder are kept as the trial's user attributes (shown by
    optuna-dashboard), with the reason of a failure.
    """
    from optuna.trial import TrialState

    trial.set_user_attr("job", job)
    hydra_cfg = ret.hydra_cfg
    output_dir = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir") if hydra_cfg else None
    if output_dir is not None:
        trial.set_user_attr("output_dir", str(output_dir))
    problem = job_problem(ret)
    if problem is not None:
        trial.set_user_attr("fail_reason", problem)
        log.warning("trial %d (job %d) failed: %s", trial.number, job, problem)
        return Told(False, _tell_study(study, trial, state=TrialState.FAIL))
    log.info("trial %d (job %d): %s", trial.number, job, readable(ret.return_value))
    return Told(True, _tell_study(study, trial, float(ret.return_value)))


def _tell_study(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> bool:
    """``study.tell``; True when the sampler has tried its whole space.

    Grid and brute-force samplers then call ``Study.stop()`` from ``after_trial``, which raises
    RuntimeError outside ``Study.optimize``, after the trial is stored (Optuna stores it in a
    ``finally``).
    """
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError:
        if not study.get_trials(deepcopy=False)[trial.number].state.is_finished():
            raise
        return True
    return False


def open_study(
    study_name: str | None, storage: str | None, direction: str, sampler: DictConfig
) -> optuna.Study:
    """Create the study, or load it from ``storage`` to go on with it.

    A sampler seeded as in the first command would propose the first command's parameters
    again; so a resumed study's sampler is seeded with ``seed`` + the trials it already holds:
    reproducible, and new parameters.

    Raises:
        HydraException: the storage cannot be opened, or holds the study with the other
            direction.
    """
    import optuna
    from hydra.utils import instantiate

    try:
        if storage:
            _make_sqlite_folder(storage)
        before = _trials_in(study_name, storage)
    except Exception as err:  # a bad URL, an unreachable server, an old schema: one line
        raise invalid("storage", storage, " ".join(str(err).split())) from None
    seed = OmegaConf.select(sampler, "seed") if isinstance(sampler, DictConfig) else None
    if seed is not None and before:
        log.info(
            "the study holds %d trials: sampler seed %d + %d, for new parameters",
            before,
            seed,
            before,
        )
        built = instantiate(sampler, seed=seed + before)
    else:
        built = instantiate(sampler)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=built,
        direction=direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise invalid(
            "direction",
            direction,
            f"study {study_name!r} in {storage} has direction {study.direction.name.lower()}",
        )
    return study


def _trials_in(study_name: str | None, storage: str | None) -> int:
    """The number of trials the named study already holds in ``storage`` (0 when none)."""
    import optuna

    if not storage or study_name is None:
        return 0
    if study_name not in optuna.get_all_study_names(storage):
        return 0
    study = optuna.load_study(study_name=study_name, storage=storage)
    return len(study.get_trials(deepcopy=False))


def _make_sqlite_folder(storage: str) -> None:
    """SQLite creates its file, not the folders above it: create those."""
    from sqlalchemy.engine import make_url

    url = make_url(storage)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def write_results(study: optuna.Study, path: Path) -> dict[str, Any]:
    """Write the study's state (its best trial so far, earlier commands' included) as YAML.

    Returns:
        What was written: ``study_name``, ``direction``, ``n_trials`` and the number
        ``complete`` and ``failed``; ``best_trial``, ``best_value``, ``best_params`` once a
        trial completed.
    """
    from optuna.trial import TrialState

    from mlplab.io import atomic_write

    trials = study.get_trials(deepcopy=False)
    states = [trial.state for trial in trials]
    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "direction": study.direction.name.lower(),
        "n_trials": len(trials),
        "complete": states.count(TrialState.COMPLETE),
        "failed": states.count(TrialState.FAIL),
    }
    if TrialState.COMPLETE in states:
        best = study.best_trial
        results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        params = " ".join(f"{key}={readable(value)}" for key, value in best.params.items())
        log.info("best: trial %d, value %s, %s", best.number, readable(best.value), params)
    else:
        log.warning("no trial of study %r completed: no best value", study.study_name)
    text = OmegaConf.to_yaml(OmegaConf.create(results))
    atomic_write(path, lambda handle: handle.write(text), mode="w")
    return results
