"""last.ckpt's cadence: at an epoch's end every ``save_interval_s`` seconds, and after the last one.

Real Trainers on the spiral data (10 steps per epoch), with a probe callback that reads what
last.ckpt holds when each epoch starts.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mlplab.tasks.checkpointing import ThrottledCheckpoint
from mlplab.tasks.common import Interrupted
from mlplab.tasks.runtime import (
    AtomicCheckpointIO,
    build_callbacks,
    build_trainer,
    quiet_expected_warnings,
)
from mlplab.tasks.train import build_run, train
from test_reliability import SMALL, compose_task


class Probe(pl.Callback):
    """What last.ckpt holds (its global step) when each epoch starts; sleeps before some epochs."""

    def __init__(self, path: Path, sleep_before: dict[int, float] | None = None) -> None:
        self.path, self.sleep_before = path, sleep_before or {}
        self.seen: list[int | None] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen.append(saved_step(self.path) if self.path.exists() else None)
        time.sleep(self.sleep_before.get(trainer.current_epoch, 0.0))


class StopAfter(pl.Callback):
    """Ask the fit to stop at the end of epoch ``epoch`` (as EarlyStopping does)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def fit(tmp_path: Path, overrides: list[str], *extra: pl.Callback) -> tuple[pl.Trainer, Path]:
    """Fit the small run with the default callbacks (logger off) and ``extra``."""
    quiet_expected_warnings()
    run = tmp_path / "run"
    cfg = compose_task("train", [*SMALL, "logger=none", *overrides], run)
    datamodule, model = build_run(cfg)
    trainer = build_trainer(cfg.trainer, None, [*build_callbacks(cfg.callbacks), *extra])
    trainer.fit(model, datamodule=datamodule)
    return trainer, run / "checkpoints" / "last.ckpt"


def saved_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_the_default_saves_only_after_the_last_epoch_of_a_short_fit(tmp_path) -> None:
    probe = Probe(tmp_path / "run" / "checkpoints" / "last.ckpt")
    trainer, last = fit(tmp_path, ["trainer.max_epochs=3"], probe)
    (callback,) = [c for c in trainer.callbacks if isinstance(c, ThrottledCheckpoint)]
    assert callback.save_interval_s == 5  # conf/callbacks/default.yaml
    assert probe.seen == [None, None, None]  # 3 short epochs: well within 5 s
    assert saved_step(last) == 30 and callback.saved_step == 30
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]


def test_an_interval_of_zero_saves_after_every_epoch_through_atomic_io(tmp_path) -> None:
    probe = Probe(tmp_path / "run" / "checkpoints" / "last.ckpt")
    overrides = ["trainer.max_epochs=3", "callbacks.model_checkpoint.save_interval_s=0"]
    trainer, last = fit(tmp_path, overrides, probe)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert probe.seen == [None, 10, 20] and saved_step(last) == 30  # after every epoch of 10
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # and no temporary file


def test_an_epoch_ending_after_the_interval_is_saved(tmp_path) -> None:
    # Epoch 1 starts 1.2 s late: its end is the first past the 1 s interval (epoch 0 ends within
    # milliseconds), and the clock restarts there, so epoch 2 is saved only as the last one.
    probe = Probe(tmp_path / "run" / "checkpoints" / "last.ckpt", sleep_before={1: 1.2})
    overrides = ["trainer.max_epochs=4", "callbacks.model_checkpoint.save_interval_s=1"]
    _, last = fit(tmp_path, overrides, probe)
    assert probe.seen == [None, None, 20, 20] and saved_step(last) == 40


