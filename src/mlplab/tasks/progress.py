"""What a training run tells its console and its log, and how it notes a stop by a signal.

- :func:`progress_bar`: Lightning's RichProgressBar on a terminal; :class:`EpochLines` (one log
  line per epoch, through Python logging, so in Hydra's job log too) when stdout is a file or
  a pipe, as under a scheduler, where a live bar would print one line at the very end.
- :func:`model_summary`: the layer table on a terminal; none in a file (one per sweep job).
- :func:`stopping_signal`: the signal behind Lightning's exit from ``trainer.fit`` (its own
  SIGTERM handling, or its graceful shutdown on Ctrl-C).
"""

from __future__ import annotations

import logging
import signal
import sys

import pytorch_lightning as pl
from pytorch_lightning.callbacks import (
    ModelSummary,
    ProgressBar,
    RichModelSummary,
    RichProgressBar,
)
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger("mlplab")

# The epoch metrics a line shows, in this order, when the run logs them.
EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")


def stdout_is_terminal() -> bool:
    """True when standard output is a terminal (not a file, a pipe or a scheduler's log)."""
    return sys.stdout.isatty()


class EpochLines(ProgressBar):
    """A progress bar for logs: one line per finished epoch, through the ``mlplab`` logger.

    ``epoch 2/3 step 8: train/loss 1.2952 train/acc 38.41 % val/loss 1.2311 val/acc 41.25 %``

    The line of an epoch is written when its metrics are complete: the LightningModule logs
    ``train/*`` in its ``on_train_epoch_end``, which Lightning calls after the callbacks' hook of
    the same name, so the line goes out when the next epoch starts, training ends, or the run
    is stopped. Rank 0 only.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._finished: tuple[int, int] | None = None  # (epochs done, global step) to report

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finished = (trainer.current_epoch + 1, trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, KeyboardInterrupt | SIGTERMException):
            self._write(trainer)
        else:  # e.g. the module found the epoch diverged at its end: its metrics never came
            self._finished = None

    def _write(self, trainer: pl.Trainer) -> None:
        finished, self._finished = self._finished, None
        if finished is None or not self._enabled or not trainer.is_global_zero:
            return
        epochs, step = finished
        metrics = trainer.callback_metrics
        parts = []
        for key in EPOCH_METRICS:
            if key in metrics:
                unit = " %" if key.endswith("/acc") else ""
                digits = 2 if unit else 4  # accuracy as the tutorial prints it
                parts.append(f"{key} {float(metrics[key]):.{digits}f}{unit}")
        log.info("epoch %d/%s step %d: %s", epochs, trainer.max_epochs, step, " ".join(parts))


def progress_bar(refresh_rate: int = 1, leave: bool = False) -> ProgressBar:
    """Lightning's RichProgressBar when stdout is a terminal, else :class:`EpochLines`.

    Args:
        refresh_rate, leave: The RichProgressBar's own arguments.
    """
    if stdout_is_terminal():
        return RichProgressBar(refresh_rate=refresh_rate, leave=leave)
    return EpochLines()


def model_summary(max_depth: int = 2) -> ModelSummary:
    """Lightning's RichModelSummary on a terminal; no table when stdout is a file or a pipe.

    ``ModelSummary(max_depth=0)`` prints nothing (Lightning's documented off switch) and keeps
    Lightning from adding its default summary. Each job of a sweep would otherwise repeat the
    table in its log, with a FLOPs column of zeros (Lightning counts FLOPs only for a module
    that sets ``example_input_array``).
    """
    if stdout_is_terminal():
        return RichModelSummary(max_depth=max_depth)
    return ModelSummary(max_depth=0)


def stopping_signal(stop: SystemExit) -> int | None:
    """The signal that made ``trainer.fit`` exit with ``stop``, or None for another exit.

    Lightning handles both signals and ends the fit with a SystemExit: on SIGTERM the loops
    raise its ``SIGTERMException`` (a SystemExit) at the end of the batch; on Ctrl-C it catches
    the KeyboardInterrupt, shuts down and calls ``sys.exit(1)`` while handling it, so the
    KeyboardInterrupt is the exit's ``__context__``. Read from the exception rather than noted by
    a callback: a callback costs every training step its hook calls.
    """
    if isinstance(stop, SIGTERMException):
        return signal.SIGTERM
    if isinstance(stop.__context__, KeyboardInterrupt):
        return signal.SIGINT
    return None
