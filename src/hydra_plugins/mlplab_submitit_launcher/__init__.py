"""mlplab's submitit launchers: Hydra's submitit plugin, with a failed job a failure everywhere."""