def test_another_checkpoint_callback_does_not_hold_last_ckpt_back(tmp_path) -> None:
    # A best-epochs ModelCheckpoint saving after every epoch: its saves must not restart
    # last.ckpt's clock, or last.ckpt would never be written during the fit.
    best = [
        "+callbacks.best._target_=pytorch_lightning.callbacks.ModelCheckpoint",
        f"+callbacks.best.dirpath={tmp_path / 'best'}",
        "+callbacks.best.monitor=train/loss",
        "+callbacks.best.save_top_k=-1",
    ]
    # Epochs of at least 0.4 s: the best callback saves more often than the 1 s interval.
    probe = Probe(
        tmp_path / "run" / "checkpoints" / "last.ckpt", sleep_before=dict.fromkeys(range(6), 0.4)
    )
    overrides = ["trainer.max_epochs=6", "callbacks.model_checkpoint.save_interval_s=1", *best]
    _, last = fit(tmp_path, overrides, probe)
    assert len(list((tmp_path / "best").glob("*.ckpt"))) == 6  # one per epoch
    assert any(step is not None for step in probe.seen)  # saved during the fit
    assert saved_step(last) == 60


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.max_epochs=3", "+trainer.val_check_interval=0.5"],
        ["trainer.max_epochs=5", "trainer.check_val_every_n_epoch=2"],
    ],
    ids=["val_check_interval", "check_val_every_n_epoch"],
)
def test_with_validation_last_ckpt_holds_whole_epochs_and_the_last(tmp_path, overrides) -> None:
    # Only an epoch's end resumes exactly: never a validation inside an epoch; and the last epoch
    # is saved even when no validation follows it.
    probe = Probe(tmp_path / "run" / "checkpoints" / "last.ckpt")
    every = "callbacks.model_checkpoint.save_interval_s=0"
    trainer, last = fit(tmp_path, ["data.val_fraction=0.2", every, *overrides], probe)
    per_epoch = trainer.num_training_batches
    epochs = len(probe.seen)
    assert probe.seen == [None, *(per_epoch * e for e in range(1, epochs))]
    assert saved_step(last) == trainer.global_step == per_epoch * epochs


@pytest.mark.parametrize(
    ("overrides", "stop", "step"),
    [
        (["+trainer.max_steps=25", "trainer.max_epochs=-1"], None, 25),  # ends mid-epoch 2
        (["trainer.max_epochs=50"], StopAfter(1), 20),  # should_stop, as EarlyStopping sets it
    ],
    ids=["max_steps", "should_stop"],
)
def test_the_fit_s_last_epoch_is_saved_whatever_ends_it(tmp_path, overrides, stop, step) -> None:
    probe = Probe(tmp_path / "run" / "checkpoints" / "last.ckpt")
    callbacks = [probe] if stop is None else [probe, stop]
    trainer, last = fit(tmp_path, overrides, *callbacks)
    assert trainer.global_step == step and saved_step(last) == step
    assert set(probe.seen) == {None}  # nothing before


def test_a_monitored_checkpoint_compares_every_epoch(tmp_path) -> None:
    # With a monitor a skipped epoch could be the best: the interval does not apply.
    probe = Probe(tmp_path / "run" / "checkpoints" / "last.ckpt")
    overrides = ["trainer.max_epochs=2", "+callbacks.model_checkpoint.monitor=train/loss"]
    fit(tmp_path, overrides, probe)
    assert probe.seen == [None, 10]  # the first candidate is always kept


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, "soon", True])
def test_a_bad_interval_is_refused_naming_it(value) -> None:
    with pytest.raises(ValueError, match=r"^save_interval_s=.* is invalid: must be a number"):
        ThrottledCheckpoint(dirpath="/tmp/unused", save_interval_s=value)


class SendSignal(pl.Callback):
    """Send ``signum`` to this process after optimizer step ``step``, as a scheduler or Ctrl-C."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_names_the_step_last_ckpt_holds(tmp_path, signum) -> None:
    # Saved after epoch 1 (past the 1 s interval), not after epoch 2; stopped in epoch 3.
    quiet_expected_warnings()
    run = tmp_path / "run"
    overrides = ["trainer.max_epochs=6", "callbacks.model_checkpoint.save_interval_s=1"]
    cfg = compose_task("train", [*SMALL, "logger=none", *overrides], run)
    datamodule, model = build_run(cfg)
    probe = Probe(run / "checkpoints" / "last.ckpt", sleep_before={1: 1.2})
    callbacks = [*build_callbacks(cfg.callbacks), probe, SendSignal(signum, 35)]
    trainer = build_trainer(cfg.trainer, None, callbacks)
    try:
        with pytest.raises(Interrupted) as stop:
            train(datamodule, model, trainer, run_test=False)
    finally:  # Lightning ignores Ctrl-C once it has caught one
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert stop.value.signum == signum and stop.value.exit_code == 128 + signum
    name = signal.Signals(signum).name
    expected = f"interrupted by {name} at step 35, in epoch 4 (last.ckpt holds step 20, where a"
    assert str(stop.value) == f"{expected} resume goes on)"
    assert saved_step(run / "checkpoints" / "last.ckpt") == 20
