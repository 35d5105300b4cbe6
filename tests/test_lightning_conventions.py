"""Every standard Trainer flag and callback behaves as Lightning documents on mlplab's objects.

Each test runs a real ``pytorch_lightning.Trainer`` on the spiral datamodule and the Classifier
and asserts the number that matters: steps run, points logged, calls made, learning rate reached.
Small data: 320 training samples in minibatches of 32, so an epoch is 10 optimizer steps.
"""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    BatchSizeFinder,
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    StochasticWeightAveraging,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.tuner import Tuner
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import NO_PROGRESS, SMALL_TRAIN, read_metrics, run_cli
from mlplab.data.datamodule import SpiralDataModule
from mlplab.models.classifier import Classifier
from mlplab.models.mlp import MLP
from mlplab.models.schedulers import cosine_annealing, one_cycle

STEPS_PER_EPOCH = 10


def datamodule(**kwargs) -> SpiralDataModule:
    return SpiralDataModule(**{"points_per_class": 100, "batch_size": 32, "seed": 3, **kwargs})


def classifier(lr: float = 1e-2, optimizer=torch.optim.Adam, **kwargs) -> Classifier:
    torch.manual_seed(3)
    return Classifier(
        MLP("ReLU()", 2, [16], 4),
        nn.CrossEntropyLoss(),
        functools.partial(optimizer, lr=lr),
        4,
        **kwargs,
    )


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    """A quiet Trainer: no logger, checkpoint, progress bar or summary unless asked for."""
    defaults = {
        "default_root_dir": tmp_path,
        "max_epochs": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": True,
    }
    return pl.Trainer(**{**defaults, **kwargs})


class Counter(Callback):
    """Counts hook calls and remembers what the hooks saw."""

    def __init__(self) -> None:
        self.batch_ends = 0
        self.optimizer_steps = 0
        self.validations = 0
        self.first_batches: list[torch.Tensor] = []
        self.val_acc: list[float] = []
        self.epoch_weights: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.first_batches.append(batch[0].clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        assert isinstance(outputs["loss"], torch.Tensor) and len(batch[0]) <= 32
        self.batch_ends += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.optimizer_steps += 1

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validations += 1
            self.val_acc.append(float(trainer.callback_metrics["val/acc"]))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        state = pl_module.net.state_dict()
        self.epoch_weights.append({k: v.detach().clone() for k, v in state.items()})


def csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def logged(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


# --- how long training runs ---------------------------------------------------------------------


def test_max_steps_is_exact(tmp_path) -> None:
    counter = Counter()
    t = trainer(tmp_path, max_steps=13, max_epochs=-1, callbacks=[counter])
    t.fit(classifier(), datamodule=datamodule())
    assert t.global_step == 13 and counter.optimizer_steps == 13 and counter.batch_ends == 13


def test_fast_dev_run_takes_one_step_and_writes_nothing(tmp_path) -> None:
    model = classifier()
    logger = TensorBoardLogger(tmp_path / "logs")
    t = trainer(
        tmp_path / "root",
        fast_dev_run=True,
        logger=logger,
        enable_checkpointing=True,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last", save_top_k=1)],
    )
    t.fit(model, datamodule=datamodule(val_fraction=0.1))
    assert t.global_step == 1
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*"))


@pytest.mark.parametrize(("limit", "steps"), [(3, 3), (0.5, 5)])
def test_limit_train_batches_int_and_fraction(tmp_path, limit, steps) -> None:
    t = trainer(tmp_path, limit_train_batches=limit, max_epochs=3)
    t.fit(classifier(), datamodule=datamodule())
    assert t.num_training_batches == steps and t.global_step == 3 * steps


def test_overfit_batches_repeats_the_first_batches_unshuffled(tmp_path) -> None:
    counter = Counter()
    dm = datamodule()
    t = trainer(tmp_path, overfit_batches=2, max_epochs=3, callbacks=[counter])
    with pytest.warns(UserWarning, match="shuffling"):  # Lightning turns the shuffling off
        t.fit(classifier(), datamodule=dm)
    assert t.global_step == 3 * 2
    # Every epoch starts with the same minibatch: the first 32 training samples, in order.
    assert len(counter.first_batches) == 3
    for batch in counter.first_batches:
        assert torch.equal(batch, dm.X_train[:32])


def test_max_time_stops_training(tmp_path) -> None:
    t = trainer(tmp_path, max_time={"seconds": 1}, max_epochs=100_000)
    t.fit(classifier(), datamodule=datamodule())
    assert 0 < t.current_epoch < 100_000 and t.interrupted is False


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "per_epoch"), [(0.5, 2), (4, 2), (1.0, 1)])
def test_val_check_interval_fraction_and_int(tmp_path, interval, per_epoch) -> None:
    counter = Counter()
    t = trainer(tmp_path, val_check_interval=interval, max_epochs=2, callbacks=[counter])
    t.fit(classifier(), datamodule=datamodule(val_fraction=0.1))
    # 288 training samples after the validation split: 9 steps per epoch.
    assert t.num_training_batches == 9
    assert counter.validations == 2 * per_epoch


