"""Config schemas of mlplab's submitit launchers (``hydra/launcher=local`` and ``slurm``).

They are the submitit plugin's own schemas with mlplab's launcher as ``_target_``; mlplab's
``conf/hydra/launcher/{local,slurm}.yaml`` start from them. Their names differ from the plugin's
``submitit_local``/``submitit_slurm``: a config file of the same name as a ConfigStore schema
would be merged into it with a deprecation warning (Hydra's automatic schema matching).
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf


@dataclass
class MlplabLocalQueueConf(LocalQueueConf):
    """``submitit_local`` with mlplab's launcher."""

    _target_: str = "hydra_plugins.mlplab_submitit_launcher.launcher.LocalLauncher"


@dataclass
class MlplabSlurmQueueConf(SlurmQueueConf):
    """``submitit_slurm`` with mlplab's launcher."""

    _target_: str = "hydra_plugins.mlplab_submitit_launcher.launcher.SlurmLauncher"


ConfigStore.instance().store(
    group="hydra/launcher",
    name="mlplab_submitit_local",
    node=MlplabLocalQueueConf(),
    provider="mlplab_submitit_launcher",
)
ConfigStore.instance().store(
    group="hydra/launcher",
    name="mlplab_submitit_slurm",
    node=MlplabSlurmQueueConf(),
    provider="mlplab_submitit_launcher",
)
