"""The sweeper's config schema, registered with Hydra as ``hydra/sweeper=mlplab_optuna``."""

# No `from __future__ import annotations` here: Hydra's plugin scan runs this module before it is
# in sys.modules, where dataclasses look up string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper``: what Optuna searches, how many trials, where the study is kept."""

    _target_: str = "hydra_plugins.mlplab_optuna_sweeper.sweeper.OptunaSweeper"
    # The sampler arrives as its config: a resumed study reseeds it (see sweeper.open_study).
    _recursive_: bool = False
    # Any Optuna sampler (https://optuna.readthedocs.io/en/stable/reference/samplers/).
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    # minimize or maximize the value the task returns.
    direction: str = "minimize"
    study_name: str | None = None
    # An Optuna storage URL (sqlite:///<path>.db); null keeps the study in memory.
    storage: str | None = None
    n_trials: int = 20
    # Trials asked at once and handed to the launcher together.
    n_jobs: int = 1
    # Stop asking for trials after a batch of which a larger fraction failed.
    max_failure_rate: float = 0.0
    # Search space, in Hydra's override grammar: key -> choice(...), range(...), interval(...),
    # tag(log, interval(...)); any other value is passed to every trial as it is.
    params: dict[str, Any] | None = None
    # Dotted path of a function of the composed config, called before the first trial; the
    # ValueError it raises (one line) stops the search before any job runs.
    check_config: str | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="mlplab_optuna", node=OptunaSweeperConf, provider="mlplab"
)