def test_check_val_every_n_epoch(tmp_path) -> None:
    counter = Counter()
    t = trainer(tmp_path, check_val_every_n_epoch=2, max_epochs=5, callbacks=[counter])
    t.fit(classifier(), datamodule=datamodule(val_fraction=0.1))
    assert counter.validations == 2  # after epochs 2 and 4 (1-based)


# --- optimization -------------------------------------------------------------------------------


def test_gradient_clip_val_bounds_every_update(tmp_path) -> None:
    clip, lr = 1e-3, 1.0
    model = classifier(lr=lr, optimizer=torch.optim.SGD)
    before = torch.cat([p.detach().clone().flatten() for p in model.parameters()])
    t = trainer(tmp_path, gradient_clip_val=clip, max_steps=1, max_epochs=-1)
    t.fit(model, datamodule=datamodule())
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # Plain SGD moves the weights by lr * gradient, whose norm the clipping caps at clip.
    assert torch.linalg.vector_norm(after - before).item() == pytest.approx(lr * clip, rel=1e-4)


def test_accumulate_grad_batches_steps_every_second_batch(tmp_path) -> None:
    counter = Counter()
    t = trainer(tmp_path, accumulate_grad_batches=2, callbacks=[counter])
    t.fit(classifier(), datamodule=datamodule())
    assert counter.batch_ends == 2 * STEPS_PER_EPOCH
    assert t.global_step == counter.optimizer_steps == STEPS_PER_EPOCH


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("32-true", torch.float32), ("64-true", torch.float64), ("bf16-mixed", torch.float32)],
)
def test_precision_on_cpu(tmp_path, precision, dtype) -> None:
    model = classifier()
    t = trainer(tmp_path, precision=precision)
    dm = datamodule(val_fraction=0.1)
    t.fit(model, datamodule=dm)
    assert math.isfinite(float(t.callback_metrics["train/loss"]))
    assert math.isfinite(float(t.callback_metrics["val/loss"]))
    t.test(model, datamodule=dm, verbose=False)
    assert t.global_step == 2 * 9
    assert all(p.dtype == dtype for p in model.parameters())
    assert 0.0 <= float(t.callback_metrics["test/acc"]) <= 100.0
    assert len(model.training_losses) == 2 * 9


# The lr of the last of 20 steps: cosine's closed form at t = 19 of T = 20, and one-cycle's
# final lr max_lr / (div_factor * final_div_factor), reached at its last step.
COSINE_LAST = 1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi * 19 / 20)) / 2


@pytest.mark.parametrize(
    ("factory", "last_lr"),
    [
        (functools.partial(cosine_annealing, eta_min=1e-4), COSINE_LAST),
        (functools.partial(one_cycle, max_lr=0.05), 0.05 / (25 * 1e4)),
    ],
)
def test_per_step_scheduler_with_learning_rate_monitor(tmp_path, factory, last_lr) -> None:
    logger = CSVLogger(tmp_path, name="csv", version="")
    t = trainer(
        tmp_path,
        logger=logger,
        log_every_n_steps=1,
        callbacks=[LearningRateMonitor(logging_interval="step")],
    )
    model = classifier(lr=1e-2, scheduler=factory)
    t.fit(model, datamodule=datamodule())
    rates = logged(csv_rows(logger), "lr-Adam")
    # One point per optimizer step: the lr used by each step, stepped after every step.
    assert [step for step, _ in rates] == list(range(2 * STEPS_PER_EPOCH))
    assert rates[-1][1] == pytest.approx(last_lr, rel=1e-6)
    assert len({round(lr, 12) for _, lr in rates}) == len(rates)  # a new lr every step


def test_stochastic_weight_averaging_ends_on_the_mean_of_its_epochs(tmp_path) -> None:
    counter = Counter()
    swa = StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=2, annealing_epochs=1)
    model = classifier()
    t = trainer(tmp_path, max_epochs=4, callbacks=[counter, swa])
    t.fit(model, datamodule=datamodule())
    # Lightning averages at the start of epochs swa_epoch_start - 1 (0-based) to the last: the
    # weights that ended epochs 0, 1 and 2 of 4.
    averaged = {
        key: torch.stack([w[key] for w in counter.epoch_weights[0:3]]).mean(dim=0)
        for key in counter.epoch_weights[0]
    }
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(value, averaged[key], rtol=1e-5, atol=1e-6)
        assert not torch.equal(value, counter.epoch_weights[-1][key])


