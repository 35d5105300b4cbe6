"""The sweeper's config schema, registered with Hydra as ``hydra/sweeper=mlplab_grid``."""

# No `from __future__ import annotations` here: Hydra's plugin scan runs this module before it is
# in sys.modules, where dataclasses look up string annotations.
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class GridSweeperConf:
    """``hydra.sweeper``: the options of Hydra's basic sweeper, with the same meaning."""

    _target_: str = "hydra_plugins.mlplab_grid_sweeper.sweeper.GridSweeper"
    # Jobs handed to the launcher at once (null or -1: the whole grid in one batch).
    max_batch_size: Optional[int] = None  # noqa: UP045 (OmegaConf reads Optional, not X | None)
    # Sweeps kept in the config, key -> value in Hydra's override grammar (a=1,2 or
    # range(...)); the command line's value of the same key takes the place of one here.
    params: Optional[dict[str, Any]] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="mlplab_grid", node=GridSweeperConf, provider="mlplab"
)
