"""LightningDataModule for the tutorial's spiral split, served from in-memory tensors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from mlplab.data.spiral import make_spiral, shuffle_split

Batch = tuple[Tensor, Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed mixed from (seed, epoch), so each epoch's order is fixed by the run's seed."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1  # torch.Generator.manual_seed wants a non-negative int64


class EpochPermutation:
    """Training order of one epoch: a permutation seeded by (seed, epoch), sharded by rank.

    Lightning calls :meth:`set_epoch` before each epoch (also after a resume), so a resumed run
    sees the same batches as an uninterrupted one. Under DDP each rank takes every
    ``world_size``-th index of the padded permutation, as ``DistributedSampler`` does.
    """

    def __init__(
        self, num_samples: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation :meth:`indices` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def indices(self) -> Tensor:
        """Indices of this rank's samples for the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        padded = len(self) * self.world_size
        if padded > self.num_samples:  # equal shard sizes keep DDP ranks in step
            order = torch.cat([order, order[: padded - self.num_samples]])
        return order[self.rank :: self.world_size]


class TensorBlocks:
    """Iterable of training *blocks*: lists of ``(x, y)`` minibatches cut from in-memory tensors.

    A block is what Lightning sees as one batch. With ``steps_per_block=None`` a block holds the
    whole epoch, so Lightning's per-batch bookkeeping (about a millisecond) is paid once per epoch
    instead of once per optimizer step, which for this tiny MLP costs more than the step itself.
    ``steps_per_block=1`` gives the classic one-minibatch-per-batch loop.
    """

    def __init__(
        self,
        X: Tensor,
        y: Tensor,
        batch_size: int,
        sampler: EpochPermutation,
        steps_per_block: int | None = None,
    ) -> None:
        self.X, self.y = X, y
        self.batch_size = batch_size
        self.sampler = sampler  # the attribute name Lightning looks for to call set_epoch
        self.steps_per_block = steps_per_block

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch (the last minibatch may be smaller)."""
        return -(-len(self.sampler) // self.batch_size)

    def __len__(self) -> int:
        steps = self.steps_per_epoch()
        return 1 if self.steps_per_block is None else -(-steps // self.steps_per_block)

    def __iter__(self) -> Iterator[list[Batch]]:
        idx = self.sampler.indices()
        # One gather per epoch, then views: no per-sample indexing, no collate.
        xs = self.X[idx].split(self.batch_size)
        ys = self.y[idx].split(self.batch_size)
        batches = list(zip(xs, ys, strict=True))
        size = len(batches) if self.steps_per_block is None else self.steps_per_block
        for start in range(0, len(batches), size):
            yield batches[start : start + size]


class TensorBatches:
    """Iterable of ``(x, y)`` minibatches in a fixed order, for validation and test."""

    def __init__(self, X: Tensor, y: Tensor, batch_size: int | None = None) -> None:
        self.X, self.y = X, y
        self.batch_size = batch_size or max(len(X), 1)

    def __len__(self) -> int:
        return -(-len(self.X) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        return iter(zip(self.X.split(self.batch_size), self.y.split(self.batch_size), strict=True))


class SpiralDataModule(pl.LightningDataModule):
    """The tutorial's spiral data, split into train (and optional validation) and test parts.

    Data and split are seeded from ``seed`` exactly as the tutorial does, so ``seed=2021`` gives
    the tutorial's ``X_train, y_train, X_test, y_test``. With ``val_fraction > 0`` the first
    ``int(val_fraction * n_train)`` training samples (already shuffled) become the validation set.

    Args:
        num_classes: Spiral arms K.
        sigma: Noise standard deviation.
        points_per_class: Points per arm N.
        test_fraction: Fraction of all samples held out for test.
        val_fraction: Fraction of the training part held out for validation; 0 disables it.
        batch_size: Training minibatch size.
        seed: Seeds the data, the split and the per-epoch training order.
        steps_per_block: Minibatches per Lightning batch; None puts the whole epoch in one.
        eval_batch_size: Minibatch size for validation and test; None evaluates in one batch.
    """

    def __init__(
        self,
        num_classes: int = 4,
        sigma: float = 0.16,
        points_per_class: int = 1000,
        test_fraction: float = 0.2,
        val_fraction: float = 0.0,
        batch_size: int = 128,
        seed: int = 2021,
        steps_per_block: int | None = None,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction!r} is invalid: it must be in [0, 1)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid: it must be an integer >= 1")
        for name, value in (
            ("steps_per_block", steps_per_block),
            ("eval_batch_size", eval_batch_size),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name}={value!r} is invalid: it must be None or an integer >= 1")
        self.save_hyperparameters()
        self.X_train = self.y_train = self.X_val = self.y_val = self.X_test = self.y_test = None

    def prepare_data(self) -> None:
        """Nothing to download: the data is generated in :meth:`setup`."""

    def setup(self, stage: str | None = None) -> None:
        """Generate and split the data (once; later calls are no-ops)."""
        if self.X_train is not None:
            return
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        X, y = make_spiral(hp.num_classes, hp.sigma, hp.points_per_class, generator=generator)
        X_train, y_train, self.X_test, self.y_test = shuffle_split(X, y, hp.test_fraction, hp.seed)
        n_val = int(hp.val_fraction * len(X_train))
        if hp.val_fraction > 0 and (n_val < 1 or n_val >= len(X_train)):
            raise ValueError(
                f"val_fraction={hp.val_fraction!r} leaves an empty split of {len(X_train)} "
                "training samples"
            )
        self.X_val, self.y_val = X_train[:n_val], y_train[:n_val]
        self.X_train, self.y_train = X_train[n_val:], y_train[n_val:]

    @property
    def has_validation(self) -> bool:
        """True when a validation split exists (``val_fraction > 0``)."""
        return self.hparams.val_fraction > 0

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> TensorBlocks:
        """Blocks of training minibatches in the (seed, epoch) order."""
        rank, world_size = self._rank()
        sampler = EpochPermutation(len(self.X_train), self.hparams.seed, True, rank, world_size)
        return TensorBlocks(
            self.X_train,
            self.y_train,
            self.hparams.batch_size,
            sampler,
            self.hparams.steps_per_block,
        )

    def val_dataloader(self) -> TensorBatches | list:
        """The validation split; an empty list (no validation loop) when there is none."""
        if not self.has_validation:
            return []
        return TensorBatches(self.X_val, self.y_val, self.hparams.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        """The tutorial's 20 % test split."""
        return TensorBatches(self.X_test, self.y_test, self.hparams.eval_batch_size)