def test_early_stopping_stops_when_val_loss_stops_improving(tmp_path) -> None:
    early = EarlyStopping(monitor="val/loss", patience=1, min_delta=10.0)
    t = trainer(tmp_path, max_epochs=50, callbacks=[early])
    t.fit(classifier(), datamodule=datamodule(val_fraction=0.1))
    # Epoch 0 sets the best; epoch 1 does not beat it by 10: patience 1 is used up.
    assert early.stopped_epoch == 1 and t.current_epoch == 2 and t.global_step == 2 * 9


def test_model_checkpoint_every_n_train_steps(tmp_path) -> None:
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=7, save_top_k=-1
    )
    t = trainer(tmp_path, enable_checkpointing=True, callbacks=[checkpoint])
    t.fit(classifier(), datamodule=datamodule())
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "step=14.ckpt",
        "step=7.ckpt",
    ]
    assert torch.load(tmp_path / "ckpt" / "step=7.ckpt", weights_only=True)["global_step"] == 7


def test_model_checkpoint_keeps_the_best_by_a_monitored_metric(tmp_path) -> None:
    counter = Counter()
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max", save_top_k=2
    )
    t = trainer(tmp_path, max_epochs=5, enable_checkpointing=True, callbacks=[counter, checkpoint])
    t.fit(classifier(lr=3e-3), datamodule=datamodule(val_fraction=0.1))
    kept = sorted(float(v) for v in checkpoint.best_k_models.values())
    assert len(list((tmp_path / "ckpt").iterdir())) == 2
    assert kept == pytest.approx(sorted(counter.val_acc)[-2:])
    assert float(checkpoint.best_model_score) == pytest.approx(max(counter.val_acc))


# --- hooks, logging, progress -------------------------------------------------------------------


def test_user_callback_hooks_run_once_per_optimizer_step(tmp_path) -> None:
    counter = Counter()
    t = trainer(tmp_path, callbacks=[counter])
    t.fit(classifier(), datamodule=datamodule())
    assert counter.batch_ends == counter.optimizer_steps == t.global_step == 2 * STEPS_PER_EPOCH


class LogsEveryStep(Classifier):
    """A subclass that logs a value of its own on every step, as Lightning users do."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("custom/step_index", float(self.global_step), on_step=True, on_epoch=False)
        return loss


def test_self_log_on_step_writes_every_log_every_n_steps(tmp_path) -> None:
    logger = CSVLogger(tmp_path, name="csv", version="")
    t = trainer(tmp_path, logger=logger, log_every_n_steps=3)
    torch.manual_seed(3)
    model = LogsEveryStep(
        MLP("ReLU()", 2, [16], 4), nn.CrossEntropyLoss(), functools.partial(torch.optim.Adam), 4
    )
    t.fit(model, datamodule=datamodule())
    rows = csv_rows(logger)
    expected = [s for s in range(2 * STEPS_PER_EPOCH) if (s + 1) % 3 == 0]
    assert logged(rows, "custom/step_index") == [(s, float(s)) for s in expected]
    # mlplab's own step scalars follow the same cadence; its epoch scalars once per epoch.
    assert [s for s, _ in logged(rows, "train/loss_step")] == expected
    assert [s for s, _ in logged(rows, "train/loss")] == [9, 19]


def test_progress_bar_counts_optimizer_steps(tmp_path) -> None:
    bar = TQDMProgressBar()
    t = trainer(tmp_path, enable_progress_bar=True, callbacks=[bar])
    t.fit(classifier(), datamodule=datamodule())
    assert bar.total_train_batches == STEPS_PER_EPOCH
    assert bar.train_progress_bar.n == STEPS_PER_EPOCH


# --- tuning -------------------------------------------------------------------------------------


def test_lr_find_gives_a_suggestion_and_sets_model_lr(tmp_path) -> None:
    model = classifier(lr=1e-3)
    t = trainer(tmp_path, max_epochs=3)  # lr_find's 30 steps take three epochs of 10
    finder = Tuner(t).lr_find(
        model, datamodule=datamodule(), num_training=30, min_lr=1e-5, early_stop_threshold=None
    )
    suggestion = finder.suggestion()
    assert suggestion is not None and 1e-5 <= suggestion <= 1.0
    assert len(finder.results["lr"]) == 30
    assert model.lr == suggestion  # Lightning's convention: the model's `lr` attribute
    t.fit(model, datamodule=datamodule())
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(suggestion)
    assert t.global_step == 3 * STEPS_PER_EPOCH


def test_batch_size_finder_scales_the_datamodule_batch_size(tmp_path) -> None:
    dm = datamodule(batch_size=2)
    finder = BatchSizeFinder(mode="power", steps_per_trial=1, init_val=2, max_trials=3)
    t = trainer(tmp_path, max_epochs=1, callbacks=[finder])
    t.fit(classifier(), datamodule=dm)
    # 2 doubled in each of the trials after the first; fit then trains with the batch size found:
    # 320 samples in minibatches of 8.
    assert finder.optimal_batch_size == dm.hparams.batch_size == 8
    assert t.num_training_batches == 40 and t.global_step == 40


# --- other people's data ------------------------------------------------------------------------


class PlainDataModule(pl.LightningDataModule):
    """A datamodule as Lightning's docs write one: TensorDataset, default collate, shuffle."""

    def setup(self, stage: str | None = None) -> None:
        spiral = datamodule()
        spiral.setup()
        self.train = TensorDataset(spiral.X_train, spiral.y_train)
        self.test = TensorDataset(spiral.X_test, spiral.y_test)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=32, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=64)


