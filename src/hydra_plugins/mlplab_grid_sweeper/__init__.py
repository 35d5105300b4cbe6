"""mlplab's grid sweeper for Hydra: ``hydra/sweeper=mlplab_grid``, every task's default sweeper.

The grid of Hydra's basic sweeper (the cartesian product of the command line's sweeps and of
``hydra.sweeper.params``, in batches of ``max_batch_size``), with one difference: a FAILED job
does not stop the sweep. Every batch runs, and the ``on_multirun_end`` callbacks (mlplab's sweep
summary and its exit status) follow. Hydra finds the plugin by scanning the ``hydra_plugins``
namespace package, which therefore has no ``__init__.py``.
"""
