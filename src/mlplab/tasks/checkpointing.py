"""Lightning's ModelCheckpoint for the latest epoch, written every few seconds, not every epoch.

An epoch of a small network on in-memory data lasts milliseconds: the tutorial's 100 epochs of 25
steps take a few seconds, and a checkpoint after each epoch cost about 12 % of that fit (about
5 ms to write, then about 3 ms of slower steps while the caches refill; measured with
``scripts/bench_train.py``). :class:`ThrottledCheckpoint` keeps what makes ``last.ckpt``
resumable (it is written only at an epoch's end, when the DataLoader's position is not needed)
and writes it at most every ``save_interval_s`` seconds, always after the fit's last epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from mlplab.checks import check_number


def fit_ends_with_this_epoch(trainer: pl.Trainer) -> bool:
    """True when the fit stops after the epoch now ending (called in an epoch-end hook).

    The fit stops when something asked it to (``trainer.should_stop``: ``EarlyStopping``,
    ``max_time``'s Timer, a user's callback), when ``max_steps`` optimizer steps have run, or after
    epoch ``max_epochs - 1``; ``max_steps=-1`` and ``max_epochs=-1`` mean no such limit. Lightning
    calls checkpoint callbacks last, so the other callbacks' stop requests of this epoch are seen.
    """
    if trainer.should_stop:
        return True
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return True
    max_epochs = trainer.max_epochs
    return max_epochs is not None and max_epochs != -1 and trainer.current_epoch + 1 >= max_epochs


class ThrottledCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that saves at an epoch's end only once ``save_interval_s`` seconds have
    passed since its previous save (or the start of training), and always after the fit's last
    epoch (:func:`fit_ends_with_this_epoch`).

    Without a ``monitor`` it saves at the end of the training epoch (after that epoch's
    validation), never at a validation inside an epoch (``val_check_interval`` < 1) or at one
    that a ``check_val_every_n_epoch`` > 1 skips: only an epoch's end resumes exactly
    (``save_on_train_epoch_end`` defaults to True then; ModelCheckpoint's own default saves after
    each validation when there is one).

    The interval applies to a checkpoint of the latest epoch (``monitor: null``, mlplab's
    ``last.ckpt``); with a ``monitor``, every candidate epoch is compared and saved as
    ModelCheckpoint does, since a skipped epoch could be the best one. Mid-epoch saves
    (``every_n_train_steps``, ``train_time_interval``) are ModelCheckpoint's own, untouched.
    Everything else is Lightning's ``ModelCheckpoint`` (file names, ``dirpath``, the checkpoint's
    contents, saving on every rank together under DDP). Under DDP, rank 0's clock decides for
    every rank (``trainer.strategy.broadcast``), as Lightning does for ``train_time_interval``, so
    the ranks never disagree on a save.

    A kill loses at most the epochs of the last ``save_interval_s`` seconds and the epoch in
    progress; a resume from ``last.ckpt`` goes on from the end of the epoch it holds, exactly as
    the uninterrupted run did.

    Args:
        save_interval_s: The least time between two saves, in seconds of wall time; 0 saves after
            every epoch (ModelCheckpoint's own behaviour).
        **kwargs: ModelCheckpoint's arguments.

    Raises:
        ValueError: when ``save_interval_s`` is negative or not a finite number
            (``save_interval_s=<value> is invalid: ...``).

    Attributes:
        saved_step: The global step in this callback's file, once it wrote one in this fit;
            else None.
    """

    def __init__(self, *, save_interval_s: float = 0.0, **kwargs: Any) -> None:
        save_interval_s = check_number("save_interval_s", save_interval_s, low=0)
        if kwargs.get("monitor") is None and kwargs.get("save_on_train_epoch_end") is None:
            kwargs["save_on_train_epoch_end"] = True
        super().__init__(**kwargs)
        self.save_interval_s = save_interval_s
        self.saved_at: float | None = None  # time.monotonic() of this callback's latest save
        self.saved_step: int | None = None  # the global step in this callback's file
        self.dumped_step: int | None = None  # the step of the checkpoint being written
        # ModelCheckpoint saves after a batch only by steps or by time; without either, its
        # per-batch hook would only test its conditions, at every training step.
        steps = kwargs.get("every_n_train_steps")
        self.saves_after_batches = bool(steps) or kwargs.get("train_time_interval") is not None
        # Lightning reads state_key at every hook call of every callback (to name the profiler's
        # section), and ModelCheckpoint formats it from its settings each time; they are fixed
        # once built.
        self.fixed_state_key = super().state_key

    @property
    def state_key(self) -> str:
        return self.fixed_state_key

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.saved_at = time.monotonic()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Called for every checkpoint of the run (Lightning's dump_checkpoint), this one's or
        # another callback's, before it is written: save_by keeps only its own.
        self.dumped_step = int(checkpoint["global_step"])

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.saves_after_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.due(trainer):
            self.save_by(super().on_train_epoch_end, trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.due(trainer):
            self.save_by(super().on_validation_end, trainer, pl_module)

    def save_by(
        self,
        hook: Callable[[pl.Trainer, pl.LightningModule], None],
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
    ) -> None:
        """Run ModelCheckpoint's ``hook``; note the step it saved once the file is written."""
        self.dumped_step = None
        hook(trainer, pl_module)
        if self.dumped_step is not None:  # a checkpoint was dumped in the hook, and written
            self.saved_step = self.dumped_step
            # Only this callback's saves restart the clock: a best-epochs ModelCheckpoint saving
            # every few seconds must not keep last.ckpt from being written.
            self.saved_at = time.monotonic()

    def due(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch end may save: the interval has passed, or the fit ends with it."""
        if self.save_interval_s == 0 or self.monitor is not None:
            return True
        elapsed = math.inf if self.saved_at is None else time.monotonic() - self.saved_at
        due = elapsed >= self.save_interval_s or fit_ends_with_this_epoch(trainer)
        return bool(trainer.strategy.broadcast(due))