def test_a_standard_dataloader_datamodule_trains_and_tests(tmp_path) -> None:
    model = classifier()
    t = trainer(tmp_path)
    dm = PlainDataModule()
    t.fit(model, datamodule=dm)
    t.test(model, datamodule=dm, verbose=False)
    assert t.global_step == 2 * STEPS_PER_EPOCH
    assert 25.0 < float(t.callback_metrics["test/acc"]) <= 100.0


# --- the same through mlplab-train --------------------------------------------------------------

CLI_SMALL = [*SMALL_TRAIN, "figures=false", *NO_PROGRESS]
RANK_WEIGHTS = '''
import torch
from pytorch_lightning.callbacks import Callback


class SaveRankWeights(Callback):
    """Each rank saves its final weights, so a test can compare them."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer, pl_module) -> None:
        path = f"{self.dirpath}/rank{trainer.global_rank}.pt"
        torch.save(pl_module.net.state_dict(), path)
'''
WITH_RANK_WEIGHTS = [
    "+callbacks.rank_weights._target_=rank_weights.SaveRankWeights",
    "+callbacks.rank_weights.dirpath=${paths.output_dir}",
]


@pytest.mark.subprocess
def test_cli_max_steps_is_a_trainer_key(tmp_path) -> None:
    run = tmp_path / "run"
    result = run_cli(
        "train", *CLI_SMALL, "+trainer.max_steps=13", f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert read_metrics(run)["metrics"]["global_step"] == 13
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 13


def assert_ranks_agree(run_dir: Path) -> None:
    """Both DDP ranks ended on the same weights, and they are the checkpoint's."""
    rank0 = torch.load(run_dir / "rank0.pt", weights_only=True)
    rank1 = torch.load(run_dir / "rank1.pt", weights_only=True)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
        assert torch.equal(value, saved[f"net.{key}"]), key
    record = read_metrics(run_dir)
    assert record["status"] == "ok"
    # 320 samples over 2 ranks of 160: 5 minibatches of 32 per rank and epoch, 2 epochs.
    assert record["metrics"]["global_step"] == 10


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_ddp_sim_with_default_callbacks_and_logger(tmp_path) -> None:
    (tmp_path / "rank_weights.py").write_text(RANK_WEIGHTS)
    run = tmp_path / "run"
    result = run_cli(
        "train",
        "trainer=ddp_sim",
        *SMALL_TRAIN,
        *WITH_RANK_WEIGHTS,
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert_ranks_agree(run)
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run / "decision_map.png").is_file()


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_ddp_sim_inside_a_multirun(tmp_path) -> None:
    (tmp_path / "rank_weights.py").write_text(RANK_WEIGHTS)
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train",
        "-m",
        "trainer=ddp_sim",
        *CLI_SMALL,
        "model.width=8,16",
        *WITH_RANK_WEIGHTS,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "2 of 2 jobs ok" in result.stdout
    for job, width in (("0", 8), ("1", 16)):
        assert_ranks_agree(sweep / job)
        weights = torch.load(sweep / job / "rank1.pt", weights_only=True)
        assert weights["mlp.Linear_0.weight"].shape == (width, 2)  # rank 1 ran its own job
