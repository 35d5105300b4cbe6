"""mlplab's Optuna sweeper for Hydra: ``hydra/sweeper=mlplab_optuna`` (hparams_search=optuna).

An Optuna study (Optuna >= 4, any storage it takes, SQLite included) proposes each trial's
parameters through its ask-and-tell API; the configured Hydra launcher runs the trials as jobs;
the study is told each job's value, or that it failed. Hydra finds the plugin by scanning the
``hydra_plugins`` namespace package, which therefore has no ``__init__.py``.
"""
