"""LightningModule that trains the tutorial's MLP on the spiral data with a pluggable loss."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


@torch.no_grad()
def evaluate(net: nn.Module, X: Tensor, y: Tensor, loss: nn.Module) -> tuple[float, float]:
    """Loss and accuracy (percent) of ``net`` on ``(X, y)`` in eval mode, as the tutorial tests."""
    was_training = net.training
    net.eval()
    logits = net(X)
    net.train(was_training)
    acc = 100.0 * (logits.argmax(dim=1) == y).float().mean().item()
    return float(loss(logits, y)), acc


class SpiralClassifier(pl.LightningModule):
    """Train ``net`` with ``loss`` and an optimizer built from ``optimizer(params)``.

    A training batch is a *block*: a list of ``(x, y)`` minibatches, one optimizer step each
    (manual optimization), see :class:`mlplab.data.datamodule.TensorBlocks`. Metrics are logged
    under ``train/``, ``val/`` and ``test/``; accuracy is in percent, as the tutorial prints it.

    Args:
        net: The model, usually an :class:`mlplab.models.mlp.MLP`.
        loss: Criterion ``loss(logits, labels) -> scalar``.
        optimizer: Factory taking the parameters (a ``functools.partial`` from Hydra).
        num_classes: Number of classes, for the accuracy metrics.
        fast_steps: On a single device at 32-bit precision, step the raw optimizer and count the
            steps in Lightning's progress tracker, skipping Lightning's per-step hook dispatch
            (``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``), which
            costs more than a step of this MLP. Set False for callbacks that need those hooks.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        fast_steps: bool = True,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.fast_steps = fast_steps
        self.net = net
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.num_classes = num_classes
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_correct = torch.zeros(())
        self.train_seen = 0
        self.training_losses: list[float] = []  # per optimizer step, as the tutorial records

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self) -> Optimizer:
        return self.optimizer_factory(self.parameters())

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        if isinstance(batch, list):  # a training block: skip the generic collection walk
            return [(x.to(device), y.to(device)) for x, y in batch]
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _use_fast_steps(self) -> bool:
        trainer = self.trainer
        return (
            self.fast_steps
            and isinstance(trainer.strategy, SingleDeviceStrategy)
            and trainer.precision == "32-true"
        )

    def training_step(self, block: list[tuple[Tensor, Tensor]], block_idx: int) -> None:
        optimizer = self.optimizers()
        fast = self._use_fast_steps()
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        first_step = self.global_step
        step_losses, step_logits = [], []
        for x, y in block:
            logits = self.net(x)
            loss = self.loss_fn(logits, y)
            if fast:  # no grad scaling or gradient sync to do: the plain step is the whole step
                optimizer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.optimizer.step()
                progress.increment_ready()
                progress.increment_completed()
            else:
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                optimizer.step()
            step_losses.append(loss.detach())
            step_logits.append(logits.detach())
        # Bookkeeping once per block, vectorised: per-step tensor ops cost a tenth of a step here.
        losses = torch.stack(step_losses)
        targets = torch.cat([y for _, y in block])
        hits = (torch.cat(step_logits).argmax(dim=1) == targets).float()
        sizes = torch.tensor([len(y) for _, y in block])
        step_of_sample = torch.repeat_interleave(torch.arange(len(block)), sizes)
        correct = torch.zeros(len(block)).index_add_(0, step_of_sample, hits)
        self.train_correct += hits.sum()
        self.train_seen += len(targets)
        self._check_finite(losses, first_step)
        sizes = sizes.float()
        n = len(targets)
        self.log(
            "train/loss",
            (losses * sizes).sum() / n,
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=True,  # under DDP, the mean over ranks; a no-op on one device
        )
        values = losses.tolist()
        self.training_losses.extend(values)
        self._log_steps(first_step, values, (100.0 * correct / sizes).tolist())
        # Lightning logs epoch-level scalars at its count of stepped batches, +1 per block; count
        # optimizer steps instead, so train/loss and train/loss_step share TensorBoard's x-axis
        # whatever steps_per_block is. The count is saved in checkpoints, so resumes keep it.
        self.trainer.fit_loop.epoch_loop._batches_that_stepped += len(block) - 1

    def _check_finite(self, losses: Tensor, first_step: int) -> None:
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step = first_step + int(bad[0])
            lr = self.optimizers().param_groups[0].get("lr")
            raise DivergedError(
                f"train/loss became {losses[bad[0]].item()} at step {step} "
                f"(epoch {self.current_epoch}): training diverged; lower optimizer.lr (now {lr})"
            )

    def _log_steps(self, first_step: int, losses: list[float], accs: list[float]) -> None:
        """Per-step scalars, every ``trainer.log_every_n_steps`` optimizer steps."""
        if self.logger is None:
            return
        every = max(int(self.trainer.log_every_n_steps), 1)
        for j, (loss, acc) in enumerate(zip(losses, accs, strict=True)):
            # After every n-th step, at its 0-based index, as Lightning logs its own step scalars:
            # the last step of an epoch then shares its x with the epoch's train/loss.
            if (first_step + j + 1) % every == 0:
                scalars = {"train/loss_step": loss, "train/acc_step": acc}
                self.logger.log_metrics(scalars, step=first_step + j)

    def on_train_epoch_start(self) -> None:
        self.train_correct = torch.zeros((), device=self.device)
        self.train_seen = 0

    def on_train_epoch_end(self) -> None:
        # Micro accuracy over the epoch's samples (what MulticlassAccuracy(average="micro")
        # computes), counted in the block loop above instead of a per-block metric update.
        acc = 100.0 * self.train_correct / max(self.train_seen, 1)
        self.log("train/acc", acc, sync_dist=True)

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
        # Plain values only, so the checkpoint loads with torch.load(weights_only=True).
        net_config = self.net.config() if hasattr(self.net, "config") else None
        loss = type(self.loss_fn)
        checkpoint["mlplab"] = {
            "net": net_config,
            "num_classes": self.num_classes,
            # Its class path, so mlplab-eval can measure test/loss with the training loss.
            "loss": f"{loss.__module__}.{loss.__qualname__}",
            # A tensor, not a list: pickling 2,500 floats costs more than the whole state_dict.
            "training_losses": torch.tensor(self.training_losses, dtype=torch.float64),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        losses = checkpoint.get("mlplab", {}).get("training_losses", [])
        self.training_losses = losses.tolist() if isinstance(losses, Tensor) else list(losses)
