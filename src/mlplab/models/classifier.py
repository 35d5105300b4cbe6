"""A LightningModule that trains any classifier network with a pluggable loss."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mlplab.models.schedulers import SchedulerFactory

OptimizerFactory = Callable[..., Optimizer]


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


@torch.no_grad()
def evaluate(net: nn.Module, X: Tensor, y: Tensor, loss: nn.Module) -> tuple[float, float]:
    """Loss and accuracy (percent) of ``net`` on ``(X, y)`` in eval mode, as the tutorial tests.

    Args:
        net: Maps ``X`` of shape (N, F) to logits of shape (N, C).
        X: Inputs; cast to the dtype of ``net``'s parameters (e.g. float64 after a 64-bit run).
        y: Class indices of shape (N,).
        loss: Criterion ``loss(logits, labels) -> scalar``.
    """
    was_training = net.training
    net.eval()
    first = next(net.parameters(), None)
    logits = net(X if first is None else X.to(first.dtype))
    net.train(was_training)
    acc = 100.0 * (logits.argmax(dim=1) == y).float().mean().item()
    return float(loss(logits, y)), acc


def evaluate_batches(
    net: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], loss: nn.Module
) -> tuple[float, float, int]:
    """:func:`evaluate` over ``(x, y)`` minibatches: mean loss and accuracy (percent) over all
    samples, each minibatch's loss weighted by its size, and the number of samples N.

    One minibatch holding the whole split gives :func:`evaluate`'s numbers exactly.
    """
    results = [(*evaluate(net, x, y, loss), len(y)) for x, y in batches]
    if len(results) == 1:
        return results[0]
    count = sum(n for _, _, n in results)
    if count == 0:
        return math.nan, math.nan, 0
    mean_loss = sum(value * n for value, _, n in results) / count
    return mean_loss, sum(acc * n for _, acc, n in results) / count, count


class Classifier(pl.LightningModule):
    """Train ``net`` on ``(x, y)`` minibatches with ``loss`` and a torch optimizer.

    Automatic optimization: :meth:`training_step` returns the loss and Lightning does the rest
    (gradient clipping, accumulation, precision, schedulers, hooks). Metrics are logged under
    ``train/``, ``val/`` and ``test/`` with accuracy in percent, as the tutorial prints it:

    - ``train/loss`` and ``train/acc`` once per epoch, over every training sample of the epoch
      (torchmetrics ``MeanMetric`` weighted by batch size, and micro ``MulticlassAccuracy``);
    - ``train/loss_step`` and ``train/acc_step`` on the steps Lightning writes step scalars
      (every ``trainer.log_every_n_steps``);
    - ``val/*`` and ``test/*`` per epoch of those loops.

    Args:
        net: Any module mapping inputs of shape (N, F) to logits of shape (N, C).
        loss: Criterion ``loss(logits, labels) -> scalar``.
        optimizer: Factory ``optimizer(params, **kwargs)``, e.g.
            ``functools.partial(torch.optim.Adam, lr=1e-3)``.
        num_classes: C, for the accuracy metrics.
        scheduler: Optional factory ``scheduler(optimizer, total_steps)``, stepped after every
            optimizer step (:mod:`mlplab.models.schedulers`).
        built_from: What built the run, as plain values: for each part (``data``, ``model``,
            ``loss``, ``optimizer``, ...) its class path ``_target_`` and its arguments. Saved
            with ``num_classes`` by ``save_hyperparameters``, so a checkpoint says what built
            it and loads with ``torch.load(weights_only=True)``.

    Attributes:
        lr: The learning rate passed to ``optimizer`` (taken from the factory's ``lr`` keyword);
            ``Tuner.lr_find`` sets it.
        training_losses: The training loss of every training batch so far, as the tutorial
            records them (kept in checkpoints, so a resumed run has the whole curve).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        scheduler: SchedulerFactory | None = None,
        built_from: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # The modules and factories are objects, saved as weights or not at all; the rest are
        # plain values (the checkpoint's hyper_parameters).
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.lr: float | None = getattr(optimizer, "keywords", {}).get("lr")
        # validate_args=False: the labels come from our own datamodules; checks cost per update.
        metric = {"num_classes": num_classes, "average": "micro", "validate_args": False}
        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(**metric)
        self.val_acc = MulticlassAccuracy(**metric)
        self.test_acc = MulticlassAccuracy(**metric)
        self.training_losses: list[float] = []
        self.epoch_losses: list[Tensor] = []
        self.epoch_sizes: list[int] = []
        self.epoch_logits: list[Tensor] = []
        self.epoch_targets: list[Tensor] = []
        self.epoch_start_step = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        kwargs = {} if self.lr is None else {"lr": self.lr}
        optimizer = self.optimizer_factory(self.parameters(), **kwargs)
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps)
        lr_scheduler = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.net(x)
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"the network returns {logits.shape[-1]} logits per sample for "
                f"num_classes={self.num_classes}: its output size must equal the number of classes"
            )
        loss = self.loss_fn(logits, y)
        loss_value = loss.detach()
        # The epoch's metrics and the divergence check run once, at its end, from these: a
        # torchmetrics update costs about as much as this MLP's whole optimizer step, and a
        # finiteness check per step is a host sync (about 1 % of this MLP's step).
        self.epoch_losses.append(loss_value)
        self.epoch_sizes.append(len(y))
        self.epoch_logits.append(logits.detach())
        self.epoch_targets.append(y)
        if self._writes_step_scalars():
            accuracy = 100.0 * (logits.detach().argmax(dim=1) == y).float().mean()
            self.log_dict(
                {"train/loss_step": loss_value, "train/acc_step": accuracy},
                on_step=True,
                on_epoch=False,
                batch_size=len(y),
            )
        return loss

    def _writes_step_scalars(self) -> bool:
        """True on the steps whose step scalars Lightning writes to the loggers.

        ``self.log(on_step=True)`` costs about a step of this MLP, and Lightning writes step
        scalars only every ``log_every_n_steps`` stepped batches (its ``should_update_logs``),
        so mlplab's own step scalars are logged on those steps only, and not at all without a
        logger. A subclass's own ``self.log`` calls are unaffected.
        """
        trainer = self.trainer
        if not trainer.loggers:
            return False
        return (trainer.global_step + 1) % max(int(trainer.log_every_n_steps), 1) == 0

    def _check_finite(self, losses: Tensor) -> None:
        """Raise :class:`DivergedError` if any of the epoch's training losses is NaN or infinite.

        Checked once per epoch (before the epoch's checkpoint is written: Lightning calls the
        module's ``on_train_epoch_end`` before the checkpoint callback's), naming the first
        optimizer step whose loss was not finite.
        """
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        batch = int((~finite).nonzero()[0, 0])
        step = self.epoch_start_step + batch // max(int(self.trainer.accumulate_grad_batches), 1)
        lr = self.optimizers().param_groups[0].get("lr")
        raise DivergedError(
            f"train/loss became {losses[batch].item()} at step {step} "
            f"(epoch {self.current_epoch}): training diverged; lower optimizer.lr (now {lr})"
        )

    def on_train_epoch_start(self) -> None:
        self.epoch_losses, self.epoch_sizes = [], []
        self.epoch_logits, self.epoch_targets = [], []
        self.epoch_start_step = self.global_step

    def on_train_epoch_end(self) -> None:
        if not self.epoch_losses:
            return
        losses = torch.stack(self.epoch_losses)
        self._check_finite(losses)
        sizes = torch.tensor(self.epoch_sizes, dtype=losses.dtype, device=losses.device)
        self.train_loss.update(losses, sizes)
        predictions = torch.cat(self.epoch_logits).argmax(dim=1)
        self.train_acc.update(predictions, torch.cat(self.epoch_targets))
        # compute() syncs the metric states across DDP ranks, so every rank holds the same value;
        # sync_dist=True only tells Lightning so (a mean of equal values, once per epoch).
        self.log("train/loss", self.train_loss.compute(), sync_dist=True)
        self.log("train/acc", 100.0 * self.train_acc.compute(), sync_dist=True)
        self.train_loss.reset()
        self.train_acc.reset()
        self.training_losses.extend(losses.float().tolist())

    def _eval_step(
        self, batch: tuple[Tensor, Tensor], stage: str, metric: MulticlassAccuracy
    ) -> None:
        x, y = batch
        logits = self.net(x)
        self.log(f"{stage}/loss", self.loss_fn(logits, y), batch_size=len(y), sync_dist=True)
        metric.update(logits.argmax(dim=1), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", 100.0 * self.val_acc.compute(), sync_dist=True)
        self.val_acc.reset()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", 100.0 * self.test_acc.compute(), sync_dist=True)
        self.test_acc.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A tensor, not a list: pickling 2,500 floats costs more than the whole state_dict.
        losses = torch.tensor(self.training_losses, dtype=torch.float64)
        checkpoint["mlplab"] = {"training_losses": losses}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        losses = checkpoint.get("mlplab", {}).get("training_losses", [])
        self.training_losses = losses.tolist() if isinstance(losses, Tensor) else list(losses)
